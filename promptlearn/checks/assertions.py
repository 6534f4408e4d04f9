"""App-rule assertions: deterministic checks of one reply (text, regex, affixes, JSON, length, refusal, Python).

Each `type` below is registered with `register_check`; its factory takes `kind=<type>` plus the task file's params
and raises CheckSpecError (a ValueError) naming the bad param and how to fix it. Scores are 0 or 1, except `contains` /
`icontains` with `mode: all`, which give partial credit (the share of required values present). Failures carry a
concrete feedback sentence meant for a proposer model.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import importlib
import importlib.util
import inspect
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

from promptlearn.checks.base import CheckContext, CheckSpecError, default_check_name, register_check
from promptlearn.types import CheckResult

__all__ = ["FunctionCheck", "is_refusal", "refusal_phrase", "strip_json_fence"]

_PASS = CheckResult(1.0)


def _fail(feedback: str, score: float = 0.0, **details: Any) -> CheckResult:
    return CheckResult(score=score, feedback=feedback, details=details)


def _q(text: str, limit: int = 60) -> str:
    """Quote a snippet of text for feedback, shortened and on one line."""
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return "'" + text.replace("\n", "\\n") + "'"


# ---------------------------------------------------------------- param validation


def _factory(*types: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a factory; reject unknown params with a did-you-mean hint; give the check a default name."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        allowed = [p for p in inspect.signature(fn).parameters if p != "kind"]

        @functools.wraps(fn)
        def build(kind: str = types[0], **params: Any) -> Any:
            for key in params:
                if key not in allowed:
                    close = difflib.get_close_matches(key, allowed, n=1)
                    hint = f" (did you mean '{close[0]}'?)" if close else ""
                    raise CheckSpecError(f"{kind}: unknown param '{key}'{hint}; "
                                         f"allowed: {', '.join(allowed) or 'none'}")
            check = fn(kind=kind, **params)
            object.__setattr__(check, "name", default_check_name({"type": kind, **params}))
            return check

        return register_check(*types)(build)

    return deco


def _texts(kind: str, value: Any, values: Any) -> tuple[str, ...]:
    need = f"{kind} needs 'value' (a string) or 'values' (a list of strings)"
    if value is not None and values is not None:
        raise CheckSpecError(f"{kind}: give 'value' or 'values', not both")
    items = [value] if value is not None else values
    if not isinstance(items, (list, tuple)) or not items:
        raise CheckSpecError(need)
    if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in items):
        raise CheckSpecError(f"{need}; got {items!r}")
    out = tuple(str(v) for v in items)
    if kind != "equals" and any(v == "" for v in out):
        raise CheckSpecError(f"{kind}: empty strings match everything; remove them from 'value'/'values'")
    return out


def _flag(kind: str, key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise CheckSpecError(f"{kind}: '{key}' must be true or false, got {v!r}")
    return v


def _choice(kind: str, key: str, v: Any, options: Sequence[str]) -> str:
    if v not in options:
        raise CheckSpecError(f"{kind}: '{key}' must be one of {', '.join(options)}, got {v!r}")
    return str(v)


# ---------------------------------------------------------------- text checks


@dataclass(frozen=True)
class _Rule:
    name: str
    needs_model: ClassVar[bool] = False


@dataclass(frozen=True)
class Contains(_Rule):
    """contains / icontains: any (default) or all values present; not_contains: the negation of contains(mode)."""

    values: tuple[str, ...]
    mode: str
    ignore_case: bool
    negate: bool

    def score(self, reply: str, ctx: CheckContext) -> CheckResult:
        hay = reply.casefold() if self.ignore_case else reply
        found = [v for v in self.values if (v.casefold() if self.ignore_case else v) in hay]
        missing = [v for v in self.values if v not in found]
        listed = lambda xs: ", ".join(map(_q, xs))  # noqa: E731
        if self.negate:
            bad = found if self.mode == "any" or not missing else []
            if not bad:
                return _PASS
            word = "forbidden" if len(bad) == 1 else "all of the forbidden"
            return _fail(f"reply contains {word} {listed(bad)}", found=found)
        if self.mode == "any":
            if found:
                return _PASS
            return _fail(f"reply contains none of {listed(self.values)}" if len(self.values) > 1
                         else f"reply lacks {listed(self.values)}", missing=missing)
        if not missing:
            return _PASS
        return _fail(f"reply lacks {listed(missing)} (needs all of {listed(self.values)})",
                     score=len(found) / len(self.values), missing=missing)

    def hint(self) -> str | None:
        """What a passing reply looks like, literal parts quoted (checks.hints)."""
        words = ", ".join(f'"{v}"' for v in self.values)
        if self.negate:
            return f"Never write {words}."
        which = "" if len(self.values) == 1 else ("one of " if self.mode == "any" else "all of ")
        return f"Include {which}{words} in every reply."

    def repair(self, reply: str) -> str | None:
        """A missing value put in front (all of them for mode all); a forbidden one cut out (checks.repairs)."""
        flags = re.IGNORECASE if self.ignore_case else 0
        if self.negate:
            for v in self.values:
                reply = re.sub(r"\s*" + re.escape(v), "", reply, flags=flags)
            return reply.strip()
        missing = [v for v in self.values if not re.search(re.escape(v), reply, flags)]
        lead = missing if self.mode == "all" else missing[:1]
        return " ".join(lead) + " " + reply if lead else reply


@_factory("contains", "not_contains")
def contains(kind: str, value: str | None = None, values: list[str] | None = None, mode: str = "any",
             ignore_case: bool = False) -> Contains:
    """The reply contains `value` (or any / all of `values`, by `mode`); not_contains: none of them.

    Example: {type: contains, values: [arr, matey], mode: any}
    Example: {type: not_contains, value: As an AI}
    """
    return Contains("", _texts(kind, value, values), _choice(kind, "mode", mode, ("any", "all")),
                    _flag(kind, "ignore_case", ignore_case), negate=kind == "not_contains")


@_factory("icontains")
def icontains(kind: str, value: str | None = None, values: list[str] | None = None, mode: str = "any") -> Contains:
    """The reply contains `value` (or any / all of `values`, by `mode`), ignoring case.

    Example: {type: icontains, value: ahoy}
    """
    return Contains("", _texts(kind, value, values), _choice(kind, "mode", mode, ("any", "all")), True, False)


@dataclass(frozen=True)
class Regex(_Rule):
    pattern: re.Pattern[str]
    match: str
    negate: bool

    def score(self, reply: str, ctx: CheckContext) -> CheckResult:
        m = getattr(self.pattern, self.match)(reply)
        how = {"search": "match", "fullmatch": "fully match", "match": "match at the start"}[self.match]
        if self.negate and m:
            return _fail(f"reply must not {how} /{self.pattern.pattern}/ but has {_q(m.group(0))}")
        if not self.negate and not m:
            return _fail(f"reply does not {how} /{self.pattern.pattern}/")
        return _PASS


@_factory("regex")
def regex(kind: str, pattern: str | None = None, flags: Sequence[str] = (), match: str = "search",
          negate: bool = False) -> Regex:
    """The reply matches the regular expression `pattern` (match: search, fullmatch or match; negate: must not).

    Example: {type: regex, pattern: '^Ahoy\\b', flags: [IGNORECASE]}
    """
    if not isinstance(pattern, str) or not pattern:
        raise CheckSpecError(f"{kind} needs 'pattern' (a regular expression string)")
    names = [flags] if isinstance(flags, str) else flags
    if not isinstance(names, (list, tuple)):
        raise CheckSpecError(f"{kind}: 'flags' must be a list like [IGNORECASE, MULTILINE, DOTALL]")
    bits = 0
    for f in names:
        flag = getattr(re.RegexFlag, str(f).upper(), None)
        if not isinstance(flag, re.RegexFlag):
            raise CheckSpecError(f"{kind}: unknown flag {f!r}; use IGNORECASE, MULTILINE, DOTALL, VERBOSE, ASCII")
        bits |= flag
    try:
        compiled = re.compile(pattern, bits)
    except re.error as e:
        raise CheckSpecError(f"{kind}: 'pattern' {pattern!r} does not compile: {e}") from None
    return Regex("", compiled, _choice(kind, "match", match, ("search", "fullmatch", "match")),
                 _flag(kind, "negate", negate))


@dataclass(frozen=True)
class TextMatch(_Rule):
    """equals / starts_with / ends_with one of `values`, after optional stripping of outer whitespace and case
    folding. `skip_punctuation` ignores non-word characters (e.g. markdown '**') at the compared end(s)."""

    how: str  # "equals" | "starts_with" | "ends_with"
    values: tuple[str, ...]
    ignore_case: bool
    strip: bool
    skip_punctuation: bool

    def _norm(self, text: str) -> str:
        text = text.strip() if self.strip else text
        if self.skip_punctuation:
            text = text if self.how == "ends_with" else re.sub(r"^[\W_]+", "", text)
            text = text if self.how == "starts_with" else re.sub(r"[\W_]+$", "", text)
        return text.casefold() if self.ignore_case else text

    def score(self, reply: str, ctx: CheckContext) -> CheckResult:
        got = self._norm(reply)
        tests: dict[str, Callable[[str], bool]] = {"equals": got.__eq__, "starts_with": got.startswith,
                                                    "ends_with": got.endswith}
        test = tests[self.how]
        if any(test(self._norm(v)) for v in self.values):
            return _PASS
        want, shown = " or ".join(map(_q, self.values)), reply.strip() if self.strip else reply
        if self.how == "equals":
            return _fail(f"expected exactly {want}, got {_q(shown)}")
        verb = "end" if self.how == "ends_with" else "start"
        if not shown.strip():
            return _fail(f"expected to {verb} with {want}, reply is empty")
        n, words = max(len(v.split()) for v in self.values) + 1, shown.split(" ")
        snippet = " ".join(words[-n:] if verb == "end" else words[:n])
        return _fail(f"expected to {verb} with {want}, {verb}s with {_q(snippet, 40)}")

    def hint(self) -> str | None:
        """What a passing reply looks like, literal parts quoted (checks.hints)."""
        verb = {"equals": "Reply with exactly", "starts_with": "Start every reply with",
                "ends_with": "End every reply with"}[self.how]
        return f"{verb} " + " or ".join(f'"{v}"' for v in self.values) + "."

    def repair(self, reply: str) -> str | None:
        """The first value put at the start or the end (checks.repairs); an exact reply has no edit."""
        if self.how == "starts_with":
            return f"{self.values[0]} {reply.strip()}"
        if self.how == "ends_with":
            return f"{reply.strip()} {self.values[0]}"
        return None


@_factory("starts_with", "ends_with", "equals")
def text_match(kind: str, value: str | None = None, values: list[str] | None = None, ignore_case: bool = False,
               strip: bool = True, skip_punctuation: bool = False) -> TextMatch:
    """The reply starts with / ends with / equals `value` or one of `values` (outer whitespace stripped).

    Example: {type: starts_with, value: Ahoy}
    Example: {type: ends_with, values: [Arr!, Yo ho!]}
    Example: {type: equals, value: 'yes', ignore_case: true}
    """
    return TextMatch("", kind, _texts(kind, value, values), _flag(kind, "ignore_case", ignore_case),
                     _flag(kind, "strip", strip), _flag(kind, "skip_punctuation", skip_punctuation))


# ---------------------------------------------------------------- JSON


_FENCE = re.compile(r"\A\s*```[ \t]*(?:json|JSON)?[ \t]*\n(.*?)\n?```\s*\Z", re.DOTALL)


def strip_json_fence(text: str) -> str:
    """The body of a reply that is one ```json (or bare ```) fenced block; other text is returned unchanged."""
    m = _FENCE.match(text)
    return m.group(1) if m else text


@dataclass(frozen=True)
class JsonCheck(_Rule):
    """is_json / json_schema. With `allow_fence` (default true) a reply that is exactly one ```json fenced
    block is parsed from inside the fence; text around the fence still makes it invalid."""

    schema: Mapping[str, Any] | None
    allow_fence: bool

    def score(self, reply: str, ctx: CheckContext) -> CheckResult:
        body = strip_json_fence(reply) if self.allow_fence else reply
        try:
            data = json.loads(body)
        except ValueError as e:
            return _fail(f"reply is not valid JSON ({e}); starts with {_q(reply.strip(), 40)}")
        if self.schema is None:
            return _PASS
        import jsonschema

        errors = list(jsonschema.validators.validator_for(self.schema)(self.schema).iter_errors(data))
        if not errors:
            return _PASS
        where = lambda e: "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path)  # noqa: E731
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        return _fail("reply JSON does not match the schema: "
                     + "; ".join(f"at {where(e)}: {e.message}" for e in errors[:3]) + more)

    def hint(self) -> str | None:
        """What a passing reply looks like (checks.hints)."""
        return "Reply with valid JSON only, nothing before or after it."


@_factory("is_json", "json_schema")
def json_check(kind: str, schema: dict | None = None, allow_fence: bool = True) -> JsonCheck:
    """The reply is JSON (is_json), valid against the JSON Schema `schema` (json_schema); a ```json fence is allowed.

    Example: {type: is_json}
    Example: {type: json_schema, schema: {type: object, required: [answer]}}
    """
    if kind == "is_json":
        if schema is not None:
            raise CheckSpecError("is_json takes no 'schema'; use type: json_schema to validate against one")
        return JsonCheck("", None, _flag(kind, "allow_fence", allow_fence))
    if not isinstance(schema, Mapping):
        raise CheckSpecError(f"{kind} needs 'schema' (a JSON Schema mapping, e.g. {{type: object}})")
    try:
        import jsonschema
    except ImportError:
        raise CheckSpecError(f"{kind} needs the 'jsonschema' package: pip install jsonschema") from None
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as e:
        raise CheckSpecError(f"{kind}: 'schema' is not a valid JSON Schema: {e.message}") from None
    return JsonCheck("", dict(schema), _flag(kind, "allow_fence", allow_fence))


# ---------------------------------------------------------------- length


@dataclass(frozen=True)
class Length(_Rule):
    """Words are whitespace-separated tokens; characters are counted after stripping outer whitespace."""

    unit: str  # "words" | "characters"
    at_most: bool
    value: int

    def score(self, reply: str, ctx: CheckContext) -> CheckResult:
        n = len(reply.split()) if self.unit == "words" else len(reply.strip())
        if (n <= self.value) if self.at_most else (n >= self.value):
            return _PASS
        bound = "limit" if self.at_most else "minimum"
        return _fail(f"reply has {n} {self.unit}, {bound} is {self.value}", count=n)

    def hint(self) -> str | None:
        """What a passing reply looks like (checks.hints)."""
        return f"Use {'at most' if self.at_most else 'at least'} {self.value} {self.unit}."


@_factory("max_words", "min_words", "max_chars", "min_chars")
def length(kind: str, value: int | None = None) -> Length:
    """The reply has at most (max_) or at least (min_) `value` words (whitespace-separated) or characters.

    Example: {type: max_words, value: 60}
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CheckSpecError(f"{kind} needs 'value' (a whole number >= 0), got {value!r}")
    return Length("", "words" if kind.endswith("words") else "characters", kind.startswith("max"), value)


# ---------------------------------------------------------------- refusal

# Heuristic: a reply refuses when one of these phrases appears in its first _HEAD characters (refusals lead with
# the refusal), or one of the unambiguous _ANYWHERE phrases appears at all. Apostrophes are normalised and case is
# ignored. "I can't wait/stress/believe..." are not refusals. It errs toward missing polite partial refusals.
_HEAD = 200
_REFUSAL_HEAD = re.compile(
    r"\bi (?:can't|cannot|can not)(?! (?:wait|stress|emphasi[sz]e|believe|recommend|thank|tell you how|overstate))"
    r"|\bi(?:'m| am) (?:sorry|afraid),? but\b|\bsorry, but i\b|\bi apologi[sz]e, but\b"
    r"|\bi(?:'m| am) (?:unable|not able|not going) to\b|\bi won't\b|\bi will not\b"
    r"|\bas an ai\b|\bi (?:must|have to|need to) decline\b|\bi(?:'m| am) not (?:comfortable|permitted|allowed)\b"
    r"|\bi don't feel comfortable\b|\bit(?:'s| is) not appropriate for me\b"
)
_REFUSAL_ANYWHERE = re.compile(
    r"\b(?:can't|cannot|unable to|not able to) (?:help|assist) with (?:that|this|your request)\b"
    r"|\b(?:can't|cannot|unable to) (?:comply|fulfil+) (?:with )?(?:that|this|your)\b|\bi must decline\b"
)


def refusal_phrase(text: str) -> str | None:
    """The refusal phrase found in `text`, or None (see the heuristic above)."""
    t = re.sub(r"\s+", " ", text.replace("\u2019", "'").replace("\u2018", "'")).strip().lower()
    t = re.sub(r"^[\W_]+", "", t)
    m = _REFUSAL_HEAD.search(t[:_HEAD]) or _REFUSAL_ANYWHERE.search(t)
    return m.group(0) if m else None


def is_refusal(text: str) -> bool:
    """True when the reply looks like a refusal; used for refusal checks and over-refusal metrics."""
    return refusal_phrase(text) is not None


@dataclass(frozen=True)
class Refusal(_Rule):
    want_refusal: bool

    def score(self, reply: str, ctx: CheckContext) -> CheckResult:
        phrase = refusal_phrase(reply)
        if (phrase is not None) == self.want_refusal:
            return _PASS
        if self.want_refusal:
            return _fail(f"expected a refusal, reply complies: {_q(reply.strip(), 50)}")
        return _fail(f"reply refuses ({_q(phrase or '')}): {_q(reply.strip(), 50)}")


@_factory("refusal", "not_refusal")
def refusal(kind: str) -> Refusal:
    """The reply refuses (refusal) or does not (not_refusal), by a phrase heuristic ("I can't help with ...").

    Example: {type: refusal}
    """
    return Refusal("", kind == "refusal")


# ---------------------------------------------------------------- Python functions


def _coerce(out: Any, label: str) -> CheckResult:
    """Turn what a check function returned (bool, score, (score, feedback), CheckResult) into a CheckResult."""
    base, feedback = (out, out.feedback) if isinstance(out, CheckResult) else (CheckResult(0.0), "")
    if isinstance(out, CheckResult):
        out = out.score
    elif isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], (str, type(None))):
        out, feedback = out[0], out[1] or ""
    if isinstance(out, bool):
        score = 1.0 if out else 0.0
    elif isinstance(out, (int, float)) and not math.isnan(out) and 0.0 <= out <= 1.0:
        score = float(out)
    else:
        return _fail(f"{label} returned {out!r}; expected a bool, a score in [0, 1], (score, feedback) or a "
                     "CheckResult", error="bad return")
    if score < 1.0 and not feedback:
        feedback = f"{label} failed (score {score:g})"
    return dataclasses.replace(base, score=score, feedback=feedback)


@dataclass(frozen=True)
class FunctionCheck:
    """A check from a plain callable `fn(reply, ctx)` or `fn(reply)`; see `_coerce` for what it may return.

    Exceptions raised by `fn` become score 0 with the exception as feedback; they never propagate.
    """

    fn: Callable[..., Any]
    name: str | None = None
    label: str = field(default="", compare=False)
    needs_model: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise TypeError(f"FunctionCheck needs a callable, got {type(self.fn).__name__}")
        fn_name = getattr(self.fn, "__name__", type(self.fn).__name__)
        object.__setattr__(self, "name", self.name or fn_name)
        object.__setattr__(self, "label", self.label or f"check function '{fn_name}'")
        try:
            params = inspect.signature(self.fn).parameters.values()
            positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            takes_ctx = len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)
        except (TypeError, ValueError):  # builtins without a signature
            takes_ctx = True
        object.__setattr__(self, "_takes_ctx", takes_ctx)

    def score(self, reply: str, ctx: CheckContext) -> CheckResult:
        try:
            out = self.fn(reply, ctx) if self._takes_ctx else self.fn(reply)  # type: ignore[attr-defined]
        except Exception as e:  # noqa: BLE001 - a user function must never crash a run
            return _fail(f"{self.label} raised {type(e).__name__}: {e}", error=repr(e))
        return _coerce(out, self.label)


def load_function(spec: str, base_dir: str | Path | None = None) -> Callable[..., Any]:
    """Import `module:function` or `path/to/file.py:function` (relative to `base_dir`, then the working dir)."""
    target, sep, fn_name = spec.rpartition(":")
    if not sep or not target or not fn_name.isidentifier():
        raise CheckSpecError(f"python: 'function' must look like 'module:function' or "
                             f"'path/to/file.py:function', got {spec!r}")
    roots = [Path(base_dir)] if base_dir else []
    roots.append(Path.cwd())
    module = None
    if target.endswith(".py"):
        path = next((r / target for r in roots if (r / target).is_file()), Path(target))
        if not path.is_file():
            raise CheckSpecError(f"python: file '{target}' of {spec!r} not found (looked in "
                                 f"{', '.join(str(r) for r in roots)})")
        module = _load_file(path)
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as e:
            # a module sitting next to the task file or in the working dir, which need not be on sys.path
            rel = target.replace(".", "/") + ".py"
            found = next((r / rel for r in roots if (r / rel).is_file()), None)
            if e.name != target.split(".")[0] or found is None:
                raise CheckSpecError(f"python: cannot import module '{target}' for {spec!r}: {e}") from None
            module = _load_file(found)
        except Exception as e:  # noqa: BLE001 - import-time errors in user code
            raise CheckSpecError(f"python: importing module '{target}' for {spec!r} failed: "
                                 f"{type(e).__name__}: {e}") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise CheckSpecError(f"python: module '{target}' has no function '{fn_name}'")
    return fn


def _load_file(path: Path) -> Any:
    path = path.resolve()
    mod_name = f"promptlearn_user_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise CheckSpecError(f"python: cannot load '{path}' as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001
        del sys.modules[mod_name]
        raise CheckSpecError(f"python: importing '{path}' failed: {type(e).__name__}: {e}") from None
    return module


@_factory("python")
def python(kind: str, function: str | None = None, base_dir: str | None = None) -> FunctionCheck:
    """Your function `fn(reply, ctx)` -> bool, a score in [0, 1] or (score, feedback), as 'module:function' or
    'path/to/file.py:function'.

    `base_dir` (optional) is where relative paths resolve first; a task loader may pass the task file's folder.
    Example: {type: python, function: 'checks.py:polite'}
    """
    if not isinstance(function, str):
        raise CheckSpecError(f"{kind} needs 'function' as 'module:function' or 'path/to/file.py:function'")
    return FunctionCheck(load_function(function, base_dir), label=f"check function '{function}'")


# ---------------------------------------------------------------- in-process callables (the Python API)

_CALLABLES: dict[str, Callable[..., Any]] = {}


def register_callable(fn: Callable[..., Any], name: str | None = None) -> dict[str, Any]:
    """Register a plain callable as a check of this process; returns the spec that refers to it.

    The spec, `{type: python_callable, ref: <id>, name: <name>}`, is plain data like every other check spec, so
    tasks, fingerprints and run stores stay serializable. The ref is `module:qualname@<code hash>`, with `#2`,
    `#3`, ... for distinct callables that would share it (closures over different values), so the same code
    registered in the same order gets the same ref in every process.
    """
    if not callable(fn):
        raise CheckSpecError(f"a check must be a spec mapping or a callable, got {type(fn).__name__}")
    base = f"{getattr(fn, '__module__', None) or '?'}:{getattr(fn, '__qualname__', type(fn).__qualname__)}"
    code = getattr(fn, "__code__", None)
    if code is not None:
        consts = tuple(c for c in code.co_consts if isinstance(c, (str, bytes, int, float, bool, type(None))))
        base += "@" + hashlib.sha1(repr((code.co_code, code.co_names, consts)).encode()).hexdigest()[:8]
    ref, n = base, 2
    while ref in _CALLABLES and _CALLABLES[ref] != fn:  # bound methods are equal, not identical
        ref, n = f"{base}#{n}", n + 1
    _CALLABLES[ref] = fn
    label = name or getattr(fn, "__name__", None) or type(fn).__name__
    return {"type": "python_callable", "ref": ref, "name": "check" if label == "<lambda>" else label}


@_factory("python_callable")
def python_callable(kind: str, ref: str | None = None) -> FunctionCheck:
    """A callable registered in this process with `register_callable` (what `make_task` does for callables).

    Example: {type: python_callable, ref: 'app.checks:polite@1a2b3c4d'}
    """
    fn = _CALLABLES.get(str(ref)) if ref is not None else None
    if fn is None:
        raise CheckSpecError(f"{kind}: no callable {ref!r} is registered in this process; pass the function to "
                             "make_task (or register_callable) in the process that evaluates, or use "
                             "type: python with function: 'module:function' in a task file")
    return FunctionCheck(fn, label=f"check function '{getattr(fn, '__name__', ref)}'")
