"""A failing reply edited until it passes one check: material for worked examples when the model's own replies
rarely pass.

What a person does first for a small model that never writes the format is show it: take one of its own replies
and fix it by hand (put the title in <<brackets>>, start with "Friend,", cut to two sentences). A check offers
that edit through an optional `repair(reply) -> str | None` method: the smallest edit of `reply` it knows that
makes this check pass, or None when it has none (a judge, a regex, a language). `repair_reply` reads it.
A repair is a proposal, never a verdict: the search keeps a repaired reply only when the task's own scoring
path passes it on every check (the one scoring rule), so a repair that breaks another check is dropped.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Mapping

from promptlearn.checks import ifeval_rules as r


def sentence_spans(text: str) -> list[str]:
    """`text` cut into the sentences `ifeval_rules.count_sentences` counts (same break rule), whitespace kept
    inside each sentence as written."""
    tokens = list(re.finditer(r"\S+", text))
    out, start = [], 0
    for tok, nxt in zip(tokens, tokens[1:]):
        if r.ends_sentence(tok.group(), nxt.group()):
            out.append(text[start:tok.end()].strip())
            start = tok.end()
    tail = text[start:].strip()
    return out + [tail] if tail else out


def _lead(text: str) -> str:
    """`text` as it reads after a word put in front of it: its first letter lowercased unless it is an acronym."""
    return text[:1].lower() + text[1:] if text[:1].isupper() and not text[1:2].isupper() else text


def _keywords(text: str, *, keywords: list[str]) -> str:
    missing = [k for k in keywords if not re.search(re.escape(k), text, re.IGNORECASE)]
    lead = ", ".join(missing)
    return f"{lead[:1].upper()}{lead[1:]}, {_lead(text)}" if missing else text


def _forbidden(text: str, *, forbidden_words: list[str]) -> str:
    for w in forbidden_words:
        text = re.sub(r"\s*\b" + re.escape(w) + r"\b", "", text, flags=re.IGNORECASE)
    return text.strip()


def _fewer(items: list[str], relation: str, n: int, join: str) -> str | None:
    if relation != "less than" or n < 2:
        return None
    return join.join(items[:n - 1])


def _sentences(text: str, *, num_sentences: int, relation: str) -> str | None:
    return _fewer(sentence_spans(text), relation, num_sentences, " ")


def _words(text: str, *, num_words: int, relation: str) -> str | None:
    """Whole sentences while they fit under the limit; the first sentence cut at a word when none does."""
    if relation != "less than" or num_words < 2:
        return None
    kept: list[str] = []
    for s in sentence_spans(text):
        if r.count_words(" ".join(kept + [s])) >= num_words:
            break
        kept.append(s)
    if kept:
        return " ".join(kept)
    words = text.split()
    while words and r.count_words(" ".join(words)) >= num_words:
        words.pop()
    return " ".join(words) or None


def _pieces(text: str) -> list[str]:
    """The sentences of each line (two words or more), list markers and stars stripped: what a list is made of."""
    out = []
    for line in text.split("\n"):
        out += [p for p in (s.replace("*", "").lstrip("- ").strip() for s in sentence_spans(line))
                if r.count_words(p) > 1 and not re.fullmatch(r"\d+\.", p)]
    return out


def _bullets(text: str, *, num_bullets: int) -> str | None:
    parts = _pieces(text)
    if len(parts) < num_bullets:
        parts = [p.strip() for p in re.split(r"[,;]\s+", " ".join(parts)) if p.strip()]
    if len(parts) < num_bullets:
        return None
    return "\n".join(f"* {p}" for p in parts[:num_bullets])


def _highlight(text: str, *, num_highlights: int) -> str | None:
    """The first sentences wrapped in *stars*, one per highlight, the rest as written (stars removed)."""
    lines, left = [], num_highlights
    for line in text.replace("*", "").split("\n"):
        spans = sentence_spans(line)
        marked = []
        for s in spans:
            lead = re.match(r"^-\s*", s)
            if left and s.strip("- "):
                s, left = (lead.group() if lead else "") + f"*{s[lead.end() if lead else 0:]}*", left - 1
            marked.append(s)
        lines.append(" ".join(marked))
    return None if left else "\n".join(lines)


_LINKS = frozenset("a an the of in on at to for and or but with by from is was are as that this".split())


def _title(text: str) -> str | None:
    """The reply's first few words, capitalised, as its title on a line of its own."""
    first = sentence_spans(text)[:1]
    words = re.findall(r"[A-Za-z0-9][A-Za-z0-9'-]*", first[0] if first else "")[:5]
    while len(words) > 1 and words[-1].lower() in _LINKS:
        words.pop()
    return f"<<{' '.join(w[:1].upper() + w[1:] for w in words)}>>\n{text}" if words else None


def _end(text: str, *, end_phrase: str) -> str:
    return f"{text.rstrip()} {end_phrase.strip()}"


def _postscript(text: str, *, postscript_marker: str) -> str:
    return f"{text.rstrip()}\n\n{postscript_marker.strip()} I hope this helps."


def _quotation(text: str) -> str:
    return '"' + text.strip().strip('"') + '"'


def _no_comma(text: str) -> str:
    return re.sub(r"\s*,\s*", " ", text).strip()


def _json(text: str) -> str:
    return json.dumps({"answer": text.strip()})


#: IFEval instruction id -> repair of a reply from the rule's kwargs (None: the rule has no edit it trusts).
IFEVAL_REPAIRS: dict[str, Callable[..., str | None]] = {
    "keywords:existence": _keywords,
    "keywords:forbidden_words": _forbidden,
    "length_constraints:number_sentences": _sentences,
    "length_constraints:number_words": _words,
    "detectable_format:number_bullet_lists": _bullets,
    "detectable_format:number_highlighted_sections": _highlight,
    "detectable_format:title": _title,
    "startend:end_checker": _end,
    "detectable_content:postscript": _postscript,
    "startend:quotation": _quotation,
    "change_case:english_lowercase": lambda text: text.lower(),
    "change_case:english_capital": lambda text: text.upper(),
    "punctuation:no_comma": _no_comma,
    "detectable_format:json_format": _json,
}


def ifeval_repair(kind: str, params: Mapping[str, Any], reply: str) -> str | None:
    fn = IFEVAL_REPAIRS.get(kind)
    try:
        return fn(reply, **params) if fn else None
    except TypeError:  # kwargs this table does not know (a newer rule): no repair rather than a wrong one
        return None


def repair_reply(check: Any, reply: str) -> str | None:
    """The check's repair of `reply` (its optional `repair()` method), or None when it has none, gives nothing
    or raises (a plugin's repair must never break a search)."""
    fn = getattr(check, "repair", None)
    if not callable(fn):
        return None
    try:
        text = fn(reply)
    except Exception:  # noqa: BLE001
        return None
    return text if isinstance(text, str) and text.strip() else None
