"""Stoppers: things outside the search that can end it cleanly (the run stays resumable).

The loop asks each one before every proposal and proposer call (RunContext.check_stop) next to its own rules
(patience, candidate cap, budget). Modelled on gepa's stop conditions (utils/stop_condition.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from promptlearn.store.base import RunStore

#: The meta key `promptlearn stop` sets: every process on the run sees it, on any machine.
STOP_REQUESTED = "stop_requested"


class Stopper(Protocol):
    """Returns why the run should stop now, or None to go on. Called often: cheap, and never raises for a
    condition it cannot check (a stopper that cannot tell says None)."""

    def __call__(self) -> str | None:
        ...


class StopFile:
    """A file named STOP in the run's folder (`touch runs/<id>/STOP`): the one-machine way to stop a run."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __call__(self) -> str | None:
        return "stop file" if self.path.exists() else None


class StoreStopFlag:
    """`promptlearn stop RUN` (or any process) set the run's stop flag in the store: seen from every machine."""

    def __init__(self, store: "RunStore"):
        self.store = store

    def __call__(self) -> str | None:
        flag = self.store.get_meta(STOP_REQUESTED)
        return f"stop requested ({flag})" if flag else None
