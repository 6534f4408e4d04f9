"""SysBench metrics (Qin et al. 2024, "SysBench: Can LLMs Follow System Messages?", arXiv 2408.10943).

Input: one dict per judged assistant turn::

    {"conversation_id": "c1", "turn_index": 1, "alignment": "align" | "misalign", "dependent": True,
     "criteria": [{"id": 1, "type": "Format"}, ...], "verdicts": {"1": True, ...}}

Metrics, as in the paper and its reference code:

* CSR (constraint satisfaction rate): satisfied criteria / judged criteria, pooled over all turns (not a mean of
  per-turn rates). `csr_by_type` is the same ratio restricted to criteria of one type.
* ISR (instruction satisfaction rate): share of turns whose criteria are all satisfied. `isr_by_alignment` splits
  turns by whether the user instruction is aligned with the system message.
* SSR (session stability rate): per conversation, the number of consecutive fully satisfied turns counted from
  turn 1, divided by the conversation's number of turns; averaged over conversations. `ssr_by_dependency` splits
  conversations into "dependent" (turns build on each other) and "parallel"; a conversation is dependent when any
  of its turns is marked `dependent` (SysBench marks all turns of a conversation the same way).

Missing verdicts (a judge that gave no parsable answer): a criterion with no verdict (absent or None) is left out
of CSR's numerator and denominator, but a turn counts as satisfied for ISR/SSR only when every one of its criteria
has a True verdict, so a missing verdict makes its turn unsatisfied. A turn with no criteria at all is vacuously
satisfied. Verdict keys may be str or int ids (normalised with str()). Turns are ordered by `turn_index` within a
conversation whatever the input order. Empty input gives zeros.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable, Mapping

__all__ = ["aggregate"]


def _verdict(v: Any) -> bool | None:
    """True/False for a usable verdict, None for a missing one. Accepts bools, 0/1 and 'yes'/'no'-like strings."""
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)) and v in (0, 1):
        return bool(v)
    if isinstance(v, str):
        s = v.strip().lower()
        if s in ("true", "yes", "1", "pass", "passed"):
            return True
        if s in ("false", "no", "0", "fail", "failed"):
            return False
    return None


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def aggregate(turns: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """CSR, ISR, SSR and their breakdowns for judged SysBench turns (see the module docstring)."""
    sat, judged = 0, 0
    by_type: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # type -> [satisfied, judged]
    by_align: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # alignment -> [satisfied turns, turns]
    convs: dict[str, list[tuple[int, bool, bool]]] = defaultdict(list)  # id -> [(turn_index, ok, dependent)]
    n_turns, ok_turns = 0, 0

    for t in turns:
        verdicts = {str(k): _verdict(v) for k, v in (t.get("verdicts") or {}).items()}
        turn_ok = True
        for c in t.get("criteria") or ():
            v = verdicts.get(str(c["id"]))
            turn_ok = turn_ok and v is True
            if v is None:
                continue
            judged += 1
            sat += v
            counts = by_type[str(c.get("type", "unknown"))]
            counts[0] += v
            counts[1] += 1
        n_turns += 1
        ok_turns += turn_ok
        if t.get("alignment") is not None:
            by_align[str(t["alignment"])][0] += turn_ok
            by_align[str(t["alignment"])][1] += 1
        convs[str(t["conversation_id"])].append((int(t["turn_index"]), turn_ok, bool(t.get("dependent"))))

    stability: dict[str, list[float]] = defaultdict(list)  # "all" / "dependent" / "parallel" -> per-conversation
    for rows in convs.values():
        rows.sort(key=lambda r: r[0])
        streak = 0
        for _, ok, _ in rows:
            if not ok:
                break
            streak += 1
        rate = streak / len(rows)
        stability["all"].append(rate)
        stability["dependent" if any(r[2] for r in rows) else "parallel"].append(rate)

    mean = lambda xs: _ratio(sum(xs), len(xs))  # noqa: E731
    return {
        "csr": _ratio(sat, judged),
        "isr": _ratio(ok_turns, n_turns),
        "ssr": mean(stability["all"]),
        "csr_by_type": {k: _ratio(s, n) for k, (s, n) in sorted(by_type.items())},
        "isr_by_alignment": {k: _ratio(by_align[k][0], by_align[k][1])
                             for k in ("align", "misalign", *sorted(set(by_align) - {"align", "misalign"}))
                             if k in by_align},
        "ssr_by_dependency": {k: mean(stability[k]) for k in ("dependent", "parallel") if stability.get(k)},
    }
