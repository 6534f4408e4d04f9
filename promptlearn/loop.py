"""The optimization loop: the engine owns budget, cache, ledger, lineage and stopping; optimizers only propose.

A proposal is (1) rejected before any call if it drops a protected clause or placeholder, (2) screened on a
train minibatch against its parent on the same examples, (3) promoted to the full val split, and (4) accepted
as the new best only by a paired bootstrap over val examples, with the task's side-effect constraints holding.
The test split is scored once at the end, for the seed and the best candidates, and only ever reported.
"""

from __future__ import annotations

import json
import math
import random
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any, AsyncIterator, Callable, Mapping, Sequence

from promptlearn.context import BudgetView, Proposal, Request
from promptlearn.engine import Evaluation, Evaluator
from promptlearn.errors import BudgetExceeded, ModelError
from promptlearn.inflight import InOrderGrants, Stage, gather_or_cancel
from promptlearn.lm import LM, Completion
from promptlearn.metrics import side_effects, violated
from promptlearn.store import RunStore
from promptlearn.targets import MultiEvaluation, decide
from promptlearn.task import Task
from promptlearn.types import Candidate, Example, ExampleResult, Usage

# Proposals in a row that made no model request (so scored nothing new): no budget can stop such a loop, so the
# engine does. Above every built-in optimizer's own give-up count (evolve 60, optuna 40, mutate 30).
IDLE_PROPOSALS = 100
# With `race`, val examples the best already passes are scored this many at a time (the parallel search keeps a
# remote model busy with several proposals' steps at once)
RACE_STEP = 4
# With `race_halves`, the fewest val examples the best must miss before a proposal is first scored on half of them
HALVE_FROM = 8


@dataclass(frozen=True)
class Verdict:
    """What happened to one proposal."""

    id: str
    status: str  # rejected | duplicate | screened_out | promoted | accepted
    val: float | None = None
    reason: str = ""

    @property
    def accepted(self) -> bool:
        return self.status == "accepted"


@dataclass
class Options:
    minibatch: int = 8
    confidence: float = 0.8
    bootstrap: int = 2000
    patience: int = 0  # stop after this many proposals with no new best (0: never)
    max_candidates: int | None = None
    test_front: int = 2  # extra Pareto-front candidates scored on test besides seed and best
    parallel: int | None = None  # proposals in flight at once (None: run.default_parallel picks)
    screen_loose: bool = True  # a strict tie on the minibatch is broken by the loose score (see `beats`)
    #: a near miss (better on val, paired confidence under the bar) is judged again on up to this many more
    #: examples: train examples it was not screened on and no prompt quotes, val and them together (0: off)
    confirm: int = 0
    #: race a proposal that passed its screen on val: score it first on the examples the best prompt misses, then
    #: on the rest RACE_STEP at a time, and drop it once even perfect replies on the rest could not make it the new
    #: best (the acceptance rule's own bounds), so a loser costs a few calls instead of the whole split (evolve
    #: turns it on: Optimizer.loop_defaults)
    race: bool = False
    #: race the screen too: score the parent on the minibatch first, then the proposal on the examples where the
    #: parent falls short (the only ones a gain can come from), then on the rest RACE_STEP at a time, and stop
    #: once even perfect replies on the rest could not beat the parent there (`screen_out_of_reach`): the same
    #: verdict as scoring all of it, and a proposal that gains nothing where its parent fails costs half a batch
    screen_race: bool = False
    #: with `race`, where the best misses at least HALVE_FROM val examples (near a floor, where the exact bounds
    #: cannot stop anything before the end), score the proposal on a random half of them first and drop it when
    #: it gains nothing there. Unlike the exact bounds this can drop a proposal the whole split would accept
    race_halves: bool = False


class StopRun(Exception):
    """Raised inside the loop to end the search early (stop file, patience, candidate cap)."""


@dataclass(eq=False)
class _Slot:
    """One proposal on its way through the engine: made at dispatch, scored in flight, decided in order."""

    cand: Candidate
    number: int = 0  # the proposal count once this one was counted: seeds its bootstrap
    early: Verdict | None = None  # rejected or duplicate: decided without a call
    parent: Candidate | None = None
    batch: list[Example] = field(default_factory=list)
    mine: Evaluation | None = None  # screen: the proposal on the minibatch (with screen_race, maybe part of it)
    theirs: Evaluation | None = None  # screen: its parent on the same minibatch
    screened: str | None = None  # why the screen stopped it (None: it goes on to val)
    val: Evaluation | None = None
    raced: str | None = None  # why the race on val dropped it (then `val` holds only the examples it was run on)
    stop: BudgetExceeded | None = None  # the budget stop that cut it short
    stages: list[Stage] = field(default_factory=list)


class RunContext:
    """The engine's side of a run; optimizers see it as a promptlearn.context.OptimizerContext (its contract is
    written there). Proposals go dispatch -> screen -> promote -> accept; with several in flight the scoring
    runs concurrently and every decision is applied in proposal order afterwards (propose_many)."""

    def __init__(self, task: Task, evaluator: Evaluator, store: RunStore, *, seed: int, options: Options,
                 on_progress: Callable[["RunContext"], None] | None = None):
        self.task = task
        self.evaluator = evaluator
        self.store = store
        self.seed = seed
        self.rng = random.Random(seed)
        self.options = options
        self.train: list[Example] = task.examples("train")
        self.val: list[Example] = task.examples("val")
        self.proposer = LM(task.proposer, cache=evaluator.cache, ledger=evaluator.ledger)
        self._lms: dict[tuple[str, float | None], LM] = {}
        self.on_progress = on_progress
        self.seed_candidate = Candidate(task.prompt, (), "seed")
        self.val_evals: dict[str, Evaluation] = {}
        self.candidates: dict[str, Candidate] = {}
        self.best_id = self.seed_candidate.id
        self.proposals = 0
        self.since_best = 0
        self.started = time.monotonic()
        self.stop_reason: str | None = None
        self.idle, self._requests_seen = 0, -1  # costless proposals in a row; requests counted at the last one
        self._replayed: set[str] = set()
        # Results this process has seen, in order. Choices depend on these, never on the whole store, so a
        # resumed run (whose store already holds "future" results) replays exactly the same decisions.
        self.seen: dict[str, dict[str, ExampleResult]] = {}
        self.stoppers: list[Callable[[], str | None]] = []  # promptlearn.stoppers: STOP file, store flag, lock
        self.publish: Callable[[str | None], None] = lambda prompt: None  # writes the user-facing files (store.files)

    # ---- evaluation -------------------------------------------------------------------------------------
    def evaluate(self, prompt: str, examples: Sequence[Example] | str, *, tag: str | None = None,
                 model_overrides: Mapping[str, Any] | None = None) -> Evaluation:
        """Evaluate a prompt on examples (or a split name). Stored results are replayed, never recomputed.
        `model_overrides`: a candidate's decoding options (Candidate.model_overrides, e.g. guidance)."""
        return self.evaluator.run(self.aevaluate(prompt, examples, tag=tag, model_overrides=model_overrides))

    async def aevaluate(self, prompt: str, examples: Sequence[Example] | str, *, tag: str | None = None,
                        model_overrides: Mapping[str, Any] | None = None) -> Evaluation:
        exs = self.task.examples(examples) if isinstance(examples, str) else list(examples)
        split = examples if isinstance(examples, str) else "custom"
        ev = await self.evaluator.aevaluate(prompt, exs, split=split, tag=tag, model_overrides=model_overrides)
        self.seen.setdefault(ev.candidate_id, {}).update(ev.results)
        if not ev.complete:
            raise ev.stop or BudgetExceeded("budget", 0, 0)
        return ev

    def score_replies(self, prompt: str, example: Example, replies: Sequence[str]) -> ExampleResult:
        return self.evaluator.score_replies(prompt, example, replies)

    def val_eval(self, cand_id: str) -> Evaluation:
        return self.val_evals[cand_id]

    @property
    def best(self) -> tuple[Candidate, Evaluation]:
        return self.candidates[self.best_id], self.val_evals[self.best_id]

    @property
    def pool(self) -> list[Candidate]:
        """Candidates scored on the full val split, in the order they were promoted."""
        return [self.candidates[c] for c in self.val_evals]

    @property
    def parallel(self) -> int:
        return max(1, self.options.parallel or 1)

    @property
    def budget(self) -> BudgetView:
        b, u = self.evaluator.ledger.budget, self.evaluator.ledger.snapshot()
        return BudgetView(b.max_calls, u.requests, b.max_tokens, u.tokens, b.max_usd, u.usd, b.max_seconds, u.seconds)

    def log(self, kind: str, data: Mapping[str, Any]) -> None:
        self.store.log_event(kind, data)

    # ---- proposals --------------------------------------------------------------------------------------
    def start(self) -> None:
        self.record(self.seed_candidate, "seed")
        ev = self.evaluate(self.task.prompt, self.val, tag="seed")
        self._promote(self.seed_candidate, ev)
        self.store.set_meta("seed", self.seed_candidate.id)
        self.store.set_meta("best", self.best_id)
        self._count_idle()
        self._progress("seed", self.seed_candidate.id)

    def record(self, cand: Candidate, status: str) -> None:
        self.candidates.setdefault(cand.id, cand)
        if not self.store.add_candidate(cand, status):
            self.store.set_status(cand.id, status) if status != "proposed" else None

    def propose(self, prompt: str, parents: Sequence[str], operator: str,
                meta: Mapping[str, Any] | None = None) -> Verdict:
        """Screen, promote and maybe accept a new prompt. The engine decides; the optimizer only proposes."""
        return self.propose_many([Proposal(prompt, tuple(parents), operator, dict(meta or {}))])[0]

    def propose_many(self, proposals: Sequence[Proposal]) -> list[Verdict]:
        """Dispatch every proposal (in order), score them all at once, then decide each in proposal order."""
        self.check_stop()
        cap = self.options.max_candidates
        slots: list[_Slot] = []
        for p in proposals:
            if cap is not None and self.proposals >= cap and slots:
                break  # the cap stops the run once the ones before it are decided (check_stop, next call)
            slots.append(self._dispatch(p))
        live = [s for s in slots if s.early is None]
        if len(live) == 1:  # exactly the serial path: no grants, one proposal on the loop
            self.evaluator.run(self._score(live[0], None))
        elif live:
            grants = InOrderGrants(self.evaluator.ledger)
            for s in live:
                s.stages = ([grants.add(2 * self.evaluator.max_requests(s.batch))] if s.batch else []) + [
                    grants.add(self.evaluator.max_requests(self.val))]
            self.evaluator.run(gather_or_cancel([self._score(s, grants) for s in live]))
        verdicts = []
        for i, s in enumerate(slots):
            verdicts.append(self._decide(s, None if i == 0 else s.early is None))
        if len(slots) < len(proposals):
            self.check_stop()
        return verdicts

    def _dispatch(self, p: Proposal) -> _Slot:
        """Count and record a proposal, or turn it away (duplicate, lost a protected clause); pick its minibatch."""
        cand = Candidate(p.prompt, tuple(p.parents), p.operator, dict(p.meta or {}))
        if cand.id in self.candidates:
            return _Slot(cand, early=Verdict(cand.id, "duplicate"))
        self.proposals += 1
        missing = self.task.violations(p.prompt)
        if missing or not p.prompt.strip():
            self.record(cand, "rejected")
            return _Slot(cand, self.proposals, Verdict(cand.id, "rejected", reason="lost " + ", ".join(missing)
                                                       if missing else "empty prompt"))
        self.record(cand, "proposed")
        parent_id = p.parents[0] if p.parents and p.parents[0] in self.candidates else self.best_id
        return _Slot(cand, self.proposals, parent=self.candidates[parent_id], batch=self.minibatch(parent_id))

    async def _score(self, s: _Slot, grants: InOrderGrants | None) -> None:
        """A proposal's evaluations: screen (the proposal, then its parent, on the minibatch), then val if the
        screen passed. A budget stop is kept on the slot and acted on when its turn to be decided comes."""
        cand, parent = s.cand, s.parent
        assert parent is not None
        try:
            if s.batch:
                async with _stage(grants, s.stages[0] if s.stages else None):
                    if self.options.screen_race:
                        await self._ascreen_raced(s)
                    else:
                        s.mine = await self.aevaluate(cand.prompt, s.batch, tag=cand.operator,
                                                      model_overrides=cand.model_overrides)
                        s.theirs = await self.aevaluate(parent.prompt, s.batch, tag="screen-parent",
                                                        model_overrides=parent.model_overrides)
                        s.screened = screen(s.mine, s.theirs, self.options.screen_loose)
                if s.screened is not None:
                    return
            async with _stage(grants, s.stages[-1] if s.stages else None):
                s.val = await self._aval(s)
        except BudgetExceeded as e:
            s.stop = e
        finally:
            if grants is not None:
                grants.skip(*s.stages)

    async def _ascreen_raced(self, s: _Slot) -> None:
        """The screen with `screen_race`: the parent on the whole minibatch, then the proposal where the parent
        scores under 1 (strict or loose), then on the rest RACE_STEP at a time while it can still beat the parent.
        Sets s.mine (the examples it was scored on), s.theirs and s.screened."""
        cand, parent = s.cand, s.parent
        assert parent is not None
        s.theirs = await self.aevaluate(parent.prompt, s.batch, tag="screen-parent",
                                        model_overrides=parent.model_overrides)
        theirs = s.theirs.results
        head = [e for e in s.batch if theirs[e.id].score < 1 or theirs[e.id].loose_score < 1]
        tail = [e for e in s.batch if e not in head]
        results: dict[str, ExampleResult] = {}
        for part in [head] + [tail[i:i + RACE_STEP] for i in range(0, len(tail), RACE_STEP)]:
            if part:
                more = await self.aevaluate(cand.prompt, part, tag=cand.operator,
                                            model_overrides=cand.model_overrides)
                results.update(more.results)
                s.mine = replace(more, results={e.id: results[e.id] for e in s.batch if e.id in results})
            if len(results) < len(s.batch) and (why := screen_out_of_reach(
                    results, s.theirs, self.options.screen_loose)) is not None:
                s.screened = why
                return
        assert s.mine is not None
        s.screened = screen(s.mine, s.theirs, self.options.screen_loose)

    async def _aval(self, s: _Slot) -> Evaluation:
        """The proposal on val; with `race`, first on the examples the best prompt scores under 1 (where a gain can
        come from), then on the rest a few at a time, as long as it can still be accepted (s.raced says why not)."""
        cand = s.cand
        best_ev = self.val_evals[self.best_id]
        head = [e for e in self.val if e.id in best_ev.results and best_ev.results[e.id].score < 1]
        tail = [e for e in self.val if e not in head]
        # a task with `targets` (even one) is judged by promptlearn.targets.decide, whose bounds are not these
        if not self.options.race or not head or not tail or self.task.spec.targets:
            return await self.aevaluate(cand.prompt, self.val, tag=cand.operator, model_overrides=cand.model_overrides)
        parts = [head]
        if self.options.race_halves and len(head) >= HALVE_FROM:
            first = set(random.Random(self.seed + s.number).sample([e.id for e in head], len(head) // 2))
            parts = [[e for e in head if e.id in first], [e for e in head if e.id not in first]]
        results: dict[str, ExampleResult] = {}
        ev: Evaluation | None = None
        for k, part in enumerate(parts + [tail[i:i + RACE_STEP] for i in range(0, len(tail), RACE_STEP)]):
            more = await self.aevaluate(cand.prompt, part, tag=cand.operator, model_overrides=cand.model_overrides)
            results.update(more.results)
            ev = replace(more, results={e.id: results[e.id] for e in self.val if e.id in results},
                         usage=more.usage if ev is None else ev.usage + more.usage)
            if k == 0 and len(parts) == 2 and math.fsum(
                    results[e.id].score - best_ev.results[e.id].score for e in part) <= 1e-9:
                s.raced = f"no gain on a random {len(part)} of the {len(head)} val examples the best misses"
                break
            if len(results) < len(self.val) and (why := self._out_of_reach(ev, best_ev, s.number)) is not None:
                s.raced = why
                break
        assert ev is not None
        return ev

    def _out_of_reach(self, part: Evaluation, best_ev: Evaluation, number: int) -> str | None:
        """Why a proposal scored on part of val cannot be accepted whatever it scores on the rest, or None.

        Each bound is one `_accept` applies, taken at its best case: every unscored example scored 1 (a diff of
        1 - best there) gives the highest mean and, with the same bootstrap draws (same seed, same val order),
        the highest paired confidence; examples broken against the seed only grow in number."""
        seed_ev = self.val_evals[self.seed_candidate.id]
        cap = self.task.spec.objective.constraints.get("broken")
        final = {"broken": cap} if cap is not None and str(cap).strip().startswith("<") else {}
        if bad := violated(final, side_effects(part, seed_ev, self.val)):
            return "val so far violates " + "; ".join(bad)
        diffs = [part.results[e.id].score - best_ev.results[e.id].score if e.id in part.results
                 else 1.0 - best_ev.results[e.id].score for e in self.val if e.id in best_ev.results]
        if math.fsum(diffs) <= 1e-9:
            return f"val {part.score:.3f} on {len(part.results)} examples the best misses: cannot beat it"
        conf = bootstrap_confidence(diffs, self.options.bootstrap, random.Random(self.seed + number))
        if self.options.confirm == 0 and conf < self.options.confidence:
            return f"confidence at most {conf:.2f} with every other val example right"
        return None

    def _decide(self, s: _Slot, active: bool | None) -> Verdict:
        """Apply one proposal's outcome: its screen verdict, promotion and acceptance (in proposal order).
        `active`: whether it counts as having made requests (None: ask the ledger, as the serial loop does)."""
        cand = s.cand
        if s.early is not None and s.early.status == "duplicate":
            self._count_idle(active)
            return Verdict(cand.id, "duplicate", self.val_evals[cand.id].score if cand.id in self.val_evals else None)
        if s.early is not None:
            self._progress("rejected", cand.id)
            self._count_idle(active)
            return s.early
        if s.stop is not None:
            raise s.stop
        if s.theirs is not None and (reason := s.screened) is not None:
            self.store.set_status(cand.id, "screened_out")
            event: dict[str, Any] = {"id": cand.id, "score": None if s.mine is None else s.mine.score,
                                     "parent": s.theirs.score}
            if s.mine is None or len(s.mine.results) < len(s.batch):  # the screen race stopped it early
                event["examples"] = 0 if s.mine is None else len(s.mine.results)
                event["batch"] = [e.id for e in s.batch]
            self.store.log_event("screen", event)
            return self._after(Verdict(cand.id, "screened_out", reason=reason), active)
        assert s.val is not None
        if s.raced is not None:
            self.store.set_status(cand.id, "screened_out")
            self.store.log_event("race", {"id": cand.id, "best": self.best_id, "proposal": s.number,
                                          "examples": len(s.val.results),
                                          "score": s.val.score, "reason": s.raced})
            return self._after(Verdict(cand.id, "screened_out", reason="race on val: " + s.raced), active)
        self._promote(cand, s.val)
        return self._after(self._accept(cand, s.val, s.number, s.batch), active)

    @property
    def minibatch_size(self) -> int:
        return min(self.options.minibatch, len(self.train))

    def minibatch(self, parent_id: str) -> list[Example]:
        """k train examples for screening: half the parent's failures (where gains are), half at random."""
        k = min(self.options.minibatch, len(self.train))
        if k == 0:
            return []
        stored = self.seen.get(parent_id, {})
        failing = [e for e in self.train if e.id in stored and not stored[e.id].passed]
        picked = self.rng.sample(failing, min(len(failing), k // 2))
        rest = [e for e in self.train if e not in picked]
        picked += self.rng.sample(rest, k - len(picked))
        return sorted(picked, key=lambda e: e.id)

    def _promote(self, cand: Candidate, ev: Evaluation) -> None:
        self.val_evals[cand.id] = ev
        self.store.put_score(cand.id, "val", ev.score, len(ev.results), ev.complete,
                             {"checks": ev.check_rates()})
        self.store.set_status(cand.id, "seed" if cand.operator == "seed" else "promoted")

    def _accept(self, cand: Candidate, ev: Evaluation, number: int, batch: Sequence[Example] = ()) -> Verdict:
        """Accept a promoted candidate as the new best: it must beat the best on val with paired confidence
        (bootstrap seeded by its proposal number) and keep the task's side-effect constraints. With `confirm`,
        a near miss is judged again with more examples (`_confirm`)."""
        best_cand, best_ev = self.best
        seed_ev = self.val_evals[self.seed_candidate.id]
        if isinstance(ev, MultiEvaluation):  # several targets: promptlearn.targets holds the rule
            d = decide(ev, best_ev, seed_ev, self.val, self.task, confidence=self.options.confidence,  # type: ignore[arg-type]
                       bootstrap=self.options.bootstrap, seed_value=self.seed + number,
                       paired=paired_confidence)
            self.store.log_event("promote", {"id": cand.id, **d.event})
            return self._new_best(cand, ev, d.reason) if d.accepted else Verdict(cand.id, "promoted", ev.score,
                                                                                    d.reason)
        effects = side_effects(ev, seed_ev, self.val)
        bad = violated(self.task.spec.objective.constraints, effects)
        conf = paired_confidence(ev, best_ev, self.options.bootstrap, random.Random(self.seed + number))
        self.store.log_event("promote", {"id": cand.id, "val": ev.score, "best": best_ev.score,
                                         "confidence": conf, "violations": bad})
        if bad:
            return Verdict(cand.id, "promoted", ev.score, "violates " + "; ".join(bad))
        if ev.score > best_ev.score and conf >= self.options.confidence:
            return self._new_best(cand, ev, f"confidence {conf:.2f}")
        if ev.score > best_ev.score and self.options.confirm > 0:
            more = self._confirm(cand, best_cand, ev, best_ev, number, batch)
            if more is not None and more[0] >= self.options.confidence:
                return self._new_best(cand, ev, f"confidence {more[0]:.2f} on val + {more[1]} train examples")
        return Verdict(cand.id, "promoted", ev.score, f"val {ev.score:.3f} vs best {best_ev.score:.3f}, "
                                                      f"confidence {conf:.2f}")

    def _confirm(self, cand: Candidate, best: Candidate, ev: Evaluation, best_ev: Evaluation, number: int,
                 batch: Sequence[Example]) -> tuple[float, int] | None:
        """(paired confidence on val + n more examples, n) for a near miss; None when there are none.

        With 18 val examples a gain of one reply can never reach confidence 0.8, so a real one-reply gain is
        lost as surely as a lucky one. The extra examples are train examples the candidate was not screened on
        (its screening chose it) and that neither prompt quotes (a worked example is its own answer); both
        prompts are scored on them, in proposal order, and the bootstrap runs over val and them together."""
        used = {e.id for e in batch}
        extra = [e for e in self.train if e.id not in used and not _quoted(e, cand.prompt)
                 and not _quoted(e, best.prompt)][:self.options.confirm]
        if not extra:
            return None
        mine = self.evaluate(cand.prompt, extra, tag="confirm", model_overrides=cand.model_overrides)
        theirs = self.evaluate(best.prompt, extra, tag="confirm-best", model_overrides=best.model_overrides)
        conf = paired_confidence(replace(ev, results={**ev.results, **mine.results}),
                                 replace(best_ev, results={**best_ev.results, **theirs.results}),
                                 self.options.bootstrap, random.Random(self.seed + number))
        self.store.log_event("confirm", {"id": cand.id, "best": best.id, "examples": len(extra), "score": mine.score,
                                         "best_score": theirs.score, "confidence": conf})
        return conf, len(extra)

    def _new_best(self, cand: Candidate, ev: Evaluation, reason: str) -> Verdict:
        self.best_id = cand.id
        self.since_best = -1
        self.store.set_status(cand.id, "accepted")
        self.store.set_meta("best", cand.id)
        self.publish(cand.prompt)
        return Verdict(cand.id, "accepted", ev.score, reason)

    def _count_idle(self, active: bool | None = None) -> None:
        """A proposal is idle when no model request (made, cached or replayed) came since the last one: a
        duplicate, a rejected prompt, or one scored on no examples. Normal runs never have long idle streaks.
        In a batch only its first proposal sees the batch's requests; the others count as active when scored."""
        requests = self.evaluator.ledger.total.requests
        if active is None:
            active = requests != self._requests_seen
        self.idle = 0 if active else self.idle + 1
        self._requests_seen = requests

    def _after(self, verdict: Verdict, active: bool | None = None) -> Verdict:
        self._count_idle(active)
        self.since_best += 1
        self._progress(verdict.status, verdict.id)
        return verdict

    # ---- proposer model ---------------------------------------------------------------------------------
    def generate(self, messages: Sequence[Mapping[str, str]], *, sample: int = 0) -> str | None:
        """One proposer call (counted in the ledger under 'proposer').

        None when the provider refuses this one request (a bad request, e.g. too long for the context window);
        any other ModelError (a fault that never healed, a bad key) ends the run like a target failure would,
        so a dead proposer never turns the run into a blind search that still reports success.
        """
        return self.generate_many([Request(messages, sample)])[0]

    def generate_many(self, requests: Sequence[Request | None]) -> list[str | None]:
        """Proposer calls at once; each distinct request is made once, and within the budget in request order."""
        self.check_stop()
        keys = [None if r is None else json.dumps([[dict(m) for m in r.messages], r.sample], sort_keys=True)
                for r in requests]
        distinct = {k: r for k, r in zip(keys, requests) if k is not None and r is not None}
        free = self.evaluator.ledger.free_calls()
        todo = list(distinct.items())[: len(distinct) if free is None else free]
        replies = self.evaluator.run(gather_or_cancel([self._agenerate(r) for _, r in todo]))
        if len(todo) < len(distinct):  # the next one would pass max_calls: stop where a serial run would
            ledger = self.evaluator.ledger
            raise BudgetExceeded("max_calls", ledger.total.requests, ledger.budget.max_calls or 0)
        got = {k: text for (k, _), text in zip(todo, replies)}
        return [None if k is None else got[k] for k in keys]

    async def _agenerate(self, r: Request) -> str | None:
        try:
            return (await self.astored_call(self.proposer, r.messages, sample=r.sample, tag="proposer")).text
        except ModelError as e:
            if not e.bad_request:
                raise
            return None

    def complete(self, messages: Sequence[Mapping[str, str]], *, model: str = "proposer", sample: int = 0,
                 temperature: float | None = None, tag: str | None = None) -> Completion:
        """One stored call to the proposer or the target (the target always at its own temperature)."""
        self.check_stop()
        if model not in ("proposer", "target"):
            raise ValueError(f"model must be 'proposer' or 'target', not {model!r}")
        config = self.task.proposer if model == "proposer" else self.task.model
        t = None if model == "target" or temperature is None or temperature == config.temperature else temperature
        if (model, t) not in self._lms:
            cfg = config if t is None else config.model_copy(update={"temperature": t})
            self._lms[(model, t)] = LM(cfg, cache=self.evaluator.cache, ledger=self.evaluator.ledger)
        return self.stored_call(self._lms[(model, t)], messages, sample=sample, tag=tag or model)

    def stored_call(self, lm: LM, messages: Sequence[Mapping[str, str]], *, sample: int = 0,
                    tag: str | None = None) -> Completion:
        """A model call kept in the run store under its cache key, so a resumed run replays it (paying its
        original cost once) instead of asking again: the one replay path for proposer and optimizer calls."""
        return self.evaluator.run(self.astored_call(lm, messages, sample=sample, tag=tag))

    async def astored_call(self, lm: LM, messages: Sequence[Mapping[str, str]], *, sample: int = 0,
                           tag: str | None = None) -> Completion:
        from promptlearn.cache import request_key
        from promptlearn.lm import usage_sink

        msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
        key = request_key(lm.name, lm.params(), msgs, lm.sample_key(sample))
        stored = self.store.get_generation(key)
        if stored is not None:
            text, usage = stored
            if key not in self._replayed:
                self._replayed.add(key)
                self.evaluator.ledger.replay(usage, tag)
            return Completion(text, usage.prompt_tokens, usage.completion_tokens, cached=True)
        sink: list[Usage] = []
        token = usage_sink.set(sink)
        try:
            done = await lm.complete(msgs, sample=sample, tag=tag)
        finally:
            usage_sink.reset(token)
        self._replayed.add(key)
        self.store.put_generation(key, done.text, sum(sink, Usage()))
        return done

    # ---- feedback for optimizers ------------------------------------------------------------------------
    def failures(self, cand_id: str, k: int = 4) -> list[tuple[Example, ExampleResult]]:
        """Up to k stored train/val examples this candidate failed, with replies and check feedback."""
        stored = self.seen.get(cand_id, {})
        if self.train and not any(e.id in stored for e in self.train):
            cand = self.candidates[cand_id]
            self.evaluate(cand.prompt, self.minibatch(cand_id), tag="reflect-batch",
                          model_overrides=cand.model_overrides)
            stored = self.seen.get(cand_id, {})
        exs = [e for e in self.train if e.id in stored and not stored[e.id].passed]
        return [(e, stored[e.id]) for e in self.rng.sample(exs, min(k, len(exs)))]

    def passing(self, k: int = 3) -> list[tuple[Example, str]]:
        """Train conversations some candidate answered perfectly: material for worked examples. A looping reply
        is left out even when it passes: shown as a demo, the model copies the loop (measured: 'A friend is a
        friend, ...' passed a keyword rule and took over every reply)."""
        from promptlearn.metrics import has_loop

        out = []
        for cid in list(self.candidates):
            stored = self.seen.get(cid, {})
            for e in self.train:
                r = stored.get(e.id)
                if r is not None and r.passed and len(e.turns) == 1 and r.turns and not has_loop(r.turns[0].reply):
                    out.append((e, r.turns[0].reply))
        out = sorted(dict(((e.id, reply), (e, reply)) for e, reply in out).values(), key=lambda p: (p[0].id, p[1]))
        return self.rng.sample(out, min(k, len(out)))

    # ---- stopping ---------------------------------------------------------------------------------------
    def check_stop(self) -> None:
        for stopper in self.stoppers:
            if (why := stopper()) is not None:
                raise StopRun(why)
        if self.options.patience and self.since_best >= self.options.patience:
            raise StopRun(f"no improvement in {self.options.patience} proposals")
        if self.options.max_candidates is not None and self.proposals >= self.options.max_candidates:
            raise StopRun(f"{self.options.max_candidates} candidates tried")
        if self.idle >= IDLE_PROPOSALS:
            raise StopRun(f"{IDLE_PROPOSALS} proposals in a row made no model call and scored nothing new")
        self.evaluator.ledger.check()

    def _progress(self, event: str, cand_id: str) -> None:
        u = self.evaluator.ledger.snapshot()
        self.store.log_event("progress", {"event": event, "id": cand_id, "calls": u.calls, "usd": u.usd,
                                          "best_val": self.val_evals[self.best_id].score, "best": self.best_id,
                                          "proposals": self.proposals, "seconds": u.seconds})
        if self.on_progress:
            self.on_progress(self)


def screen(mine: Evaluation, parent: Evaluation, loose: bool = True) -> str | None:
    """The screen rule: why a proposal stops at its minibatch (it must beat its parent on the same examples,
    see `beats`), or None when it goes on to val."""
    if not beats(mine, parent, loose=loose):
        return f"minibatch {mine.score:.2f} <= parent {parent.score:.2f}"
    return None


def screen_out_of_reach(mine: Mapping[str, ExampleResult], parent: Evaluation, loose: bool = True) -> str | None:
    """Why a proposal scored on part of its minibatch (`mine`) fails the screen whatever it scores on the rest,
    or None. The rest is taken at its best case, every example scored 1 strict and loose: `beats` on that is the
    most the proposal can reach, so the verdict is the one scoring all of it would give."""
    ids = list(parent.results)
    best = math.fsum(mine[i].score if i in mine else 1.0 for i in ids) / len(ids)
    best_loose = math.fsum(mine[i].loose_score if i in mine else 1.0 for i in ids) / len(ids)
    if _beats(best, best_loose, parent.score, parent.loose_score, loose):
        return None
    return (f"minibatch at most {best:.2f} <= parent {parent.score:.2f} "
            f"({len(mine)} of {len(ids)} examples scored)")


def beats(mine: Evaluation, theirs: Evaluation, loose: bool = True) -> bool:
    """Better on the minibatch, or equal and better on IFEval's loose score (a reply that keeps the rule but for
    markdown or its first/last line). Loose moves before strict does, so a candidate can climb off a floor
    where every strict score ties at zero."""
    return _beats(mine.score, mine.loose_score, theirs.score, theirs.loose_score, loose)


def _beats(score: float, loose_score: float, their_score: float, their_loose: float, loose: bool) -> bool:
    """The screen's comparison on mean scores (`beats`; `screen_out_of_reach` applies it to a best case)."""
    if abs(score - their_score) >= 1e-9:
        return score > their_score
    return loose and loose_score > their_loose + 1e-9


@asynccontextmanager
async def _stage(grants: InOrderGrants | None, stage: Stage | None) -> AsyncIterator[None]:
    """A proposal stage within its in-order grant (no grant: a single proposal, as the serial loop ran)."""
    if grants is None or stage is None:
        yield
        return
    async with grants.stage(stage):
        yield


def _quoted(example: Example, prompt: str) -> bool:
    """Whether the prompt quotes the example's first user turn (a worked example made from it)."""
    user = example.turns[0].user.replace("{", "(").replace("}", ")").strip() if example.turns else ""
    return bool(user) and user in prompt


def paired_confidence(new: Evaluation, old: Evaluation, n: int, rng: random.Random) -> float:
    """Bootstrap probability that `new` beats `old` on the same examples (paired by example id)."""
    ids = [k for k in new.results if k in old.results]
    return bootstrap_confidence([new.results[k].score - old.results[k].score for k in ids], n, rng)


def bootstrap_confidence(diffs: Sequence[float], n: int, rng: random.Random) -> float:
    """Bootstrap probability that the paired differences sum above 0 (n resamples drawn from rng). The draws
    depend only on rng and len(diffs), so with the same rng a vector that is larger everywhere scores at least
    as high (the race on val relies on it)."""
    if not diffs:
        return 0.0
    if all(d == 0 for d in diffs):
        return 0.0
    m = len(diffs)
    wins = 0
    for _ in range(n):
        s = sum(diffs[rng.randrange(m)] for _ in range(m))
        wins += s > 0
    return wins / n


def pareto_front(ctx: RunContext) -> list[str]:
    """Candidates not dominated on per-example val scores (GEPA's selection set), best mean first."""
    ids = list(ctx.val_evals)
    vecs = {c: [ctx.val_evals[c].results[e.id].score if e.id in ctx.val_evals[c].results else 0.0 for e in ctx.val]
            for c in ids}

    def dominated(a: str) -> bool:
        return any(all(x >= y for x, y in zip(vecs[b], vecs[a])) and vecs[b] != vecs[a] for b in ids if b != a)

    front = [c for c in ids if not dominated(c)]
    return sorted(front, key=lambda c: (-ctx.val_evals[c].score, c))
