"""`promptlearn worker --store URL RUN_ID`: join a worker run from any machine (promptlearn.workers)."""

from __future__ import annotations

import sys
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("worker")(worker_cmd)


def worker_cmd(
    run: str = typer.Argument(..., help="the run to join: its id, a unique prefix of it, or latest"),
    store: Optional[str] = typer.Option(None, "--store", envvar="PROMPTLEARN_STORE", show_envvar=True,
                                        help="the run's postgresql://user@host/db"),
    quiet: bool = typer.Option(False, "--quiet", help="print nothing but errors"),
) -> None:
    """Work on a run started with `optimize --workers`: make its model calls, and take it over when the process
    deciding it is gone. Leaves when the run has ended."""
    from promptlearn.store.base import StoreError
    from promptlearn.worker_loop import run_worker

    if not store:
        raise StoreError("promptlearn worker needs the run's store: --store postgresql://user@host/db")

    def say(line: str) -> None:
        if not quiet:
            print(line, file=sys.stderr, flush=True)

    status = run_worker(store, run, say=say)
    say(f"run {run} is {status}; worker leaves")
