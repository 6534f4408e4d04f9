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


@dataclass(frozen=True)
class CheckResult:
    """What one check says about one reply. `score` in [0, 1], higher is better.

    `feedback` says what failed in words an optimizer can hand to a proposer model. `loose` is IFEval's
    loose variant where it applies. `judge_error` marks a judge that never gave a parsable verdict: it is
    reported apart and is neither a pass nor a fail.
    """

    score: float
    feedback: str = ""
    loose: float | None = None
    judge_error: bool = False
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.score >= 1.0


@dataclass(frozen=True)
class TurnResult:
    reply: str
    checks: Mapping[str, CheckResult]
    error: str | None = None
    completion_tokens: int = 0

    @property
    def scored(self) -> bool:
        """False when every check on this turn was a judge failure: the turn then counts toward no score."""
        return bool(self.error) or not self.checks or any(not r.judge_error for r in self.checks.values())

    @property
    def score(self) -> float:
        scored = [r.score for r in self.checks.values() if not r.judge_error]
        if self.error:
            return 0.0
        return sum(scored) / len(scored) if scored else 1.0


@dataclass(frozen=True)
class ExampleResult:
    """All generated turns of one conversation with their check results."""

    example_id: str
    turns: tuple[TurnResult, ...]

    @property
    def score(self) -> float:
        turns = [t for t in self.turns if t.scored]
        if not turns:
            return 0.0
        return sum(t.score for t in turns) / len(turns)

    @property
    def feedback(self) -> str:
        parts = []
        for i, t in enumerate(self.turns, 1):
            if t.error:
                parts.append(f"turn {i}: error: {t.error}")
            for name, r in t.checks.items():
                if r.score < 1.0 and r.feedback:
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

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(**{k: getattr(self, k) + getattr(other, k) for k in self.__dataclass_fields__})

    def __sub__(self, other: "Usage") -> "Usage":
        return Usage(**{k: getattr(self, k) - getattr(other, k) for k in self.__dataclass_fields__})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tokens"] = self.tokens
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
