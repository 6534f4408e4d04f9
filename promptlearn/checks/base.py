"""The Check protocol and the registry every check family registers into (build.py builds checks from specs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Protocol, Sequence, TypeGuard, TypeVar

from promptlearn.types import CheckResult, Message

if TYPE_CHECKING:
    from promptlearn.lm import LM


@dataclass(frozen=True)
class CheckContext:
    """What a check may look at besides the reply: the system prompt, the history before this turn, the turn."""

    system_prompt: str = ""
    history: Sequence[Message] = ()
    user: str = ""
    turn_index: int = 1
    example_meta: Mapping[str, Any] = field(default_factory=dict)
    turn_meta: Mapping[str, Any] = field(default_factory=dict)


class Check(Protocol):
    """A scorer of one reply.

    Contract: returns a CheckResult with score in [0, 1] (higher is better) and a feedback sentence saying what
    failed; never raises for a bad reply (an empty or odd reply is a low score, not an exception). Checks are
    pure functions of (reply, context) so their results can be cached and compared across candidates.
    Checks that call a model (judges) set `needs_model = True` and implement `ascore` (ModelCheck).
    Optional: `hint() -> str | None`, one sentence saying what a passing reply looks like in the check's own
    terms, literal parts quoted; the search may write it into a prompt (checks.hints, evolve's state_check).
    Optional: `repair(reply) -> str | None`, the smallest edit of a failing reply that makes this check pass, or
    None; the search turns repaired replies into worked examples, and keeps one only when every check of the
    task passes it (checks.repairs, the fixed_example operator). It must never raise.
    """

    name: str
    needs_model: ClassVar[bool]

    def score(self, reply: str, ctx: CheckContext) -> CheckResult: ...


class ModelCheck(Check, Protocol):
    """A check that asks a model (an LLM judge): `needs_model = True`, and the engine awaits `ascore` with the
    judge's LM instead of calling `score`. Same contract as Check; a judge that never gives a parsable verdict
    returns `judge_error=True` rather than raising."""

    async def ascore(self, reply: str, ctx: CheckContext, lm: LM) -> CheckResult: ...


def is_model_check(check: Check) -> TypeGuard[ModelCheck]:
    return bool(getattr(check, "needs_model", False))


class CheckSpecError(ValueError):
    """A check spec in a task file is wrong; the message says which field and how to fix it."""


CheckFactory = Callable[..., Check]
_REGISTRY: dict[str, CheckFactory] = {}
_Factory = TypeVar("_Factory", bound=CheckFactory)


def register_check(*types: str) -> Callable[[_Factory], _Factory]:
    """Register a factory for one or more check `type` names; built-ins register the same way plugins do."""

    def deco(factory: _Factory) -> _Factory:
        for t in types:
            _REGISTRY[t] = factory
        return factory

    return deco


def default_check_name(spec: Mapping[str, Any]) -> str:
    """A readable default name: the type, plus its main argument when there is one."""
    kind = str(spec.get("type"))
    for key in ("value", "values", "pattern", "keywords", "function", "max", "min"):
        if key in spec:
            v = spec[key]
            text = ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
            if len(text) > 24:
                text = text[:21] + "..."
            return f"{kind}({text})"
    return kind
