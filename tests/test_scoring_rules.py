"""One rule for every score: pass threshold, judge errors, loose scores, weights, turns, the primary objective,
classification of check families, and the one scoring path that DSPy and the benchmarks share with the engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
from conftest import requires_model

from promptlearn.engine import Evaluation, Evaluator
from promptlearn.errors import TaskError
from promptlearn.metrics import adherence, side_effects
from promptlearn.optimizers import _PLUGINS, register_optimizer
from promptlearn.run import optimize
from promptlearn.task import task_from_dict
from promptlearn.testing import FakeLM
from promptlearn.types import PASS, CheckResult, Example, ExampleResult, Turn, TurnResult, passes


def ev_of(*results: ExampleResult) -> Evaluation:
    return Evaluation("p", "val", {r.example_id: r for r in results})


def task(checks: list[dict[str, Any]], rows: list[dict[str, Any]] | None = None, **spec: Any):
    rows = rows or [{"id": f"e{i}", "user": f"question {i}"} for i in range(6)]
    return task_from_dict({"name": "t", "model": "fake/target", "prompt": "Be brief.",
                           "data": [{"examples": rows}], "checks": checks, **spec})


# ---- the pass threshold ----------------------------------------------------------------------------------------

def test_one_pass_threshold_for_checks_examples_and_aggregates():
    almost = 1.0 - 1e-12  # what a float mean of passes can land on
    assert passes(almost) and CheckResult(almost).passed  # the old CheckResult.passed (>= 1.0) said False
    res = ExampleResult("a", (TurnResult("r", {"c": CheckResult(almost)}),))
    assert res.passed and not ExampleResult("b", (TurnResult("r", {"c": CheckResult(PASS - 1e-6)}),)).passed
    seed = ev_of(ExampleResult("a", (TurnResult("r", {"c": CheckResult(0.0)}),)))
    assert side_effects(ev_of(res), seed, [])["fixed"] == 1


# ---- judge errors and loose scores -----------------------------------------------------------------------------

def test_a_turn_whose_checks_all_failed_to_judge_counts_toward_neither_score():
    judged = TurnResult("a", {"ifeval": CheckResult(0.0, loose=1.0, details={"instruction_id": "x"})})
    unjudged = TurnResult("b", {"judge": CheckResult(0.0, judge_error=True)})
    ev = ev_of(ExampleResult("e", (judged, unjudged)))
    assert ev.strict_score == 0.0 and ev.loose_score == 1.0  # the unjudged turn is left out of both
    only = ev_of(ExampleResult("e", (unjudged,)))
    assert only.strict_score == only.loose_score == 0.0  # old loose_score gave 1.0 here


# ---- weights and turns -----------------------------------------------------------------------------------------

def test_weight_makes_a_weighted_mean_of_the_checks(tmp_path):
    t = task([{"type": "starts_with", "value": "Ahoy", "name": "ahoy", "weight": 3},
              {"type": "max_words", "value": 2, "name": "short"}])
    ev = Evaluator(t, cache_path=tmp_path / "c.sqlite")
    with FakeLM(lambda m: "Ahoy there my friend"):
        res = ev.evaluate(t.prompt, t.examples("val"))
    ev.close()
    assert res.check_rates() == {"ahoy": 1.0, "short": 0.0}
    assert res.score == pytest.approx(0.75)  # (3 * 1 + 1 * 0) / 4; unweighted it would be 0.5


def test_objective_weights_weigh_checks_by_name(tmp_path):
    t = task([{"type": "starts_with", "value": "Ahoy", "name": "ahoy", "weight": 2},
              {"type": "max_words", "value": 2, "name": "short"}], objective={"weights": {"short": 6}})
    ev = Evaluator(t, cache_path=tmp_path / "c.sqlite")
    with FakeLM(lambda m: "Ahoy there my friend"):
        assert ev.evaluate(t.prompt, t.examples("val")).score == pytest.approx(0.25)  # 2 / (2 + 6)
    ev.close()


def test_objective_weights_must_name_a_check():
    with pytest.raises(TaskError, match=r"objective.weights.ahoi: no check is named 'ahoi'.*did you mean 'ahoy'"):
        task([{"type": "starts_with", "value": "Ahoy", "name": "ahoy"}], objective={"weights": {"ahoi": 2}})


@pytest.mark.parametrize("bad", [{"weight": 0}, {"weight": -1}, {"weight": "2"}, {"turns": []}, {"turns": [0]},
                                 {"turns": "last"}, {"turns": [1.5]}])
def test_bad_weight_or_turns_is_a_task_error(bad):
    with pytest.raises(TaskError, match=r"checks\[0\]: check 'starts_with': (weight|turns) must"):
        task([{"type": "starts_with", "value": "Ahoy", **bad}])


def test_turns_limits_a_check_to_some_turns_of_a_conversation(tmp_path):
    rows = [{"id": "c1", "user": ["hello", "and then?", "bye"]}]
    t = task([{"type": "starts_with", "value": "Ahoy", "name": "greet", "turns": [1]},
              {"type": "contains", "value": "Farewell", "name": "farewell", "turns": [-1]}], rows,
             splits={"train": 0, "val": 1, "test": 0})
    replies = {"hello": "Ahoy!", "and then?": "Nothing.", "bye": "Farewell."}
    ev = Evaluator(t, cache_path=tmp_path / "c.sqlite")
    with FakeLM(lambda m: replies[m[-1]["content"]]):
        res = ev.evaluate(t.prompt, t.examples("val"))
    ev.close()
    turns = res.results["c1"].turns
    assert [sorted(x.checks) for x in turns] == [["greet"], [], ["farewell"]]
    assert res.score == 1.0  # the middle turn has no check: it counts toward no score (it used to count 1.0)


# ---- the primary objective -------------------------------------------------------------------------------------

class _OneProposal:
    """Proposes one fixed prompt: lets a test see what acceptance decides."""

    name: ClassVar[str] = "one-proposal-test"

    def run(self, ctx: Any) -> None:
        ctx.propose("Be brief. End with Bye.", (ctx.seed_candidate.id,), "fixed")


@pytest.fixture
def one_proposal():
    register_optimizer(_OneProposal)
    yield _OneProposal.name
    _PLUGINS.pop(_OneProposal.name, None)


@pytest.mark.parametrize("primary,accepted", [("score", False), ("loose", True)])
def test_primary_objective_decides_acceptance(tmp_path, one_proposal, primary, accepted):
    t = task([{"type": "startend:end_checker", "end_phrase": "Bye."}],
             [{"id": f"e{i}", "user": f"question {i}"} for i in range(20)],
             objective={"primary": primary}, optimizer={"name": one_proposal, "minibatch": 4})

    def reply(m: Any) -> str:  # the new prompt ends its replies in Bye. wrapped in markdown: only loose passes
        return "Sure. **Bye.**" if "End with Bye." in m[0]["content"] else "Sure."

    with FakeLM(reply):
        res = optimize(t, seed=0, run_dir=tmp_path / "run", cache_path=tmp_path / "c.sqlite")
    assert (res.best.id != res.seed.id) is accepted
    assert res.best.val == (1.0 if accepted else 0.0) and res.seed.val == 0.0


def test_loose_primary_is_what_evaluation_and_examples_score():
    turn = TurnResult("r", {"x": CheckResult(0.0, loose=1.0, details={"instruction_id": "x"})})
    strict, loose = ExampleResult("e", (turn,)), ExampleResult("e", (turn,), "loose")
    assert (strict.score, loose.score, loose.strict_score) == (0.0, 1.0, 0.0)
    assert ev_of(loose).score == 1.0 and ev_of(loose).strict_score == 0.0


# ---- families are told apart by what checks report, never by their names ---------------------------------------

def test_ifeval_and_sysbench_aggregates_classify_by_result_not_name(tmp_path):
    t = task([{"type": "regex", "pattern": "^Answer:"}, {"type": "starts_with", "value": "Note:"},
              {"type": "punctuation:no_comma", "name": "commas"},
              {"type": "judge", "criteria": [{"id": 1, "type": "Format", "content": "is short"}]},
              {"type": "checklist", "name": "tone", "criteria": [{"id": 1, "type": "Style", "content": "is kind"}]}])
    ev = Evaluator(t, cache_path=tmp_path / "c.sqlite")

    def reply(m: Any) -> str:
        judging = "strict verifier" in m[-1]["content"]
        return '{"reason": "ok", "verdicts": {"1": "yes"}}' if judging else "Answer: yes"

    with FakeLM(reply):
        res = ev.evaluate(t.prompt, t.examples("val"))
    ev.close()
    names = sorted(res.check_rates())
    assert "regex(^Answer:)" in names and "starts_with(Note:)" in names
    m = adherence(res, t.examples("val"))
    n = len(res.results)
    # one IFEval instruction per turn (the names with ':' used to count as IFEval instructions too)
    assert m["ifeval"]["instruction_strict"] == 1.0
    # both judge checks enter SysBench: 2 criteria per turn (a `type: judge` or a renamed checklist was dropped)
    assert m["sysbench"]["csr"] == 1.0 and m["sysbench"]["isr"] == 1.0
    from promptlearn.metrics import sysbench_turns

    assert len(sysbench_turns(res, t.examples("val"))) == 2 * n


# ---- one scoring path --------------------------------------------------------------------------------------------

def test_replies_made_elsewhere_score_exactly_as_the_engine_scores_them(tmp_path):
    t = task([{"type": "starts_with", "value": "Ahoy", "name": "ahoy", "weight": 2},
              {"type": "starts_with", "value": "Ahoy", "name": "ahoy"},  # a repeated name: ahoy#2
              {"type": "python", "function": "os.path:isabs"}])  # a check that scores by its own rule
    ev = Evaluator(t, cache_path=tmp_path / "c.sqlite")
    with FakeLM(lambda m: "Ahoy /there"):
        run = ev.evaluate(t.prompt, t.examples("val"))
    for ex in t.examples("val"):
        mine, theirs = ev.score_replies(t.prompt, ex, ["Ahoy /there"]), run.results[ex.id]
        assert [x.checks for x in mine.turns] == [x.checks for x in theirs.turns] and mine.score == theirs.score
    ev.close()


def test_dspy_scores_through_the_engines_path(tmp_path):
    pytest.importorskip("dspy")
    from promptlearn.loop import Options, RunContext
    from promptlearn.optimizers.dspy_opt import DSPyOptimizer
    from promptlearn.store import SQLiteRunStore

    t = task([{"type": "starts_with", "value": "Ahoy", "weight": 3}, {"type": "max_words", "value": 1}])
    ev = Evaluator(t, cache_path=tmp_path / "c.sqlite")
    opt = DSPyOptimizer()
    opt.ctx = RunContext(t, ev, SQLiteRunStore(tmp_path / "run"), seed=0, options=Options())
    ex = t.examples("val")[0]
    got = opt.score(t.prompt, ex, "Ahoy there")
    assert got == ev.score_replies(t.prompt, ex, ["Ahoy there"]) and got.score == pytest.approx(0.75)
    ev.close()


def test_a_broken_check_scores_zero_with_its_error_as_feedback(tmp_path):
    rows = [{"id": "a", "user": "hi", "checks": [{"type": "python", "function": "json:loads"}]}]
    t = task([], rows, splits={"train": 0, "val": 1, "test": 0})
    ev = Evaluator(t, cache_path=tmp_path / "c.sqlite")
    res = ev.score_replies(t.prompt, t.examples("val")[0], ["not json"])
    ev.close()
    (r,) = res.turns[0].checks.values()
    assert r.score == 0.0 and "JSONDecodeError" in r.feedback


def test_example_with_given_turns_scores_only_generated_ones():
    ex = Example("x", (Turn("hi", given="Hello"), Turn("and?")))
    t = task([{"type": "contains", "value": "yes"}])
    ev = Evaluator(t, use_cache=False)
    with pytest.raises(ValueError, match="1 generated turn"):
        ev.score_replies(t.prompt, ex, ["a", "b"])
    assert ev.score_replies(t.prompt, ex, ["yes"]).score == 1.0
    ev.close()


# ---- through the real embedded model ---------------------------------------------------------------------------

@pytest.mark.model
@requires_model
def test_turns_and_weights_on_the_embedded_model():
    from promptlearn.task import load_task

    t = load_task(Path(__file__).resolve().parents[1] / "tasks" / "pirate_two_turns.yaml")
    exs = t.examples("val")[:2]
    ev = Evaluator(t)
    res = ev.evaluate(t.prompt, exs)
    ev.close()
    for r in res.results.values():
        first, last = r.turns
        assert sorted(first.checks) == ["answers", "greets"] and sorted(last.checks) == ["answers", "signs_off"]
        g, a = first.checks["greets"], first.checks["answers"]
        assert g.weight == 2 and first.score == pytest.approx((2 * g.score + a.score) / 3)
        assert r.score == pytest.approx((first.score + last.score) / 2)
        assert last.reply and first.reply != last.reply  # the second turn was generated with the first as history
