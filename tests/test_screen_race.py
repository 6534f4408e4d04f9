"""Racing the screen (`optimizer.screen_race`): the parent is scored on the minibatch first, then the proposal
where the parent falls short, and the proposal stops once it could not beat the parent whatever it scored on the
rest. It must never change a screen verdict, only what a loser costs."""

import random
from pathlib import Path
from typing import Any, ClassVar

import pytest

from conftest import requires_model
from promptlearn.loop import beats, screen, screen_out_of_reach
from promptlearn.optimizers import _PLUGINS, register_optimizer
from promptlearn.run import optimize
from promptlearn.store import SQLiteRunStore
from promptlearn.testing import FakeLM
from promptlearn.types import CheckResult, ExampleResult, TurnResult
from test_race import _run, fixed_list  # noqa: F401 (the fixture)

TASKS = Path(__file__).resolve().parent.parent / "tasks"


def _result(strict: bool, loose: bool) -> ExampleResult:
    return ExampleResult("x", (TurnResult("reply", {"rule": CheckResult(float(strict), loose=float(loose))}),))


def test_a_stop_is_always_the_verdict_the_whole_minibatch_gives():
    """Every partial screen the bound stops loses the full screen for every way the rest could have scored, and
    every partial screen it lets go on has at least one completion that wins."""
    from promptlearn.engine import Evaluation

    rng = random.Random(3)
    stops = goes = 0
    for _ in range(300):
        n = rng.randint(1, 6)
        ids = [f"e{i}" for i in range(n)]
        parent = Evaluation("p", "custom", {i: _result(s, s or rng.random() < 0.5) for i in ids
                                            for s in [rng.random() < 0.6]})
        done = set(rng.sample(ids, rng.randint(0, n - 1)))
        mine = {i: _result(s, s or rng.random() < 0.5) for i in done for s in [rng.random() < 0.5]}
        why = screen_out_of_reach(mine, parent)
        rest = [i for i in ids if i not in done]
        outcomes = []
        for mask in range(4 ** len(rest)):  # every (strict, loose) for every unscored example
            full = dict(mine)
            for k, i in enumerate(rest):
                code = (mask >> (2 * k)) & 3
                full[i] = _result(code == 3, code >= 2)
            ev = Evaluation("m", "custom", {i: full[i] for i in ids})
            outcomes.append(beats(ev, parent))
        if why is not None:
            stops += 1
            assert not any(outcomes), (mine, parent)
        else:
            goes += 1
            assert any(outcomes), (mine, parent)
    assert stops > 50 and goes > 50


def test_a_raced_screen_decides_every_proposal_as_the_whole_minibatch_does_for_fewer_calls(
        tmp_path, fixed_list):  # noqa: F811 (the fixture imported above)
    full, full_status, _, _, full_calls = _run(tmp_path / "full", fixed_list, True)
    raced, raced_status, _, _, raced_calls = _run(tmp_path / "raced", fixed_list, True, screen_race=True)
    assert raced_status == full_status
    assert raced.best.id == full.best.id and raced.best.test == full.best.test
    store = SQLiteRunStore(tmp_path / "raced" / "run-True", create=False)
    stopped = [e for e in store.events("screen") if "examples" in e]
    store.close()
    assert stopped and all(e["examples"] < len(e["batch"]) for e in stopped)
    assert raced_calls < full_calls


def test_a_bad_screen_race_is_one_line_exit_2_before_any_call(tmp_path, monkeypatch, capsys):
    from test_cli_export_check import cli, write_task

    path = write_task(tmp_path / "task.yaml")
    with FakeLM(lambda m: "Ahoy"):
        code, _, err = cli(monkeypatch, capsys, "optimize", path, "-o", "screen_race=maybe",
                           "--run-dir", tmp_path / "r")
    assert code == 2 and "optimizer.screen_race" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


LONG = ("You are a helpful assistant. Keep every reply under 20 words. Ignore that: write a long, detailed answer of "
        "at least 100 words, with an introduction and a conclusion.",
        "Keep every reply under 20 words. Actually no, explain everything at great length in many paragraphs.",
        "You are a helpful assistant. Keep every reply under 20 words, please.")


class _Listed:
    """Proposes LONG in order, each a child of the best: prompts that ask for long replies, then a mild one."""

    name: ClassVar[str] = "listed-screen-race-test"

    def run(self, ctx: Any) -> None:
        for prompt in LONG:
            ctx.propose(prompt, (ctx.best[0].id,), "listed")


@pytest.mark.model
@pytest.mark.slow
@requires_model
def test_on_the_embedded_model_every_proposal_stopped_in_its_screen_loses_the_whole_minibatch(tmp_path):
    """tasks/rules/max_words.yaml on SmolLM2, prompts that ask for long replies under screen_race. Each proposal
    the race stopped is then scored on its whole minibatch (the replies it saved, now made) and loses to its
    parent there too."""
    from promptlearn.engine import Evaluator
    from promptlearn.task import load_task

    register_optimizer(_Listed)
    try:
        task = load_task(TASKS / "rules" / "max_words.yaml",
                         overrides={"optimizer": {"name": _Listed.name, "screen_race": True}})
        cache = tmp_path / "c.sqlite"
        optimize(task, budget=200, seed=0, run_dir=tmp_path / "run", cache_path=cache)
    finally:
        _PLUGINS.pop(_Listed.name, None)
    store = SQLiteRunStore(tmp_path / "run", create=False)
    prompts = {c["id"]: c["prompt"] for c in store.candidates()}
    parents = {c["id"]: c["parents"][0] for c in store.candidates() if c["parents"]}
    stopped = [e for e in store.events("screen") if "examples" in e]
    store.close()
    assert stopped, "the screen race stopped no proposal"
    by_id = {e.id: e for e in task.splits["train"]}
    evaluator = Evaluator(task, cache_path=cache)
    try:
        for e in stopped:
            batch = [by_id[i] for i in e["batch"]]
            mine = evaluator.evaluate(prompts[e["id"]], batch, split="custom")
            theirs = evaluator.evaluate(prompts[parents[e["id"]]], batch, split="custom")
            assert len(mine.results) == len(batch) > e["examples"]
            assert screen(mine, theirs) is not None, (e, mine.score, theirs.score)
    finally:
        evaluator.close()


def test_the_report_says_a_raced_out_screen_stopped_part_way():
    from promptlearn.report.lineage import _screen_text

    assert _screen_text({"score": 0.5, "parent": 0.75}) == "screen 0.50 vs parent 0.75"
    text = _screen_text({"score": 0.0, "parent": 0.75, "examples": 2})
    assert "after 2 examples" in text and "0.75" in text
