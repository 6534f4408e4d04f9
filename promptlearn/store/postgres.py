"""The PostgreSQL backend (`open_store("postgresql://user@host/db")`): runs and the reply cache in one database.

psycopg 3 with a psycopg_pool connection pool (the [postgres] extra). Every run lives in the same tables, keyed by
run id, so a team lists, reports and exports each other's runs, and the reply cache is one table: a request one
person made is answered from it for everyone. Each write is one autocommitted statement (or one short
transaction), so a server that goes away loses nothing already returned; a write that cannot reach the server
within `RETRY_SECONDS` raises StoreUnavailable and the run stops, resumable.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from typing import Any, Callable, Mapping, TypeVar

from promptlearn.errors import RunError
from promptlearn.store.base import (LockHolder, StoreError, StoreUnavailable, lineage_of, lock_refusal, may_take,
                                    resolve_ref, result_from_json, result_to_json)
from promptlearn.store.url import mask_secret, mask_url
from promptlearn.types import Candidate, ExampleResult, Usage

T = TypeVar("T")

#: How long a statement keeps retrying a lost connection (a server restart) before the run stops.
RETRY_SECONDS = 10.0
CONNECT_TIMEOUT = 5

# Named and append-only, applied in order under an advisory lock (several processes may open a new database at
# once); the names applied are kept in pl_migrations, so a database holding a name we do not know was written by
# a newer promptlearn. Never edit or reorder a released entry.
MIGRATIONS: list[tuple[str, str]] = [
    ("0001_initial", """
    CREATE TABLE pl_runs (run_id TEXT PRIMARY KEY, created DOUBLE PRECISION NOT NULL);
    CREATE TABLE pl_meta (run_id TEXT NOT NULL REFERENCES pl_runs ON DELETE CASCADE, key TEXT NOT NULL,
        value TEXT, PRIMARY KEY (run_id, key));
    CREATE TABLE pl_candidates (run_id TEXT NOT NULL REFERENCES pl_runs ON DELETE CASCADE, id TEXT NOT NULL,
        seq INTEGER NOT NULL, prompt TEXT, parents TEXT, operator TEXT, status TEXT, meta TEXT,
        created DOUBLE PRECISION, PRIMARY KEY (run_id, id));
    CREATE TABLE pl_results (run_id TEXT NOT NULL REFERENCES pl_runs ON DELETE CASCADE, candidate_id TEXT NOT NULL,
        example_id TEXT NOT NULL, score DOUBLE PRECISION, feedback TEXT, result TEXT, usage TEXT,
        PRIMARY KEY (run_id, candidate_id, example_id));
    CREATE TABLE pl_scores (run_id TEXT NOT NULL REFERENCES pl_runs ON DELETE CASCADE, candidate_id TEXT NOT NULL,
        split TEXT NOT NULL, score DOUBLE PRECISION, n INTEGER, complete BOOLEAN, extra TEXT,
        PRIMARY KEY (run_id, candidate_id, split));
    CREATE TABLE pl_events (seq BIGSERIAL PRIMARY KEY, run_id TEXT NOT NULL REFERENCES pl_runs ON DELETE CASCADE,
        time DOUBLE PRECISION, kind TEXT, data TEXT);
    CREATE INDEX pl_events_run ON pl_events (run_id, seq);
    CREATE TABLE pl_generations (run_id TEXT NOT NULL REFERENCES pl_runs ON DELETE CASCADE, key TEXT NOT NULL,
        text TEXT, usage TEXT, PRIMARY KEY (run_id, key));
    CREATE TABLE pl_responses (key TEXT PRIMARY KEY, model TEXT, response TEXT, created DOUBLE PRECISION);
    """),
    # the run lock: its holder and the end of its lease, in the server's clock (machines' clocks may differ)
    ("0002_run_lock", """
    CREATE TABLE pl_run_locks (run_id TEXT PRIMARY KEY REFERENCES pl_runs ON DELETE CASCADE, holder TEXT NOT NULL,
        expires TIMESTAMPTZ NOT NULL);
    """),
    # workers (promptlearn.workers): the model calls of a worker run as claimable jobs with a lease, and the
    # run's budget of real calls, charged by whichever worker makes a call
    ("0003_workers", """
    CREATE TABLE pl_jobs (run_id TEXT NOT NULL REFERENCES pl_runs ON DELETE CASCADE, key TEXT NOT NULL,
        id BIGSERIAL, request TEXT NOT NULL, status TEXT NOT NULL, owner TEXT, expires TIMESTAMPTZ,
        attempts INTEGER NOT NULL DEFAULT 0, reply TEXT, error TEXT, created DOUBLE PRECISION,
        claimed DOUBLE PRECISION, finished DOUBLE PRECISION, PRIMARY KEY (run_id, key));
    CREATE INDEX pl_jobs_open ON pl_jobs (run_id, status, id);
    CREATE TABLE pl_budgets (run_id TEXT PRIMARY KEY REFERENCES pl_runs ON DELETE CASCADE, max_calls BIGINT,
        max_usd DOUBLE PRECISION, calls BIGINT NOT NULL DEFAULT 0, usd DOUBLE PRECISION NOT NULL DEFAULT 0);
    """),
]

_MIGRATION_LOCK = 0x70726F6D  # pg_advisory_xact_lock key: one process migrates at a time


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise StoreError("a postgresql:// store needs psycopg: pip install 'promptlearn[postgres]'") from None
    return psycopg


class PostgresStore:
    """A Store (promptlearn.store.base) in one PostgreSQL database. Thread-safe (a connection pool)."""

    def __init__(self, url: str, *, max_size: int = 8):
        self._raw = url
        self.url_masked = mask_url(url)
        psycopg = _psycopg()
        try:
            conn = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
        except psycopg.Error as e:
            raise StoreError(f"cannot open the store {self.url_masked}: {self._clean(e)}") from None
        try:
            _migrate(conn, self.url_masked)
        except psycopg.Error as e:
            raise StoreError(f"cannot prepare the store {self.url_masked}: {self._clean(e)}") from None
        finally:
            conn.close()
        from psycopg_pool import ConnectionPool

        # The pool reports each failed reconnect as a warning; with no handler of its own, Python's last-resort
        # handler would print them all. The outcome (StoreUnavailable) is reported once, by the caller.
        logging.getLogger("psycopg.pool").addHandler(logging.NullHandler())

        self.pool = ConnectionPool(url, min_size=1, max_size=max_size, open=False, timeout=RETRY_SECONDS,
                                   kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT},
                                   check=ConnectionPool.check_connection, name="promptlearn")
        self.pool.open(wait=False)
        self._cache: PostgresCache | None = None
        self._gone: str | None = None  # why the server was given up on (StoreUnavailable's message)

    @property
    def url(self) -> str:
        return self.url_masked

    def _clean(self, e: BaseException) -> str:
        """A driver error in one line, the password masked (libpq may echo the conninfo)."""
        return mask_secret(" ".join(str(e).split()), self._raw) or type(e).__name__

    def dedicated(self) -> Any:
        """A connection of its own, outside the pool, autocommit (a LISTEN session lives as long as it does);
        StoreError when the server cannot be reached."""
        psycopg = _psycopg()
        try:
            return psycopg.connect(self._raw, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
        except psycopg.Error as e:
            raise StoreError(f"cannot open the store {self.url_masked}: {self._clean(e)}") from None

    def call(self, fn: Callable[[Any], T]) -> T:
        """fn(connection) with a pooled connection, retried while the server is unreachable (a restart), at most
        RETRY_SECONDS; then StoreUnavailable. Every statement promptlearn sends is idempotent or one transaction,
        so a retry after a lost reply changes nothing."""
        psycopg = _psycopg()
        from psycopg_pool import PoolTimeout

        if self._gone is not None:  # waited out once already: every later call (in flight, cleanup) fails fast
            raise StoreUnavailable(self._gone)
        deadline = time.monotonic() + RETRY_SECONDS
        while True:
            try:
                with self.pool.connection() as conn:
                    return fn(conn)
            except (psycopg.OperationalError, PoolTimeout) as e:
                if time.monotonic() > deadline:
                    self._gone = (f"the store {self.url_masked} went away ({self._clean(e)}); everything committed "
                                  "is kept")
                    raise StoreUnavailable(self._gone) from None
                time.sleep(0.5)

    def create_run(self, run_id: str) -> "PostgresRunStore":
        def create(conn: Any) -> bool:
            cur = conn.execute("INSERT INTO pl_runs VALUES (%s, %s) ON CONFLICT DO NOTHING", (run_id, time.time()))
            return bool(cur.rowcount)

        if not self.call(create):
            raise RunError(f"run {run_id} already exists in {self.url_masked}; resume it with --resume {run_id}")
        return PostgresRunStore(self, run_id)

    def open_run(self, run_id: str) -> "PostgresRunStore":
        if not self.call(lambda c: c.execute("SELECT 1 FROM pl_runs WHERE run_id = %s", (run_id,)).fetchone()):
            raise RunError(f"no run {run_id} in {self.url_masked}; list runs with `promptlearn runs --store URL`")
        return PostgresRunStore(self, run_id)

    def run_ids(self) -> list[str]:
        rows = self.call(lambda c: c.execute("SELECT run_id FROM pl_runs ORDER BY created, run_id").fetchall())
        return [r[0] for r in rows]

    def resolve(self, ref: str) -> str:
        return resolve_ref(ref, self.run_ids(), self.url_masked)

    def reply_cache(self) -> "PostgresCache":
        if self._cache is None:
            self._cache = PostgresCache(self)
        return self._cache

    def close(self) -> None:
        self.pool.close()


def _migrate(conn: Any, where: str) -> None:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS pl_migrations (name TEXT PRIMARY KEY, "
                     "applied TIMESTAMPTZ NOT NULL DEFAULT now())")
        done = {r[0] for r in conn.execute("SELECT name FROM pl_migrations").fetchall()}
        known = [name for name, _ in MIGRATIONS]
        newer = sorted(done - set(known))
        if newer:
            raise StoreError(f"the store {where} was written by a newer promptlearn (schema {newer[-1]}, this one "
                             f"knows up to {known[-1]}); upgrade promptlearn")
        for name, sql in MIGRATIONS:
            if name not in done:
                conn.execute(sql)
                conn.execute("INSERT INTO pl_migrations (name) VALUES (%s)", (name,))


class PostgresRunStore:
    """A RunStore (promptlearn.store.base) for one run of a PostgresStore."""

    def __init__(self, store: PostgresStore, run_id: str):
        self.store, self._run_id = store, run_id

    @property
    def run_id(self) -> str:
        return self._run_id

    def _exec(self, sql: str, params: tuple[Any, ...]) -> int:
        return int(self.store.call(lambda c: c.execute(sql, params).rowcount))

    def _one(self, sql: str, params: tuple[Any, ...]) -> Any:
        return self.store.call(lambda c: c.execute(sql, params).fetchone())

    def _all(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        return self.store.call(lambda c: c.execute(sql, params).fetchall())

    def close(self) -> None:
        pass  # the pool belongs to the PostgresStore

    def created(self) -> float:
        row = self._one("SELECT created FROM pl_runs WHERE run_id = %s", (self._run_id,))
        return float(row[0]) if row else 0.0

    # meta ------------------------------------------------------------------------------------------------
    def set_meta(self, key: str, value: Any) -> None:
        self._exec("INSERT INTO pl_meta VALUES (%s, %s, %s) ON CONFLICT (run_id, key) DO UPDATE SET value = "
                   "EXCLUDED.value", (self._run_id, key, json.dumps(value, default=str)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self._one("SELECT value FROM pl_meta WHERE run_id = %s AND key = %s", (self._run_id, key))
        return json.loads(row[0]) if row else default

    # candidates -------------------------------------------------------------------------------------------
    def add_candidate(self, cand: Candidate, status: str = "proposed") -> bool:
        def add(conn: Any) -> bool:
            with conn.transaction():  # seq numbers in recording order: one recorder of this run at a time
                conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (self._run_id,))
                cur = conn.execute(
                    "INSERT INTO pl_candidates SELECT %s, %s, COALESCE(MAX(seq), -1) + 1, %s, %s, %s, %s, %s, %s "
                    "FROM pl_candidates WHERE run_id = %s ON CONFLICT DO NOTHING",
                    (self._run_id, cand.id, cand.prompt, json.dumps(list(cand.parents)), cand.operator, status,
                     json.dumps(dict(cand.meta), default=str), time.time(), self._run_id))
                return bool(cur.rowcount)

        return self.store.call(add)

    def set_status(self, cand_id: str, status: str) -> None:
        self._exec("UPDATE pl_candidates SET status = %s WHERE run_id = %s AND id = %s",
                   (status, self._run_id, cand_id))

    def candidates(self) -> list[dict[str, Any]]:
        rows = self._all("SELECT id, seq, prompt, parents, operator, status, meta FROM pl_candidates "
                         "WHERE run_id = %s ORDER BY seq", (self._run_id,))
        return [{"id": r[0], "seq": r[1], "prompt": r[2], "parents": json.loads(r[3]), "operator": r[4],
                 "status": r[5], "meta": json.loads(r[6] or "{}")} for r in rows]

    def candidate(self, cand_id: str) -> dict[str, Any] | None:
        return next((c for c in self.candidates() if c["id"] == cand_id), None)

    # per-example results ---------------------------------------------------------------------------------
    def put_result(self, cand_id: str, res: ExampleResult, usage: Usage) -> None:
        self._exec("INSERT INTO pl_results VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (run_id, candidate_id, "
                   "example_id) DO UPDATE SET score = EXCLUDED.score, feedback = EXCLUDED.feedback, result = "
                   "EXCLUDED.result, usage = EXCLUDED.usage",
                   (self._run_id, cand_id, res.example_id, res.score, res.feedback, result_to_json(res),
                    json.dumps(asdict(usage))))

    def get_result(self, cand_id: str, example_id: str) -> tuple[ExampleResult, Usage] | None:
        row = self._one("SELECT result, usage FROM pl_results WHERE run_id = %s AND candidate_id = %s AND "
                        "example_id = %s", (self._run_id, cand_id, example_id))
        return (result_from_json(row[0]), Usage(**json.loads(row[1]))) if row else None

    def results(self, cand_id: str) -> dict[str, ExampleResult]:
        rows = self._all("SELECT example_id, result FROM pl_results WHERE run_id = %s AND candidate_id = %s",
                         (self._run_id, cand_id))
        return {r[0]: result_from_json(r[1]) for r in rows}

    def usage_of(self, cand_id: str) -> Usage:
        total = Usage()
        for (u,) in self._all("SELECT usage FROM pl_results WHERE run_id = %s AND candidate_id = %s",
                              (self._run_id, cand_id)):
            total = total + Usage(**json.loads(u))
        return total

    def put_generation(self, key: str, text: str, usage: Usage) -> None:
        self._exec("INSERT INTO pl_generations VALUES (%s, %s, %s, %s) ON CONFLICT (run_id, key) DO UPDATE SET "
                   "text = EXCLUDED.text, usage = EXCLUDED.usage", (self._run_id, key, text, json.dumps(asdict(usage))))

    def get_generation(self, key: str) -> tuple[str, Usage] | None:
        row = self._one("SELECT text, usage FROM pl_generations WHERE run_id = %s AND key = %s", (self._run_id, key))
        return (row[0], Usage(**json.loads(row[1]))) if row else None

    # aggregate scores ------------------------------------------------------------------------------------
    def put_score(self, cand_id: str, split: str, score: float, n: int, complete: bool,
                  extra: Mapping[str, Any] | None = None) -> None:
        self._exec("INSERT INTO pl_scores VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (run_id, candidate_id, "
                   "split) DO UPDATE SET score = EXCLUDED.score, n = EXCLUDED.n, complete = EXCLUDED.complete, "
                   "extra = EXCLUDED.extra",
                   (self._run_id, cand_id, split, score, n, bool(complete), json.dumps(extra or {}, default=str)))

    def scores(self) -> dict[str, dict[str, dict[str, Any]]]:
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for cid, split, score, n, complete, extra in self._all(
                "SELECT candidate_id, split, score, n, complete, extra FROM pl_scores WHERE run_id = %s",
                (self._run_id,)):
            out.setdefault(cid, {})[split] = {"score": score, "n": n, "complete": bool(complete),
                                              **json.loads(extra or "{}")}
        return out

    # events ----------------------------------------------------------------------------------------------
    def log_event(self, kind: str, data: Mapping[str, Any]) -> None:
        self._exec("INSERT INTO pl_events (run_id, time, kind, data) VALUES (%s, %s, %s, %s)",
                   (self._run_id, time.time(), kind, json.dumps(data, default=str)))

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        q = "SELECT seq, time, kind, data FROM pl_events WHERE run_id = %s" + (" AND kind = %s" if kind else "")
        rows = self._all(q + " ORDER BY seq", (self._run_id, kind) if kind else (self._run_id,))
        return [{"seq": s, "time": t, "kind": k, **json.loads(d)} for s, t, k, d in rows]

    def lineage(self) -> dict[str, Any]:
        return lineage_of(self)

    # the run lock ------------------------------------------------------------------------------------------
    def acquire_lock(self, holder: LockHolder, lease: float, force: bool = False) -> None:
        def take(conn: Any) -> None:
            with conn.transaction():
                conn.execute("SELECT 1 FROM pl_runs WHERE run_id = %s FOR UPDATE", (self._run_id,))  # one decides
                row = conn.execute("SELECT holder, EXTRACT(EPOCH FROM expires - now()) FROM pl_run_locks "
                                   "WHERE run_id = %s", (self._run_id,)).fetchone()
                current = LockHolder.from_json(row[0]) if row else None
                left = float(row[1]) if row else 0.0
                if current is not None and not may_take(current, holder, left, force):
                    raise lock_refusal(self._run_id, current, left)
                conn.execute("INSERT INTO pl_run_locks VALUES (%s, %s, now() + make_interval(secs => %s)) "
                             "ON CONFLICT (run_id) DO UPDATE SET holder = EXCLUDED.holder, expires = EXCLUDED.expires",
                             (self._run_id, holder.to_json(), lease))

        self.store.call(take)

    def renew_lock(self, holder: LockHolder, lease: float) -> bool:
        return self._exec("UPDATE pl_run_locks SET expires = now() + make_interval(secs => %s) WHERE run_id = %s "
                          "AND holder = %s", (lease, self._run_id, holder.to_json())) == 1

    def release_lock(self, holder: LockHolder) -> None:
        self._exec("DELETE FROM pl_run_locks WHERE run_id = %s AND holder = %s", (self._run_id, holder.to_json()))


class PostgresCache:
    """The ReplyCache (promptlearn.store.base) of a PostgresStore: one table every run and user shares."""

    def __init__(self, store: PostgresStore, *, owns: bool = False):
        self.store, self._owns = store, owns

    def get(self, key: str) -> dict[str, Any] | None:
        row = self.store.call(lambda c: c.execute("SELECT response FROM pl_responses WHERE key = %s",
                                                  (key,)).fetchone())
        return json.loads(row[0]) if row else None

    def put(self, key: str, model: str, response: Mapping[str, Any]) -> None:
        self.store.call(lambda c: c.execute(
            "INSERT INTO pl_responses VALUES (%s, %s, %s, %s) ON CONFLICT (key) DO UPDATE SET response = "
            "EXCLUDED.response", (key, model, json.dumps(response, ensure_ascii=False), time.time())))

    def __len__(self) -> int:
        return int(self.store.call(lambda c: c.execute("SELECT COUNT(*) FROM pl_responses").fetchone()[0]))

    def close(self) -> None:
        if self._owns:
            self.store.close()
