"""Prompt edit operators shared by the optimizers.

Most need no model: with a tiny proposer (the embedded 135M model) LLM rewrites are weak, so restating,
emphasising, moving or dropping rules, adding a worked example from a passing reply, reordering and crossover
carry the search. Every operator returns a new prompt or None, and draws randomness only from the rng given.
"""

from __future__ import annotations

import random
import re
from typing import Any, Callable, Sequence

from promptlearn.context import Request

SENTENCE_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(\[{*-])")
RULE_CUE = re.compile(r"\b(must|always|never|only|do not|don't|should|every|each|start|begin|end|use|avoid|"
                      r"include|reply|respond|answer|keep|make sure|no |not )", re.I)

EMPHASIS = (
    "IMPORTANT: {s}",
    "{s} This rule has no exceptions.",
    "You must always follow this rule: {s}",
    "Rule: {s}",
    "{upper}",
)
RESTATE = ("Remember: {s}", "Reminder: {s}", "Above all: {s}", "Before you answer, check this rule: {s}")


def sections(prompt: str) -> list[str]:
    return [s for s in re.split(r"\n\s*\n", prompt.strip()) if s.strip()]


def sentences(text: str) -> list[str]:
    out = []
    for line in text.split("\n"):
        out += [s for s in SENTENCE_RE.split(line.strip()) if s]
    return out


def rules(prompt: str, protected: Sequence[str] = ()) -> list[str]:
    """Sentences that read like instructions (or hold a protected clause): what operators restate or stress.
    Worked examples appended by add_example are not rules."""
    head = re.split(r"\n\s*\nExamples?:\n", prompt)[0]
    found = [s for s in sentences(head) if RULE_CUE.search(s) or any(p in s for p in protected)]
    return list(dict.fromkeys(found)) or sentences(prompt)[:1]


def _safe_to_drop(sentence: str, protected: Sequence[str]) -> bool:
    return not any(p in sentence for p in protected) and "{" not in sentence


def emphasize(prompt: str, rng: random.Random, protected: Sequence[str] = (), **_: Any) -> str | None:
    rs = rules(prompt, protected)
    if not rs:
        return None
    s = rng.choice(rs)
    form = rng.choice(EMPHASIS)
    new = form.format(s=s, upper=s.upper() if not re.search(r"\{\w+\}", s) else s)
    return prompt.replace(s, new, 1) if new != s else None


def restate(prompt: str, rng: random.Random, protected: Sequence[str] = (), **_: Any) -> str | None:
    rs = rules(prompt, protected)
    if not rs:
        return None
    s = rng.choice(rs)
    return prompt.rstrip() + "\n\n" + rng.choice(RESTATE).format(s=s)


def move_rule(prompt: str, rng: random.Random, protected: Sequence[str] = (), **_: Any) -> str | None:
    rs = rules(prompt, protected)
    if not rs or len(sentences(prompt)) < 2:
        return None
    s = rng.choice(rs)
    rest = prompt.replace(s, "", 1).strip()
    rest = re.sub(r"[ \t]{2,}", " ", rest)
    return (s + "\n\n" + rest) if rng.random() < 0.5 else (rest + "\n\n" + s)


def drop_sentence(prompt: str, rng: random.Random, protected: Sequence[str] = (), **_: Any) -> str | None:
    cands = [s for s in sentences(prompt) if _safe_to_drop(s, protected)]
    if not cands or len(sentences(prompt)) < 2:
        return None
    s = rng.choice(cands)
    return re.sub(r"[ \t]{2,}", " ", prompt.replace(s, "", 1)).strip()


def reorder(prompt: str, rng: random.Random, **_: Any) -> str | None:
    secs = sections(prompt)
    if len(secs) >= 2:
        order = secs[:]
        rng.shuffle(order)
        return "\n\n".join(order) if order != secs else None
    sents = sentences(prompt)
    if len(sents) < 2:
        return None
    order = sents[:]
    rng.shuffle(order)
    return " ".join(order) if order != sents else None


def as_list(prompt: str, rng: random.Random, protected: Sequence[str] = (), **_: Any) -> str | None:
    """Rules as a bulleted list: small models often follow listed rules more reliably."""
    rs = rules(prompt, protected)
    if len(rs) < 1 or "\n- " in prompt:
        return None
    rest = prompt
    for s in rs:
        rest = rest.replace(s, "", 1)
    rest = re.sub(r"\s{2,}", " ", rest).strip()
    listed = "Rules:\n" + "\n".join(f"- {s}" for s in rs)
    return (rest + "\n\n" + listed).strip() if rest else listed


DEMO_WORDS = 25  # a worked example's reply is cut to this many words
REPAIR_ROOM = 8  # words a repair may add (a title, an end phrase) to a reply cut for a worked example


def short_reply(reply: str, limit: int = DEMO_WORDS, keep_lines: bool = False) -> str:
    """A reply as a worked example shows it: cut to `limit` words, braces neutralised (they would read as
    placeholders). On one line, as passing replies have always been shown; `keep_lines` keeps its line breaks,
    for a repaired reply whose title line or bullets are the point."""
    if not keep_lines:
        words = reply.split()
        short = " ".join(words[:limit]) + (" ..." if len(words) > limit else "")
        return short.replace("{", "(").replace("}", ")")
    kept, n = [], 0
    for line in reply.strip().split("\n"):
        words = line.split()
        if n + len(words) > limit:
            kept.append(" ".join(words[:limit - n]) + " ...")
            break
        kept.append(" ".join(words))
        n += len(words)
    return "\n".join(k for k in kept if k).replace("{", "(").replace("}", ")")


def demo_block(picked: Sequence[tuple[Any, str]], keep_lines: bool = False) -> str:
    """Worked examples as text, each reply as short_reply shows it."""
    shots = []
    for ex, reply in picked:
        user = ex.turns[0].user.replace("{", "(").replace("}", ")")
        shots.append(f"User: {user}\nAssistant: {short_reply(reply, keep_lines=keep_lines)}")
    return ("Example:" if len(shots) == 1 else "Examples:") + "\n" + "\n\n".join(shots)


def add_example(prompt: str, rng: random.Random, passing: Sequence[tuple[Any, str]] = (), **_: Any) -> str | None:
    """Append one to three short worked examples built from training replies that passed every check."""
    if not passing:
        return None
    picked = rng.sample(list(passing), min(len(passing), rng.choice((1, 2, 3))))
    return prompt.rstrip() + "\n\n" + demo_block(picked)


def at_floor(val_eval: Any) -> bool:
    """A prompt scored on val passes none of it: the model writes nothing of its own that a worked example could
    show, so the search shows it repaired replies instead (evolve's FLOOR_OPERATORS, optuna's demo pool)."""
    return bool(val_eval.results) and not any(r.passed for r in val_eval.results.values())


def repaired_replies(ctx: Any, prompt: str, parent_id: str | None, k: int = 8) -> list[tuple[Any, str]]:
    """The parent's failing single-turn train replies, cut short with room left for the edit, then edited by each
    failing check's repair (checks.repairs); kept only when a worked example shows them whole, the task's scoring
    path passes them on every check and they do not loop. Per-example checks and checks with no repair leave a
    reply out; a task with several targets has none (its replies come from several models, and score_replies
    takes one)."""
    from promptlearn.checks import build_check
    from promptlearn.checks.repairs import repair_reply
    from promptlearn.metrics import has_loop

    if ctx is None or not parent_id or len(ctx.task.spec.targets or ()) > 1:
        return []
    checks = {c.name: c for c in map(build_check, ctx.task.spec.checks)}
    out = []
    for ex, res in ctx.failures(parent_id, k=k):
        if len(ex.turns) != 1 or len(res.turns) != 1 or ex.checks or ex.turns[0].checks:
            continue
        text: str | None = short_reply(res.turns[0].reply, DEMO_WORDS - REPAIR_ROOM, keep_lines=True)
        for name, result in res.turns[0].checks.items():
            if text is not None and not result.passed:
                text = repair_reply(checks[name], text) if name in checks else None
        if text is None or has_loop(text) or short_reply(text, keep_lines=True) != text:
            continue
        if ctx.score_replies(prompt, ex, [text]).passed:
            out.append((ex, text))
    return out


def fixed_example(prompt: str, rng: random.Random, ctx: Any = None, parent_id: str | None = None,
                  **_: Any) -> str | None:
    """Append one to three worked examples made from the parent's own failing replies, each edited by the checks
    to pass (repaired_replies): the demo a person writes by hand when the model never writes the format, shown
    on the requests it got wrong."""
    fixed = repaired_replies(ctx, prompt, parent_id)
    if not fixed:
        return None
    picked = rng.sample(fixed, min(len(fixed), rng.choice((1, 2, 3))))
    return prompt.rstrip() + "\n\n" + demo_block(picked, keep_lines=True)


def opening_template(prompt: str, rng: random.Random, passing: Sequence[tuple[Any, str]] = (), **_: Any) -> str | None:
    """If passing replies share their opening words, show that opening as the reply format."""
    if len(passing) < 2:
        return None
    firsts = [reply.split()[:3] for _, reply in passing if reply.split()]
    prefix: list[str] = []
    for words in zip(*firsts):
        if len({w.lower().strip(".,!?:;") for w in words}) != 1:
            break
        prefix.append(words[0])
    if not prefix:
        return None
    opening = " ".join(prefix)
    form = rng.choice(('Begin every reply exactly like this: "{o} ..."', "Reply format:\n{o} <your answer>",
                       'Your first words are always "{o}".'))
    return prompt.rstrip() + "\n\n" + form.format(o=opening)


LEXICON = {
    "start": ("begin", "open"), "begin": ("start", "open"), "every": ("each", "any"), "each": ("every",),
    "reply": ("response", "answer", "message"), "response": ("reply", "answer"), "answer": ("reply", "response"),
    "must": ("should always", "have to", "are required to"), "always": ("every time", "without exception"),
    "never": ("do not ever", "under no circumstances"), "do not": ("never", "don't"), "don't": ("do not", "never"),
    "use": ("write with", "employ"), "include": ("add", "put in", "mention"), "avoid": ("do not use", "never use"),
    "make sure": ("ensure", "be sure"), "ensure": ("make sure",), "friendly": ("cheerful", "warm"),
    "assistant": ("helper", "AI assistant"), "word": ("exact word", "greeting"), "end": ("finish", "close"),
    "keep": ("make", "hold"),
}


def reword(prompt: str, rng: random.Random, protected: Sequence[str] = (), **_: Any) -> str | None:
    """Swap one instruction word for a synonym: this model reacts strongly to wording, so try wordings."""
    hits = [(m.start(), m.end(), m.group(0)) for key in LEXICON
            for m in re.finditer(rf"\b{re.escape(key)}\b", prompt, re.I)]
    hits = [h for h in hits if not any(h[2].lower() in p.lower() for p in protected)]
    if not hits:
        return None
    start, end, word = rng.choice(sorted(hits))
    new = rng.choice(LEXICON[word.lower()])
    new = new[0].upper() + new[1:] if word[0].isupper() else new
    return prompt[:start] + new + prompt[end:]


def crossover(a: str, b: str, rng: random.Random, **_: Any) -> str | None:
    """Sections (or sentences) taken in turn from two parents, without repeats."""
    sa, sb = sections(a), sections(b)
    if len(sa) < 2 and len(sb) < 2:
        sa, sb = sentences(a), sentences(b)
        joiner = " "
    else:
        joiner = "\n\n"
    out: list[str] = []
    for i in range(max(len(sa), len(sb))):
        pick = sa if rng.random() < 0.5 else sb
        other = sb if pick is sa else sa
        for src in (pick, other):
            if i < len(src) and src[i] not in out:
                out.append(src[i])
                break
    child = joiner.join(out)
    return child if child not in (a, b) else None


PARAPHRASE = """Rewrite the following system prompt so that an AI assistant follows it more reliably.
Keep its meaning. Keep these exact phrases unchanged: {keep}
Reply with only the new system prompt between <prompt> and </prompt>.

<prompt>
{prompt}
</prompt>"""

REFLECT = """You improve system prompts for an AI assistant.

Current system prompt:
<prompt>
{prompt}
</prompt>

Conversations where the assistant broke the rules, with what went wrong:
{failures}

Write an improved system prompt that fixes these failures without breaking anything else.
Keep these exact phrases unchanged: {keep}
Reply with only the new system prompt between <prompt> and </prompt>."""

#: the one-line fix: a small proposer rewrites a whole prompt into noise (bench suite: 10 of mutate's first 25
#: rewrites on address_friend dropped the rule, e.g. "You are a helpful AI assistant named SmolLM"); an added line
#: keeps everything the prompt said, whatever the line is (SmolLM2 mostly answers the conversations instead)
REFLECT_LINE = """An AI assistant follows this system prompt:
<prompt>
{prompt}
</prompt>

It broke the rules in these conversations:
{failures}

Write ONE short instruction sentence to add to the system prompt so that the assistant does not make this
mistake again. Reply with only that sentence."""
MAX_LINE_WORDS = 40


def extract_prompt(text: str | None) -> str | None:
    """The text between <prompt> tags, or the whole reply when the proposer ignored the tags."""
    if not text:
        return None
    m = re.search(r"<prompt>\s*(.*?)\s*(</prompt>|$)", text, re.S)
    out = (m.group(1) if m else text).strip()
    return out or None


def keep_list(ctx: Any) -> str:
    keep = list(ctx.task.spec.protected) + ["{" + p + "}" for p in ctx.task.placeholders]
    return ", ".join(f'"{k}"' for k in keep) or "(none)"


def format_failures(failures: Sequence[tuple[Any, Any]], limit: int = 300) -> str:
    parts = []
    for i, (ex, res) in enumerate(failures, 1):
        user = ex.turns[0].user[:limit]
        reply = res.turns[0].reply[:limit] if res.turns else ""
        parts.append(f"{i}. User: {user}\n   Assistant: {reply}\n   Problem: {res.feedback[:limit]}")
    return "\n".join(parts) or "(none recorded)"


def paraphrase_request(prompt: str, rng: random.Random, ctx: Any = None, **_: Any) -> Request | None:
    """The proposer request for a paraphrase (built now, sent later, so many can be in flight at once)."""
    if ctx is None:
        return None
    return Request([{"role": "user", "content": PARAPHRASE.format(prompt=prompt, keep=keep_list(ctx))}],
                   sample=rng.randrange(1000))


def _failures_request(template: str, prompt: str, rng: random.Random, ctx: Any,
                      parent_id: str | None) -> Request | None:
    """A proposer request that shows the parent's failures (REFLECT, REFLECT_LINE); None when nothing failed."""
    if ctx is None:
        return None
    failures = ctx.failures(parent_id) if parent_id else []
    if not failures:
        return None
    content = template.format(prompt=prompt, failures=format_failures(failures), keep=keep_list(ctx))
    return Request([{"role": "user", "content": content}], sample=rng.randrange(1000))


def reflect_request(prompt: str, rng: random.Random, ctx: Any = None, parent_id: str | None = None,
                    **_: Any) -> Request | None:
    """The proposer request for a reflective rewrite from the parent's failures; None when nothing failed."""
    return _failures_request(REFLECT, prompt, rng, ctx, parent_id)


def reflect_line_request(prompt: str, rng: random.Random, ctx: Any = None, parent_id: str | None = None,
                         **_: Any) -> Request | None:
    """The proposer request for one instruction line that fixes the parent's failures; None when nothing failed."""
    return _failures_request(REFLECT_LINE, prompt, rng, ctx, parent_id)


def add_line(prompt: str, reply: str | None) -> str | None:
    """The prompt with the proposer's one-line fix appended: its first sentence, tags and quotes stripped; None for
    an empty, looping, overlong or already present line."""
    from promptlearn.metrics import has_loop

    text = (extract_prompt(reply) or "").strip().split("\n")[0].strip()
    first = re.split(r"(?<=[.!?])[\"'\u201d]*\s+", text, maxsplit=1)[0] if text else ""
    line = first.strip().strip("\"'\u201c\u201d").strip()
    if not line or has_loop(line) or len(line.split()) > MAX_LINE_WORDS or line in prompt:
        return None
    return prompt.rstrip() + "\n\n" + line


def paraphrase(prompt: str, rng: random.Random, ctx: Any = None, **_: Any) -> str | None:
    request = paraphrase_request(prompt, rng, ctx)
    return extract_prompt(ctx.generate(request.messages, sample=request.sample)) if request else None


def reflect(prompt: str, rng: random.Random, ctx: Any = None, parent_id: str | None = None,
            **_: Any) -> str | None:
    request = reflect_request(prompt, rng, ctx, parent_id)
    return extract_prompt(ctx.generate(request.messages, sample=request.sample)) if request else None


LITERAL_RE = re.compile(r"\b(?:word|words|phrase|with|say|says|saying|token|string)\s+([A-Z][\w'-]*[!.]?|\S+[!?])")


def quote_literal(prompt: str, rng: random.Random, protected: Sequence[str] = (), **_: Any) -> str | None:
    """Quote the literal text a rule asks for (Start with the word "Ahoy"): small models copy quoted text."""
    found = [p for p in protected if re.search(rf"(?<![\"'*]){re.escape(p)}(?![\"'*])", prompt)]
    found += [m.group(1).rstrip(".") for m in LITERAL_RE.finditer(prompt)]
    found = [f for f in dict.fromkeys(found) if f and "{" not in f]
    if not found:
        return None
    lit = rng.choice(found)
    m = re.search(rf"(?<![\"'*\w]){re.escape(lit)}(?![\"'*\w])", prompt)
    if not m:
        return None
    left, right = rng.choice((('"', '"'), ("'", "'"), ("*", "*"), ("\u201c", "\u201d")))
    return prompt[:m.start()] + left + lit + right + prompt[m.end():]


SUBJECT = re.compile(r"^(you|your|the|this|it|a|an|i|we|my|our)\b", re.I)


def key_rule(prompt: str, rng: random.Random, protected: Sequence[str] = ()) -> str | None:
    """The rule an edit should stress: one holding a protected clause if any, else any rule sentence."""
    rs = rules(prompt, protected)
    marked = [s for s in rs if any(re.search(rf"(?<!\w){re.escape(p)}(?!\w)", s) for p in protected)]
    plain = [s for s in rs if not SUBJECT.match(s)]  # "You are ..." sets a persona; the rule is elsewhere
    return rng.choice([s for s in marked if s in plain] or marked or plain or rs) if rs else None


def sandwich(prompt: str, rng: random.Random, protected: Sequence[str] = (), **_: Any) -> str | None:
    """The key rule first and again last, verbatim: what a person tries first with a model that forgets."""
    s = key_rule(prompt, rng, protected)
    if not s:
        return None
    rest = re.sub(r"[ \t]{2,}", " ", prompt.replace(s, "", 1)).strip()
    if not rest:
        return None
    return f"{s}\n\n{rest}\n\n{s}"


MUST_FORMS = ("Every reply must follow this rule: {s}", "Every reply you write must obey this: {s}",
              "In every reply, without exception: {s}")


def every_reply(prompt: str, rng: random.Random, protected: Sequence[str] = (), **_: Any) -> str | None:
    """An explicit "Every reply must ..." line for the key rule, on its own line at the end. An imperative rule
    ("Answer with ...") becomes "Every reply must answer with ..."; others are quoted in a fixed frame."""
    s = key_rule(prompt, rng, protected)
    if not s:
        return None
    first = s.split()[0]
    if not SUBJECT.match(s) and first[:1].isupper() and first.isalpha() and not re.search(r"\{\w+\}", first) \
            and not re.search(r"\b(every|each|all) (reply|replies|response|responses|answer)", s, re.I) \
            and rng.random() < 0.5 and not any(first in p for p in protected):
        line = "Every reply must " + first.lower() + s[len(first):]
    else:
        line = rng.choice(MUST_FORMS).format(s=s)
    return None if line in prompt else prompt.rstrip() + "\n\n" + line


LITERAL_SPANS = re.compile(r"\"[^\"\n]{1,40}\"|'[^'\n]{1,40}'|<<[^>\n]{1,40}>>|\*[^*\n]{1,40}\*|`[^`\n]{1,40}`|"
                           r"\b[A-Z][a-z]+[A-Z]\w*\b|\b\d+\b")


NEGATION = re.compile(r"\b(never|not|no|avoid|don't|without|forbidden|under|at most|fewer|less)\b", re.I)
POSITIVE_FORMS = ("Your reply must contain {q} exactly as written.", "Always write {q} exactly like this.",
                  "Format to copy in every reply: {q}")


def quote_format(prompt: str, rng: random.Random, protected: Sequence[str] = (), **_: Any) -> str | None:
    """Restate the literal parts of the key rule (quoted text, <<...>>, *...*, CamelCase names, numbers, protected
    clauses) as a line of their own, quoted: the model copies a literal far more often than it follows a
    description (quoting the format took one rule here from 0/18 to 6/18 on val)."""
    s = key_rule(prompt, rng, protected)
    if not s or NEGATION.search(s):  # a limit or a ban ("never use 'that'"): its literal is not to be copied
        return None
    spans = [m.group(0) for m in LITERAL_SPANS.finditer(s)] + [p for p in protected if p in s]
    bare = {x: x.strip("\"'`") for x in dict.fromkeys(spans) if "{" not in x}
    spans = [x for x, b in bare.items() if b and not any(b != o and b in o for o in bare.values())]
    spans = list({bare[x]: x for x in reversed(spans)}.values())[::-1]  # one form of each literal
    if not spans:
        return None
    quoted = ", ".join(x if x[0] in "\"'" else f'"{x}"' for x in spans)
    form = rng.choice(POSITIVE_FORMS)
    line = form.format(q=quoted)
    return None if line in prompt else prompt.rstrip() + "\n\n" + line


HINT_FORMS = ("{h}", "Format: {h}", "Rule for every reply: {h}")
OPENING_SHARE = 1 / 3  # the most of the search's calls an opening book may take (evolve, optuna)


def affordable_moves(ctx: Any, share: float = OPENING_SHARE) -> int | None:
    """How many opening moves the budget affords (None: no call cap): each costs a screening (proposal and parent
    on a minibatch, on every target), and the book may take at most `share` of the search's calls, so a small
    budget keeps most of its calls for the search proper (at 300 calls six moves fit, at 120 two)."""
    max_calls = ctx.budget.max_calls
    if max_calls is None:
        return None
    per_move = 2 * max(1, ctx.minibatch_size) * max(1, len(ctx.task.spec.targets or ()))
    return int(max_calls * share // per_move)


def failing_hints(ctx: Any, parent_id: str | None) -> list[str]:
    """The task's check hints (checks.hints), the check failing most on the parent's val replies first; checks
    that never fail there are left out (when the parent has no val results, every hint counts)."""
    from promptlearn.checks import build_check
    from promptlearn.checks.hints import check_hint

    fails: dict[str, int] = {}
    results: dict[str, Any] = {}
    try:
        results = ctx.val_eval(parent_id).results if parent_id else {}
    except KeyError:
        pass
    for res in results.values():
        for turn in res.turns:
            for name, cr in turn.checks.items():
                fails[name] = fails.get(name, 0) + (cr.score < 1.0)
    hints: list[tuple[int, str]] = []
    for spec in ctx.task.spec.checks:
        check = build_check(spec)
        text = check_hint(check)
        n = fails.get(check.name, 0) if results else 1
        if text and n > 0:
            hints.append((n, text))
    return [h for _, h in sorted(hints, key=lambda x: -x[0])]


def _words_of(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def closest_rule(prompt: str, text: str, protected: Sequence[str] = ()) -> str | None:
    """The prompt's rule sentence that says most nearly what `text` says (shared words; at least a third)."""
    want = _words_of(text)
    scored = [(len(want & _words_of(r)) / max(1, len(want | _words_of(r))), r) for r in rules(prompt, protected)]
    best = max(scored, default=(0.0, None))
    return best[1] if best[0] >= 1 / 3 else None


def state_check(prompt: str, rng: random.Random, protected: Sequence[str] = (), ctx: Any = None,
                parent_id: str | None = None, **_: Any) -> str | None:
    """Write the failing check's own hint (the rule in the verifier's terms, its literal parts quoted) into the
    prompt: what a person who reads the checker writes first. Most often it replaces the rule sentence that
    says the same thing less exactly (a 135M model follows one precise sentence better than a vague one and an
    addendum), when that keeps every protected clause; else it is a line of its own at the end. Only the task's
    checks (not per-example ones); None when no failing check has a hint or the prompt already says it."""
    if ctx is None:
        return None
    hints = [h for h in failing_hints(ctx, parent_id) if h not in prompt]
    if not hints:
        return None
    hint = hints[0]
    target = closest_rule(prompt, hint, protected)
    if target and rng.random() < 0.7:
        swapped = prompt.replace(target, hint, 1)
        if all(p in swapped for p in protected):
            return swapped
    return prompt.rstrip() + "\n\n" + rng.choice(HINT_FORMS).format(h=hint)


MUTATIONS: dict[str, Callable[..., str | None]] = {
    "emphasize": emphasize, "restate": restate, "move_rule": move_rule, "drop_sentence": drop_sentence,
    "reorder": reorder, "as_list": as_list, "add_example": add_example, "opening_template": opening_template,
    "reword": reword, "quote_literal": quote_literal, "sandwich": sandwich, "every_reply": every_reply,
    "quote_format": quote_format, "state_check": state_check, "fixed_example": fixed_example,
    "paraphrase": paraphrase, "reflect": reflect,
}
LLM_OPERATORS = ("paraphrase", "reflect")
#: The LLM operators as request builders: an optimizer sends their requests together (ctx.generate_many) and
#: reads each reply with extract_prompt.
REQUESTS: dict[str, Callable[..., Request | None]] = {"paraphrase": paraphrase_request, "reflect": reflect_request}
