"""Building a Check from a task file's spec: loads the built-in families, then looks the type up in the registry.

Apart from base.py so the families can import base (to register) without base importing them back.
"""

from __future__ import annotations

from typing import Any, Mapping

from promptlearn.checks.base import _REGISTRY, Check, CheckSpecError, default_check_name


def check_types() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def _load_builtins() -> None:
    # Imported for their registration side effect; done lazily so importing promptlearn stays fast.
    from promptlearn.checks import assertions, ifeval, judge  # noqa: F401


def build_check(spec: Mapping[str, Any]) -> Check:
    """Turn a spec like {type: starts_with, value: Ahoy} into a Check, or raise CheckSpecError."""
    _load_builtins()
    if not isinstance(spec, Mapping):
        raise CheckSpecError(f"a check must be a mapping with a 'type', got {type(spec).__name__}")
    kind = spec.get("type")
    if not kind:
        raise CheckSpecError("a check needs a 'type' (e.g. type: starts_with); known types: "
                             + ", ".join(check_types()[:8]) + ", ...")
    factory = _REGISTRY.get(str(kind))
    if factory is None:
        import difflib

        close = difflib.get_close_matches(str(kind), _REGISTRY, n=1)
        hint = f"did you mean '{close[0]}'?" if close else "run `promptlearn checks` to list the known types"
        raise CheckSpecError(f"unknown check type '{kind}': {hint}")
    _check_weight_and_turns(spec)
    params = {k: v for k, v in spec.items() if k not in ("type", "name", "weight", "turns")}
    try:
        check = factory(kind=str(kind), **params)
    except TypeError as e:
        raise CheckSpecError(f"check '{kind}': {e}") from None
    name = spec.get("name") or default_check_name(spec)
    object.__setattr__(check, "name", str(name)) if _is_frozen(check) else setattr(check, "name", str(name))
    return check


def _check_weight_and_turns(spec: Mapping[str, Any]) -> None:
    """`weight:` (> 0, the check's share of its turn's score) and `turns:` (1-based turn numbers, negative from
    the end) are read by the engine, not the check; they are validated here with the rest of the spec."""
    kind = spec.get("type")
    weight = spec.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0 or weight == float("inf"):
        raise CheckSpecError(f"check '{kind}': weight must be a number > 0 (e.g. weight: 2), got {weight!r}")
    turns = spec.get("turns")
    if turns is not None:
        if isinstance(turns, int) and not isinstance(turns, bool):
            turns = [turns]
        if (not isinstance(turns, (list, tuple)) or not turns
                or any(isinstance(t, bool) or not isinstance(t, int) or t == 0 for t in turns)):
            raise CheckSpecError(f"check '{kind}': turns must be a list of turn numbers (1 is the first turn, -1 "
                                 f"the last), e.g. turns: [1, -1]; got {spec.get('turns')!r}")


def _is_frozen(obj: Any) -> bool:
    params = getattr(type(obj), "__dataclass_params__", None)
    return bool(params and params.frozen)
