"""`promptlearn worker --store URL RUN_ID`: one process's life as a worker of a run (promptlearn.workers), deciding
when the run's decider is gone. Apart from promptlearn.workers because it drives promptlearn.run, which uses that."""

from __future__ import annotations

import time
from typing import Any

from promptlearn.errors import RunError
from promptlearn.store.base import LockHolder, RunLocked, StoreError
from promptlearn.store.url import is_db_url, mask_url
from promptlearn.workers import ENDED, TASK_DOC, ensure_executor, stop_executor, task_from_doc


def run_worker(url: str, run: str, *, say: Any = None, poll: float = 1.0) -> str:
    """`promptlearn worker --store URL RUN_ID`: make this process a worker of the run until it ends, deciding
    when the run's decider is gone. Returns the run's final status. Bad input is a RunError/StoreError at once."""
    from promptlearn.run import optimize
    from promptlearn.store.jobs import JobTable
    from promptlearn.store.postgres import PostgresStore

    if not is_db_url(url):
        raise StoreError("promptlearn worker needs a PostgreSQL store: --store postgresql://user@host/db")
    store = PostgresStore(url)
    run_id = None
    try:
        run_id = store.resolve(run)
        rs = store.open_run(run_id)
        config, doc = rs.get_meta("config"), rs.get_meta(TASK_DOC)
        if not config or not config.get("workers") or doc is None:
            raise RunError(f"run {run_id} in {store.url} was not started with --workers; continue it with "
                           f"promptlearn optimize TASK --resume {run_id} --store URL")
        status = rs.get_meta("status")
        if status in ENDED:
            raise RunError(f"run {run_id} in {store.url} is {status}; there is nothing to join (see promptlearn "
                           f"show {run_id} --store URL)")
        task = task_from_doc(doc)
        ensure_executor(url, run_id, task)
        if say:
            say(f"worker {LockHolder.me()} joined run {run_id} in {mask_url(url)}")
        jobs, me = JobTable(store, run_id), LockHolder.me()
        while True:
            status = rs.get_meta("status")
            if status in ENDED:
                return str(status)
            if jobs.may_decide(me):
                try:
                    optimize(task, resume=run_id, store=url, runs_root="runs")
                except RunLocked:
                    pass  # another worker took it first
                else:
                    return str(rs.get_meta("status"))
            time.sleep(poll)
    finally:
        if run_id is not None:
            stop_executor(url, run_id)
        store.close()
