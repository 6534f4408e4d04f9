"""Repairs (checks.repairs) and the worked examples evolve builds from them (operators.fixed_example).

A repair edits a failing reply until one check passes it; the search keeps a repaired reply only when every
check of the task passes it. The scripted model below writes a title only after it has seen one in a worked
example, as SmolLM2 does on rules/title (0 of 18 val replies with a title from the plain rule).
"""

from __future__ import annotations

import re

import pytest

from conftest import requires_model
from promptlearn.checks import build_check
from promptlearn.checks.ifeval import make_ifeval_check
from promptlearn.checks.repairs import IFEVAL_REPAIRS, repair_reply, sentence_spans
from promptlearn.checks import ifeval_rules
from promptlearn.optimizers.operators import DEMO_WORDS, short_reply
from promptlearn.run import optimize
from promptlearn.store import SQLiteRunStore
from promptlearn.task import load_task, task_from_dict
from promptlearn.testing import FakeLM

REPLIES = [
    "What's an XML? A magical, magical thing that can be used to create web pages. It is used by developers. "
    "That is all I know about it, friend.",
    "A: The answer to this riddle is a bat and a ball. B: Yes, that's right, and the ball is round.",
    "Sure, here is a joke: why did the chicken cross the road? To get to the other side! Ha ha, that's it.",
    "Dr. Smith said the U.S. economy grew 3.5% in 2020. However, prices rose too; many people noticed that.",
    "Here are some tips:\n- drink water\n- sleep well\nThat's all.",
]
PARAMS = {
    "keywords:existence": {"keywords": ["friend", "BrightMart"]},
    "keywords:forbidden_words": {"forbidden_words": ["that", "is"]},
    "length_constraints:number_sentences": {"num_sentences": 3, "relation": "less than"},
    "length_constraints:number_words": {"num_words": 12, "relation": "less than"},
    "detectable_format:number_bullet_lists": {"num_bullets": 3},
    "detectable_format:number_highlighted_sections": {"num_highlights": 2},
    "detectable_format:title": {},
    "startend:end_checker": {"end_phrase": "Is there anything else I can help with?"},
    "detectable_content:postscript": {"postscript_marker": "P.S."},
    "startend:quotation": {},
    "change_case:english_lowercase": {},
    "change_case:english_capital": {},
    "punctuation:no_comma": {},
    "detectable_format:json_format": {},
}


def test_every_ifeval_repair_has_a_case_here():
    assert set(PARAMS) == set(IFEVAL_REPAIRS)


@pytest.mark.parametrize("kind", sorted(PARAMS))
@pytest.mark.parametrize("reply", REPLIES)
def test_a_repair_makes_its_check_pass(kind, reply):
    check = make_ifeval_check(kind, **PARAMS[kind])
    fixed = check.repair(reply)
    if fixed is None:  # a repair may decline; the ones that cannot are listed below
        assert (kind, reply) in DECLINED, f"{kind} gave up on {reply!r}"
        return
    assert check.score(fixed).passed, (kind, fixed, check.score(fixed).feedback)


DECLINED: set[tuple[str, str]] = set()  # none of these replies is beyond a repair


def test_a_repair_is_a_small_edit_of_the_reply():
    reply = REPLIES[0]
    assert make_ifeval_check("detectable_format:title").repair(reply) == "<<What's An XML>>\n" + reply
    assert make_ifeval_check("keywords:existence", keywords=["BrightMart"]).repair(reply) \
        == "BrightMart, what's an XML? " + reply.split("? ", 1)[1]
    two = make_ifeval_check("length_constraints:number_sentences", num_sentences=3, relation="less than")
    assert two.repair(reply) == "What's an XML? A magical, magical thing that can be used to create web pages."
    assert make_ifeval_check("detectable_format:number_bullet_lists", num_bullets=3).repair(reply) == (
        "* What's an XML?\n* A magical, magical thing that can be used to create web pages.\n"
        "* It is used by developers.")
    assert "that" not in make_ifeval_check("keywords:forbidden_words", forbidden_words=["that"]).repair(reply)


def test_repairs_decline_what_they_cannot_do():
    at_least = make_ifeval_check("length_constraints:number_words", num_words=300, relation="at least")
    assert at_least.repair("Hi.") is None
    assert make_ifeval_check("length_constraints:number_sentences", num_sentences=2, relation="at least"
                             ).repair("One.") is None
    assert make_ifeval_check("detectable_format:number_bullet_lists", num_bullets=3).repair("Just this.") is None
    assert make_ifeval_check("language:response_language", language="fr").repair("Hello.") is None
    assert make_ifeval_check("detectable_format:title").repair("...") is None


def test_sentence_spans_agree_with_the_sentence_count():
    for reply in REPLIES:
        spans = sentence_spans(reply)
        assert len(spans) == ifeval_rules.count_sentences(reply)
        assert " ".join(spans).split() == reply.split()


@pytest.mark.parametrize("spec, reply", [
    ({"type": "contains", "value": "Ahoy"}, "Hello there."),
    ({"type": "icontains", "values": ["ahoy", "matey"], "mode": "all"}, "Hello there."),
    ({"type": "not_contains", "value": "sorry"}, "Oh sorry, I cannot. So sorry."),
    ({"type": "starts_with", "value": "Ahoy"}, "Hello there."),
    ({"type": "ends_with", "value": "Arr!"}, "Hello there."),
])
def test_assertion_repairs_pass(spec, reply):
    check = build_check(spec)
    fixed = repair_reply(check, reply)
    assert fixed is not None and check.score(fixed, None).passed, fixed


def test_a_check_without_a_repair_or_with_a_broken_one_gives_none():
    class NoRepair:
        name = "x"

    class Broken:
        name = "y"

        def repair(self, reply):
            raise RuntimeError("boom")

    assert repair_reply(NoRepair(), "r") is None and repair_reply(Broken(), "r") is None
    assert repair_reply(build_check({"type": "equals", "value": "yes"}), "no") is None
    assert repair_reply(build_check({"type": "regex", "pattern": "^A"}), "no") is None


def test_short_reply_cuts_long_replies_and_keeps_lines_only_when_asked():
    assert short_reply("<<T>>\n* a\n* b", keep_lines=True) == "<<T>>\n* a\n* b"
    assert short_reply("<<T>>\n* a\n* b") == "<<T>> * a * b"  # a passing reply, shown as it always was
    long = " ".join(f"w{i}" for i in range(40))
    for keep in (False, True):
        assert short_reply(long, keep_lines=keep) == " ".join(f"w{i}" for i in range(DEMO_WORDS)) + " ..."
        assert short_reply("a {b}", keep_lines=keep) == "a (b)"
    assert short_reply("a b\nc d e", limit=3, keep_lines=True) == "a b\nc ..."


# --- fixed_example in evolve, on a scripted model --------------------------------------------------------

SEED = "You are a helpful assistant. Give every reply a title in double angular brackets."


def title_responder(messages):
    system = messages[0]["content"] if messages[0]["role"] == "system" else ""
    answer = "It is a fine question, and here is my short answer to it."
    return f"<<My Answer>>\n{answer}" if re.search(r"\nAssistant: <<", system) else answer


def title_task():
    rows = [{"id": f"q{i:02d}", "user": f"Tell me about topic {i}."} for i in range(20)]
    return task_from_dict({"name": "title-fake", "model": "fake/x", "prompt": SEED,
                           "data": [{"examples": rows}], "splits": {"train": 0.4, "val": 0.3, "test": 0.3, "seed": 0},
                           "checks": [{"type": "detectable_format:title", "name": "rule"},
                                      {"type": "min_words", "name": "answers", "value": 5}]})


def test_fixed_example_climbs_from_a_floor_no_passing_reply_can(tmp_path):
    with FakeLM(title_responder):
        res = optimize(title_task(), "evolve", budget=150, seed=0, run_dir=tmp_path / "run")
    assert res.seed.val == 0.5 and res.best.val == 1.0  # the answers check passes, the title never did
    cands = SQLiteRunStore(res.run_dir, create=False).candidates()
    best = next(c for c in cands if c["id"] == res.best.id)
    assert best["operator"] == "fixed_example" and "Assistant: <<It Is A Fine Question>>" in best["prompt"]


def test_without_fixed_example_evolve_stays_at_that_floor(tmp_path):
    from promptlearn.optimizers.operators import MUTATIONS

    ops = [op for op in MUTATIONS if op != "fixed_example"]
    with FakeLM(title_responder):
        res = optimize(title_task(), "evolve", budget=150, seed=0, run_dir=tmp_path / "run",
                       options={"operators": ops})
    assert res.best.val == 0.5


def test_a_repair_that_breaks_another_check_is_not_shown(tmp_path):
    """Cutting a reply to one sentence would fail `answers` (at least 12 words): no worked example is made."""
    def responder(messages):
        return "Short first one. Then a much longer second sentence that has many more words in it here."

    rows = [{"id": f"q{i:02d}", "user": f"Tell me about topic {i}."} for i in range(20)]
    task = task_from_dict({"name": "cut-fake", "model": "fake/x", "prompt": "Answer in one sentence.",
                           "data": [{"examples": rows}], "splits": {"train": 0.4, "val": 0.3, "test": 0.3, "seed": 0},
                           "checks": [{"type": "length_constraints:number_sentences", "name": "rule",
                                       "num_sentences": 2, "relation": "less than"},
                                      {"type": "min_words", "name": "answers", "value": 12}]})
    with FakeLM(responder):
        res = optimize(task, "evolve", budget=60, seed=0, run_dir=tmp_path / "run",
                       options={"operators": ["fixed_example"], "opening": ["fixed_example"]})
    cands = SQLiteRunStore(res.run_dir, create=False).candidates()
    assert [c["operator"] for c in cands] == ["seed"]


@pytest.mark.model
@requires_model
def test_fixed_examples_on_the_embedded_model_are_its_own_replies_with_the_title(tmp_path):
    """rules/title on SmolLM2: the worked examples are the model's own failing replies, each given a title."""
    task = load_task("tasks/rules/title.yaml", overrides={"data": [{"file": "../data/rules_users.jsonl",
                                                                    "limit": 30}]})
    res = optimize(task, "evolve", budget=40, seed=0, run_dir=tmp_path / "run", cache_path=tmp_path / "c.sqlite",
                   options={"operators": ["fixed_example"], "opening": ["fixed_example"], "race": False})
    store = SQLiteRunStore(res.run_dir, create=False)
    made = [c for c in store.candidates() if c["operator"] == "fixed_example"]
    assert made, "no worked example was made"
    shots = re.findall(r"User: (.*)\nAssistant: <<([^\n]*)>>\n(.*)", made[0]["prompt"])
    assert shots
    seed = next(c for c in store.candidates() if c["operator"] == "seed")
    seen = [t.reply for r in store.results(seed["id"]).values() for t in r.turns]
    rule = make_ifeval_check("detectable_format:title")
    for _user, title, body in shots:
        assert title and rule.score(f"<<{title}>>\n{body}").passed
        assert any(short_reply(s).startswith(body.removesuffix(" ...")) for s in seen), body


def test_a_task_with_several_targets_gets_no_repaired_examples():
    from types import SimpleNamespace

    from promptlearn.optimizers.operators import repaired_replies

    def failures(*a, **k):
        raise AssertionError("not asked: score_replies takes one model's replies")

    ctx = SimpleNamespace(task=SimpleNamespace(spec=SimpleNamespace(targets=[{"name": "a"}, {"name": "b"}])),
                          failures=failures)
    assert repaired_replies(ctx, "P.", "c1") == []


def test_a_floor_move_takes_no_slot_in_the_book():
    from promptlearn.optimizers.evolve import OPENING, Evolution

    assert Evolution.cut_book(OPENING, 6) == list(OPENING)  # six regular moves, fixed_example on top
    assert Evolution.cut_book(OPENING, 4) == list(OPENING[:4])  # cut before it: not kept
    assert Evolution.cut_book(OPENING, 5) == list(OPENING[:6])
    assert Evolution.cut_book(OPENING, None) == list(OPENING)
