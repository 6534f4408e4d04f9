"""Core value types. Frozen so results can be hashed, cached and stored without surprise mutation."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class Message:
    role: str
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class Turn:
    """One user turn. `given` is a fixed assistant reply (used as history, not generated or scored)."""

    user: str
    checks: tuple[Mapping[str, Any], ...] = ()
    given: str | None = None
    reference: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Example:
    """A conversation: user turns in order, the checks for every turn, and free-form metadata."""

    id: str
    turns: tuple[Turn, ...]
    checks: tuple[Mapping[str, Any], ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def benign(self) -> bool:
        return bool(self.meta.get("benign", False))

    @property
    def attack(self) -> bool:
        return bool(self.meta.get("attack", False))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "turns": [
                {"user": t.user, "checks": [dict(c) for c in t.checks], "given": t.given,
                 "reference": t.reference, "meta": dict(t.meta)}
                for t in self.turns
            ],
            "checks": [dict(c) for c in self.checks],
            "meta": dict(self.meta),
        }


#: The one pass threshold: a score counts as a pass from here up (float sums of 1.0s may land a hair below 1).
PASS = 1.0 - 1e-9


def passes(score: float) -> bool:
    """Whether a score (of a check, a turn or an example) is a pass."""
    return score >= PASS


@dataclass(frozen=True)
class CheckResult:
    """What one check says about one reply. `score` in [0, 1], higher is better.

    `feedback` says what failed in words an optimizer can hand to a proposer model. `loose` is IFEval's
    loose variant where it applies. `judge_error` marks a judge that never gave a parsable verdict: it is
    reported apart and is neither a pass nor a fail. `weight` is the check's weight in its turn's score
    (the check's `weight:` times `objective.weights` for its name).
    """

    score: float
    feedback: str = ""
    loose: float | None = None
    judge_error: bool = False
    details: Mapping[str, Any] = field(default_factory=dict)
    weight: float = 1.0

    @property
    def passed(self) -> bool:
        return passes(self.score)

    def value(self, loose: bool = False) -> float:
        """The score, or the loose score where the check has one and `loose` is asked for."""
        return self.loose if loose and self.loose is not None else self.score

    @property
    def is_ifeval(self) -> bool:
        """An IFEval instruction (classified by what the check reported, never by its name)."""
        return "instruction_id" in self.details

    @property
    def is_checklist(self) -> bool:
        """A judge checklist with typed criteria (what SysBench's metrics aggregate)."""
        return "criteria" in self.details


@dataclass(frozen=True)
class TurnResult:
    reply: str
    checks: Mapping[str, CheckResult]
    error: str | None = None
    completion_tokens: int = 0

    @property
    def scored(self) -> bool:
        """Whether this turn counts toward its example's score: it failed, or some check gave a verdict. A turn
        no check applies to, or whose every check was a judge failure, counts toward no score."""
        return bool(self.error) or any(not r.judge_error for r in self.checks.values())

    def value(self, loose: bool = False) -> float:
        """The one turn-scoring rule: 0 on an error, else the weighted mean of the checks that gave a verdict
        (judge errors left out); 1.0 for a turn with no verdict. Only meaningful when `scored`."""
        if self.error:
            return 0.0
        rated = [(r.value(loose), r.weight) for r in self.checks.values() if not r.judge_error]
        if not rated:
            return 1.0
        total = sum(w for _, w in rated)  # plain sums: with unit weights, exactly the unweighted mean as before
        return sum(v * w for v, w in rated) / total if total > 0 else 1.0

    @property
    def score(self) -> float:
        return self.value()


@dataclass(frozen=True)
class ExampleResult:
    """All generated turns of one conversation with their check results.

    `primary` is the task's `objective.primary`: "score" (strict) or "loose" (IFEval's loose variant where a
    check has one). `score` is that primary score, the one every decision and report uses.
    """

    example_id: str
    turns: tuple[TurnResult, ...]
    primary: str = field(default="score", compare=False)

    def value(self, loose: bool = False) -> float:
        """Mean over the turns that were scored (see TurnResult.scored). With no scored turn: 1.0 when no check
        applied to any turn (nothing to keep), 0.0 when every check was a judge failure (nothing was verified)."""
        turns = [t for t in self.turns if t.scored]
        if not turns:
            return 0.0 if any(t.checks for t in self.turns) else 1.0
        return sum(t.value(loose) for t in turns) / len(turns)

    @property
    def score(self) -> float:
        return self.value(self.primary == "loose")

    @property
    def strict_score(self) -> float:
        return self.value(False)

    @property
    def loose_score(self) -> float:
        return self.value(True)

    @property
    def passed(self) -> bool:
        return passes(self.score)

    @property
    def feedback(self) -> str:
        parts = []
        for i, t in enumerate(self.turns, 1):
            if t.error:
                parts.append(f"turn {i}: error: {t.error}")
            for name, r in t.checks.items():
                if not r.passed and r.feedback:
                    parts.append(f"turn {i}: {name}: {r.feedback}" if len(self.turns) > 1 else f"{name}: {r.feedback}")
        return "; ".join(parts)

    def check_rates(self) -> dict[str, float]:
        """Mean score per check name over this example's turns (judge errors left out)."""
        acc: dict[str, list[float]] = {}
        for t in self.turns:
            for name, r in t.checks.items():
                if not r.judge_error:
                    acc.setdefault(name, []).append(r.score)
        return {k: sum(v) / len(v) for k, v in acc.items()}


@dataclass(frozen=True)
class Usage:
    """Model usage of one piece of work. Cached calls are counted apart and cost nothing."""

    calls: int = 0
    cached_calls: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    usd: float = 0.0
    seconds: float = 0.0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def requests(self) -> int:
        """Requests made, whether the model or the cache answered them: what `max_calls` counts."""
        return self.calls + self.cached_calls

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(**{k: getattr(self, k) + getattr(other, k) for k in self.__dataclass_fields__})

    def __sub__(self, other: "Usage") -> "Usage":
        return Usage(**{k: getattr(self, k) - getattr(other, k) for k in self.__dataclass_fields__})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tokens"] = self.tokens
        d["requests"] = self.requests
        return d


def prompt_id(prompt: str) -> str:
    """Content hash id of a system prompt (12 hex chars is plenty for one run)."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:12]


#: Candidate meta keys that are decoding options of the target model: the engine applies them when it scores the
#: candidate, and they are part of its identity (same prompt, different decoding = a different candidate).
MODEL_OVERRIDE_KEYS = ("guidance",)


def model_overrides(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The decoding options a candidate's meta carries, normalised (guidance as a float)."""
    return {k: float(meta[k]) for k in MODEL_OVERRIDE_KEYS if meta.get(k) is not None}


def candidate_id(prompt: str, overrides: Mapping[str, Any] | None = None) -> str:
    """prompt_id(prompt) for a plain prompt; with model overrides, a hash of the prompt and the overrides."""
    if not overrides:
        return prompt_id(prompt)
    return prompt_id(prompt + "\x00" + json.dumps(dict(overrides), sort_keys=True))


@dataclass(frozen=True)
class Candidate:
    prompt: str
    parents: tuple[str, ...] = ()
    operator: str = "seed"
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def model_overrides(self) -> dict[str, Any]:
        """Decoding options from meta (e.g. `{"guidance": 1.4}`) the engine applies when scoring this candidate."""
        return model_overrides(self.meta)

    @property
    def id(self) -> str:
        return candidate_id(self.prompt, self.model_overrides)
