"""Workers: one run on many processes and machines, through its PostgreSQL store.

One process at a time is the run's *decider*: it holds the run lock (promptlearn.store.lock) and runs the normal
search (optimizer, in-order decisions, acceptance, ledger) exactly as a single process does, except that its
cache misses become jobs in the store (`JobPool`, a Transport of promptlearn.lm) instead of calls to the model.
Every worker process, the decider's own included, runs an `Executor`: it claims jobs (SKIP LOCKED), holds them
under a lease its heartbeat renews, charges the run's budget, calls the model and writes the reply to the shared
cache in one transaction. A worker that is not deciding waits for the lock; when the decider dies, its lease runs
out and a worker takes the run over through `--resume`, which replays everything stored and cached exactly.
Which process made which call is not part of the run; its decisions are the single process's. A worker's own life
(joining, waiting, taking over) is promptlearn.worker_loop.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, Mapping

from promptlearn.errors import BudgetExceeded, ModelError, TaskError
from promptlearn.lm import LM, Completion, Ledger
from promptlearn.store.base import StoreError, StoreUnavailable
from promptlearn.store.lock import LEASE_SECONDS
from promptlearn.store.url import is_db_url

if TYPE_CHECKING:
    from promptlearn.store.jobs import Job, JobTable
    from promptlearn.store.postgres import PostgresStore
    from promptlearn.task import Task

#: The longest a decider waits for a finished job and an idle executor for a new one before looking at the table
#: again (seconds). They are woken by the jobs' NOTIFY (store.jobs.Listener) as soon as there is something, so this
#: only bounds a wake-up that never comes: a job whose lease ran out, a notification lost in a reconnect.
POLL = 0.5
#: Statuses after which a worker leaves the run (`stop` ends a run as finished).
ENDED = ("finished", "failed", "interrupted")
TASK_DOC = "task_doc"
STORE_ENV = "PROMPTLEARN_STORE"  # how a spawned worker gets the URL: never on a command line `ps` shows


def task_doc(task: "Task") -> dict[str, Any]:
    """The task as stored in a worker run, so a worker on another machine needs no task file."""
    return {"spec": task.spec.model_dump(mode="json"),
            "splits": {k: [e.to_dict() for e in v] for k, v in task.splits.items()}}


def task_from_doc(doc: Mapping[str, Any]) -> "Task":
    from promptlearn.task import Task, TaskSpec
    from promptlearn.types import Example, Turn

    def example(d: Mapping[str, Any]) -> Example:
        turns = tuple(Turn(t["user"], tuple(t.get("checks") or ()), t.get("given"), t.get("reference"),
                           t.get("meta") or {}) for t in d["turns"])
        return Example(d["id"], turns, tuple(d.get("checks") or ()), d.get("meta") or {})

    return Task(TaskSpec.model_validate(doc["spec"]), {k: [example(e) for e in v] for k, v in doc["splits"].items()})


def default_parallel(conc: int, workers: int) -> int:
    """Proposals in flight by default in a run of `workers` processes: enough to keep every worker's
    `concurrency` busy, capped like run.default_parallel (16)."""
    return min(16, workers * conc if conc > 1 else workers)


def require_db(url: str | None, workers: int) -> None:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise TaskError(f"--workers must be a whole number >= 1, not {workers!r}", field="--workers",
                        fix="e.g. --workers 4")
    if not is_db_url(url):
        raise StoreError("--workers needs a PostgreSQL store: add --store postgresql://user@host/db (workers share "
                         "a run through the database; a SQLite store is one process)")


class Crew:
    """The workers side of a worker run's decider: its cache misses go to the run's job pool, this process runs
    an executor too, and `workers - 1` more processes start here (promptlearn.workers)."""

    def __init__(self, backend: Any, url: str, run_id: str, file_task: "Task", task: "Task", workers: int | None):
        from promptlearn.store.jobs import JobTable

        self.jobs = JobTable(backend, run_id)
        self.url, self.run_id, self.file_task, self.task, self.workers = url, run_id, file_task, task, workers
        self.pool: Any = None
        self.procs: list[Any] = []
        self.started_executor = False

    def start(self, rs: Any, ledger: Any, new: bool) -> None:
        b = self.task.budget
        if new:
            rs.set_meta(TASK_DOC, task_doc(self.file_task))
        self.jobs.set_budget(b.max_calls, b.max_usd)  # at the start, and raised by --extend-budget
        self.pool = JobPool(self.jobs)
        ledger.transport = self.pool
        _, self.started_executor = ensure_executor(self.url, self.run_id, self.task)
        if self.workers and self.workers > 1:
            self.procs = spawn_workers(self.workers - 1, self.url, self.run_id)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
        if self.started_executor:
            stop_executor(self.url, self.run_id)
        wait_workers(self.procs)


# ---- the decider's side: a Transport whose "server" is the pool of workers ----------------------------------


class JobPool:
    """A Transport (promptlearn.lm): each request becomes a job of the run; the reply comes back when a worker has
    made the call. One watcher thread reads the replies of every request waiting whenever a job is announced done
    (at least every POLL seconds)."""

    concurrency = 4096  # the workers' own caps bound the calls in flight; the proposals in flight bound the jobs

    def __init__(self, jobs: "JobTable", poll: float = POLL):
        from promptlearn.store.jobs import Listener

        self.jobs, self.poll = jobs, poll
        self.listener = Listener(jobs.store, jobs.run_id)
        self.listener.listen()  # before the first look at the table, so no job that ends after it goes unheard
        self._waiting: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]]] = {}
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="promptlearn-jobs", daemon=True)
        self._thread.start()

    async def send(self, lm: LM, key: str, msgs: list[dict[str, str]], sample: int) -> Completion:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            self._waiting.setdefault(key, []).append((loop, fut))
        try:
            await asyncio.to_thread(self.jobs.submit, key, {"config": lm.config.model_dump(mode="json"),
                                                            "messages": msgs, "sample": sample})
            outcome = await fut
        finally:
            with self._lock:
                waiters = [w for w in self._waiting.get(key, []) if w[1] is not fut]
                if waiters:
                    self._waiting[key] = waiters
                else:
                    self._waiting.pop(key, None)
        if outcome.done:
            r = outcome.reply
            return Completion(r["text"], r.get("prompt_tokens", 0), r.get("completion_tokens", 0),
                              r.get("cached_prompt_tokens", 0), usd=r.get("usd", 0.0), retries=r.get("retries", 0),
                              seconds=r.get("seconds", 0.0))
        err = outcome.error or {}
        if err.get("kind") == "budget":
            raise BudgetExceeded(err["limit"], err["used"], err["max"])
        raise ModelError(err.get("message", "a worker's call failed"), bad_request=bool(err.get("bad_request")))

    def _watch(self) -> None:
        try:
            self._watch_jobs()
        finally:
            self.listener.close()

    def _watch_jobs(self) -> None:
        while not self._done.is_set():
            with self._lock:
                keys = list(self._waiting)
            if not keys:
                self.listener.wait("done", self.poll)
                continue
            try:
                outcomes = self.jobs.outcomes(keys)
            except StoreUnavailable as e:
                self._resolve_all(e)
                return
            for o in outcomes:
                with self._lock:
                    waiters = self._waiting.pop(o.key, [])
                for loop, fut in waiters:
                    loop.call_soon_threadsafe(_settle, fut, o, None)
            if len(outcomes) < len(keys):
                self.listener.wait("done", self.poll)

    def _resolve_all(self, error: BaseException) -> None:
        with self._lock:
            waiting, self._waiting = self._waiting, {}
        for waiters in waiting.values():
            for loop, fut in waiters:
                loop.call_soon_threadsafe(_settle, fut, None, error)

    def close(self) -> None:
        """Stop watching and drop the jobs nobody claimed (a next decider asks again what it needs)."""
        self._done.set()
        self._thread.join(timeout=5)
        try:
            self.jobs.drop_pending()
        except StoreError:
            pass  # the database is away: pending jobs wait for the next decider, which reuses them


def _settle(fut: asyncio.Future[Any], outcome: Any, error: BaseException | None) -> None:
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(outcome)


# ---- every worker's side: claim, call, record ---------------------------------------------------------------


class Executor:
    """Claims the run's jobs and makes their calls, at most `concurrency` at once, on a thread of its own with its
    own event loop; a heartbeat renews the lease of the jobs it holds. Its store is its own (one pool)."""

    def __init__(self, url: str, run_id: str, concurrency: int, *, lease: float | None = None,
                 poll: float = POLL):
        from promptlearn.store.jobs import JobTable, Listener
        from promptlearn.store.postgres import PostgresStore

        self.store: PostgresStore = PostgresStore(url)
        self.jobs: JobTable = JobTable(self.store, run_id)
        self.listener = Listener(self.store, run_id)
        self._waiter: asyncio.Future[bool] | None = None
        self.run_id, self.concurrency, self.poll = run_id, max(1, concurrency), poll
        self.lease = lease if lease is not None else LEASE_SECONDS
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.calls = 0  # model calls this executor made (charged to the run's budget)
        self.error: str | None = None  # why it stopped early (the database went away)
        self._lms: dict[str, LM] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="promptlearn-executor", daemon=True)
        self._beat = threading.Thread(target=self._heartbeat, name="promptlearn-executor-lease", daemon=True)

    def start(self) -> "Executor":
        self._thread.start()
        self._beat.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in (self._thread, self._beat):
            if t.is_alive():
                t.join(timeout=10)
        self.store.close()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.lease / 3):
            try:
                self.jobs.renew(self.owner, self.lease)
            except StoreError:
                continue  # away for now: the claims lapse, another worker retakes them, nothing is lost

    def _main(self) -> None:
        from promptlearn.lm import litellm

        litellm()  # seconds of import before the first claim, not while holding claimed jobs
        self.listener.listen()
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve())
        except StoreError as e:
            self.error = str(e)
        finally:
            http = sys.modules.get("promptlearn.openai_http")
            if http is not None:
                loop.run_until_complete(http.close_sessions())
            loop.close()

    async def _serve(self) -> None:
        running: set[asyncio.Task[None]] = set()
        try:
            while not self._stop.is_set():
                free = self.concurrency - len(running)
                jobs = await asyncio.to_thread(self.jobs.claim, self.owner, free, self.lease) if free > 0 else []
                for job in jobs:
                    t = asyncio.ensure_future(self._run(job))
                    running.add(t)
                    t.add_done_callback(running.discard)
                if not jobs:
                    if running and free <= 0:
                        await asyncio.wait(running, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                    else:  # until a job is announced (or POLL); a call finishing here frees a slot too
                        await self._idle(running)
        finally:
            for t in running:
                t.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            if self._waiter is not None:  # its thread is inside listener.wait: let it end (POLL at most) first
                await asyncio.wait({self._waiter})
            self.listener.close()

    async def _idle(self, running: set[asyncio.Task[None]]) -> None:
        """Wait for a NOTIFY of a new job, at most POLL seconds, and less when a running call ends first (the
        listener's thread finishes its wait on its own; the next one waits for it)."""
        if self._waiter is not None and self._waiter.done():
            # it ended while the last claim ran: that claim may have been too early for the job announced
            self._waiter = None
            return
        if self._waiter is None:
            self._waiter = asyncio.ensure_future(asyncio.to_thread(self.listener.wait, "new", self.poll))
        pending: set[asyncio.Future[Any]] = {self._waiter, *running}
        await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if self._waiter.done():  # heard (or timed out) here: the claim that follows is its answer
            self._waiter = None

    def _lm(self, config: Mapping[str, Any]) -> LM:
        import json

        key = json.dumps(config, sort_keys=True)
        if key not in self._lms:
            from promptlearn.task import ModelConfig

            self._lms[key] = LM(ModelConfig.model_validate(config), cache=None, ledger=Ledger())
        return self._lms[key]

    async def _run(self, job: "Job") -> None:
        req = job.request
        lm = self._lm(req["config"])
        refused = await asyncio.to_thread(self.jobs.charge)
        if refused is not None:
            await asyncio.to_thread(self.jobs.fail, self.owner, job, {"kind": "budget", **refused})
            return
        self.calls += 1
        try:
            c = await lm.call_model(list(req["messages"]), lm.params(), int(req.get("sample", 0)))
        except ModelError as e:
            await asyncio.to_thread(self.jobs.fail, self.owner, job, {"kind": "model", "message": str(e),
                                                                      "bad_request": e.bad_request})
            return
        except Exception as e:  # noqa: BLE001 - e.g. a missing key (TaskError) on this machine: the decider says it
            await asyncio.to_thread(self.jobs.fail, self.owner, job, {"kind": "model", "message": str(e)})
            return
        reply = {"text": c.text, "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
                 "cached_prompt_tokens": c.cached_prompt_tokens, "usd": c.usd, "retries": c.retries,
                 "seconds": c.seconds}
        await asyncio.to_thread(self.jobs.finish, self.owner, job, lm.name, reply, c.usd)


_executors: dict[tuple[str, str], Executor] = {}
_executors_lock = threading.Lock()


def ensure_executor(url: str, run_id: str, task: "Task") -> tuple[Executor, bool]:
    """This process's executor for the run (one per process and run), and whether this call started it."""
    with _executors_lock:
        ex = _executors.get((url, run_id))
        if ex is not None and ex._thread.is_alive():
            return ex, False
        ex = Executor(url, run_id, task.model.max_concurrency).start()
        _executors[(url, run_id)] = ex
        return ex, True


def stop_executor(url: str, run_id: str) -> None:
    with _executors_lock:
        ex = _executors.pop((url, run_id), None)
    if ex is not None:
        ex.stop()


def spawn_workers(n: int, url: str, run_id: str) -> list[subprocess.Popen[bytes]]:
    """n more worker processes on this machine (`promptlearn worker RUN_ID`); the URL goes by environment."""
    env = {**os.environ, STORE_ENV: url}
    return [subprocess.Popen([sys.executable, "-m", "promptlearn.cli", "worker", run_id, "--quiet"], env=env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL) for _ in range(n)]


def wait_workers(procs: list[subprocess.Popen[bytes]], timeout: float = 30.0) -> None:
    """The spawned workers leave once the run has ended (they read its status); any still there are stopped."""
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.terminate()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
