"""`mutate`: reflective rewrites, and the one-line fix a small proposer can write (`reflect_line`).

The scripted proposer below writes what a 135M proposer writes on the rule suite: whole rewrites that drop the
rule, and a usable sentence when asked for one sentence. One test runs the embedded SmolLM2 model.
"""

from __future__ import annotations

import pytest

from promptlearn.errors import TaskError
from promptlearn.optimizers.mutate import ReflectiveMutation
from promptlearn.optimizers.operators import add_line
from promptlearn.run import optimize
from promptlearn.store import SQLiteRunStore
from promptlearn.task import task_from_dict
from promptlearn.testing import FakeLM

from conftest import requires_model

SEED = "You are a pirate assistant. Keep your answers short."
FIX = "Always begin your reply with the word Ahoy."


def responder(messages):
    content = messages[-1]["content"]
    if "Write ONE short instruction sentence" in content:
        return f'"{FIX}" This will help the assistant.'
    if "<prompt>" in content:  # a whole rewrite: the persona survives, the point does not
        return "<prompt>You are a helpful AI assistant named SmolLM.</prompt>"
    system = messages[0]["content"] if messages[0]["role"] == "system" else ""
    return ("Ahoy! " if "Always begin your reply with the word Ahoy" in system else "Sure. ") + content


def make_task():
    rows = [{"id": f"q{i:02d}", "user": f"Question number {i}?"} for i in range(20)]
    return task_from_dict({"name": "mutate-fake", "model": "fake/x", "prompt": SEED, "protected": ["pirate"],
                           "data": [{"examples": rows}],
                           "splits": {"train": 0.4, "val": 0.3, "test": 0.3, "seed": 0},
                           "checks": [{"type": "starts_with", "name": "ahoy", "value": "Ahoy"}]})


def test_the_one_line_fix_alternates_with_rewrites_and_paraphrases():
    ops = [ReflectiveMutation().operator(step) for step in range(1, 9)]
    assert ops == ["reflect_line", "reflect", "reflect_line", "paraphrase"] * 2
    assert {ReflectiveMutation(line_every=0).operator(s) for s in (1, 2, 3)} == {"reflect"}
    assert {ReflectiveMutation(line_every=1).operator(s) for s in (1, 2, 3)} == {"reflect_line"}


@pytest.mark.parametrize("value", [-1, 1.5, True, "2"])
def test_bad_schedule_is_a_task_error(value):
    with pytest.raises(TaskError, match="optimizer.line_every"):
        ReflectiveMutation(line_every=value)


def test_add_line_keeps_one_clean_sentence():
    assert add_line("P.", '<prompt>"Say Ahoy first." Then more words.</prompt>') == "P.\n\nSay Ahoy first."
    assert add_line("P.", "  Always answer in French.\nSecond line") == "P.\n\nAlways answer in French."
    assert add_line("P. Say Ahoy first.", "Say Ahoy first.") is None  # already said
    assert add_line("P.", "the cat the cat the cat the cat") is None  # a loop
    assert add_line("P.", " ".join(["word"] * 41) + ".") is None  # not one short sentence
    assert add_line("P.", "") is None and add_line("P.", None) is None


def test_the_one_line_fix_wins_where_rewrites_drop_the_rule(tmp_path):
    with FakeLM(responder):
        res = optimize(make_task(), "mutate", budget=120, seed=0, run_dir=tmp_path / "run")
    assert res.seed.val == 0.0 and res.best.val == 1.0
    assert res.best.prompt == SEED + "\n\n" + FIX
    cands = SQLiteRunStore(res.run_dir, create=False).candidates()
    best = next(c for c in cands if c["id"] == res.best.id)
    assert best["operator"] == "reflect_line" and best["status"] == "accepted"
    rewrites = [c for c in cands if c["operator"] == "reflect"]
    assert rewrites and all(c["status"] == "rejected" for c in rewrites)  # "pirate" dropped: refused unscored


def test_without_the_one_line_fix_the_rewrites_never_win(tmp_path):
    with FakeLM(responder):
        res = optimize(make_task(), "mutate", budget=120, seed=0, run_dir=tmp_path / "run",
                       options={"line_every": 0})
    assert res.best.id == res.seed.id


@pytest.mark.model
@pytest.mark.slow
@requires_model
def test_one_line_fixes_on_the_embedded_model(tmp_path):
    from pathlib import Path

    from promptlearn.task import load_task

    repo = Path(__file__).resolve().parents[1]
    task = load_task(repo / "tasks" / "rules" / "forbidden_word.yaml", overrides={
        "data": [{"file": "../data/rules_users.jsonl", "limit": 18}],
        "proposer": {"name": "local/smollm2", "max_tokens": 64, "temperature": 0.7}})
    res = optimize(task, "mutate", budget=60, seed=0, run_dir=tmp_path / "run", cache_path=tmp_path / "c.sqlite")
    assert res.ledger.calls <= 60
    cands = SQLiteRunStore(res.run_dir, create=False).candidates()
    lines = [c for c in cands if c["operator"] == "reflect_line"]
    assert lines, [c["operator"] for c in cands]
    for c in lines:  # each is the parent with one added sentence: nothing the seed said is lost
        assert c["prompt"].startswith(task.prompt.rstrip() + "\n\n")
        added = c["prompt"][len(task.prompt.rstrip()) + 2:]
        assert "\n" not in added and 0 < len(added.split()) <= 40
