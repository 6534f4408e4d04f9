"""IFEval's 25 verifiable instructions as checks, with strict and loose scoring and IFEval's aggregate metrics.

A task file uses the instruction id as the check type and IFEval's kwargs as parameters:

    {type: "punctuation:no_comma"}
    {type: "length_constraints:number_words", relation: "at least", num_words: 300}

Every check scores strict (the reply as is) and loose (IFEval's upper bound: passes if any of 8 variants of the
reply passes — with markdown `*` removed, first line dropped, last line dropped, and their combinations).
The rules themselves live in `ifeval_rules`; this module validates kwargs, registers the ids and aggregates.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Mapping, Sequence

from promptlearn.checks import ifeval_rules as rules
from promptlearn.checks.base import CheckContext, register_check
from promptlearn.types import CheckResult, passes

INSTRUCTION_IDS: tuple[str, ...] = tuple(rules.RULES)


def loose_variants(reply: str) -> list[str]:
    """IFEval's 8 loose variants, the reply itself first (order as in evaluation_lib)."""
    lines = reply.split("\n")
    cut = ["\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(), "\n".join(lines[1:-1]).strip()]
    return [reply, reply.replace("*", ""), *cut, *(c.replace("*", "") for c in cut)]


@dataclass
class IFEvalCheck:
    """One IFEval instruction with validated kwargs. Pure: the same reply always gets the same result."""

    kind: str
    params: Mapping[str, Any] = field(default_factory=dict)
    name: str = ""
    needs_model: ClassVar[bool] = False

    def __post_init__(self) -> None:
        self.name = self.name or self.kind

    def follows(self, text: str) -> str:
        """"" when `text` follows the instruction, else why not. Empty text never follows (as in IFEval)."""
        if not text.strip():
            return "reply is empty"
        try:
            return rules.RULES[self.kind](text, **self.params)
        except Exception as e:  # noqa: BLE001 - a check must never raise for an odd reply
            return f"could not check the reply ({type(e).__name__}: {e})"

    def score(self, reply: str, ctx: CheckContext | None = None) -> CheckResult:
        strict = self.follows(reply)
        loose = not strict or any(not self.follows(v) for v in loose_variants(reply)[1:])
        return CheckResult(score=0.0 if strict else 1.0, loose=1.0 if loose else 0.0, feedback=strict,
                           details={"instruction_id": self.kind})

    def hint(self) -> str | None:
        """The instruction in the verifier's terms, literal parts quoted (checks.hints)."""
        from promptlearn.checks.hints import ifeval_hint

        return ifeval_hint(self.kind, self.params)

    def repair(self, reply: str) -> str | None:
        """The smallest edit of `reply` this instruction knows that follows it (checks.repairs), or None."""
        from promptlearn.checks.repairs import ifeval_repair

        return ifeval_repair(self.kind, self.params, reply)


# --- kwarg validation ---------------------------------------------------------------------------------------

def _relation(name: str, v: Any) -> str:
    if v not in rules.RELATIONS:
        raise ValueError(f"'{name}' must be 'less than' or 'at least', got {v!r}")
    return v


def _count(name: str, v: Any, minimum: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, str)) or not str(v).strip().lstrip("-").isdigit():
        raise ValueError(f"'{name}' must be an integer, got {v!r}")
    if int(v) < minimum:
        raise ValueError(f"'{name}' must be at least {minimum}, got {v!r}")
    return int(v)


def _text(name: str, v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ValueError(f"'{name}' must be a non-empty string, got {v!r}")
    return v


def _words(name: str, v: Any) -> list[str]:
    values = [v] if isinstance(v, str) else v
    if not isinstance(values, (list, tuple)) or not values:
        raise ValueError(f"'{name}' must be a non-empty list of strings, got {v!r}")
    return [_text(name, x) for x in values]


def _letter(name: str, v: Any) -> str:
    if not isinstance(v, str) or len(v.strip()) != 1:
        raise ValueError(f"'{name}' must be a single character, got {v!r}")
    return v.strip()


def _language(name: str, v: Any) -> str:
    code = _text(name, v).strip().lower()
    if code.split("-")[0] not in rules.LANGUAGE_NAMES and rules._langdetect is None:
        known = ", ".join(sorted(rules.LANGUAGE_NAMES))
        raise ValueError(f"'{name}': unknown language code {v!r} (install langdetect, or use one of: {known})")
    return code


_VALIDATORS: dict[str, Callable[[str, Any], Any]] = {
    "relation": _relation, "let_relation": _relation, "capital_relation": _relation,
    "num_words": _count, "num_sentences": _count, "num_paragraphs": lambda n, v: _count(n, v, 1),
    "nth_paragraph": lambda n, v: _count(n, v, 1), "num_placeholders": _count, "num_bullets": _count,
    "num_highlights": _count, "num_sections": _count, "frequency": _count, "let_frequency": _count,
    "capital_frequency": _count, "keywords": _words, "forbidden_words": _words, "keyword": _text,
    "letter": _letter, "language": _language, "first_word": _text, "postscript_marker": _text,
    "section_spliter": _text, "end_phrase": _text, "prompt_to_repeat": _text,
}


def expected_kwargs(kind: str) -> list[str]:
    """IFEval's kwarg names for one instruction id (all required here; IFEval would pick random ones)."""
    return [p for p in inspect.signature(rules.RULES[kind]).parameters if p != "text"]


@register_check(*INSTRUCTION_IDS)
def make_ifeval_check(kind: str, **kwargs: Any) -> IFEvalCheck:
    """Build one IFEval check; None-valued kwargs are ignored (IFEval's data pads unused keys with null)."""
    if kind not in rules.RULES:
        raise ValueError(f"unknown IFEval instruction id {kind!r}")
    expected = expected_kwargs(kind)
    given = {k: v for k, v in kwargs.items() if v is not None}
    unknown = sorted(set(given) - set(expected))
    if unknown:
        raise TypeError(f"{kind} got unexpected kwarg(s) {', '.join(map(repr, unknown))}; "
                        f"it takes {', '.join(map(repr, expected)) or 'no kwargs'}")
    missing = [k for k in expected if k not in given]
    if missing:
        raise TypeError(f"{kind} is missing required kwarg(s) {', '.join(map(repr, missing))}")
    params = {k: _VALIDATORS[k](k, v) for k, v in given.items()}
    if "nth_paragraph" in params and params["nth_paragraph"] > params["num_paragraphs"]:
        raise ValueError(f"'nth_paragraph' ({params['nth_paragraph']}) must not exceed "
                         f"'num_paragraphs' ({params['num_paragraphs']})")
    return IFEvalCheck(kind=kind, params=params)


# Sample values for the one-line example `promptlearn checks` shows of each instruction (parameters and their
# types come from the rule's own signature).
EXAMPLE_VALUES: dict[str, Any] = {
    "relation": "at least", "let_relation": "at least", "capital_relation": "less than", "num_words": 50,
    "num_sentences": 3, "num_paragraphs": 3, "nth_paragraph": 2, "num_placeholders": 2, "num_bullets": 3,
    "num_highlights": 2, "num_sections": 2, "frequency": 2, "let_frequency": 5, "capital_frequency": 3,
    "keywords": ["treasure", "ship"], "forbidden_words": ["landlubber"], "keyword": "ahoy", "letter": "r",
    "language": "en", "first_word": "Ahoy", "postscript_marker": "P.S.", "section_spliter": "SECTION",
    "end_phrase": "Any other questions?", "prompt_to_repeat": "Tell me about ships.",
}
make_ifeval_check.describes = lambda kind: rules.RULES[kind]  # type: ignore[attr-defined]
make_ifeval_check.example = lambda kind: {k: EXAMPLE_VALUES[k] for k in expected_kwargs(kind)}  # type: ignore


def ifeval_checks(instruction_id_list: Sequence[str], kwargs: Sequence[Mapping[str, Any] | None]) -> list[IFEvalCheck]:
    """The checks of one IFEval data row (`instruction_id_list` and the parallel `kwargs` list)."""
    if len(instruction_id_list) != len(kwargs):
        raise ValueError(f"{len(instruction_id_list)} instruction ids but {len(kwargs)} kwargs entries")
    return [make_ifeval_check(kind=i, **dict(k or {})) for i, k in zip(instruction_id_list, kwargs)]


def ifeval_aggregate(results: Iterable[Sequence[CheckResult]]) -> dict[str, float]:
    """IFEval's four headline numbers from per-prompt lists of results (one result per instruction).

    Prompt-level: fraction of prompts whose every instruction passed. Instruction-level: fraction of all
    instructions that passed. Loose uses `CheckResult.loose` (falling back to `score` when it is None).
    A prompt with no instructions counts as passed; with no prompts at all every number is 0.0.
    """
    prompts = [list(p) for p in results]

    def ok(r: CheckResult, loose: bool) -> bool:
        value = r.loose if loose and r.loose is not None else r.score
        return passes(value)

    flat = [r for p in prompts for r in p]
    out = {}
    for mode, loose in (("strict", False), ("loose", True)):
        out[f"prompt_{mode}"] = sum(all(ok(r, loose) for r in p) for p in prompts) / len(prompts) if prompts else 0.0
        out[f"instruction_{mode}"] = sum(ok(r, loose) for r in flat) / len(flat) if flat else 0.0
    return {k: out[k] for k in ("prompt_strict", "prompt_loose", "instruction_strict", "instruction_loose")}
