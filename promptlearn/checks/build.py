"""Building a Check from a task file's spec: loads the built-in families, then looks the type up in the registry.

Apart from base.py so the families can import base (to register) without base importing them back.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from promptlearn.checks.base import _REGISTRY, Check, CheckSpecError, default_check_name


def check_types() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def describe_check(kind: str) -> dict[str, Any]:
    """What `promptlearn checks` shows of one type: family, a one-line summary, the parameters (name, type,
    default, required) and a one-line example spec.

    Read from the factory itself: its signature and docstring (the first line is the summary; a line
    `Example: {type: ..., ...}` per type gives the example). A factory that serves many types with one
    signature (IFEval) sets `factory.describes = lambda kind: fn` (the function whose signature and docstring
    describe that type) and `factory.example = lambda kind: {param: value}`.
    """
    import inspect

    _load_builtins()
    factory = _REGISTRY.get(kind)
    if factory is None:
        raise CheckSpecError(f"unknown check type '{kind}': {_did_you_mean(kind)}")
    fn = factory.describes(kind) if hasattr(factory, "describes") else inspect.unwrap(factory)
    params = []
    for p in inspect.signature(fn).parameters.values():
        if p.name in ("kind", "text", "self") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        ann = p.annotation
        type_ = "" if ann is p.empty else ann if isinstance(ann, str) else getattr(ann, "__name__", str(ann))
        required = p.default is p.empty
        params.append({"name": p.name, "type": type_, "required": required,
                       "default": None if required else p.default})
    doc = inspect.getdoc(fn) or inspect.getdoc(factory) or ""
    summary = " ".join(doc.split("\n\n", 1)[0].split())
    return {"type": kind, "family": factory.__module__.rsplit(".", 1)[-1], "summary": summary,
            "params": params, "example": _example(kind, factory, doc, params)}


def _example(kind: str, factory: Any, doc: str, params: Sequence[Mapping[str, Any]]) -> str:
    import yaml

    def flow(spec: Mapping[str, Any]) -> str:
        return yaml.safe_dump(dict(spec), default_flow_style=True, sort_keys=False, width=1 << 20,
                              allow_unicode=True).strip()

    if hasattr(factory, "example"):
        return flow({"type": kind, **factory.example(kind)})
    found = []
    for line in doc.splitlines():
        if line.strip().startswith("Example:"):
            try:
                spec = yaml.safe_load(line.split("Example:", 1)[1])
            except yaml.YAMLError:
                continue
            if isinstance(spec, Mapping):
                found.append(dict(spec))
    for spec in found:
        if spec.get("type") == kind:
            return flow(spec)
    if found:
        return flow({**found[0], "type": kind})
    return flow({"type": kind, **{p["name"]: "..." for p in params if p["required"]}})


def _did_you_mean(kind: str) -> str:
    import difflib

    close = difflib.get_close_matches(str(kind), _REGISTRY, n=1)
    return f"did you mean '{close[0]}'?" if close else "run `promptlearn checks` to list the known types"


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
        raise CheckSpecError(f"unknown check type '{kind}': {_did_you_mean(str(kind))}")
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
