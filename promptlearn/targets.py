"""One prompt, several target models: every candidate scored on every target, one aggregate objective, and
acceptance that holds per target.

A task with `targets:` gets a `MultiEvaluator`: one `Evaluator` per target sharing one cache (keyed by model, so
targets never share replies), one ledger (one budget; tags carry `@target`, so the ledger splits by target) and
the run store (per-target results kept under `<candidate id>@<target>`). Its `MultiEvaluation` is an Evaluation
whose `score` is the aggregate (`min` by default, or the weighted `mean`) and whose per-example `results` are,
for each example, the reply of the target that scored worst on it: what screening, reflection and the Pareto
front look at. A task with one model never comes here and runs exactly as before.
"""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from promptlearn.engine import Evaluation, Evaluator
from promptlearn.types import Example, ExampleResult, Usage

if TYPE_CHECKING:
    from promptlearn.task import TargetConfig, Task


def aggregate(scores: Mapping[str, float], how: str, weights: Mapping[str, float]) -> float:
    """The objective over per-target scores: the worst one (`min`) or the weighted mean (`mean`)."""
    if not scores:
        return 0.0
    if how == "min":
        return min(scores.values())
    total = math.fsum(weights.get(k, 1.0) for k in scores)
    return math.fsum(weights.get(k, 1.0) * v for k, v in scores.items()) / total


def target_tag(tag: str | None, key: str) -> str:
    """The ledger tag of a call made for one target: `<tag>@<target>`, so the ledger splits by target."""
    return f"{tag or 'eval'}@{key}"


def by_target(by_tag: Mapping[str, Usage]) -> dict[str, Usage]:
    """Ledger totals per target from per-tag totals (tags without `@`, e.g. the proposer, are left out)."""
    out: dict[str, Usage] = {}
    for tag, usage in by_tag.items():
        if "@" in tag:
            key = tag.rsplit("@", 1)[1]
            out[key] = out.get(key, Usage()) + usage
    return out


def target_task(task: "Task", target: "TargetConfig") -> "Task":
    """The task as one target sees it: its model, and `objective.constraints` plus the target's own."""
    from promptlearn.task import Task

    objective = task.spec.objective.model_copy(
        update={"constraints": {**task.spec.objective.constraints, **target.constraints}})
    spec = task.spec.model_copy(update={"model": target.model, "targets": [], "objective": objective})
    return Task(spec, task.splits, path=task.path)


@dataclass(frozen=True)
class MultiEvaluation(Evaluation):
    """One prompt scored on every target. `score` is the aggregate; `by_target` holds each target's Evaluation."""

    by_target: Mapping[str, Evaluation] = field(default_factory=dict)
    aggregate: str = "min"  #: min or mean (objective.aggregate)
    weights: Mapping[str, float] = field(default_factory=dict)  #: target key -> weight in the mean

    def _agg(self, of: Callable[[Evaluation], float]) -> float:
        return aggregate({k: of(e) for k, e in self.by_target.items()}, self.aggregate, self.weights)

    @property
    def score(self) -> float:
        return self._agg(lambda e: e.score)

    @property
    def strict_score(self) -> float:
        return self._agg(lambda e: e.strict_score)

    @property
    def loose_score(self) -> float:
        return self._agg(lambda e: e.loose_score)

    def target_scores(self) -> dict[str, float]:
        return {k: e.score for k, e in self.by_target.items()}

    def check_rates(self) -> dict[str, float]:
        """Each check's pass rate averaged over the targets."""
        rates = [e.check_rates() for e in self.by_target.values()]
        names = sorted({n for r in rates for n in r})
        return {n: math.fsum(r[n] for r in rates if n in r) / sum(n in r for r in rates) for n in names}

    def judge_errors(self) -> int:
        return sum(e.judge_errors() for e in self.by_target.values())


def worst_results(evs: Mapping[str, Evaluation], examples: Sequence[Example]) -> dict[str, ExampleResult]:
    """Per example (scored on every target), the result of the target that scored worst on it; first on ties."""
    out: dict[str, ExampleResult] = {}
    for ex in examples:
        rs = [e.results[ex.id] for e in evs.values() if ex.id in e.results]
        if rs and len(rs) == len(evs):
            out[ex.id] = min(rs, key=lambda r: r.score)
    return out


class _TargetStore:
    """The run store as one target's Evaluator sees it: results under `<candidate id>@<target>`."""

    def __init__(self, store: Any, key: str):
        self.store, self.key = store, key

    def get_result(self, cand_id: str, example_id: str) -> Any:
        return self.store.get_result(f"{cand_id}@{self.key}", example_id)

    def put_result(self, cand_id: str, res: ExampleResult, usage: Usage) -> None:
        self.store.put_result(f"{cand_id}@{self.key}", res, usage)


class MultiEvaluator(Evaluator):
    """An Evaluator over every target of the task (see the module docstring). Remote targets are evaluated
    concurrently; targets on the in-process model one after another (they share one model and its KV cache)."""

    def __init__(self, task: "Task", *, cache: Any = None, ledger: Any = None, cache_path: Any = None,
                 use_cache: bool = True, store: Any = None):
        super().__init__(task, cache=cache, ledger=ledger, cache_path=cache_path, use_cache=use_cache, store=store)
        self.targets = {t.key: t for t in task.spec.targets}
        self.parts = {k: Evaluator(target_task(task, t), cache=self.cache, ledger=self.ledger,
                                   use_cache=self.cache is not None,
                                   store=None if store is None else _TargetStore(store, k))
                      for k, t in self.targets.items()}

    def close(self) -> None:
        for part in self.parts.values():
            part.cache = None  # shared: closed once, below
            part.close()
        super().close()

    async def aevaluate(self, prompt: str, examples: Sequence[Example], *, split: str = "custom",
                        tag: str | None = None, on_example: Callable[[str, ExampleResult], None] | None = None,
                        model_overrides: Mapping[str, Any] | None = None) -> Evaluation:
        before = self.ledger.snapshot()
        evs: dict[str, Evaluation] = {}

        async def one(key: str) -> None:
            evs[key] = await self.parts[key].aevaluate(prompt, examples, split=split, tag=target_tag(tag, key),
                                                       on_example=on_example, model_overrides=model_overrides)

        async def local_in_turn(keys: list[str]) -> None:
            for k in keys:
                await one(k)

        local = [k for k, t in self.targets.items() if t.model.is_local]
        jobs = [asyncio.ensure_future(local_in_turn(local))]
        jobs += [asyncio.ensure_future(one(k)) for k in self.targets if k not in local]
        try:
            await asyncio.gather(*jobs)
        except BaseException:
            for j in jobs:
                j.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
            raise
        evs = {k: evs[k] for k in self.targets}  # task order, whatever finished first
        stop = next((e.stop for e in evs.values() if e.stop is not None), None)
        objective = self.task.spec.objective
        return MultiEvaluation(prompt, split, worst_results(evs, examples), self.ledger.snapshot() - before,
                               complete=all(e.complete for e in evs.values()),
                               stop_reason=str(stop) if stop else None,
                               model_overrides=dict(model_overrides or {}), stop=stop, by_target=evs,
                               aggregate=objective.aggregate,
                               weights={k: t.weight for k, t in self.targets.items()})

    def max_requests(self, examples: Iterable[Example]) -> int:
        """Every target scores the examples: the sum of their most requests (a parallel stage's grant)."""
        exs = list(examples)
        return sum(part.max_requests(exs) for part in self.parts.values())

    def score_replies(self, prompt: str, example: Example, replies: Sequence[str]) -> ExampleResult:
        from promptlearn.errors import TaskError

        raise TaskError("this optimizer scores replies it generated with one model, which a task with several "
                        "targets cannot use", field="optimizer", fix="use evolve, mutate or optuna with `targets:`")


def test_reserve_calls(task: "Task") -> int:
    """Calls held back from the search for the final test scoring: seed and best on every target (one call per
    generated turn; with one model, 2 x the test turns, as before targets existed)."""
    turns = sum(sum(t.given is None for t in e.turns) for e in task.examples("test"))
    return turns * 2 * (len(task.spec.targets) or 1)


def make_evaluator(task: "Task", **kwargs: Any) -> Evaluator:
    """The Evaluator for a task: a MultiEvaluator when it has several targets, else the plain one."""
    return MultiEvaluator(task, **kwargs) if task.spec.targets else Evaluator(task, **kwargs)


# ---- acceptance ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """Whether a promoted candidate becomes the new best, why, and what the run's event log records."""

    accepted: bool
    reason: str
    event: Mapping[str, Any]


def aggregate_confidence(new: MultiEvaluation, old: MultiEvaluation, n: int, rng: random.Random) -> float:
    """Bootstrap probability that `new` beats `old` on the aggregate: examples resampled jointly (paired by
    example id, the same draw on every target), the aggregate of per-target means compared per draw."""
    import numpy as np

    keys = list(new.by_target)
    ids = [i for i in new.results if i in old.results
           and all(i in new.by_target[k].results and i in old.by_target[k].results for k in keys)]
    if not ids:
        return 0.0
    a = np.array([[new.by_target[k].results[i].score for i in ids] for k in keys])
    b = np.array([[old.by_target[k].results[i].score for i in ids] for k in keys])
    if np.array_equal(a, b):
        return 0.0
    draws = np.random.default_rng(rng.randrange(2**32)).integers(0, len(ids), size=(n, len(ids)))
    ma, mb = a[:, draws].mean(axis=2), b[:, draws].mean(axis=2)  # (targets, n)
    if new.aggregate == "min":
        agg_a, agg_b = ma.min(axis=0), mb.min(axis=0)
    else:
        w = np.array([new.weights.get(k, 1.0) for k in keys])[:, None]
        agg_a, agg_b = (w * ma).sum(axis=0) / w.sum(), (w * mb).sum(axis=0) / w.sum()
    return float((agg_a > agg_b + 1e-12).mean())


def decide(new: MultiEvaluation, best: MultiEvaluation, seed: MultiEvaluation, examples: Sequence[Example],
           task: "Task", *, confidence: float, bootstrap: int, seed_value: int,
           paired: Callable[[Evaluation, Evaluation, int, random.Random], float]) -> Decision:
    """The acceptance rule with several targets: side-effect constraints hold on every target (objective's plus
    the target's own), the new prompt is not significantly worse than the best on any target (paired bootstrap,
    the loop's confidence level, `paired` being the loop's paired_confidence), and it beats the best on the
    aggregate with that confidence."""
    from promptlearn.metrics import side_effects, violated

    rng = random.Random(seed_value)
    bad: list[str] = []
    worse: list[str] = []
    per: dict[str, Any] = {}
    for key, t in {t.key: t for t in task.spec.targets}.items():
        ev, b, s = new.by_target[key], best.by_target[key], seed.by_target[key]
        effects = side_effects(ev, s, examples)
        broke = violated({**task.spec.objective.constraints, **t.constraints}, effects)
        conf_worse = paired(b, ev, bootstrap, rng)
        bad += [f"{key}: {v}" for v in broke]
        if ev.score < b.score and conf_worse >= confidence:
            worse.append(f"{key} {ev.score:.3f} < {b.score:.3f} (confidence {conf_worse:.2f})")
        per[key] = {"val": ev.score, "best": b.score, "confidence_worse": conf_worse, "violations": broke}
    conf = aggregate_confidence(new, best, bootstrap, rng)
    event = {"val": new.score, "best": best.score, "confidence": conf, "violations": bad, "worse": worse,
             "targets": per}
    if bad:
        return Decision(False, "violates " + "; ".join(bad), event)
    if worse:
        return Decision(False, "significantly worse on " + "; ".join(worse), event)
    if new.score > best.score and conf >= confidence:
        return Decision(True, f"confidence {conf:.2f} ({new.aggregate} over {len(per)} targets)", event)
    return Decision(False, f"{new.aggregate} val {new.score:.3f} vs best {best.score:.3f}, confidence {conf:.2f}",
                    event)


# ---- what a run reports per target ---------------------------------------------------------------------------


def target_summary(ctx: Any, tests: Mapping[str, Evaluation], ids: Sequence[str]) -> dict[str, Any] | None:
    """Per target: val and test of the given candidates (seed, best, ...), the best val candidate of each target
    among those scored, and the ledger per target; each val candidate's per-target scores go to the run store.
    None for a task with one model."""
    task = ctx.task
    if not task.spec.targets:
        return None
    for cid, ev in ctx.val_evals.items():
        record_target_scores(ctx.store, cid, ev, "val")
    keys = [t.key for t in task.spec.targets]
    ledger = by_target(ctx.evaluator.ledger.by_tag)

    def row(cid: str) -> dict[str, Any]:
        val, test = ctx.val_evals.get(cid), tests.get(cid)
        return {"id": cid, "val": val.target_scores() if isinstance(val, MultiEvaluation) else None,
                "test": test.target_scores() if isinstance(test, MultiEvaluation) else None}

    def on(k: str) -> Callable[[str], tuple[float, bool]]:
        return lambda c: (ctx.val_evals[c].by_target[k].score, c == ctx.seed_candidate.id)

    per_target_best = {k: max(ctx.val_evals, key=on(k)) for k in keys}
    return {"aggregate": task.spec.objective.aggregate,
            "targets": [{"key": t.key, "model": t.model.name, "weight": t.weight,
                         "decoding": {"guidance": t.model.guidance} if t.model.guidance != 1.0 else {},
                         "calls": ledger.get(t.key, Usage()).calls,
                         "cached_calls": ledger.get(t.key, Usage()).cached_calls,
                         "usd": ledger.get(t.key, Usage()).usd} for t in task.spec.targets],
            "candidates": {cid: row(cid) for cid in ids},
            "val_best_per_target": per_target_best}


def record_target_scores(store: Any, cid: str, ev: Evaluation, split: str) -> None:
    """Each target's score of a candidate, next to the aggregate (splits `val@<target>`, `test@<target>`)."""
    if isinstance(ev, MultiEvaluation):
        for k, e in ev.by_target.items():
            store.put_score(cid, f"{split}@{k}", e.score, len(e.results), e.complete,
                            {"checks": e.check_rates()})


def gate_targets(mine: Evaluation, seed: Evaluation, examples: Sequence[Example], *, min_score: float | None,
                 max_broken: int | None, target_min: Mapping[str, float] | None = None
                 ) -> tuple[dict[str, Any], list[str]]:
    """`check` with several targets: each target's score, fixed / broken against the seed on that target, and
    the reasons the gate fails: a target below its minimum (`target_min[key]`, else `min_score`) or breaking
    more than `max_broken` examples. Empty for a task with one model."""
    from promptlearn.metrics import side_effects

    if not isinstance(mine, MultiEvaluation) or not isinstance(seed, MultiEvaluation):
        return {}, []
    per: dict[str, Any] = {}
    reasons: list[str] = []
    for key, ev in mine.by_target.items():
        effects = side_effects(ev, seed.by_target[key], examples)
        floor = (target_min or {}).get(key, min_score)
        broken = list(effects.get("broken_ids", ()))
        per[key] = {"score": ev.score, "seed_score": seed.by_target[key].score, "min_score": floor,
                    "checks": ev.check_rates(), "fixed": int(effects.get("fixed", 0)), "broken": len(broken),
                    "broken_ids": broken}
        if floor is not None and ev.score < floor:
            reasons.append(f"target {key}: score {ev.score:.4f} is below the minimum {floor:g}")
        if max_broken is not None and len(broken) > max_broken:
            reasons.append(f"target {key}: breaks {len(broken)} example(s) the seed prompt passed on it "
                           f"(allowed {max_broken}): {', '.join(broken)}")
    return per, reasons


def check_target_names(task: "Task", names: Sequence[str], flag: str = "--target-min") -> None:
    """Refuse target names the task does not have (before any call), naming the ones it has."""
    from promptlearn.errors import ConfigError

    keys = [t.key for t in task.spec.targets]
    unknown = [n for n in names if n not in keys]
    if unknown:
        has = f"its targets: {', '.join(keys)}" if keys else "it has one model (no `targets:`)"
        raise ConfigError(f"{flag}: the task has no target named {', '.join(unknown)}; {has}")


def export_targets(summary: Mapping[str, Any] | None, scores: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    """What an export records per target: its label, model, decoding, and the prompt's val / test on it
    (from the run store's per-target scores, splits `val@<target>` / `test@<target>`)."""
    if not summary:
        return ()

    def score(split: str) -> float | None:
        s = scores.get(split, {}).get("score")
        return None if s is None else round(float(s), 4)

    return tuple({"target": t["key"], "model": t["model"], **({"decoding": t["decoding"]} if t["decoding"] else {}),
                  "val": score(f"val@{t['key']}"), "test": score(f"test@{t['key']}")}
                 for t in summary.get("targets", []))
