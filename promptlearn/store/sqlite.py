"""The SQLite layout (`open_store("runs/")`, the default): one folder per run, `runs/<id>/store.sqlite` (WAL).

Each example result is committed as it finishes, so a crash loses at most the calls in flight, and a resumed run
replays stored results instead of calling the model again. The user-facing files sit next to the store, in the
run's folder (written by promptlearn.store.files, as for any store).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

from promptlearn.cache import connect_wal
from promptlearn.errors import RunError
from promptlearn.store.base import (LockHolder, StoreError, lineage_of, lock_refusal, may_take, resolve_ref,
                                    result_from_json, result_to_json)
from promptlearn.store.files import write_run_files
from promptlearn.types import Candidate, ExampleResult, Usage

# Named and append-only: a store that has the first N runs the rest on open (PRAGMA user_version counts them).
# Never edit or reorder a released entry; a store with more than we know was written by a newer promptlearn.
MIGRATIONS: list[tuple[str, str]] = [
    ("0001_initial", """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
    CREATE TABLE candidates (
        id TEXT PRIMARY KEY, seq INTEGER, prompt TEXT, parents TEXT, operator TEXT, status TEXT,
        meta TEXT, created REAL);
    CREATE TABLE results (
        candidate_id TEXT, example_id TEXT, score REAL, feedback TEXT, result TEXT, usage TEXT,
        PRIMARY KEY (candidate_id, example_id));
    CREATE TABLE scores (
        candidate_id TEXT, split TEXT, score REAL, n INTEGER, complete INTEGER, extra TEXT,
        PRIMARY KEY (candidate_id, split));
    CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, time REAL, kind TEXT, data TEXT);
    """),
    # proposer generations, so a resumed run replays them instead of calling the proposer again
    ("0002_generations", """
    CREATE TABLE generations (key TEXT PRIMARY KEY, text TEXT, usage TEXT);
    """),
    # the run lock: one row, its holder and the end of its lease (epoch seconds)
    ("0003_run_lock", """
    CREATE TABLE run_lock (id INTEGER PRIMARY KEY CHECK (id = 0), holder TEXT, expires REAL);
    """),
]


class SQLiteRunStore:
    """A RunStore (promptlearn.store.base) in one SQLite file. Thread-safe; one connection per thread."""

    def __init__(self, run_dir: str | Path, *, create: bool = True):
        self.dir = Path(run_dir)
        self.path = self.dir / "store.sqlite"
        if not create and not self.path.exists():
            raise RunError(f"no run at {self.dir}", )
        self.dir.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[sqlite3.Connection] = []  # every thread's, so close() closes them all
        self._conns_lock = threading.Lock()
        self._migrate()

    @property
    def run_id(self) -> str:
        return self.dir.name

    def _db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect_wal(self.path, check_same_thread=False)
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def _migrate(self) -> None:
        try:
            db = self._db()
            version = db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path} is not a promptlearn run store ({e})") from None
        if version > len(MIGRATIONS):
            raise StoreError(f"{self.path} was written by a newer promptlearn (schema {version}, this one knows "
                             f"{len(MIGRATIONS)}); upgrade promptlearn")
        for i in range(version, len(MIGRATIONS)):
            db.executescript("BEGIN;" + MIGRATIONS[i][1] + f"PRAGMA user_version = {i + 1}; COMMIT;")

    def close(self) -> None:
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
        self._local = threading.local()

    def created(self) -> float:
        return run_started(self.dir)

    # the run lock ------------------------------------------------------------------------------------------
    def acquire_lock(self, holder: LockHolder, lease: float, force: bool = False) -> None:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")  # one writer decides, whatever else tries at the same moment
        try:
            row = db.execute("SELECT holder, expires FROM run_lock WHERE id = 0").fetchone()
            now = time.time()
            current = LockHolder.from_json(row[0]) if row else None
            left = row[1] - now if row else 0.0
            if current is not None and not may_take(current, holder, left, force):
                raise lock_refusal(self.run_id, current, left)
            db.execute("INSERT OR REPLACE INTO run_lock VALUES (0, ?, ?)", (holder.to_json(), now + lease))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def renew_lock(self, holder: LockHolder, lease: float) -> bool:
        cur = self._db().execute("UPDATE run_lock SET expires = ? WHERE id = 0 AND holder = ?",
                                 (time.time() + lease, holder.to_json()))
        return cur.rowcount == 1

    def release_lock(self, holder: LockHolder) -> None:
        self._db().execute("DELETE FROM run_lock WHERE id = 0 AND holder = ?", (holder.to_json(),))

    # meta ------------------------------------------------------------------------------------------------
    def set_meta(self, key: str, value: Any) -> None:
        self._db().execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value, default=str)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self._db().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    # candidates -------------------------------------------------------------------------------------------
    def add_candidate(self, cand: Candidate, status: str = "proposed") -> bool:
        """Record a candidate once (content-hash id); returns False if it was already there."""
        with self._lock:
            db = self._db()
            if db.execute("SELECT 1 FROM candidates WHERE id = ?", (cand.id,)).fetchone():
                return False
            seq = db.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM candidates").fetchone()[0]
            db.execute("INSERT INTO candidates VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (cand.id, seq, cand.prompt, json.dumps(list(cand.parents)), cand.operator, status,
                        json.dumps(dict(cand.meta), default=str), time.time()))
            return True

    def set_status(self, cand_id: str, status: str) -> None:
        self._db().execute("UPDATE candidates SET status = ? WHERE id = ?", (status, cand_id))

    def candidates(self) -> list[dict[str, Any]]:
        rows = self._db().execute(
            "SELECT id, seq, prompt, parents, operator, status, meta FROM candidates ORDER BY seq").fetchall()
        return [{"id": r[0], "seq": r[1], "prompt": r[2], "parents": json.loads(r[3]), "operator": r[4],
                 "status": r[5], "meta": json.loads(r[6] or "{}")} for r in rows]

    def candidate(self, cand_id: str) -> dict[str, Any] | None:
        return next((c for c in self.candidates() if c["id"] == cand_id), None)

    # per-example results ---------------------------------------------------------------------------------
    def put_result(self, cand_id: str, res: ExampleResult, usage: Usage) -> None:
        self._db().execute("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?)",
                           (cand_id, res.example_id, res.score, res.feedback, result_to_json(res),
                            json.dumps(asdict(usage))))

    def get_result(self, cand_id: str, example_id: str) -> tuple[ExampleResult, Usage] | None:
        row = self._db().execute("SELECT result, usage FROM results WHERE candidate_id = ? AND example_id = ?",
                                 (cand_id, example_id)).fetchone()
        if not row:
            return None
        return result_from_json(row[0]), Usage(**json.loads(row[1]))

    def results(self, cand_id: str) -> dict[str, ExampleResult]:
        rows = self._db().execute("SELECT example_id, result FROM results WHERE candidate_id = ?",
                                  (cand_id,)).fetchall()
        return {r[0]: result_from_json(r[1]) for r in rows}

    def usage_of(self, cand_id: str) -> Usage:
        total = Usage()
        for (u,) in self._db().execute("SELECT usage FROM results WHERE candidate_id = ?", (cand_id,)):
            total = total + Usage(**json.loads(u))
        return total

    def put_generation(self, key: str, text: str, usage: Usage) -> None:
        self._db().execute("INSERT OR REPLACE INTO generations VALUES (?, ?, ?)",
                           (key, text, json.dumps(asdict(usage))))

    def get_generation(self, key: str) -> tuple[str, Usage] | None:
        row = self._db().execute("SELECT text, usage FROM generations WHERE key = ?", (key,)).fetchone()
        return (row[0], Usage(**json.loads(row[1]))) if row else None

    # aggregate scores ------------------------------------------------------------------------------------
    def put_score(self, cand_id: str, split: str, score: float, n: int, complete: bool,
                  extra: Mapping[str, Any] | None = None) -> None:
        self._db().execute("INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?, ?, ?)",
                           (cand_id, split, score, n, int(complete), json.dumps(extra or {}, default=str)))

    def scores(self) -> dict[str, dict[str, dict[str, Any]]]:
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for cid, split, score, n, complete, extra in self._db().execute("SELECT * FROM scores"):
            out.setdefault(cid, {})[split] = {"score": score, "n": n, "complete": bool(complete),
                                              **json.loads(extra or "{}")}
        return out

    # events (progress curve) -----------------------------------------------------------------------------
    def log_event(self, kind: str, data: Mapping[str, Any]) -> None:
        self._db().execute("INSERT INTO events (time, kind, data) VALUES (?, ?, ?)",
                           (time.time(), kind, json.dumps(data, default=str)))

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        q = "SELECT seq, time, kind, data FROM events" + (" WHERE kind = ?" if kind else "") + " ORDER BY seq"
        return [{"seq": s, "time": t, "kind": k, **json.loads(d)}
                for s, t, k, d in self._db().execute(q, (kind,) if kind else ())]

    def lineage(self) -> dict[str, Any]:
        return lineage_of(self)

    def write_files(self, best_prompt: str | None = None) -> None:
        """The user-facing files of this run in its own folder (promptlearn.store.files, as for any store)."""
        write_run_files(self, self.dir, best_prompt)


class SQLiteStore:
    """A Store (promptlearn.store.base) that is a folder of run folders: today's `runs/` layout."""

    def __init__(self, root: str | Path = "runs"):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"store '{root}' is a file, not a folder of runs; give a folder or a postgresql:// URL")

    @property
    def url(self) -> str:
        return str(self.root)

    def create_run(self, run_id: str) -> SQLiteRunStore:
        rdir = self.root / run_id
        if (rdir / "store.sqlite").exists():
            raise RunError(f"{rdir} already holds a run; use --resume {rdir} or another --run-dir")
        return SQLiteRunStore(rdir)

    def open_run(self, run_id: str) -> SQLiteRunStore:
        return SQLiteRunStore(self.root / run_id, create=False)

    def run_ids(self) -> list[str]:
        return [p.name for p in list_runs(self.root)]

    def resolve(self, ref: str) -> str:
        return resolve_ref(ref, self.run_ids(), f"'{self.root}'")

    def reply_cache(self) -> None:
        return None

    def close(self) -> None:
        pass


def run_started(run_dir: Path) -> float:
    """When a run began: its run.yaml is written once, at creation (the store's own mtime moves on every write)."""
    for name in ("run.yaml", "store.sqlite"):
        try:
            return (run_dir / name).stat().st_mtime
        except OSError:
            continue
    return 0.0


def list_runs(root: str | Path = "runs") -> list[Path]:
    """The run directories (those holding a store) under root, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if (p / "store.sqlite").exists()), key=lambda p: (run_started(p), p.name))


def resolve_run(run: str | Path, root: str | Path = "runs") -> Path:
    """A run directory, a run id under root, a unique prefix of one, or `latest` (the run under root that began
    last) -> the run directory, or a RunError saying where we looked."""
    root = Path(root)
    for cand in (Path(run), root / str(run)):
        if (cand / "store.sqlite").exists():
            return cand
    runs = list_runs(root)
    if str(run) == "latest":
        if not runs:
            raise RunError(f"no runs in '{root}' to take the latest of; list runs with `promptlearn runs --root DIR`")
        return runs[-1]
    matches = [p for p in runs if p.name.startswith(str(run))] if str(run) and "/" not in str(run) else []
    if len(matches) == 1:
        return matches[0]
    if matches:
        names = ", ".join(p.name for p in matches[:3]) + (", ..." if len(matches) > 3 else "")
        raise RunError(f"run '{run}' is ambiguous: {len(matches)} runs in '{root}' begin with it ({names}); "
                       "give more of the id")
    raise RunError(f"run '{run}' not found (looked in '{run}' and '{root / str(run)}', and for a run id in "
                   f"'{root}' beginning with it); list runs with `promptlearn runs`")




