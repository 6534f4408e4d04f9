"""What a passing reply looks like, as one sentence a system prompt can carry: a check's own hint.

A person who knows the verifier writes the rule in the verifier's terms, with its literal parts quoted ("exactly 3
bullet points, each starting with "* ""): on the embedded model that wording took one rule from 0/18 to 6/18 on
val where plain wordings stayed at the floor. A check offers that sentence through an optional `hint()` method
(None when it has nothing literal to say, e.g. a judge or a regex); `check_hint` reads it. The search's
`state_check` operator (optimizers/operators.py) puts the hint of the check failing most into the prompt.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from promptlearn.checks import ifeval_rules as r


def _words(ws: Sequence[str]) -> str:
    quoted = [f'"{w}"' for w in ws]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _word_s(ws: Sequence[str]) -> str:
    return "word" if len(ws) == 1 else "words"


#: IFEval instruction id -> hint from its kwargs (the same kwargs its rule takes, already validated).
IFEVAL_HINTS: dict[str, Callable[..., str]] = {
    "keywords:existence": lambda keywords: f"Use the {_word_s(keywords)} {_words(keywords)} in every reply.",
    "keywords:frequency": lambda keyword, frequency, relation:
        f'Use the word "{keyword}" {r.need(relation, frequency)} times.',
    "keywords:forbidden_words": lambda forbidden_words:
        f"Never write the {_word_s(forbidden_words)} {_words(forbidden_words)}.",
    "keywords:letter_frequency": lambda letter, let_frequency, let_relation:
        f'Use the letter "{letter}" {r.need(let_relation, let_frequency)} times.',
    "language:response_language": lambda language:
        f"Reply only in {r.language_name(language).split(' (')[0]}, never in another language.",
    "length_constraints:number_sentences": lambda num_sentences, relation:
        f"Write {r.need(relation, num_sentences)} sentences.",
    "length_constraints:number_paragraphs": lambda num_paragraphs:
        f'Write exactly {num_paragraphs} paragraphs, separated by a line with "***".',
    "length_constraints:number_words": lambda num_words, relation: f"Use {r.need(relation, num_words)} words.",
    "length_constraints:nth_paragraph_first_word": lambda num_paragraphs, nth_paragraph, first_word:
        f"Write exactly {num_paragraphs} paragraphs separated by blank lines; start paragraph {nth_paragraph} "
        f'with the word "{first_word}".',
    "detectable_content:number_placeholders": lambda num_placeholders:
        f"Include at least {num_placeholders} placeholders in square brackets, like [name].",
    "detectable_content:postscript": lambda postscript_marker:
        f'End the reply with a postscript starting with "{postscript_marker.strip()}".',
    "detectable_format:number_bullet_lists": lambda num_bullets:
        f'Answer with exactly {num_bullets} bullet points, each on its own line starting with "* ".',
    "detectable_format:constrained_response": lambda:
        "Answer with exactly one of: " + ", ".join(f'"{o}"' for o in r.CONSTRAINED_OPTIONS) + ".",
    "detectable_format:number_highlighted_sections": lambda num_highlights:
        f"Highlight {'a phrase' if num_highlights == 1 else f'at least {num_highlights} phrases'} with single "
        "asterisks, like *this*.",
    "detectable_format:multiple_sections": lambda section_spliter, num_sections:
        f'Split the reply into {num_sections} sections, each starting with "{section_spliter.strip()} 1", '
        f'"{section_spliter.strip()} 2", and so on.',
    "detectable_format:json_format": lambda: "Reply with valid JSON only, nothing before or after it.",
    "detectable_format:title": lambda: "Start the reply with a title in double angular brackets, like <<Title>>.",
    "combination:two_responses": lambda: 'Give two different responses, separated by a line with "******".',
    "combination:repeat_prompt": lambda prompt_to_repeat:
        "First repeat the request word for word, then answer it.",
    "startend:end_checker": lambda end_phrase: f'End every reply with the exact phrase "{end_phrase.strip()}".',
    "change_case:capital_word_frequency": lambda capital_frequency, capital_relation:
        f"Write {r.need(capital_relation, capital_frequency)} words in ALL CAPITAL letters.",
    "change_case:english_capital": lambda: "Write the whole reply in English, in CAPITAL LETTERS only.",
    "change_case:english_lowercase": lambda: "Write the whole reply in English, in lowercase letters only.",
    "punctuation:no_comma": lambda: "Do not use any commas.",
    "startend:quotation": lambda: 'Wrap the whole reply in double quotation marks: start and end it with ".',
}


def ifeval_hint(kind: str, params: Mapping[str, Any]) -> str | None:
    fn = IFEVAL_HINTS.get(kind)
    try:
        return fn(**params) if fn else None
    except TypeError:  # kwargs this table does not know (a newer rule): no hint rather than a wrong one
        return None


def check_hint(check: Any) -> str | None:
    """The check's hint (its optional `hint()` method), or None when it has none or gives nothing."""
    fn = getattr(check, "hint", None)
    if not callable(fn):
        return None
    try:
        text = fn()
    except Exception:  # noqa: BLE001 - a plugin's hint must never break a search
        return None
    return text.strip() or None if isinstance(text, str) else None
