"""What an optimizer may use of a run: the `OptimizerContext` Protocol, and the values it passes.

An optimizer is written against this Protocol only (the engine's RunContext implements it), so a plugin keeps
working when the engine changes: it never sees the evaluator, the run store, the ledger or litellm.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence

if TYPE_CHECKING:
    from promptlearn.engine import Evaluation
    from promptlearn.lm import Completion
    from promptlearn.loop import Verdict
    from promptlearn.task import Task
    from promptlearn.types import Candidate, Example, ExampleResult


@dataclass(frozen=True)
class Proposal:
    """One prompt an optimizer hands the engine: its text, the candidates it came from, how it was made."""

    prompt: str
    parents: tuple[str, ...] = ()  #: candidate ids; the first is the one it is screened against
    operator: str = "custom"  #: the operator's name, kept in the lineage
    meta: Mapping[str, Any] = field(default_factory=dict)  #: e.g. optuna's params, or {"guidance": g}


@dataclass(frozen=True)
class Request:
    """One proposer request: chat messages and a sample number (another number: another sample of the same
    request when the proposer samples; a greedy proposer gives one reply whatever the number)."""

    messages: Sequence[Mapping[str, str]]
    sample: int = 0


@dataclass(frozen=True)
class BudgetView:
    """The run's budget as it stands, read-only: limits (None: no limit) and what the run has spent."""

    max_calls: int | None  #: the search's share of max_calls (the test reserve is held back)
    calls: int  #: requests made so far, cache hits and replayed results included (what max_calls counts)
    max_tokens: int | None
    tokens: int
    max_usd: float | None
    usd: float
    max_seconds: float | None
    seconds: float

    @property
    def calls_left(self) -> int | None:
        return None if self.max_calls is None else max(0, self.max_calls - self.calls)


class OptimizerContext(Protocol):
    """The run as an optimizer sees it. The engine decides; the optimizer only proposes.

    Contract (what a built-in or a plugin may rely on, and must keep to):
    - **Proposals.** `propose` and `propose_many` are the only way a prompt enters the run. The engine rejects a
      prompt that loses a protected clause or placeholder (no call made), screens it on a train minibatch
      against its first parent (or the best), promotes it to the full val split, and accepts it as the new best
      only by a paired bootstrap on val. `propose_many` puts up to `parallel` proposals in flight at once and
      returns one Verdict per proposal, in proposal order. Its decisions are applied in proposal order once the
      batch is back, never in completion order: `propose_many([a, b])` judges `b` after `a` (against the best
      that `a` may have just replaced) as `propose(a)` then `propose(b)` would, except that `b` was dispatched
      (its default parent, its screening minibatch) before `a`'s results were in. `propose_many([a])` is
      `propose(a)`. `max_candidates` is honoured exactly; patience and the stop file are checked between
      batches, so a batch already in flight is finished and decided first.
    - **Models.** Never call a model except through the context: `evaluate`, the proposals, `generate` /
      `generate_many` (the proposer, counted under 'proposer'), `complete`, `score_replies` and `check_stop`
      (for an optimizer that wraps another framework's loop). Every call is cached, stored for resume and counted in
      the one budget.
    - **Determinism.** Draw every random choice from `rng`, and make choices only from what the context
      returned (scores, verdicts, failures): the same seed and cache then give the same lineage, a resumed run
      replays it, and `parallel` only changes what is in flight, never the timing-dependent order of anything.
    - **Stopping.** Let StopRun and BudgetExceeded propagate (the engine catches them, scores seed and best on
      test and finishes the run); return when there is nothing more to try. ModelError ends the run, resumably.
    - **Threads.** One thread: call the context from the thread that called `run`. Concurrency is the engine's
      job (`propose_many`, `generate_many`), inside its budget.
    - **Read-only.** `task`, `train`, `val`, `pool`, `best`, `budget` and the evaluations are the engine's:
      read them, never change them.
    """

    task: Task  #: the task (model, checks, protected clauses, placeholders); read-only
    seed: int  #: the run's seed
    rng: random.Random  #: the run's one random source
    train: list[Example]  #: the train split (screening minibatches come from it)
    val: list[Example]  #: the val split (promotion and acceptance are judged on it)
    seed_candidate: Candidate  #: the task's own prompt
    best_id: str  #: the accepted best so far (the seed until something beats it)

    @property
    def minibatch_size(self) -> int:
        """How many train examples a proposal is screened on (`optimizer.minibatch`, at most the train split):
        a screening costs about twice that in calls (the proposal and its parent)."""
        ...

    def minibatch(self, parent_id: str) -> list[Example]:
        """The train examples a child of `parent_id` would be screened on: half the parent's known failures,
        half at random (draws from `rng`)."""
        ...

    @property
    def parallel(self) -> int:
        """How many proposals the engine wants in flight at once (`optimizer.parallel`): what to pass to
        propose_many. 1 means a serial search."""
        ...

    @property
    def best(self) -> tuple[Candidate, Evaluation]:
        """The best candidate and its val evaluation."""
        ...

    @property
    def pool(self) -> list[Candidate]:
        """Candidates scored on the full val split, in the order they were promoted (the seed first)."""
        ...

    @property
    def budget(self) -> BudgetView:
        """What the run may still spend; a fresh read-only view on every access."""
        ...

    def val_eval(self, cand_id: str) -> Evaluation:
        """A pool candidate's val evaluation (per-example results and scores)."""
        ...

    def evaluate(self, prompt: str, examples: Sequence[Example] | str, *, tag: str | None = None,
                 model_overrides: Mapping[str, Any] | None = None) -> Evaluation:
        """Score a prompt on examples (or a split name); stored results are replayed. Raises BudgetExceeded when
        the budget stops it partway."""
        ...

    def propose(self, prompt: str, parents: Sequence[str], operator: str,
                meta: Mapping[str, Any] | None = None) -> Verdict:
        """Screen, promote and maybe accept one prompt."""
        ...

    def propose_many(self, proposals: Sequence[Proposal]) -> list[Verdict]:
        """Several proposals in flight at once; one Verdict each, decided in proposal order."""
        ...

    def generate(self, messages: Sequence[Mapping[str, str]], *, sample: int = 0) -> str | None:
        """One proposer call; None when the provider refuses this one request (e.g. too long)."""
        ...

    def generate_many(self, requests: Sequence[Request | None]) -> list[str | None]:
        """Proposer calls in flight at once, one reply (or None) per request in order; a None request gets None.
        The budget is taken in request order: when it runs out, the earlier requests are answered and then
        BudgetExceeded is raised, as the same calls one by one would."""
        ...

    def complete(self, messages: Sequence[Mapping[str, str]], *, model: str = "proposer", sample: int = 0,
                 temperature: float | None = None, tag: str | None = None) -> Completion:
        """One stored call to the task's 'proposer' or 'target' model, with its token counts; raises ModelError
        on a fault that never healed. For optimizers that drive another framework (dspy); others use generate."""
        ...

    def score_replies(self, prompt: str, example: Example, replies: Sequence[str]) -> ExampleResult:
        """Score replies made elsewhere exactly as evaluate scores its own (same checks, history and judge)."""
        ...

    def failures(self, cand_id: str, k: int = 4) -> list[tuple[Example, ExampleResult]]:
        """Up to k train examples this candidate failed, with replies and the checks' feedback."""
        ...

    def passing(self, k: int = 3) -> list[tuple[Example, str]]:
        """Up to k single-turn train conversations some candidate answered perfectly (material for demos)."""
        ...

    def check_stop(self) -> None:
        """Raise StopRun or BudgetExceeded now if the run must end (stop file, patience, candidate cap, budget):
        for an optimizer that drives another framework's loop between its own calls to the context."""
        ...

    def log(self, kind: str, data: Mapping[str, Any]) -> None:
        """Keep an event in the run's record (e.g. what a wrapped framework did); never read back by the engine."""
        ...
