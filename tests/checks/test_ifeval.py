"""Tests for the IFEval checks: every instruction passes and fails, edge cases, loose scoring, kwargs, data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promptlearn.checks import base
from promptlearn.checks import build as builder
from promptlearn.checks import ifeval_rules as rules
from promptlearn.checks.ifeval import (INSTRUCTION_IDS, IFEvalCheck, ifeval_aggregate, ifeval_checks,
                                       loose_variants, make_ifeval_check)
from promptlearn.types import CheckResult

DATA = Path("/work/shared/data/sys_ifeval/sys_ifeval.jsonl")
END = "Is there anything else I can help with?"
REQUEST = "Write a haiku about autumn leaves."


@pytest.fixture(autouse=True)
def heuristic_only(monkeypatch):
    """Pin language detection to the built-in heuristic so results do not depend on langdetect being installed."""
    monkeypatch.setattr(rules, "_langdetect", None)


def check(kind: str, **kwargs) -> IFEvalCheck:
    return make_ifeval_check(kind=kind, **kwargs)


def score(kind: str, reply: str, **kwargs) -> CheckResult:
    return check(kind, **kwargs).score(reply, base.CheckContext())


# kind, kwargs, a passing reply, a failing reply, a fragment the failure feedback must contain
CASES = [
    ("keywords:existence", {"keywords": ["autumn", "Leaf"]}, "The LEAF falls in Autumn.", "The leaf falls.",
     "missing keyword(s) 'autumn'"),
    ("keywords:frequency", {"keyword": "tree", "frequency": 3, "relation": "at least"},
     "Tree, tree and another tree.", "One tree and two trees.", "'tree' appears 2 times, needs at least 3"),
    ("keywords:forbidden_words", {"forbidden_words": ["red", "blue"]}, "Reddish and bluer skies.",
     "The sky is Blue and blue.", "'blue' (2 times)"),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 2, "let_relation": "at least"},
     "Zebras zigzag.", "A zebra.", "letter 'z' appears 1 time, needs at least 2"),
    ("language:response_language", {"language": "de"}, "Das ist ein guter Tag und ich bin froh.",
     "This is a good day and I am happy.", "looks like English (en), expected German (de)"),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "less than"}, "One. Two.",
     "One. Two. Three.", "reply has 3 sentences, needs fewer than 3"),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "First part.\n***\nSecond part.",
     "First part.\n\nSecond part.", "reply has 1 paragraph separated by ***, needs exactly 2"),
    ("length_constraints:number_words", {"num_words": 5, "relation": "at least"}, "one two three four five",
     "one two three four", "reply has 4 words, needs at least 5"),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
     "First we go.\n\nThen, we stay.", "First we go.\n\nAfter that we stay.",
     "paragraph 2 starts with 'after', expected 'then'"),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "Dear [name], see you at [address].",
     "Dear [name], see you soon.", "reply has 1 placeholder in square brackets like [name], needs at least 2"),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hello.\n\nP.S. See you soon.",
     "Hello. See you soon.", "no postscript starting with 'P.S.'"),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "Intro:\n* one\n* two",
     "Intro:\n* one\n* two\n- three", "reply has 3 bullet points, needs exactly 2"),
    ("detectable_format:constrained_response", {}, "My answer is maybe.", "My answer is perhaps.",
     "none of 'My answer is yes.'"),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*intro* and **details**",
     "*intro* and ** ** only", "reply has 1 highlighted section like *this*, needs at least 2"),
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 2},
     "SECTION 1\nA.\nSECTION 2\nB.", "SECTION 1\nA.\nSection 2\nB.", "reply has 1 section marked 'SECTION X'"),
    ("detectable_format:json_format", {}, '```json\n{"a": [1, 2]}\n```', "{'a': 1}", "reply is not valid JSON"),
    ("detectable_format:title", {}, "<<Autumn Song>>\nLeaves fall.", "<< >>\nLeaves fall.", "no title"),
    ("combination:two_responses", {}, "First answer.\n******\nSecond answer.", "Same.\n******\nSame.",
     "identical"),
    ("combination:repeat_prompt", {"prompt_to_repeat": REQUEST}, REQUEST.upper() + "\nRed leaves drift down.",
     "Sure! " + REQUEST, "does not start by repeating the request"),
    ("startend:end_checker", {"end_phrase": END}, f"Done. {END.lower()}", f"Done. {END} Bye.",
     f"expected to end with '{END}'"),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "less than"},
     "Only ONE shout.", "TWO LOUD words.", "reply has 2 all-capital words, needs fewer than 2"),
    ("change_case:english_capital", {}, "THIS IS ALL IN CAPITALS AND IT IS FINE.", "THIS IS Mostly CAPITALS.",
     "not all capital letters (e.g. 'Mostly')"),
    ("change_case:english_lowercase", {}, "this is all lowercase and it is fine.", "this is Not lowercase.",
     "has capital letters (e.g. 'Not')"),
    ("punctuation:no_comma", {}, "No commas here.", "One, two, three, four.", "reply contains 3 commas"),
    ("startend:quotation", {}, '  "Wrapped in quotes."  ', '"Only an opening quote.', "not wrapped in double"),
]


def test_cases_cover_all_25_instructions():
    assert len(INSTRUCTION_IDS) == 25
    assert sorted(c[0] for c in CASES) == sorted(INSTRUCTION_IDS)


@pytest.mark.parametrize("kind,kwargs,good,bad,fragment", CASES, ids=[c[0] for c in CASES])
def test_every_instruction_has_a_hint_naming_its_literals(kind, kwargs, good, bad, fragment):
    """The hint (checks.hints) states the rule in the verifier's terms: each word, phrase and number the
    instruction's kwargs fix appears in it (a request to repeat is per example, so it is not quoted)."""
    hint = check(kind, **kwargs).hint()
    assert hint and hint[0].isupper() and hint.rstrip().endswith(".")
    for key, v in kwargs.items():
        if key in ("relation", "let_relation", "capital_relation", "prompt_to_repeat", "language"):
            continue
        for x in v if isinstance(v, list) else [v]:
            assert str(x).strip() in hint, (key, x, hint)
    if "language" in kwargs:
        assert rules.language_name(kwargs["language"]).split(" (")[0] in hint


@pytest.mark.parametrize("kind,kwargs,good,bad,fragment", CASES, ids=[c[0] for c in CASES])
def test_pass_and_fail(kind, kwargs, good, bad, fragment):
    ok = score(kind, good, **kwargs)
    assert (ok.score, ok.loose, ok.feedback) == (1.0, 1.0, "")
    ko = score(kind, bad, **kwargs)
    assert ko.score == 0.0
    assert fragment in ko.feedback
    assert ko.details["instruction_id"] == kind


@pytest.mark.parametrize("kind,kwargs", [(c[0], c[1]) for c in CASES], ids=[c[0] for c in CASES])
@pytest.mark.parametrize("reply", ["", "   \n\t "])
def test_empty_reply_fails_strict_and_loose(kind, kwargs, reply):
    r = score(kind, reply, **kwargs)
    assert (r.score, r.loose) == (0.0, 0.0)
    assert r.feedback == "reply is empty"


# --- relations and boundaries -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,count_kw,rel_kw,reply,actual", [
    ("length_constraints:number_words", "num_words", "relation", "alpha beta gamma", 3),
    ("length_constraints:number_sentences", "num_sentences", "relation", "One. Two! Three?", 3),
    ("keywords:frequency", "frequency", "relation", "cat Cat CAT", 3),
    ("keywords:letter_frequency", "let_frequency", "let_relation", "Aaa", 3),
    ("change_case:capital_word_frequency", "capital_frequency", "capital_relation", "ONE TWO THREE four", 3),
])
def test_relation_both_ways_at_the_boundary(kind, count_kw, rel_kw, reply, actual):
    extra = {"keyword": "cat"} if kind == "keywords:frequency" else {"letter": "a"} if "letter" in kind else {}

    def passes(threshold, relation):
        return score(kind, reply, **extra, **{count_kw: threshold, rel_kw: relation}).score

    assert passes(actual, "at least") == 1.0          # actual >= threshold
    assert passes(actual + 1, "at least") == 0.0
    assert passes(actual, "less than") == 0.0          # actual < threshold is strict
    assert passes(actual + 1, "less than") == 1.0
    failed = score(kind, reply, **extra, **{count_kw: actual, rel_kw: "less than"})
    assert f"needs fewer than {actual}" in failed.feedback


def test_number_words_feedback_example():
    r = score("length_constraints:number_words", "word " * 120, relation="at least", num_words=300)
    assert r.feedback == "reply has 120 words, needs at least 300"


# --- loose scoring and markdown -----------------------------------------------------------------------------

def test_loose_variants_are_ifevals_eight():
    v = loose_variants("Sure!\n*body*\nBye")
    assert len(v) == 8
    assert v[:5] == ["Sure!\n*body*\nBye", "Sure!\nbody\nBye", "*body*\nBye", "Sure!\n*body*", "*body*"]
    assert v[5:] == ["body\nBye", "Sure!\nbody", "body"]


@pytest.mark.parametrize("kind,kwargs,reply", [
    ("startend:quotation", {}, '*"A quoted reply."*'),                          # markdown stars removed
    ("startend:end_checker", {"end_phrase": END}, f"Text. {END}\nBest regards"),  # last line dropped
    ("combination:repeat_prompt", {"prompt_to_repeat": REQUEST}, f"Sure, here it is:\n{REQUEST}\nLeaves."),
    ("detectable_format:json_format", {}, 'Here is the JSON:\n{"ok": true}'),     # first line dropped
    ("punctuation:no_comma", {}, "Hello, here you go:\nNo commas in the body\nBye, then"),  # both dropped
    ("startend:end_checker", {"end_phrase": END}, f"Text. **{END}**"),       # bold ending
])
def test_loose_passes_where_strict_fails(kind, kwargs, reply):
    r = score(kind, reply, **kwargs)
    assert (r.score, r.loose) == (0.0, 1.0)
    assert r.feedback  # strict failure is still explained


def test_loose_can_still_fail():
    r = score("punctuation:no_comma", "a, b\nc, d\ne, f")
    assert (r.score, r.loose) == (0.0, 0.0)


def test_markdown_highlights_single_and_double_stars():
    assert rules.detectable_format_number_highlighted_sections("**bold** and *it*", num_highlights=2) == ""
    assert rules.detectable_format_number_highlighted_sections("** ** and * *", num_highlights=1)
    assert rules.detectable_format_number_highlighted_sections("*spans\nlines*", num_highlights=1)


# --- per-instruction edge cases -----------------------------------------------------------------------------

def test_unicode_is_handled():
    assert score("punctuation:no_comma", "一，二、三").score == 1.0  # fullwidth comma is not an ASCII comma
    assert score("length_constraints:number_words", "naïve café über straße", relation="at least",
                 num_words=4).score == 1.0
    assert score("keywords:letter_frequency", "Élan été", letter="é", let_frequency=3,
                 let_relation="at least").score == 1.0
    assert score("language:response_language", "한국은 동아시아에 위치한 나라입니다.", language="ko").score == 1.0
    assert score("language:response_language", "한국은 동아시아에 위치한 나라입니다.", language="ja").score == 0.0
    assert score("change_case:english_lowercase", "naïve café is fine.").score == 1.0
    assert score("keywords:existence", "Ünïcödé text", keywords=["ünïcödé"]).score == 1.0


def test_keywords_are_literal_not_regex():
    assert score("keywords:existence", "I write C++ daily.", keywords=["C++"]).score == 1.0
    assert score("keywords:existence", "english", keywords=["e.g."]).score == 0.0
    assert score("keywords:forbidden_words", "He said hello.", forbidden_words=["hell"]).score == 1.0  # whole word


def test_paragraph_dividers():
    f = rules.length_constraints_number_paragraphs
    assert f("***\nA\n***\nB\n***", num_paragraphs=2) == ""          # empty ends are ignored
    assert "empty paragraph" in f("A\n***\n***\nB", num_paragraphs=2)


def test_nth_paragraph_counts_and_first_word():
    f = rules.length_constraints_nth_paragraph_first_word
    reply = "\"Summary, here.\n\nBody.\n\nEnd."
    assert f(reply, num_paragraphs=3, nth_paragraph=1, first_word="summary") == ""
    assert "needs exactly 4" in f(reply, num_paragraphs=4, nth_paragraph=1, first_word="summary")
    assert "no paragraph 4" in f(reply, num_paragraphs=4, nth_paragraph=4, first_word="end")


def test_postscript_variants():
    f = rules.detectable_content_postscript
    assert f("Bye.\np. p. s. more", postscript_marker="P.P.S") == ""
    assert f("Bye.\nP.S. more", postscript_marker="P.P.S")
    assert f("Bye.\nNote: more", postscript_marker="Note:") == ""


def test_multiple_sections_other_spliters():
    f = rules.detectable_format_multiple_sections
    assert f("Day 1: rest. Day 2: walk. Day 3: swim.", section_spliter="Day", num_sections=3) == ""
    assert "has 2 sections" in f("PARAGRAPH 1 a PARAGRAPH 2 b", section_spliter="PARAGRAPH", num_sections=3)


def test_two_responses_needs_exactly_two():
    f = rules.combination_two_responses
    assert "has 3 responses" in f("a\n******\nb\n******\nc")
    assert "empty response" in f("a\n******\n\n******\nb")
    assert f("******\na\n******\nb\n") == ""


def test_capital_word_tokens_match_treebank_counts():
    # treebank: I, DO, N'T, KNOW, BUT, IT, 'S, WELL-KNOWN, U.S.A. -> 9 all-capital tokens
    assert sum(w.isupper() for w in rules.word_tokens("I DON'T KNOW, BUT IT'S WELL-KNOWN. U.S.A.")) == 9


def test_english_case_checks_need_english():
    r = score("change_case:english_capital", "DAS IST EIN GUTER TAG UND ICH BIN FROH.")
    assert r.score == 0.0 and "not in English" in r.feedback
    assert score("change_case:english_lowercase", "das ist ein guter tag und ich bin froh.").score == 0.0
    assert score("change_case:english_capital", "1234 !!!").score == 0.0  # no cased letter at all


def test_constrained_response_and_quotation_details():
    assert score("detectable_format:constrained_response", "Hmm. My answer is no. Because.").score == 1.0
    assert score("startend:quotation", '"').score == 0.0
    assert score("startend:quotation", "“curly quotes”").score == 0.0


# --- sentences, words, languages ----------------------------------------------------------------------------

@pytest.mark.parametrize("text,n", [
    ("", 0),
    ("No full stop at all", 1),
    ("Hello world. This is a test! Is it? Yes.", 4),
    ("* item one\n* item two\n* item three", 1),                  # line breaks alone do not split
    ("Version 2.0 costs $3.50 today. Visit example.com now.", 2),
    ("Mr. Smith met Dr. Jones. They talked.", 2),                  # titles never end a sentence
    ("Ask Dr. Who. It is fun.", 2),
    ("Bring fruit, e.g. apples. Then leave.", 2),
    ("Use tools e.g. The hammer.", 2),                             # abbreviation + capitalised starter
    ("I waited... and waited... Then it came.", 2),
    ("Here are steps:\n1. Do this.\n2. Do that.", 4),              # punkt splits after list numbers
    ('"Hello," she said. "How are you?" I replied.', 3),
])
def test_count_sentences(text, n):
    assert rules.count_sentences(text) == n


def test_count_words_uses_word_runs():
    assert rules.count_words("It's a well-known fact_x, 42!") == 7  # It s a well known fact_x 42
    assert rules.count_words("  ") == 0


LANGUAGE_SAMPLES = {
    "hi": "भारत एक विशाल देश है और यहाँ कई भाषाएँ बोली जाती हैं। मैं आपको इसके बारे में बताना चाहता हूँ।",
    "mr": "महाराष्ट्र हे भारतातील एक मोठे राज्य आहे. येथील लोक मराठी भाषा बोलतात आणि त्यांच्या संस्कृतीचा "
          "अभिमान बाळगतात.",
    "ne": "नेपाल एक सुन्दर देश हो। यहाँ धेरै हिमालहरू छन् र मानिसहरू मिलनसार छन्। म तपाईंलाई भन्न चाहन्छु।",
    "ru": "Россия является самой большой страной в мире. Здесь живут люди разных национальностей.",
    "bg": "България е красива страна на Балканския полуостров. Тук има планини, море и много исторически места.",
    "de": "Deutschland ist ein Land in Mitteleuropa. Es hat eine lange Geschichte und viele schöne Städte.",
    "pt": "O Brasil é o maior país da América do Sul. Ele tem uma cultura muito rica e diversa.",
    "it": "L'Italia è famosa per la sua cucina e per la sua storia. Ci sono molte città d'arte.",
    "fi": "Suomi on maa Pohjois-Euroopassa. Siellä on paljon järviä ja metsiä, ja talvet ovat kylmiä.",
    "vi": "Việt Nam là một đất nước xinh đẹp ở Đông Nam Á. Người dân ở đây rất thân thiện.",
    "ar": "مصر هي دولة عربية تقع في شمال أفريقيا. وهي مشهورة بالأهرامات والتاريخ القديم.",
    "ko": "한국은 동아시아에 위치한 나라입니다. 서울은 한국의 수도입니다.",
    "th": "ประเทศไทยเป็นประเทศที่สวยงามในเอเชียตะวันออกเฉียงใต้",
    "ta": "தமிழ்நாடு இந்தியாவின் தெற்கே உள்ள ஒரு மாநிலம்.",
    "te": "తెలుగు భారతదేశంలో ఎక్కువగా మాట్లాడే భాషలలో ఒకటి.",
    "kn": "ಕರ್ನಾಟಕ ಭಾರತದ ದಕ್ಷಿಣದಲ್ಲಿರುವ ಒಂದು ರಾಜ್ಯ.",
    "gu": "ગુજરાત ભારતના પશ્ચિમ ભાગમાં આવેલું રાજ્ય છે.",
    "pa": "ਪੰਜਾਬ ਭਾਰਤ ਦਾ ਇੱਕ ਰਾਜ ਹੈ। ਇੱਥੇ ਪੰਜਾਬੀ ਭਾਸ਼ਾ ਬੋਲੀ ਜਾਂਦੀ ਹੈ।",
    "bn": "বাংলাদেশ দক্ষিণ এশিয়ার একটি দেশ। এখানে বাংলা ভাষায় কথা বলা হয়।",
    "en": "The quick brown fox jumps over the lazy dog. It was a sunny day and everyone was happy.",
    "es": "España es un país con una historia muy rica. Tiene muchas ciudades bonitas.",
    "fr": "La France est un pays d'Europe occidentale. Elle est connue pour sa cuisine et ses vins.",
    "ja": "日本は東アジアにある島国です。東京は日本の首都です。",
}


def test_language_samples_cover_every_language_the_data_asks_for():
    if not DATA.exists():
        pytest.skip(f"{DATA} not present")
    wanted = {kw["language"] for row in _rows() for kw in row["kwargs"] if kw and kw.get("language")}
    assert wanted <= set(LANGUAGE_SAMPLES)


@pytest.mark.parametrize("code", sorted(LANGUAGE_SAMPLES))
def test_heuristic_language(code):
    assert rules.heuristic_language(LANGUAGE_SAMPLES[code]) == code
    assert score("language:response_language", LANGUAGE_SAMPLES[code], language=code).score == 1.0
    other = "fi" if code != "fi" else "de"
    wrong = score("language:response_language", LANGUAGE_SAMPLES[code], language=other)
    assert wrong.score == 0.0 and f"expected {rules.LANGUAGE_NAMES[other]}" in wrong.feedback


def test_heuristic_language_undecidable_text_counts_as_followed():
    assert rules.heuristic_language("12345 !!! 678") is None
    assert rules.heuristic_language("Xylophone Quixotic") is None  # Latin letters but no function words
    assert score("language:response_language", "12345", language="ko").score == 1.0  # IFEval: undetectable passes


def test_heuristic_language_tell_tale_letters():
    assert rules.heuristic_language("Възход съдба ъгъл") == "bg"   # no function words, but ъ
    assert rules.heuristic_language("Выход съезд") == "ru"          # ы
    assert rules.heuristic_language("Їжак і єнот") == "uk"


def test_heuristic_language_majority_script_wins():
    mixed = LANGUAGE_SAMPLES["ru"] + " (OK, Moscow)"
    assert rules.heuristic_language(mixed) == "ru"


# --- kwargs, registry -------------------------------------------------------------------------------------

def test_none_kwargs_are_ignored_and_numeric_strings_accepted():
    c = check("length_constraints:number_words", relation="at least", num_words="3", keywords=None, letter=None)
    assert c.params == {"relation": "at least", "num_words": 3}
    assert check("punctuation:no_comma", num_words=None).params == {}


@pytest.mark.parametrize("kind,kwargs,exc,words", [
    ("punctuation:no_comma", {"num_words": 3}, TypeError, "'num_words'"),
    ("length_constraints:number_words", {"relation": "at least"}, TypeError, "missing required kwarg(s) 'num_words'"),
    ("length_constraints:number_words", {"relation": "at most", "num_words": 3}, ValueError, "'relation'"),
    ("length_constraints:number_words", {"relation": "at least", "num_words": "many"}, ValueError, "'num_words'"),
    ("length_constraints:number_words", {"relation": "at least", "num_words": True}, ValueError, "'num_words'"),
    ("keywords:frequency", {"keywords": ["a"], "frequency": 1, "relation": "at least"}, TypeError, "'keyword'"),
    ("keywords:existence", {"keywords": []}, ValueError, "'keywords'"),
    ("keywords:letter_frequency", {"letter": "ab", "let_frequency": 1, "let_relation": "at least"}, ValueError,
     "'letter'"),
    ("language:response_language", {"language": "xx"}, ValueError, "'language'"),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 3, "first_word": "a"},
     ValueError, "'nth_paragraph'"),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 0}, ValueError, "'num_paragraphs'"),
    ("combination:repeat_prompt", {"prompt_to_repeat": "  "}, ValueError, "'prompt_to_repeat'"),
])
def test_bad_kwargs_raise_naming_the_kwarg(kind, kwargs, exc, words):
    with pytest.raises(exc) as e:
        check(kind, **kwargs)
    assert words in str(e.value)


def test_every_id_is_registered_with_the_factory():
    for kind in INSTRUCTION_IDS:
        assert base._REGISTRY[kind] is make_ifeval_check


def test_build_check_uses_the_registry(monkeypatch):
    monkeypatch.setattr(builder, "_load_builtins", lambda: None)
    c = builder.build_check({"type": "length_constraints:number_words", "relation": "at least", "num_words": 300})
    assert c.name == "length_constraints:number_words" and c.needs_model is False
    assert c.score("too short", base.CheckContext()).feedback == "reply has 2 words, needs at least 300"
    named = builder.build_check({"type": "punctuation:no_comma", "name": "commas"})
    assert named.name == "commas"
    with pytest.raises(base.CheckSpecError, match="unexpected kwarg"):
        builder.build_check({"type": "punctuation:no_comma", "value": 1})


def test_a_rule_that_raises_is_a_failure_not_an_exception(monkeypatch):
    def boom(text):
        raise RuntimeError("bad")

    monkeypatch.setitem(rules.RULES, "punctuation:no_comma", boom)
    r = score("punctuation:no_comma", "fine")
    assert r.score == 0.0 and "RuntimeError" in r.feedback


# --- aggregate -------------------------------------------------------------------------------------------------

def R(strict: float, loose: float | None = None) -> CheckResult:
    return CheckResult(score=strict, loose=loose)


def test_aggregate_prompt_and_instruction_level():
    results = [
        [R(1, 1), R(1, 1)],      # all pass
        [R(0, 1), R(1, 1)],      # passes only loosely
        [R(0, 0), R(1, 1), R(1, 1)],
        [R(1)],                  # loose missing: falls back to strict
    ]
    assert ifeval_aggregate(results) == {
        "prompt_strict": 2 / 4, "prompt_loose": 3 / 4,
        "instruction_strict": 6 / 8, "instruction_loose": 7 / 8,
    }


def test_aggregate_empty():
    assert ifeval_aggregate([]) == dict.fromkeys(
        ("prompt_strict", "prompt_loose", "instruction_strict", "instruction_loose"), 0.0)


# --- the real data ---------------------------------------------------------------------------------------------

def _rows() -> list[dict]:
    return [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_ifeval_checks_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="2 instruction ids but 1 kwargs"):
        ifeval_checks(["punctuation:no_comma", "startend:quotation"], [{}])


def test_every_data_row_builds_and_scores():
    if not DATA.exists():
        pytest.skip(f"{DATA} not present")
    rows = _rows()
    assert rows
    sample = '"Hello, world.\n\n* *one* point\n\nSECTION 1 here. My answer is yes.\n\nP.S. Bye"'
    per_prompt = []
    for row in rows:
        checks = ifeval_checks(row["instruction_id_list"], row["kwargs"])
        assert [c.kind for c in checks] == row["instruction_id_list"]
        results = [c.score(sample, base.CheckContext()) for c in checks]
        for c, r in zip(checks, results):
            assert r.score in (0.0, 1.0) and r.loose in (0.0, 1.0), c.kind
            assert r.loose >= r.score
            assert r.score == 1.0 or r.feedback, c.kind
            assert not r.feedback.startswith("could not check"), (c.kind, r.feedback)
        per_prompt.append(results)
    agg = ifeval_aggregate(per_prompt)
    assert 0.0 <= agg["prompt_strict"] <= agg["prompt_loose"] <= 1.0
    assert agg["prompt_strict"] < 1.0  # one sample reply cannot satisfy every prompt
