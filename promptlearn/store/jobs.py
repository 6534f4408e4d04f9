"""The job table and the run budget of a worker run (PostgreSQL only): every statement the workers coordinate by.

Coordination is the database's own: a job is claimed with `UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP
LOCKED) RETURNING` (workers never wait on each other's rows), carries a lease in the server's clock renewed by a
heartbeat, and is claimable again once the lease has run out (its worker died). A reply is written to the shared
reply cache and its job marked done in one transaction, so no reply is lost and none is half-recorded. The budget
row is charged with one conditional UPDATE before every real model call, so workers together never pass
max_calls / max_usd, whichever of them is deciding. Waiting is the database's too: a new job and a finished one are
announced with NOTIFY on CHANNEL (in the statement's transaction), and a worker or decider with nothing to do
LISTENs (`Listener`) instead of asking again every few milliseconds; a wait also ends after a timeout, so a
notification missed (a reconnect) or never sent (a lease that ran out) only costs that long.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from promptlearn.store.base import LockHolder, may_take
from promptlearn.store.postgres import PostgresStore

MAX_ATTEMPTS = 5  # claims of one job whose worker died each time before the job fails (a poison request)
CHANNEL = "pl_jobs"  # NOTIFY payload "<event>:<run_id>": new (a job to claim) or done (an outcome to read)
RELISTEN = 5.0  # seconds between attempts to start listening again after one failed
log = logging.getLogger("promptlearn.workers")


@dataclass(frozen=True)
class Job:
    """One claimed model call: its request key and the request (model config, messages, sample number)."""

    key: str
    request: Mapping[str, Any]
    attempts: int


@dataclass(frozen=True)
class Outcome:
    """A finished job as the decider reads it: the reply (done) or the error (failed)."""

    key: str
    done: bool
    reply: Mapping[str, Any] | None
    error: Mapping[str, Any] | None


class JobTable:
    """The jobs and budget of one run in a PostgresStore. Thread-safe (the store's pool); every method is one
    statement or one transaction, retried by PostgresStore.call while the server is briefly away."""

    def __init__(self, store: PostgresStore, run_id: str):
        self.store, self.run_id = store, run_id

    # the decider's side ---------------------------------------------------------------------------------------
    def submit(self, key: str, request: Mapping[str, Any]) -> None:
        """Queue one request. A job already there under the key is kept (pending, running or done: the same
        request, e.g. left by a decider that died) unless it failed, which asks again."""
        def go(conn: Any) -> None:
            with conn.transaction():
                queued = conn.execute(
                    "INSERT INTO pl_jobs (run_id, key, request, status, created) VALUES (%s, %s, %s, 'pending', %s) "
                    "ON CONFLICT (run_id, key) DO UPDATE SET status = 'pending', error = NULL, owner = NULL, "
                    "expires = NULL WHERE pl_jobs.status = 'failed' RETURNING 1",
                    (self.run_id, key, json.dumps(request, ensure_ascii=False), time.time())).fetchone()
                # a job kept as it was may be done already: wake whoever waits for outcomes, not the executors
                self._notify(conn, "new" if queued else "done")

        self.store.call(go)

    def _notify(self, conn: Any, event: str) -> None:
        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"{event}:{self.run_id}"))

    def outcomes(self, keys: Sequence[str]) -> list[Outcome]:
        """The jobs among `keys` that are done or failed."""
        rows = self.store.call(lambda c: c.execute(
            "SELECT key, status, reply, error FROM pl_jobs WHERE run_id = %s AND key = ANY(%s) AND status IN "
            "('done', 'failed')", (self.run_id, list(keys))).fetchall())
        return [Outcome(k, s == "done", json.loads(r) if r else None, json.loads(e) if e else None)
                for k, s, r, e in rows]

    def drop_pending(self) -> int:
        """Forget the jobs nobody has claimed (the decider is leaving; a next one asks again)."""
        return int(self.store.call(lambda c: c.execute(
            "DELETE FROM pl_jobs WHERE run_id = %s AND status = 'pending'", (self.run_id,)).rowcount))

    # the executors' side ------------------------------------------------------------------------------------
    def claim(self, owner: str, n: int, lease: float, max_attempts: int = MAX_ATTEMPTS) -> list[Job]:
        """Up to n jobs nobody holds (pending, or running under a lease that ran out), oldest first, now
        `owner`'s for `lease` seconds. SKIP LOCKED: two workers claiming at once never get the same job.
        A job whose lease ran out `max_attempts` times (every worker that took it died: a poison request) fails
        instead of being claimed again, and the decider stops the run with that error (resumable)."""
        if n <= 0:
            return []
        def poison(conn: Any) -> None:
            with conn.transaction():
                failed = conn.execute(
                    "UPDATE pl_jobs SET status = 'failed', owner = NULL, expires = NULL, error = %s WHERE run_id = %s "
                    "AND status = 'running' AND expires < now() AND attempts >= %s",
                    (json.dumps({"kind": "model", "message": f"{max_attempts} workers died holding this call (a "
                                 "request that kills the worker making it?); fix it and --resume the run"}),
                     self.run_id, max_attempts)).rowcount
                if failed:
                    self._notify(conn, "done")

        self.store.call(poison)
        # The pick is a CTE: PostgreSQL runs it once. As `WHERE id IN (SELECT ... LIMIT n SKIP LOCKED)` the
        # planner may run the subquery again per row and claim more than n (one claim of 3 took all 60 jobs in
        # tests/test_workers.py; 16 worker slots held 64 jobs in the benchmark).
        rows = self.store.call(lambda c: c.execute(
            "WITH picked AS (SELECT id FROM pl_jobs WHERE run_id = %s AND (status = 'pending' OR (status = 'running' "
            "AND expires < now())) ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) "
            "UPDATE pl_jobs SET status = 'running', owner = %s, expires = now() + make_interval(secs => %s), "
            "attempts = attempts + 1, claimed = EXTRACT(EPOCH FROM now()) FROM picked WHERE pl_jobs.id = picked.id "
            "RETURNING key, request, attempts", (self.run_id, n, owner, lease)).fetchall())
        return [Job(k, json.loads(r), a) for k, r, a in rows]

    def renew(self, owner: str, lease: float) -> int:
        """The heartbeat: extend the lease of every job `owner` is running."""
        return int(self.store.call(lambda c: c.execute(
            "UPDATE pl_jobs SET expires = now() + make_interval(secs => %s) WHERE run_id = %s AND owner = %s AND "
            "status = 'running'", (lease, self.run_id, owner)).rowcount))

    def finish(self, owner: str, job: Job, model: str, reply: Mapping[str, Any], usd: float) -> None:
        """One transaction: the reply into the shared cache, the job done, its USD on the run's budget."""
        text = json.dumps(reply, ensure_ascii=False)

        def write(conn: Any) -> None:
            with conn.transaction():
                conn.execute("INSERT INTO pl_responses VALUES (%s, %s, %s, %s) ON CONFLICT (key) DO UPDATE SET "
                             "response = EXCLUDED.response", (job.key, model, json.dumps(
                                 {k: reply[k] for k in ("text", "prompt_tokens", "completion_tokens", "usd")},
                                 ensure_ascii=False), time.time()))
                conn.execute("UPDATE pl_jobs SET status = 'done', reply = %s, owner = %s, expires = NULL, "
                             "finished = EXTRACT(EPOCH FROM now()) "
                             "WHERE run_id = %s AND key = %s AND status <> 'done'", (text, owner, self.run_id, job.key))
                if usd:
                    conn.execute("UPDATE pl_budgets SET usd = usd + %s WHERE run_id = %s", (usd, self.run_id))
                self._notify(conn, "done")

        self.store.call(write)

    def fail(self, owner: str, job: Job, error: Mapping[str, Any]) -> None:
        """The job failed for good (a fault that never healed, or the budget): the decider raises it."""
        def go(conn: Any) -> None:
            with conn.transaction():
                conn.execute(
                    "UPDATE pl_jobs SET status = 'failed', error = %s, owner = NULL, expires = NULL WHERE run_id = %s "
                    "AND key = %s AND owner = %s AND status = 'running'",
                    (json.dumps(error, ensure_ascii=False), self.run_id, job.key, owner))
                self._notify(conn, "done")

        self.store.call(go)

    # the budget ---------------------------------------------------------------------------------------------
    def set_budget(self, max_calls: int | None, max_usd: float | None) -> None:
        """The run's limits (at its start, and raised by --extend-budget); what was spent stays."""
        self.store.call(lambda c: c.execute(
            "INSERT INTO pl_budgets (run_id, max_calls, max_usd) VALUES (%s, %s, %s) ON CONFLICT (run_id) DO "
            "UPDATE SET max_calls = EXCLUDED.max_calls, max_usd = EXCLUDED.max_usd",
            (self.run_id, max_calls, max_usd)))

    def charge(self) -> dict[str, Any] | None:
        """Charge one real model call to the run's budget; None when charged, else the limit it would pass
        ({limit, used, max}). One conditional UPDATE: concurrent workers can never charge past a limit."""
        def go(conn: Any) -> Any:
            row = conn.execute("UPDATE pl_budgets SET calls = calls + 1 WHERE run_id = %s AND (max_calls IS NULL "
                               "OR calls < max_calls) AND (max_usd IS NULL OR usd < max_usd) RETURNING calls",
                               (self.run_id,)).fetchone()
            if row is not None:
                return None
            return conn.execute("SELECT calls, max_calls, usd, max_usd FROM pl_budgets WHERE run_id = %s",
                                (self.run_id,)).fetchone()

        row = self.store.call(go)
        if row is None:
            return None
        calls, max_calls, usd, max_usd = row
        if max_calls is not None and calls >= max_calls:
            return {"limit": "max_calls", "used": int(calls), "max": int(max_calls)}
        return {"limit": "max_usd", "used": round(float(usd), 6), "max": float(max_usd)}

    def budget(self) -> dict[str, Any] | None:
        """{calls, max_calls, usd, max_usd}: what the workers of the run have spent, against its limits."""
        row = self.store.call(lambda c: c.execute(
            "SELECT calls, max_calls, usd, max_usd FROM pl_budgets WHERE run_id = %s", (self.run_id,)).fetchone())
        return None if row is None else {"calls": row[0], "max_calls": row[1], "usd": row[2], "max_usd": row[3]}

    def counts(self) -> dict[str, int]:
        """Jobs by status, and the claims made (attempts): a death's repeated calls show as attempts > jobs."""
        rows = self.store.call(lambda c: c.execute(
            "SELECT status, COUNT(*), SUM(attempts) FROM pl_jobs WHERE run_id = %s GROUP BY status",
            (self.run_id,)).fetchall())
        out = {s: int(n) for s, n, _ in rows}
        out["attempts"] = sum(int(a or 0) for _, _, a in rows)
        return out

    def may_decide(self, me: LockHolder) -> bool:
        """Whether `me` may take the run lock now (free, its lease run out in the server's clock, or a holder
        known gone): the same rule RunStore.acquire_lock applies, read without taking anything."""
        row = self.store.call(lambda c: c.execute(
            "SELECT holder, EXTRACT(EPOCH FROM expires - now()) FROM pl_run_locks WHERE run_id = %s",
            (self.run_id,)).fetchone())
        return row is None or may_take(LockHolder.from_json(row[0]), me, float(row[1]), False)


class Listener:
    """Waits for a run's job notifications (CHANNEL) on a connection of its own. Used from one thread at a time.
    Never needed for correctness: whoever waits looks at the table again after `wait` returns, notified or not,
    and a lost connection turns waiting into a plain sleep until it reconnects."""

    def __init__(self, store: PostgresStore, run_id: str):
        self.store, self.run_id = store, run_id
        self.conn: Any = None
        self.woken = 0  # waits a notification ended (the rest timed out)
        self.failed: str | None = None  # why the last LISTEN could not start (said once in the log)
        self._retry_at = 0.0

    def listen(self) -> bool:
        """Start listening (once; again after a broken session, at most every RELISTEN seconds); False when it
        cannot (the server is away, no connection slot left): waiting is then a plain sleep."""
        if self.conn is None and time.monotonic() >= self._retry_at:
            conn = None
            try:
                conn = self.store.dedicated()
                conn.execute(f"LISTEN {CHANNEL}")
                self.conn, self.failed = conn, None
            except Exception as e:  # noqa: BLE001 - any failure here (StoreError, a dropped session) means: sleep
                if conn is not None:
                    conn.close()
                why = self.store._clean(e)  # the password masked, as everywhere
                if self.failed is None:
                    log.warning("promptlearn workers: cannot LISTEN for jobs (%s); looking every few tenths of a "
                                "second instead", why)
                self.failed, self._retry_at = why, time.monotonic() + RELISTEN
        return self.conn is not None

    def wait(self, event: str, timeout: float) -> bool:
        """Until a notification of `event` for this run arrives (True) or `timeout` seconds pass (False).
        Notifications sent while nobody waited are queued on the connection and end the next wait at once."""
        if not self.listen():
            time.sleep(timeout)
            return False
        want = f"{event}:{self.run_id}"
        try:
            for note in self.conn.notifies(timeout=timeout):
                if note.payload == want:
                    self.woken += 1
                    return True
        except Exception:  # noqa: BLE001 - the session broke: reconnect on the next wait
            self.close()
        return False

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass
        self.conn = None
