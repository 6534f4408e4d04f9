"""LLM-judge checklists, SysBench style: a judge model answers yes/no per criterion, in JSON.

Malformed judge output is retried with a reminder; if it never parses, the result is a judge failure
(`judge_error=True`), reported apart and never silently counted as a pass or a fail.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

from promptlearn.checks.base import CheckContext, register_check
from promptlearn.types import CheckResult

CRITERION_TYPES = ("Action", "Content", "Background", "Role", "Format", "Style")

JUDGE_TEMPLATE = """You are a strict verifier. Judge whether the assistant's latest reply satisfies each criterion.

[System prompt given to the assistant]
{system}

[Conversation so far]
{history}

[Current user turn]
{user}

[Assistant's reply to judge]
{reply}

[Criteria]
{criteria}

Answer with one JSON object and nothing else:
{{"reason": "<one or two sentences>", "verdicts": {{{example}}}}}
Each verdict is "yes" if the reply satisfies that criterion, otherwise "no"."""

RETRY_NUDGE = ("Your answer was not valid. Reply with only the JSON object "
               '{"reason": "...", "verdicts": {"<id>": "yes" or "no", ...}} covering every criterion id.')


def _criterion(c: Any, i: int) -> dict[str, str]:
    if isinstance(c, str):
        return {"id": str(i), "content": c, "type": "Content"}
    if not isinstance(c, Mapping) or "content" not in c:
        raise ValueError(f"criteria[{i - 1}] needs 'content' (and optional 'id', 'type')")
    ctype = str(c.get("type", "Content")).capitalize()
    if ctype not in CRITERION_TYPES:
        raise ValueError(f"criteria[{i - 1}].type '{ctype}' must be one of {', '.join(CRITERION_TYPES)}")
    return {"id": str(c.get("id", i)), "content": str(c["content"]), "type": ctype}


def parse_verdicts(text: str, ids: Sequence[str]) -> dict[str, bool] | None:
    """The judge's JSON verdicts for every id, or None if the output is unusable."""
    match = re.search(r"\{.*\}", text, re.DOTALL)
    if not match:
        return None
    try:
        data = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    verdicts = data.get("verdicts") if isinstance(data, dict) else None
    if not isinstance(verdicts, dict):
        return None
    out: dict[str, bool] = {}
    for cid in ids:
        v = verdicts.get(cid, verdicts.get(int(cid)) if cid.isdigit() else None)
        if isinstance(v, bool):
            out[cid] = v
        elif isinstance(v, str) and v.strip().lower() in ("yes", "no", "true", "false"):
            out[cid] = v.strip().lower() in ("yes", "true")
        else:
            return None
    return out


@dataclass
class ChecklistCheck:
    """Criteria judged by any litellm model (the task's `judge`), with optional majority vote over samples."""

    criteria: list[dict[str, str]]
    samples: int = 1
    retries: int = 2
    name: str = "checklist"
    needs_model: ClassVar[bool] = True
    extra: dict[str, Any] = field(default_factory=dict)

    def score(self, reply: str, ctx: CheckContext) -> CheckResult:
        raise RuntimeError("checklist checks need a judge model; the engine calls ascore()")

    def prompt(self, reply: str, ctx: CheckContext) -> str:
        history = "\n".join(f"{m.role}: {m.content}" for m in ctx.history if m.role != "system") or "(none)"
        crit = "\n".join(f"{c['id']}. [{c['type']}] {c['content']}" for c in self.criteria)
        example = ", ".join(f'"{c["id"]}": "yes" or "no"' for c in self.criteria)
        return JUDGE_TEMPLATE.format(system=ctx.system_prompt or "(none)", history=history, user=ctx.user,
                                     reply=reply, criteria=crit, example=example)

    async def ascore(self, reply: str, ctx: CheckContext, lm: Any) -> CheckResult:
        ids = [c["id"] for c in self.criteria]
        votes: list[dict[str, bool]] = []
        raw = ""
        for sample in range(self.samples):
            msgs = [{"role": "user", "content": self.prompt(reply, ctx)}]
            for _attempt in range(self.retries + 1):
                raw = (await lm.complete(msgs, sample=sample, tag="judge")).text
                verdicts = parse_verdicts(raw, ids)
                if verdicts is not None:
                    votes.append(verdicts)
                    break
                msgs = msgs + [{"role": "assistant", "content": raw}, {"role": "user", "content": RETRY_NUDGE}]
        if not votes:
            return CheckResult(0.0, f"judge output unusable after {self.retries + 1} tries: {raw[:80]!r}",
                               judge_error=True, details={"criteria": self.criteria})
        final = {cid: Counter(v[cid] for v in votes).most_common(1)[0][0] if len(votes) > 1 else votes[0][cid]
                 for cid in ids}
        failed = [c for c in self.criteria if not final[c["id"]]]
        feedback = "; ".join(f"not satisfied: {c['content']}" for c in failed)
        return CheckResult(1 - len(failed) / len(ids), feedback,
                           details={"verdicts": final, "criteria": self.criteria, "samples": len(votes)})


@register_check("checklist", "judge")
def _make_checklist(kind: str, criteria: list[str | dict], samples: int = 1, retries: int = 2) -> ChecklistCheck:
    """The task's judge model checks each criterion (SysBench-style checklist); samples > 1 takes a majority vote.

    Criteria are strings or {content, type} with type one of Action, Content, Background, Role, Format, Style.
    Example: {type: checklist, criteria: [Speaks like a pirate, Answers the question]}
    """
    if not criteria:
        raise ValueError("checklist needs a non-empty 'criteria' list")
    if int(samples) < 1:
        raise ValueError("samples must be at least 1")
    return ChecklistCheck([_criterion(c, i) for i, c in enumerate(criteria, 1)], int(samples), int(retries))
