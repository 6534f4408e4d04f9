"""Budget for proposals in flight: every stage of every proposal is granted its calls in proposal order.

Why: with several proposals scoring at once, whichever request came first would otherwise get the last calls of
the budget, and the run's end (which proposals finished, what was accepted) would depend on timing. Here the
stages of a batch (proposal 1's screen, its val, proposal 2's screen, ...: the order a serial run makes them in)
are granted their most possible requests (Evaluator.max_requests) as soon as the budget covers them and every
earlier stage still to come at its most; otherwise a stage waits until every earlier one is over and then gets
exactly what is left, as in a serial run. So a stage is granted in full exactly when a serial run would have had
the calls for it, and the one stage a budget stop cuts short is the one a serial run would cut.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Sequence

from promptlearn.lm import Ledger

FUTURE, GRANTED, DONE = "future", "granted", "done"


@dataclass(eq=False)
class Stage:
    """One step of one proposal that makes model requests (its screen, its val)."""

    most: int  #: the most requests it can make
    state: str = FUTURE


@dataclass
class InOrderGrants:
    """Grants the stages registered with `add`, in the order added, from one ledger (see the module doc)."""

    ledger: Ledger
    stages: list[Stage] = field(default_factory=list)
    _waiters: list[asyncio.Future[None]] = field(default_factory=list)

    def add(self, most: int) -> Stage:
        stage = Stage(most)
        self.stages.append(stage)
        return stage

    def skip(self, *stages: Stage) -> None:
        """These stages will not run (screened out, or the proposal stopped): later ones stop counting them."""
        for s in stages:
            s.state = DONE
        self._wake()

    @asynccontextmanager
    async def stage(self, stage: Stage) -> AsyncIterator[None]:
        """Run a stage within its grant: waits for it, makes it the grant its requests draw on, gives back the
        rest afterwards."""
        size = await self._granted(stage)
        grant = self.ledger.open_grant(size) if size is not None else None
        stage.state = GRANTED
        token = Ledger.use_grant(grant)
        try:
            yield
        finally:
            Ledger.reset_grant(token)
            if grant is not None:
                self.ledger.close_grant(grant)
            self.skip(stage)

    async def _granted(self, stage: Stage) -> int | None:
        """How many requests the stage gets, once it may start; None when there is no max_calls."""
        while True:
            free = self.ledger.free_calls()
            if free is None:
                return None
            earlier = self.stages[: self.stages.index(stage)]
            ahead = sum(s.most for s in earlier if s.state == FUTURE)
            if free - ahead >= stage.most:
                return stage.most
            if all(s.state == DONE for s in earlier):
                return free
            await self._wait()

    async def _wait(self) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        await fut

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for f in waiters:
            if not f.done():
                f.set_result(None)


async def gather_or_cancel(aws: Sequence[Awaitable[Any]]) -> list[Any]:
    """asyncio.gather, but the first exception cancels the rest (and waits for them) before it propagates, so
    nothing keeps running on the loop after a stop, a fault or Ctrl-C."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return list(await asyncio.gather(*tasks))
    except (Exception, asyncio.CancelledError):  # not GeneratorExit: a coroutine closed after its loop is gone
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
