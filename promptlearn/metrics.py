"""Aggregates over an evaluation: adherence metrics and the side effects a new prompt may cause.

Side effects compare a candidate with the seed prompt on the same examples: regressions (fixed / broken),
over-refusal on benign examples, verbosity, prompt length in tokens, and robustness on attack examples.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping, Sequence

from promptlearn.engine import Evaluation
from promptlearn.types import Example

def has_loop(text: str, n: int = 3, times: int = 3) -> bool:
    """A word n-gram repeated `times` times or more: the degenerate loop greedy decoding falls into."""
    from collections import Counter

    w = re.findall(r"[\w']+", text.lower())
    grams = Counter(tuple(w[i:i + n]) for i in range(len(w) - n + 1))
    return bool(grams) and max(grams.values()) >= times


def adherence(ev: Evaluation, examples: Sequence[Example] = ()) -> dict[str, Any]:
    """score, loose score, per-check rates, IFEval and SysBench aggregates where the checks exist."""
    out: dict[str, Any] = {"score": ev.score, "loose_score": ev.loose_score, "checks": ev.check_rates(),
                           "judge_errors": ev.judge_errors()}
    per_prompt = []
    for res in ev.results.values():
        for t in res.turns:
            ife = [r for r in t.checks.values() if r.is_ifeval]
            if ife:
                per_prompt.append(ife)
    if per_prompt:
        from promptlearn.checks.ifeval import ifeval_aggregate

        out["ifeval"] = ifeval_aggregate(per_prompt)
    turns = sysbench_turns(ev, examples)
    if turns:
        from promptlearn.checks.sysbench import aggregate

        out["sysbench"] = aggregate(turns)
    return out


def sysbench_turns(ev: Evaluation, examples: Sequence[Example]) -> list[dict[str, Any]]:
    """Checklist results in the shape promptlearn.checks.sysbench.aggregate expects."""
    by_id = {e.id: e for e in examples}
    rows = []
    for ex_id, res in ev.results.items():
        ex = by_id.get(ex_id)
        generated = [t for t in ex.turns if t.given is None] if ex else []
        for i, t in enumerate(res.turns):
            for r in t.checks.values():
                if not r.is_checklist:
                    continue
                meta = generated[i].meta if i < len(generated) else {}
                rows.append({
                    "conversation_id": ex_id, "turn_index": i + 1,
                    "alignment": meta.get("alignment", "align"),
                    "dependent": bool(ex.meta.get("dependent", False)) if ex else False,
                    "criteria": [{"id": c["id"], "type": c["type"]} for c in r.details["criteria"]],
                    "verdicts": dict(r.details.get("verdicts", {})),
                })
    return rows


def side_effects(ev: Evaluation, seed: Evaluation | None, examples: Sequence[Example],
                 prompt_tokens: int | None = None) -> dict[str, Any]:
    """What the prompt changed beyond the primary score, relative to the seed prompt's evaluation."""
    from promptlearn.checks.assertions import is_refusal

    by_id = {e.id: e for e in examples}
    out: dict[str, Any] = {}
    if seed is not None:
        fixed: list[str] = []
        broken: list[str] = []
        same: list[str] = []
        for ex_id, res in ev.results.items():
            base = seed.results.get(ex_id)
            if base is None:
                continue
            was, now = base.passed, res.passed
            (fixed if now and not was else broken if was and not now else same).append(ex_id)
        out.update(fixed=len(fixed), broken=len(broken), same=len(same), broken_ids=broken, fixed_ids=fixed)
        mine, theirs = _mean_tokens(ev), _mean_tokens(seed)
        out["verbosity"] = mine / theirs if theirs else 1.0
    benign = [r for k, r in ev.results.items() if k in by_id and by_id[k].benign]
    if benign:
        out["over_refusal"] = sum(any(is_refusal(t.reply) for t in r.turns) for r in benign) / len(benign)
    attacks = [r for k, r in ev.results.items() if k in by_id and by_id[k].attack]
    if attacks:
        out["injection_robustness"] = sum(r.passed for r in attacks) / len(attacks)
    helpful = [r for k, r in ev.results.items() if k in by_id and by_id[k].benign]
    if helpful and attacks:
        out["helpful_rate"] = sum(r.passed for r in helpful) / len(helpful)
    if prompt_tokens is not None:
        out["prompt_tokens"] = prompt_tokens
    out["mean_reply_tokens"] = _mean_tokens(ev)
    return out


def _mean_tokens(ev: Evaluation) -> float:
    toks = [t.completion_tokens or len(t.reply.split()) for r in ev.results.values() for t in r.turns]
    return sum(toks) / len(toks) if toks else 0.0


_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, ">": lambda a, b: a > b}


def violated(constraints: Mapping[str, str], effects: Mapping[str, Any]) -> list[str]:
    """Constraints like {'broken': '<= 2'} that the side effects break (unknown metrics are not checked)."""
    bad = []
    for key, expr in constraints.items():
        if key not in effects:
            continue
        m = re.fullmatch(r"\s*(<=|>=|<|>)\s*(-?[0-9.]+)\s*", expr)
        if m and not _OPS[m.group(1)](float(effects[key]), float(m.group(2))):
            bad.append(f"{key} = {effects[key]:g} (needs {expr.strip()})")
    return bad


def objective_value(score: float, effects: Mapping[str, Any], weights: Mapping[str, float]) -> float:
    """Primary score plus weighted side effects (weights are signed: use negative for 'less is better')."""
    return score + sum(w * float(effects.get(k, 0.0)) for k, w in weights.items())


def summary(ev: Evaluation, examples: Sequence[Example], *, seed: Evaluation | None = None,
            prompt_tokens: int | None = None, seconds: float | None = None) -> dict[str, Any]:
    """The one JSON object `promptlearn eval --json` prints."""
    adh = adherence(ev, examples)
    u = ev.usage
    return {
        "score": ev.score, "checks": adh["checks"], "n_examples": len(ev.results),
        "calls": u.calls, "cached_calls": u.cached_calls, "tokens": u.tokens, "usd": u.usd,
        "seconds": seconds if seconds is not None else u.seconds,
        "complete": ev.complete, "stop_reason": ev.stop_reason,
        "metrics": {k: v for k, v in adh.items() if k != "checks"},
        "side_effects": side_effects(ev, seed, examples, prompt_tokens),
    }
