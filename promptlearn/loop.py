"""The optimization loop: the engine owns budget, cache, ledger, lineage and stopping; optimizers only propose.

A proposal is (1) rejected before any call if it drops a protected clause or placeholder, (2) screened on a
train minibatch against its parent on the same examples, (3) promoted to the full val split, and (4) accepted
as the new best only by a paired bootstrap over val examples, with the task's side-effect constraints holding.
The test split is scored once at the end, for the seed and the best candidates, and only ever reported.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from promptlearn.engine import Evaluation, Evaluator
from promptlearn.errors import BudgetExceeded, ModelError
from promptlearn.lm import LM, Completion
from promptlearn.metrics import side_effects, violated
from promptlearn.store import RunStore
from promptlearn.task import Task
from promptlearn.types import Candidate, Example, ExampleResult, Usage

# Proposals in a row that made no model request (so scored nothing new): no budget can stop such a loop, so the
# engine does. Above every built-in optimizer's own give-up count (evolve 60, optuna 40, mutate 30).
IDLE_PROPOSALS = 100


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
    screen_extend: int = 0  # on a full screening tie, score candidate and parent on this many more train examples
    screen_loose: bool = True  # a strict tie on the minibatch is broken by the loose score (see `beats`)


class StopRun(Exception):
    """Raised inside the loop to end the search early (stop file, patience, candidate cap)."""


class RunContext:
    """What an optimizer sees of a run: evaluate, propose, generate with the proposer, and the best so far."""

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

    # ---- evaluation -------------------------------------------------------------------------------------
    def evaluate(self, prompt: str, examples: Sequence[Example] | str, *, tag: str | None = None,
                 model_overrides: Mapping[str, Any] | None = None) -> Evaluation:
        """Evaluate a prompt on examples (or a split name). Stored results are replayed, never recomputed.
        `model_overrides`: a candidate's decoding options (Candidate.model_overrides, e.g. guidance)."""
        exs = self.task.examples(examples) if isinstance(examples, str) else list(examples)
        split = examples if isinstance(examples, str) else "custom"
        ev = self.evaluator.evaluate(prompt, exs, split=split, tag=tag, model_overrides=model_overrides)
        self.seen.setdefault(ev.candidate_id, {}).update(ev.results)
        if not ev.complete:
            raise ev.stop or BudgetExceeded("budget", 0, 0)
        return ev

    def val_eval(self, cand_id: str) -> Evaluation:
        return self.val_evals[cand_id]

    @property
    def best(self) -> tuple[Candidate, Evaluation]:
        return self.candidates[self.best_id], self.val_evals[self.best_id]

    @property
    def pool(self) -> list[Candidate]:
        """Candidates scored on the full val split, in the order they were promoted."""
        return [self.candidates[c] for c in self.val_evals]

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
        self.check_stop()
        cand = Candidate(prompt, tuple(parents), operator, dict(meta or {}))
        if cand.id in self.candidates:
            self._count_idle()
            return Verdict(cand.id, "duplicate", self.val_evals[cand.id].score if cand.id in self.val_evals else None)
        self.proposals += 1
        missing = self.task.violations(prompt)
        if missing or not prompt.strip():
            self.record(cand, "rejected")
            self._progress("rejected", cand.id)
            self._count_idle()
            return Verdict(cand.id, "rejected", reason="lost " + ", ".join(missing) if missing else "empty prompt")
        self.record(cand, "proposed")
        parent_id = parents[0] if parents and parents[0] in self.candidates else self.best_id
        parent = self.candidates[parent_id]
        batch = self.minibatch(parent_id)
        if batch:
            mine, theirs = self.screen(cand, parent, batch, operator)
            if not beats(mine, theirs, loose=self.options.screen_loose):
                self.store.set_status(cand.id, "screened_out")
                self.store.log_event("screen", {"id": cand.id, "score": mine.score, "parent": theirs.score})
                return self._after(Verdict(cand.id, "screened_out", reason=f"minibatch {mine.score:.2f} <= "
                                                                           f"parent {theirs.score:.2f}"))
        ev = self.evaluate(prompt, self.val, tag=operator, model_overrides=cand.model_overrides)
        self._promote(cand, ev)
        verdict = self._accept(cand, ev)
        return self._after(verdict)

    def screen(self, cand: Candidate, parent: Candidate, batch: list[Example],
               operator: str) -> tuple[Evaluation, Evaluation]:
        """Candidate and parent on the same train minibatch. A full tie (strict and loose) says nothing, which at a
        floor is every candidate: with `screen_extend` > 0 both are scored on that many more train examples."""
        def both(exs: list[Example]) -> tuple[Evaluation, Evaluation]:
            return (self.evaluate(cand.prompt, exs, tag=operator, model_overrides=cand.model_overrides),
                    self.evaluate(parent.prompt, exs, tag="screen-parent", model_overrides=parent.model_overrides))

        mine, theirs = both(batch)
        extra = [e for e in self.train if e not in batch]
        if self.options.screen_extend > 0 and extra and tied(mine, theirs):
            more = self.rng.sample(extra, min(self.options.screen_extend, len(extra)))
            mine, theirs = both(sorted(batch + more, key=lambda e: e.id))
        return mine, theirs

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

    def _accept(self, cand: Candidate, ev: Evaluation) -> Verdict:
        best_cand, best_ev = self.best
        seed_ev = self.val_evals[self.seed_candidate.id]
        effects = side_effects(ev, seed_ev, self.val)
        bad = violated(self.task.spec.objective.constraints, effects)
        conf = paired_confidence(ev, best_ev, self.options.bootstrap, random.Random(self.seed + self.proposals))
        self.store.log_event("promote", {"id": cand.id, "val": ev.score, "best": best_ev.score,
                                         "confidence": conf, "violations": bad})
        if bad:
            return Verdict(cand.id, "promoted", ev.score, "violates " + "; ".join(bad))
        if ev.score > best_ev.score and conf >= self.options.confidence:
            self.best_id = cand.id
            self.since_best = -1
            self.store.set_status(cand.id, "accepted")
            self.store.set_meta("best", cand.id)
            self.store.write_files(cand.prompt)
            return Verdict(cand.id, "accepted", ev.score, f"confidence {conf:.2f}")
        return Verdict(cand.id, "promoted", ev.score, f"val {ev.score:.3f} vs best {best_ev.score:.3f}, "
                                                      f"confidence {conf:.2f}")

    def _count_idle(self) -> None:
        """A proposal is idle when no model request (made, cached or replayed) came since the last one: a
        duplicate, a rejected prompt, or one scored on no examples. Normal runs never have long idle streaks."""
        requests = self.evaluator.ledger.total.requests
        self.idle = self.idle + 1 if requests == self._requests_seen else 0
        self._requests_seen = requests

    def _after(self, verdict: Verdict) -> Verdict:
        self._count_idle()
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
        self.check_stop()
        try:
            return self.stored_call(self.proposer, messages, sample=sample, tag="proposer").text
        except ModelError as e:
            if not e.bad_request:
                raise
            return None

    def stored_call(self, lm: LM, messages: Sequence[Mapping[str, str]], *, sample: int = 0,
                    tag: str | None = None) -> Completion:
        """A model call kept in the run store under its cache key, so a resumed run replays it (paying its
        original cost once) instead of asking again: the one replay path for proposer and optimizer calls."""
        from promptlearn.cache import request_key
        from promptlearn.lm import usage_sink

        msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
        key = request_key(lm.name, lm.params(), msgs, lm.sample_key(sample))
        stored = self.store.get_generation(key)
        if stored is not None:
            text, usage = stored
            if key not in self._replayed:
                self._replayed.add(key)
                self.evaluator.ledger.add(usage, tag)
            return Completion(text, usage.prompt_tokens, usage.completion_tokens, cached=True)
        sink: list[Usage] = []
        token = usage_sink.set(sink)
        try:
            done = self.evaluator.run(lm.complete(msgs, sample=sample, tag=tag))
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
        if (self.store.dir / "STOP").exists():
            raise StopRun("stop file")
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


def tied(mine: Evaluation, theirs: Evaluation) -> bool:
    return abs(mine.score - theirs.score) < 1e-9 and abs(mine.loose_score - theirs.loose_score) < 1e-9


def beats(mine: Evaluation, theirs: Evaluation, loose: bool = True) -> bool:
    """The screening rule: better on the minibatch, or equal and better on IFEval's loose score (a reply that
    keeps the rule but for markdown or its first/last line). Loose moves before strict does, so a candidate
    can climb off a floor where every strict score ties at zero."""
    if abs(mine.score - theirs.score) >= 1e-9:
        return mine.score > theirs.score
    return loose and mine.loose_score > theirs.loose_score + 1e-9


def paired_confidence(new: Evaluation, old: Evaluation, n: int, rng: random.Random) -> float:
    """Bootstrap probability that `new` beats `old` on the same examples (paired by example id)."""
    ids = [k for k in new.results if k in old.results]
    if not ids:
        return 0.0
    diffs = [new.results[k].score - old.results[k].score for k in ids]
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
