"""The 25 IFEval instructions as pure functions, plus the text utilities they share.

Semantics follow IFEval (Zhou et al. 2023, arXiv 2311.07911) and its reference implementation
`instruction_following_eval/instructions.py`, re-written with the standard library only. Each rule is
`rule(text, **kwargs) -> str`: "" when the instruction is followed, otherwise a sentence saying concretely
what failed. Kwarg names are IFEval's. Two deliberate deviations, both invisible on IFEval's own data:

* keywords, forbidden words, section splitters and postscript markers are matched literally (IFEval pastes
  them into a regex unescaped, so `C++` would crash it and `e.g.` would match `eng`);
* sentence counting and the all-capital-word tokenizer are regex stand-ins for nltk (see `count_sentences`).
"""

from __future__ import annotations

import bisect
import json
import re
from collections import Counter
from typing import Callable

LESS, AT_LEAST = "less than", "at least"
RELATIONS = (LESS, AT_LEAST)


def compare(actual: int, relation: str, threshold: int) -> bool:
    return actual < threshold if relation == LESS else actual >= threshold


def need(relation: str, threshold: int) -> str:
    return f"fewer than {threshold}" if relation == LESS else f"at least {threshold}"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def clip(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


# --- words and sentences -----------------------------------------------------------------------------------

def count_words(text: str) -> int:
    """IFEval counts `\\w+` runs (nltk RegexpTokenizer(r"\\w+") is exactly Python's `re`, so this is identical)."""
    return len(re.findall(r"\w+", text))


_OPENERS = "\"'“‘([{*_"
_CLOSERS = "\"'”’)]}*_"
_TITLES = frozenset("mr mrs ms dr prof st jr sr capt gen sen rep gov lt col sgt mt ft".split())
_ABBREVIATIONS = _TITLES | frozenset(
    "etc vs e.g i.e a.m p.m u.s u.k u.n inc ltd co corp approx dept est fig vol jan feb aug sept oct nov dec".split())
# Capitalised words that punkt's orthographic / frequent-starter heuristics treat as opening a new sentence
# after an abbreviation, an initial or an ellipsis (a proper name after "Dr." or "J." does not).
_STARTERS = frozenset("""the this that these those it its he she we they there then but and however in on at for if
when while after before as so a an my our your his her their one some many most all each also yet still now here
what why how who where which thus therefore finally first second next overall you i""".split())


def ends_sentence(token: str, following: str) -> bool:
    """Whether punkt would put a sentence break after `token` (a whitespace-separated chunk)."""
    core = token.rstrip(_CLOSERS)
    run = re.search(r"[.?!…]+$", core)
    if not run:
        return False
    if "?" in run.group() or "!" in run.group():
        return True
    stem = core[: run.start()].lstrip(_OPENERS)
    nxt = following.lstrip(_OPENERS)
    starter = nxt[:1].isupper() and nxt.rstrip(".,;:!?\"'”’)*").lower() in _STARTERS
    if len(run.group()) > 1 or "…" in run.group():  # ellipsis
        return nxt[:1].isupper()
    if not stem:
        return True
    if re.fullmatch(r"\d+(?:[.,]\d+)*", stem):  # "1." in a numbered list: a break unless lowercase follows
        return not nxt[:1].islower()
    low = stem.lower()
    if low in _TITLES:
        return False
    if (len(stem) == 1 and stem.isalpha()) or low in _ABBREVIATIONS or re.fullmatch(r"(?:\w\.)+\w", stem):
        return starter
    return True


def count_sentences(text: str) -> int:
    """Regex stand-in for IFEval's nltk punkt (English) sentence count.

    Like punkt: a sentence ends at `.`, `?` or `!` (optionally followed by closing quotes, brackets or `*`) that
    is followed by whitespace; line breaks alone never end a sentence (a bullet list without full stops is one
    sentence); `3.5` and `word.Next` are not breaks; titles (Mr., Dr.) never end a sentence; abbreviations
    (e.g., etc.), single-letter initials and ellipses end one only when a capitalised common word follows;
    a numbered-list marker `1.` ends one unless a lowercase word follows. The trailing fragment counts as a
    sentence. It agrees with punkt on ordinary prose; on rare abbreviations punkt learned from its training
    corpus it may be off by one.
    """
    tokens = text.split()
    if not tokens:
        return 0
    return 1 + sum(ends_sentence(tok, nxt) for tok, nxt in zip(tokens, tokens[1:]))


def word_tokens(text: str) -> list[str]:
    """Stand-in for nltk.word_tokenize as used for capital-word counts: words keep inner hyphens and dots
    (`WELL-KNOWN`, `U.S.A`), punctuation is dropped, and contractions split in two (`DON'T` -> `DON`, `'T`),
    so counts of `isupper()` tokens match the treebank tokenizer's."""
    return re.findall(r"\w+(?:[-.]\w+)*|['’]\w+", text)


# --- language identification -------------------------------------------------------------------------------

LANGUAGE_NAMES = {
    "en": "English", "es": "Spanish", "pt": "Portuguese", "ar": "Arabic", "hi": "Hindi", "fr": "French",
    "ru": "Russian", "de": "German", "ja": "Japanese", "it": "Italian", "bn": "Bengali", "uk": "Ukrainian",
    "th": "Thai", "ur": "Urdu", "ta": "Tamil", "te": "Telugu", "bg": "Bulgarian", "ko": "Korean", "pl": "Polish",
    "he": "Hebrew", "fa": "Persian", "vi": "Vietnamese", "ne": "Nepali", "sw": "Swahili", "kn": "Kannada",
    "mr": "Marathi", "gu": "Gujarati", "pa": "Punjabi", "ml": "Malayalam", "fi": "Finnish", "zh": "Chinese",
    "el": "Greek", "nl": "Dutch", "sv": "Swedish", "tr": "Turkish", "id": "Indonesian", "or": "Odia",
    "si": "Sinhala", "ka": "Georgian", "hy": "Armenian", "am": "Amharic",
}

# (first, last, script) code-point ranges, sorted; a script names a language or a group resolved below.
_SCRIPTS = sorted([
    (0x0041, 0x005A, "latin"), (0x0061, 0x007A, "latin"), (0x00C0, 0x024F, "latin"), (0x1E00, 0x1EFF, "latin"),
    (0x0370, 0x03FF, "el"), (0x0400, 0x04FF, "cyrillic"), (0x0530, 0x058F, "hy"), (0x0590, 0x05FF, "he"),
    (0x0600, 0x06FF, "arabic"), (0x0750, 0x077F, "arabic"), (0x0900, 0x097F, "devanagari"), (0x0980, 0x09FF, "bn"),
    (0x0A00, 0x0A7F, "pa"), (0x0A80, 0x0AFF, "gu"), (0x0B00, 0x0B7F, "or"), (0x0B80, 0x0BFF, "ta"),
    (0x0C00, 0x0C7F, "te"), (0x0C80, 0x0CFF, "kn"), (0x0D00, 0x0D7F, "ml"), (0x0D80, 0x0DFF, "si"),
    (0x0E00, 0x0E7F, "th"), (0x10A0, 0x10FF, "ka"), (0x1100, 0x11FF, "ko"), (0x1200, 0x137F, "am"),
    (0x3040, 0x30FF, "kana"), (0x3130, 0x318F, "ko"), (0x4E00, 0x9FFF, "han"), (0xAC00, 0xD7AF, "ko"),
    (0xFB50, 0xFDFF, "arabic"), (0xFE70, 0xFEFF, "arabic"),
])
_STARTS = [r[0] for r in _SCRIPTS]

# Frequent function words (and tell-tale letters) that separate languages sharing a script.
_STOPWORDS = {
    "latin": {
        "en": "the and of to is in that it for you with on are this be as was have not but they your or from at by "
              "an we can will which their has more about if would there all",
        "de": "der die das und ist nicht ein eine zu den mit sich des auf für im dem von auch es sie ich wir sind "
              "werden wird oder aber wie bei nach noch nur kann über zum zur einen",
        "fr": "le la les et est un une des du en que qui dans pour pas ne sur au avec ce il elle nous vous sont mais "
              "ou plus son sa ses cette aux être",
        "es": "el la los las del y en es un una que por con para no se su al lo como más pero está son muy también "
              "este esta hay ser fue sus",
        "pt": "o os as do da dos das em um uma que não com para se por mais é são também você está isso ao pelo "
              "pela foi seu sua muito mas como",
        "it": "il di che la è per un una non sono gli le con anche più questo come nel alla dei della delle ma si "
              "lo ho del essere questa",
        "nl": "de het een en van is dat niet op te zijn voor met als er maar om ook aan deze wordt door naar",
        "pl": "nie na się że do to jest jak ale po co tak za od są przez dla czy jego już tylko może oraz jako",
        "fi": "ja on ei se että oli ovat kuin mutta tai myös joka tämä hän ole sen kun voi mikä niin vain jos "
              "olla kanssa sekä",
        "sw": "na ya wa kwa ni za katika kuwa hii huo pia au lakini sana kama hiyo yake wake mimi wewe sisi ili watu",
        "vi": "và của là có không những các một được trong cho với người này đã để khi từ thì cũng rất nhiều",
        "tr": "ve bir bu da de için ile çok ne olarak daha gibi ama ben sen var yok kadar",
        "sv": "och att det som en på är för med den av inte till har jag om men så",
        "id": "dan yang di ini itu dengan untuk tidak dari dalam akan pada juga ke karena ada saya bisa",
    },
    "cyrillic": {
        "ru": "и в не на что я с он как это по но из у за от к для так же все был было его она они мы или если "
              "также только быть уже когда",
        "bg": "на и в за да се от с е са не че това като по ще който които към със съм той тя но или беше има",
        "uk": "і в на що не з та як це до у для й але від він вона є",
    },
    "devanagari": {
        "hi": "है हैं का की के में और से को यह नहीं था थे पर लिए भी कि जो ने तो कर किया गया रहा मैं हूँ हम आप अपने",
        "mr": "आहे आहेत आणि या व हे ही होते होता मध्ये नाही म्हणून त्या करून पण केले असे आपल्या साठी आपण मी आम्ही",
        "ne": "छ छन् छु र मा पनि यो त्यो थियो लागि गरेको हुन्छ छैन तर भने सँग गर्न भएको हुने गरी म हामी तपाईं",
    },
    "arabic": {
        "ar": "في من على أن إلى التي الذي هذا هذه عن مع كان ما لا",
        "fa": "و در به از که این را با است برای آن یک می شود",
        "ur": "کے کی ہے میں اور کو سے کا یہ نہیں",
    },
}
_STOPSETS = {g: {lang: frozenset(ws.split()) for lang, ws in d.items()} for g, d in _STOPWORDS.items()}
_LETTERS = {  # letters that (nearly) only one language of the group uses; each occurrence adds one point
    "latin": {"vi": "ơưđạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ"},
    "cyrillic": {"ru": "ыэё", "bg": "ъ", "uk": "іїєґ"},
    "arabic": {"ar": "ةيى", "ur": "ٹڈڑںےۓہھ"},
}
_SUFFIXES = {"devanagari": {"mr": ("च्या", "ांना"), "ne": ("हरू", "हरु", "को")}}  # attached postpositions
_DEFAULT = {"cyrillic": "ru", "devanagari": "hi", "arabic": "ar"}

try:  # IFEval uses langdetect; use it when it happens to be installed, seeded so results are repeatable
    import langdetect as _langdetect

    _langdetect.DetectorFactory.seed = 0
except ImportError:  # pragma: no cover - depends on the environment
    _langdetect = None


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of `text`, or None when it cannot be told (IFEval then counts the instruction as followed).

    With `langdetect` installed this is IFEval's own detector. Otherwise `heuristic_language` is used.
    """
    if _langdetect is not None:
        try:
            return _langdetect.detect(text)
        except Exception:  # noqa: BLE001 - langdetect raises LangDetectException on text without features
            return None
    return heuristic_language(text)


def heuristic_language(text: str) -> str | None:
    """Dependency-free language guess: the script with the most letters decides, then function words.

    Can tell: every language with its own script (ko, th, ta, te, kn, ml, gu, pa, bn, el, he, hy, ka, am, si,
    or; ja when kana occur, else zh for Han); within Devanagari hi / mr / ne, within Cyrillic ru / bg / uk and
    within Arabic script ar / fa / ur, by function words, suffixes and tell-tale letters (defaulting to hi, ru,
    ar); within Latin script en, de, fr, es, pt, it, nl, pl, fi, sw, vi, tr, sv, id by counting function words
    (and Vietnamese diacritics). Cannot tell: Latin-script text with none of those function words (a bare list
    of names or numbers returns None), Latin languages outside that list (they come out as the nearest one),
    or a reply that mixes languages in roughly equal parts (the larger part wins; langdetect is similar).
    """
    counts: Counter[str] = Counter()
    for ch in text:
        i = bisect.bisect_right(_STARTS, ord(ch)) - 1
        if i >= 0 and ord(ch) <= _SCRIPTS[i][1]:
            counts[_SCRIPTS[i][2]] += 1
    if not counts:
        return None
    if counts["kana"]:
        counts["kana"] += counts.pop("han", 0)
    script = counts.most_common(1)[0][0]
    if script not in _STOPSETS:
        return {"kana": "ja", "han": "zh"}.get(script, script)
    if script == "devanagari":  # \w stops at vowel signs (marks), so split on whitespace and strip punctuation
        words = [w.strip("।॥.,!?;:\"'()*") for w in text.split()]
    else:
        words = re.findall(r"[^\W\d_]+", text.lower())
    scores: Counter[str] = Counter()
    for lang, stops in _STOPSETS[script].items():
        scores[lang] = sum(w in stops for w in words)
        scores[lang] += sum(text.count(ch) for ch in _LETTERS.get(script, {}).get(lang, ""))
        scores[lang] += sum(w.endswith(_SUFFIXES.get(script, {}).get(lang, ("\0",))) for w in words
                            if w not in _STOPSETS[script][lang])
    best, score = max(scores.items(), key=lambda kv: kv[1])  # ties keep the first listed (en, ru, hi, ar)
    if score == 0:
        return _DEFAULT.get(script)
    return best


def language_name(code: str | None) -> str:
    return "unknown" if code is None else f"{LANGUAGE_NAMES.get(code.split('-')[0], code)} ({code})"


# --- the 25 instructions -----------------------------------------------------------------------------------
# Each returns "" when followed, else the failure sentence. The caller has already validated the kwargs and
# fails empty replies before calling (IFEval: `response.strip() and check_following(response)`).

def keywords_existence(text: str, *, keywords: list[str]) -> str:
    """Every keyword must occur, case-insensitively, anywhere (IFEval does a substring search, not whole words)."""
    missing = [k for k in keywords if not re.search(re.escape(k), text, re.IGNORECASE)]
    return f"reply is missing keyword(s) {', '.join(map(repr, missing))}" if missing else ""


def keywords_frequency(text: str, *, keyword: str, frequency: int, relation: str) -> str:
    """Case-insensitive substring occurrences of one keyword compared with `frequency`."""
    n = len(re.findall(re.escape(keyword.strip()), text, re.IGNORECASE))
    ok = compare(n, relation, frequency)
    return "" if ok else f"'{keyword}' appears {plural(n, 'time')}, needs {need(relation, frequency)}"


def keywords_forbidden_words(text: str, *, forbidden_words: list[str]) -> str:
    """No forbidden word may occur as a whole word (\\b...\\b), case-insensitively."""
    used = {w: len(re.findall(r"\b" + re.escape(w) + r"\b", text, re.IGNORECASE)) for w in forbidden_words}
    used = {w: n for w, n in used.items() if n}
    if not used:
        return ""
    return "reply uses forbidden word(s) " + ", ".join(f"'{w}' ({plural(n, 'time')})" for w, n in used.items())


def keywords_letter_frequency(text: str, *, letter: str, let_frequency: int, let_relation: str) -> str:
    """Occurrences of one character, case-insensitively, compared with `let_frequency`."""
    n = text.lower().count(letter.lower())
    ok = compare(n, let_relation, let_frequency)
    return "" if ok else f"letter '{letter}' appears {plural(n, 'time')}, needs {need(let_relation, let_frequency)}"


def language_response_language(text: str, *, language: str) -> str:
    """The whole reply must be detected as `language`; undetectable text counts as followed, as in IFEval.
    Only the base codes are compared, so `zh` accepts langdetect's `zh-cn` and `zh-tw`."""
    found = detect_language(text)
    if found is None or found.split("-")[0] == language.split("-")[0]:
        return ""
    return f"reply looks like {language_name(found)}, expected {language_name(language)}"


def length_constraints_number_sentences(text: str, *, num_sentences: int, relation: str) -> str:
    """Sentence count (see `count_sentences`) compared with `num_sentences` (relation: less than / at least)."""
    n = count_sentences(text)
    ok = compare(n, relation, num_sentences)
    return "" if ok else f"reply has {plural(n, 'sentence')}, needs {need(relation, num_sentences)}"


def length_constraints_number_paragraphs(text: str, *, num_paragraphs: int) -> str:
    """Exactly `num_paragraphs` paragraphs separated by the markdown divider `***`; an empty paragraph between
    two dividers fails, empty text before the first or after the last divider is ignored."""
    parts = re.split(r"\s?\*\*\*\s?", text)
    if any(not p.strip() for p in parts[1:-1]):
        return "reply has an empty paragraph between two *** dividers"
    n = sum(1 for p in parts if p.strip())
    if n == num_paragraphs:
        return ""
    return f"reply has {plural(n, 'paragraph')} separated by ***, needs exactly {num_paragraphs}"


def length_constraints_number_words(text: str, *, num_words: int, relation: str) -> str:
    """Word count (`\\w+` runs) compared with `num_words` (relation: less than / at least)."""
    n = count_words(text)
    ok = compare(n, relation, num_words)
    return "" if ok else f"reply has {plural(n, 'word')}, needs {need(relation, num_words)}"


def length_constraints_nth_paragraph_first_word(text: str, *, num_paragraphs: int, nth_paragraph: int,
                                                first_word: str) -> str:
    """Exactly `num_paragraphs` paragraphs separated by blank lines (`\\n\\n`), paragraph `nth_paragraph` opening
    with `first_word` (case-insensitive; leading quotes are skipped and the word is cut at . , ? ! ' " — but,
    as in IFEval, not at ':' or ';', so "Summary:" is not "summary").
    As in IFEval the nth chunk of the raw split is inspected, so an empty chunk before it shifts the count."""
    parts = text.split("\n\n")
    n = sum(1 for p in parts if p.strip())
    if nth_paragraph > n or not parts[nth_paragraph - 1].strip():
        return f"reply has no paragraph {nth_paragraph}: it has {plural(n, 'paragraph')} separated by blank lines"
    word = parts[nth_paragraph - 1].split()[0].lstrip("'").lstrip('"')
    word = re.split(r"[.,?!'\"]", word, maxsplit=1)[0].lower()
    problems = []
    if n != num_paragraphs:
        problems.append(f"reply has {plural(n, 'paragraph')} separated by blank lines, needs exactly {num_paragraphs}")
    if word != first_word.lower():
        problems.append(f"paragraph {nth_paragraph} starts with '{word}', expected '{first_word.lower()}'")
    return "; ".join(problems)


def detectable_content_number_placeholders(text: str, *, num_placeholders: int) -> str:
    """At least `num_placeholders` placeholders in square brackets, like [name]."""
    n = len(re.findall(r"\[.*?\]", text))
    if n >= num_placeholders:
        return ""
    return f"reply has {plural(n, 'placeholder')} in square brackets like [name], needs at least {num_placeholders}"


def detectable_content_postscript(text: str, *, postscript_marker: str) -> str:
    """A postscript marker must appear (IFEval accepts spacing variants of P.S. / P.P.S and does not anchor it
    to the start of a line)."""
    marker = postscript_marker.strip()
    pattern = {"P.P.S": r"p\.\s?p\.\s?s", "P.S.": r"p\.\s?s\."}.get(marker, re.escape(marker.lower()))
    if re.search(pattern, text.lower()):
        return ""
    return f"reply has no postscript starting with '{marker}'"


def detectable_format_number_bullet_lists(text: str, *, num_bullets: int) -> str:
    """Exactly `num_bullets` markdown bullet lines starting with `* ` or `-` (IFEval's patterns, so a `---`
    rule also counts as a bullet)."""
    n = len(re.findall(r"^\s*\*[^\*].*$", text, re.MULTILINE)) + len(re.findall(r"^\s*-.*$", text, re.MULTILINE))
    return "" if n == num_bullets else f"reply has {plural(n, 'bullet point')}, needs exactly {num_bullets}"


CONSTRAINED_OPTIONS = ("My answer is yes.", "My answer is no.", "My answer is maybe.")


def detectable_format_constrained_response(text: str) -> str:
    """One of IFEval's three fixed answers must appear somewhere (case-sensitive)."""
    if any(opt in text.strip() for opt in CONSTRAINED_OPTIONS):
        return ""
    return "reply contains none of " + ", ".join(f"'{o}'" for o in CONSTRAINED_OPTIONS)


def detectable_format_number_highlighted_sections(text: str, *, num_highlights: int) -> str:
    """Non-empty *single* and **double** star spans on one line each count as a highlight."""
    single = [h for h in re.findall(r"\*[^\n\*]*\*", text) if h.strip("*").strip()]
    double = [h for h in re.findall(r"\*\*[^\n\*]*\*\*", text) if h[2:-2].strip()]
    n = len(single) + len(double)
    if n >= num_highlights:
        return ""
    return f"reply has {plural(n, 'highlighted section')} like *this*, needs at least {num_highlights}"


def detectable_format_multiple_sections(text: str, *, section_spliter: str, num_sections: int) -> str:
    """At least `num_sections` section headers "<spliter> <number>" (e.g. "SECTION 2"), case-sensitive."""
    spliter = section_spliter.strip()
    n = len(re.split(r"\s?" + re.escape(spliter) + r"\s?\d+\s?", text)) - 1
    if n >= num_sections:
        return ""
    return f"reply has {plural(n, 'section')} marked '{spliter} X', needs at least {num_sections}"


def detectable_format_json_format(text: str) -> str:
    """The whole reply must parse as JSON, optionally inside one ``` / ```json fence."""
    body = text.strip()
    for prefix in ("```json", "```Json", "```JSON", "```"):  # removed one after another, as IFEval does
        body = body.removeprefix(prefix)
    body = body.removesuffix("```").strip()
    try:
        json.loads(body)
    except ValueError as e:
        return f"reply is not valid JSON ({e})"
    return ""


def detectable_format_title(text: str) -> str:
    """A non-empty title wrapped in double angular brackets on one line, like <<poem of joy>>."""
    if any(t.lstrip("<").rstrip(">").strip() for t in re.findall(r"<<[^\n]+>>", text)):
        return ""
    return "reply has no title wrapped in double angular brackets like <<title>>"


def combination_two_responses(text: str) -> str:
    """Exactly two different non-empty responses separated by `******` (empty ends are allowed)."""
    parts = text.split("******")
    if any(not p.strip() for p in parts[1:-1]):
        return "reply has an empty response between two ****** separators"
    valid = [p.strip() for p in parts if p.strip()]
    if len(valid) != 2:
        return f"reply has {plural(len(valid), 'response')} separated by ******, needs exactly 2"
    return "" if valid[0] != valid[1] else "the two responses separated by ****** are identical"


def combination_repeat_prompt(text: str, *, prompt_to_repeat: str) -> str:
    """The reply must begin with the request repeated verbatim (case-insensitive, outer whitespace ignored)."""
    if text.strip().lower().startswith(prompt_to_repeat.strip().lower()):
        return ""
    return (f"reply does not start by repeating the request word for word: expected it to begin with "
            f"'{clip(prompt_to_repeat)}', it begins with '{clip(text)}'")


def startend_end_checker(text: str, *, end_phrase: str) -> str:
    """The reply must end with the phrase (case-insensitive; outer whitespace and double quotes ignored)."""
    if text.strip().strip('"').lower().endswith(end_phrase.strip().lower()):
        return ""
    tail = " ".join(text.split())[-len(end_phrase.strip()) - 10:]
    return f"expected to end with '{end_phrase.strip()}', reply ends with '{tail}'"


def change_case_capital_word_frequency(text: str, *, capital_frequency: int, capital_relation: str) -> str:
    """Count of ALL-CAPITAL words (see `word_tokens`) compared with `capital_frequency`."""
    n = sum(1 for w in word_tokens(text) if w.isupper())
    ok = compare(n, capital_relation, capital_frequency)
    return "" if ok else f"reply has {plural(n, 'all-capital word')}, needs {need(capital_relation, capital_frequency)}"


def _not_english(text: str) -> str:
    found = detect_language(text)
    return "" if found in (None, "en") else f"reply is not in English (looks like {language_name(found)})"


def change_case_english_capital(text: str) -> str:
    """English and no lowercase letters (str.isupper: at least one cased letter, none lowercase)."""
    if not text.isupper():
        lower = sorted(set(w for w in word_tokens(text) if not w.isupper() and w.lower() != w.upper()))[:3]
        return "reply is not all capital letters" + (f" (e.g. {', '.join(map(repr, lower))})" if lower else "")
    return _not_english(text)


def change_case_english_lowercase(text: str) -> str:
    """English and no capital letters (str.islower)."""
    if not text.islower():
        upper = sorted(set(w for w in word_tokens(text) if not w.islower() and w.lower() != w.upper()))[:3]
        return "reply has capital letters" + (f" (e.g. {', '.join(map(repr, upper))})" if upper else "")
    return _not_english(text)


def punctuation_no_comma(text: str) -> str:
    """No ASCII comma anywhere (IFEval does not count the fullwidth ， or Arabic ،)."""
    n = text.count(",")
    return f"reply contains {plural(n, 'comma')}" if n else ""


def startend_quotation(text: str) -> str:
    """The stripped reply must start and end with a straight double quote (curly quotes do not count)."""
    body = text.strip()
    if len(body) > 1 and body[0] == '"' and body[-1] == '"':
        return ""
    return "reply is not wrapped in double quotation marks (must start and end with \")"


RULES: dict[str, Callable[..., str]] = {
    "keywords:existence": keywords_existence,
    "keywords:frequency": keywords_frequency,
    "keywords:forbidden_words": keywords_forbidden_words,
    "keywords:letter_frequency": keywords_letter_frequency,
    "language:response_language": language_response_language,
    "length_constraints:number_sentences": length_constraints_number_sentences,
    "length_constraints:number_paragraphs": length_constraints_number_paragraphs,
    "length_constraints:number_words": length_constraints_number_words,
    "length_constraints:nth_paragraph_first_word": length_constraints_nth_paragraph_first_word,
    "detectable_content:number_placeholders": detectable_content_number_placeholders,
    "detectable_content:postscript": detectable_content_postscript,
    "detectable_format:number_bullet_lists": detectable_format_number_bullet_lists,
    "detectable_format:constrained_response": detectable_format_constrained_response,
    "detectable_format:number_highlighted_sections": detectable_format_number_highlighted_sections,
    "detectable_format:multiple_sections": detectable_format_multiple_sections,
    "detectable_format:json_format": detectable_format_json_format,
    "detectable_format:title": detectable_format_title,
    "combination:two_responses": combination_two_responses,
    "combination:repeat_prompt": combination_repeat_prompt,
    "startend:end_checker": startend_end_checker,
    "change_case:capital_word_frequency": change_case_capital_word_frequency,
    "change_case:english_capital": change_case_english_capital,
    "change_case:english_lowercase": change_case_english_lowercase,
    "punctuation:no_comma": punctuation_no_comma,
    "startend:quotation": startend_quotation,
}
