"""The rule-adherence suite (tasks/rules/): every task loads, holds one rule check (plus an optional answer guard)
that passes a compliant reply and fails a non-compliant one; one seed scored through the real embedded model."""

import math
from pathlib import Path

import pytest
import yaml

from conftest import requires_model
from promptlearn.checks import build_check
from promptlearn.checks.base import CheckContext
from promptlearn.engine import Evaluator
from promptlearn.task import load_task

ROOT = Path(__file__).resolve().parent.parent
RULES = sorted((ROOT / "tasks" / "rules").glob("*.yaml"))
GUARDS = {"min_words", "min_chars"}  # keep an empty or degenerate reply from passing the rule alone

# task -> (a reply that keeps the rule and answers, a reply that breaks the rule)
REPLIES = {
    "start_word": ("Certainly! Paris is the capital of France.", "Paris is the capital of France."),
    "end_phrase": ("Paris is the capital of France and its largest city. Is there anything else I can help with?",
                   "Paris is the capital of France and its largest city."),
    "quotation": ('"Paris is the capital of France."', "Paris is the capital of France."),
    "postscript": ("Paris is the capital of France.\nP.S. It is also called the City of Light.",
                   "Paris is the capital of France. It is also called the City of Light."),
    "title": ("<<Capital of France>>\nThe capital of France is Paris.", "Capital of France: the capital is Paris."),
    "keyword": ("Paris is the capital of France. Thanks for shopping at BrightMart!",
                "Paris is the capital of France. Thanks for shopping with us!"),
    "forbidden_word": ("Paris is the capital of France.", "I think that Paris is the capital of France."),
    "max_words": ("Paris is the capital of France.",
                  "Paris is the capital of France, and it is also the largest city in the country, home to the "
                  "Eiffel Tower, the Louvre and many cafes."),
    "no_comma": ("Paris is the capital of France.", "Paris, the capital of France, is large."),
    "json": ('{"answer": "Paris is the capital of France."}', "The answer is Paris, the capital of France."),
    "bullets": ("* Paris is the capital.\n* It lies on the Seine.\n* It has the Eiffel Tower.",
                "* Paris is the capital.\n* It lies on the Seine."),
    "language": ("La capitale de la France est Paris, une très belle ville.",
                 "The capital of France is Paris, a very beautiful city."),
    "lowercase": ("paris is the capital of france.", "Paris is the capital of France."),
    "capitals": ("PARIS IS THE CAPITAL OF FRANCE.", "Paris is the capital of France."),
    "highlight": ("The capital of France is *Paris*.", "The capital of France is Paris."),
    "greeting": ("Hello! Paris is the capital of France.", "Paris is the capital of France."),
    "address_friend": ("Good question, friend! Paris is the capital of France.",
                       "Good question! Paris is the capital of France."),
    "sentences": ("Paris is the capital of France. It lies on the Seine.",
                  "Paris is the capital of France. It lies on the Seine. It is large."),
}


def _split(task):
    rule = [c for c in task.checks if c["type"] not in GUARDS]
    guards = [c for c in task.checks if c["type"] in GUARDS]
    return rule, guards


def test_the_suite_has_at_least_twelve_rules_and_replies_for_each():
    assert len(RULES) >= 12
    assert {p.stem for p in RULES} == set(REPLIES)


@pytest.mark.parametrize("path", RULES, ids=[p.stem for p in RULES])
def test_rule_task_is_well_formed(path):
    task = load_task(path)
    rule, guards = _split(task)
    assert len(rule) == 1 and rule[0]["name"] == "rule", "one rule check, named 'rule'"
    assert len(guards) <= 1 and all(g["name"] == "answers" for g in guards)
    assert all(task.examples(s) for s in ("train", "val", "test"))
    ids = [e.id for s in ("train", "val", "test") for e in task.examples(s)]
    assert len(ids) == len(set(ids)), "splits overlap"
    assert task.spec.protected and task.violations(task.prompt) == [], "the seed keeps every protected literal"
    assert task.model.name == "local/smollm2" and task.model.temperature == 0
    assert task.budget.max_calls == 300 and task.spec.optimizer.name == "evolve"


@pytest.mark.parametrize("path", RULES, ids=[p.stem for p in RULES])
def test_rule_check_passes_a_compliant_reply_and_fails_another(path):
    task = load_task(path)
    good, bad = REPLIES[path.stem]
    checks = [build_check(c) for c in task.checks]
    rule = build_check(_split(task)[0][0])
    ctx = CheckContext(task.prompt, (), "What is the capital of France?")
    assert [c.score(good, ctx).score for c in checks] == [1.0] * len(checks), good
    result = rule.score(bad, ctx)
    assert result.score == 0.0 and result.feedback, bad


@pytest.mark.parametrize("path", RULES, ids=[p.stem for p in RULES])
def test_guard_fails_a_degenerate_reply_the_rule_alone_would_pass(path):
    task = load_task(path)
    rule, guards = _split(task)
    if not guards:
        pytest.skip("no guard: the rule itself needs a real reply")
    degenerate = {"start_word": "Certainly.", "end_phrase": "Is there anything else I can help with?",
                  "quotation": '""', "postscript": "P.S.", "title": "<<Title>>", "keyword": "BrightMart",
                  "json": "{}", "language": "123", "forbidden_word": "OK.", "max_words": "OK.",
                  "no_comma": "OK.", "lowercase": "ok.", "capitals": "OK.",
                  "highlight": "*Paris*", "sentences": "OK.",
                  "greeting": "Hello!", "address_friend": "Hi friend"}[path.stem]
    ctx = CheckContext(task.prompt)
    assert build_check(rule[0]).score(degenerate, ctx).score == 1.0
    assert build_check(guards[0]).score(degenerate, ctx).score == 0.0


def test_every_rule_has_five_hand_written_wordings():
    table = yaml.safe_load((ROOT / "bench" / "handwritten_wordings.yaml").read_text())
    assert set(table) == {p.stem for p in RULES}
    for name, wordings in table.items():
        task = load_task(ROOT / "tasks" / "rules" / f"{name}.yaml")
        assert len(wordings) >= 5 and task.prompt not in wordings.values()
        assert len(set(wordings.values())) == len(wordings)


@pytest.mark.model
@requires_model
def test_a_rules_seed_scores_what_its_check_results_say(tmp_path):
    task = load_task(ROOT / "tasks" / "rules" / "start_word.yaml")
    examples = task.examples("val")[:3]
    ev = Evaluator(task, cache_path=tmp_path / "c.sqlite")
    try:
        res = ev.evaluate(task.prompt, examples, split="val")
    finally:
        ev.close()
    assert list(res.results) == [e.id for e in examples]
    checks = [build_check(c) for c in task.checks]
    per_example = []
    for ex in examples:
        turn = res.results[ex.id].turns[0]
        assert turn.reply.strip()
        assert set(turn.checks) == {"rule", "answers"}
        for c in checks:  # the stored results are what the checks say about the reply
            assert turn.checks[c.name].score == c.score(turn.reply, CheckContext(task.prompt)).score
        per_example.append(math.fsum(r.score for r in turn.checks.values()) / len(turn.checks))
    assert res.score == pytest.approx(math.fsum(per_example) / len(per_example))


def test_floor_marks_in_task_files_match_the_measurement():
    """A rule no wording moves off the floor says `# floor: true` on its task file's first line, and only then."""
    import json

    path = ROOT / "bench" / "results" / "handwritten.json"
    if not path.exists():
        pytest.skip("bench/results/handwritten.json not written yet")
    measured = json.loads(path.read_text())["tasks"]
    for p in RULES:
        entry = measured.get(p.stem, {})
        if entry.get("measured"):
            assert p.read_text().startswith("# floor: true") == entry["floor_true"], p.stem


def test_a_guided_prompt_is_also_scored_without_its_guidance():
    from bench.rules_suite import add_unguided

    class Scorer:
        def __init__(self):
            self.asked = []

        def test(self, prompt, overrides=None):
            self.asked.append((prompt, overrides))
            return 0.25

    sc = Scorer()
    guided = {"prompt": "P", "test": 0.8, "decoding": {"guidance": 1.5}}
    plain = {"prompt": "Q", "test": 0.6, "decoding": {}}
    assert add_unguided(guided, sc) and guided["test_unguided"] == 0.25 and sc.asked == [("P", None)]
    assert not add_unguided(plain, sc) and "test_unguided" not in plain
    assert not add_unguided(guided, sc) and len(sc.asked) == 1  # once
