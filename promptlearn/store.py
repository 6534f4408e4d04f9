"""The run store: every candidate, its parents and operator, every per-example result and its cost.

One SQLite file per run (`runs/<id>/store.sqlite`, WAL) plus `run.yaml`, `best_prompt.txt` and `lineage.json`
written atomically. Each example result is committed as it finishes, so a crash loses at most the calls in
flight, and a resumed run replays stored results instead of calling the model again.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Mapping

from promptlearn.cache import connect_wal
from promptlearn.errors import RunError
from promptlearn.types import Candidate, CheckResult, ExampleResult, TurnResult, Usage

# Append-only: a store at version N runs migrations N+1.. on open. Never edit a released entry.
MIGRATIONS: list[str] = [
    """
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
    """,
    # 2: proposer generations, so a resumed run replays them instead of calling the proposer again
    """
    CREATE TABLE generations (key TEXT PRIMARY KEY, text TEXT, usage TEXT);
    """,
]


def atomic_write(path: Path, text: str) -> None:
    """Write via a temp file and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk, a directory in the way, Ctrl-C: never leave the temp file behind
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def result_to_json(res: ExampleResult) -> str:
    return json.dumps({"example_id": res.example_id, "turns": [
        {"reply": t.reply, "error": t.error, "completion_tokens": t.completion_tokens,
         "checks": {k: asdict(v) for k, v in t.checks.items()}} for t in res.turns]}, ensure_ascii=False)


def result_from_json(text: str) -> ExampleResult:
    d = json.loads(text)
    return ExampleResult(d["example_id"], tuple(
        TurnResult(t["reply"], {k: CheckResult(**v) for k, v in t["checks"].items()}, t.get("error"),
                   t.get("completion_tokens", 0)) for t in d["turns"]))


class RunStore:
    """SQLite-backed lineage and results of one run. Thread-safe; one writer connection per thread."""

    def __init__(self, run_dir: str | Path, *, create: bool = True):
        self.dir = Path(run_dir)
        self.path = self.dir / "store.sqlite"
        if not create and not self.path.exists():
            raise RunError(f"no run at {self.dir}", )
        self.dir.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._migrate()

    @property
    def run_id(self) -> str:
        return self.dir.name

    def _db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect_wal(self.path, check_same_thread=False)
            self._local.conn = conn
        return conn

    def _migrate(self) -> None:
        db = self._db()
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise RunError(f"{self.path} was written by a newer promptlearn (schema {version}); upgrade promptlearn")
        for i in range(version, len(MIGRATIONS)):
            db.executescript("BEGIN;" + MIGRATIONS[i] + f"PRAGMA user_version = {i + 1}; COMMIT;")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

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

    # files ----------------------------------------------------------------------------------------------
    def lineage(self) -> dict[str, Any]:
        scores = self.scores()
        nodes = []
        for c in self.candidates():
            s = scores.get(c["id"], {})
            nodes.append({"id": c["id"], "parents": c["parents"], "operator": c["operator"], "status": c["status"],
                          "val": s.get("val", {}).get("score"), "test": s.get("test", {}).get("score"),
                          "train": s.get("train", {}).get("score")})
        return {"run_id": self.run_id, "best": self.get_meta("best"), "seed": self.get_meta("seed"), "nodes": nodes}

    def write_files(self, best_prompt: str | None = None) -> None:
        if best_prompt is not None:
            atomic_write(self.dir / "best_prompt.txt", best_prompt)
        atomic_write(self.dir / "lineage.json", json.dumps(self.lineage(), indent=2))


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


def iter_parents(nodes: Iterable[Mapping[str, Any]], leaf: str) -> list[Mapping[str, Any]]:
    """The chain from the seed to `leaf`, following first parents."""
    by_id = {n["id"]: n for n in nodes}
    chain, cur = [], by_id.get(leaf)
    while cur is not None and cur not in chain:
        chain.append(cur)
        cur = by_id.get(cur["parents"][0]) if cur["parents"] else None
    return list(reversed(chain))
