"""bench suite (bench/rules_suite.py): summary maths, resume, the gepa line on a scripted model, rendering."""

import json
import sys
from pathlib import Path

import pytest

from conftest import requires_model

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import quality as q  # noqa: E402
from bench import render  # noqa: E402
from bench import rules_suite as rs  # noqa: E402


def run(line, seed, test, val=None, curve=None, calls=300, family="promptlearn", **kw):
    return {"line": line, "family": family, "seed": seed, "test": test, "val": val, "calls": calls,
            "curve": curve or [[0, 0.4], [calls, test]], **kw}


# ---- summary maths ------------------------------------------------------------------------------------------
def test_calls_to_reach_and_verdicts():
    curve = [[0, 0.40], [40, 0.45], [120, 0.50], [300, 0.55]]
    assert rs.calls_to_reach(curve, 0.50) == 120
    assert rs.calls_to_reach(curve, 0.56) is None
    assert rs.calls_to_reach([[0, 0.5]], 0.5) == 0
    assert rs.verdict(0.0099) == "unchanged" and rs.verdict(-0.0099) == "unchanged"
    assert rs.verdict(0.01) == "improved" and rs.verdict(-0.01) == "worse"
    assert rs.verdict(None) is None


def test_line_summary_mean_spread_gap_and_reach():
    runs = [run("evolve", 0, 0.60, val=0.70, curve=[[0, 0.40], [90, 0.55], [300, 0.60]]),
            run("evolve", 1, 0.50, val=0.55, curve=[[0, 0.40], [200, 0.50], [300, 0.50]]),
            run("evolve", 2, 0.40, val=0.40, curve=[[0, 0.40], [300, 0.40]]),
            {"line": "evolve", "family": "promptlearn", "seed": 3, "test": None, "error": "RunError: boom"}]
    s = rs.line_summary(runs, seed_test=0.40)
    assert s["n"] == 3 and s["seeds"] == [0, 1, 2] and s["errors"] == ["RunError: boom"]
    assert s["test_mean"] == pytest.approx(0.5) and s["test_std"] == pytest.approx(0.1)
    assert (s["test_min"], s["test_max"]) == (0.40, 0.60)
    assert s["gain"] == pytest.approx(0.10) and s["verdict"] == "improved"
    assert s["val_mean"] == pytest.approx(0.55)
    assert s["gap_mean"] == pytest.approx((0.10 + 0.05 + 0.0) / 3, abs=1e-4)
    assert s["reach_calls"] == [90, 200, None] and s["reached"] == 2 and s["reach_mean"] == pytest.approx(145)


def _entry(seed_test, runs, headroom=None, hw=None):
    return {"seed_test": seed_test, "seed_val": seed_test, "runs": runs, "headroom": headroom, "handwritten": hw}


def _result(tasks, lines, seeds=(0,), budget=300):
    return rs.finish({"budget": budget, "lines": list(lines), "seeds": list(seeds), "tasks": tasks})


def test_suite_summary_excludes_no_headroom_tasks_and_counts_verdicts():
    lines = ["evolve", "gepa", "handwritten"]
    tasks = {
        "a": _entry(0.40, [run("evolve", 0, 0.70, val=0.80), run("gepa", 0, 0.45, val=0.5, family="gepa")],
                    headroom=True, hw={"test": 0.9, "val": 0.9, "headroom": True}),
        "b": _entry(0.50, [run("evolve", 0, 0.505, val=0.6), run("gepa", 0, 0.40, val=0.4, family="gepa")]),
        "c": _entry(0.30, [run("evolve", 0, 0.10, val=0.2), run("gepa", 0, 0.10, family="gepa")], headroom=False),
    }
    r = _result(tasks, lines)
    s = r["suite"]
    assert s["included"] == ["a", "b"] and s["excluded_no_headroom"] == ["c"]
    ev = s["lines"]["evolve"]
    assert ev["tasks"] == 2 and ev["gain_mean"] == pytest.approx((0.30 + 0.005) / 2, abs=1e-4)
    assert (ev["improved"], ev["unchanged"], ev["worse"]) == (1, 1, 0)
    assert ev["gap_mean"] == pytest.approx((0.10 + 0.095) / 2, abs=1e-4)
    g = s["lines"]["gepa"]
    assert (g["improved"], g["unchanged"], g["worse"]) == (1, 0, 1) and g["worse_tasks"] == ["b"]
    hw = s["lines"]["handwritten"]
    assert hw["tasks"] == 1 and hw["missing_tasks"] == ["b"] and hw["gain_mean"] == pytest.approx(0.5)
    assert r["tasks"]["a"]["summary"]["handwritten"]["family"] == "hand-written"
    tasks["a"]["handwritten"]["seed_test"] = 0.5  # the file's own seed score is the base of its gain
    assert rs.finish(r)["tasks"]["a"]["summary"]["handwritten"]["gain"] == pytest.approx(0.4)
    assert r["complete"] and r["missing"] == []


def test_goal_verdicts_met_not_met_and_not_measured():
    lines = ["evolve", "mutate", "optuna", "gepa", "pl-dspy-mipro", "pl-dspy-gepa"]

    def task(seed_test, ours, theirs):
        return _entry(seed_test, [run(x, 0, ours, val=ours) for x in rs.DEFAULTS]
                      + [run(x, 0, theirs, val=theirs, family="x") for x in rs.RIVALS])

    good = _result({"a": task(0.2, 0.5, 0.3), "b": task(0.4, 0.5, 0.45)}, lines)
    gain, harm, ahead = good["goals"]
    assert gain["met"] is True and "+20.0 points" in gain["measured"] and gain["binding"]
    assert harm["met"] is True and ahead["met"] is True and len(ahead["pairs"]) == 9

    bad = _result({"a": task(0.2, 0.3, 0.35), "b": task(0.5, 0.4, 0.42)}, lines, budget=60)
    gain, harm, ahead = bad["goals"]
    assert gain["met"] is False and harm["met"] is False and "b" in harm["measured"]
    assert ahead["met"] is False and not gain["binding"]  # 60 calls: indicative only

    partial = _result({"a": _entry(0.2, [run("evolve", 0, 0.5)])}, lines, seeds=(0, 1))
    gain, harm, ahead = partial["goals"]
    assert gain["met"] is True and not gain["binding"]  # runs missing: indicative only
    assert ahead["met"] is None and "not run" in ahead["measured"]  # no rival ran: no pair to compare
    some = _result({"a": _entry(0.2, [run("evolve", 0, 0.5), run("gepa", 0, 0.3, family="gepa")])}, lines)
    ahead = some["goals"][2]  # evolve is ahead of gepa, but mutate and optuna never ran: not measured, never met
    assert ahead["met"] is None and not ahead["binding"] and "not run: mutate" in ahead["measured"]
    behind = _result({"a": _entry(0.2, [run("evolve", 0, 0.3), run("gepa", 0, 0.4, family="gepa")])}, lines)
    assert behind["goals"][2]["met"] is False  # one default behind a rival: not met, whatever else is missing
    assert ["a", "evolve", 1] in partial["missing"] and ["a", "gepa", 0] in partial["missing"]


def test_handwritten_file_shapes(tmp_path):
    p = tmp_path / "handwritten.json"
    p.write_text(json.dumps({"tasks": {
        "a": {"seed": {"val": 0.1, "test": 0.2}, "best": {"val": 0.5, "test": 0.6, "prompt": "P"}, "headroom": True},
        "b": {"seed_val": 0.3, "seed_test": 0.3, "best_val": 0.3, "best_test": 0.3, "headroom": False}}}))
    hw = rs.read_handwritten(p)
    assert hw["a"] == {"seed_val": 0.1, "seed_test": 0.2, "val": 0.5, "test": 0.6, "prompt": "P", "wording": None,
                       "headroom": True}
    assert hw["b"]["test"] == 0.3 and hw["b"]["headroom"] is False
    assert rs.read_handwritten(tmp_path / "absent.json") == {}
    p.write_text(json.dumps({"tasks": {"c": {  # bench handwritten's shape: scores as {"score": ...}, a named wording
        "measured": True, "seed": {"prompt": "S", "val": {"score": 0.0}, "test": {"score": 0.0556}},
        "wordings": {"quoted": {"prompt": "Q", "val": {"score": 0.33}}},
        "best": {"wording": "quoted", "val": {"score": 0.3333}, "test": {"score": 0.1667}}, "headroom": True},
        "d": {"measured": False, "headroom": False}}}))
    hw2 = rs.read_handwritten(p)
    assert hw2["c"] == {"seed_val": 0.0, "seed_test": 0.0556, "val": 0.3333, "test": 0.1667, "prompt": "Q",
                        "wording": "quoted", "headroom": True}
    assert hw2["d"]["headroom"] is None and hw2["d"]["test"] is None
    paths = [Path(f"/x/{n}.yaml") for n in "abcde"]
    assert [x.stem for x in rs.pick_quick(paths, hw)] == ["a", "c", "d"]


# ---- resume -------------------------------------------------------------------------------------------------
TASK_YAML = """
name: rules_{name}
model: {{name: fake/target, max_tokens: 16}}
prompt: You are a pirate. Start every reply with the word Ahoy.
data:
  - examples: [{rows}]
splits: {{train: 0.4, val: 0.3, test: 0.3, seed: 0}}
checks:
  - {{type: starts_with, value: Ahoy, name: ahoy}}
"""


def _task_file(tmp_path, name, n=12):
    rows = ", ".join(f'{{id: q{i}, user: "Question {i} about topic {i * 7 % 11}"}}' for i in range(n))
    path = tmp_path / f"{name}.yaml"
    path.write_text(TASK_YAML.format(name=name, rows=rows))
    return path


def test_resume_keeps_finished_runs_and_runs_only_the_missing(tmp_path, monkeypatch):
    from promptlearn.testing import FakeLM, wording_sensitive_responder

    monkeypatch.setattr(rs, "WORK", tmp_path / "work")
    made = []

    def fake_run(task, line, seed, budget, scorer, memo, loop_options):
        made.append((task.name, line, seed))
        if (line, seed) == ("gepa", 1) and len([m for m in made if m[1:] == ("gepa", 1)]) == 1:
            return {"line": line, "family": "gepa", "seed": seed, "test": None, "error": "CallCap: once"}
        return run(line, seed, 0.5 + seed / 10, val=0.6, calls=budget)

    paths = [_task_file(tmp_path, "alpha"), _task_file(tmp_path, "beta")]
    out = tmp_path / "suite.json"
    hw = tmp_path / "handwritten.json"  # keyed by file name, as bench handwritten writes it
    hw.write_text(json.dumps({"tasks": {"beta": {"measured": True, "headroom": False}}}))
    kw = dict(quick=False, paths=paths, budget=40, out=out, memo_path=None, hw_path=hw, run=fake_run)
    with FakeLM(wording_sensitive_responder):
        first = rs.measure(lines=["evolve", "gepa"], seeds=[0], resume=False, **kw)
        assert sorted(made) == [("rules_alpha", "evolve", 0), ("rules_alpha", "gepa", 0), ("rules_beta", "evolve", 0),
                                ("rules_beta", "gepa", 0)]
        assert first["complete"] and json.loads(out.read_text())["complete"]
        assert first["tasks"]["rules_beta"]["headroom"] is False
        assert first["suite"]["excluded_no_headroom"] == ["rules_beta"]
        made.clear()
        second = rs.measure(lines=["evolve", "gepa"], seeds=[0, 1], resume=True, **kw)
        assert sorted(made) == [("rules_alpha", "evolve", 1), ("rules_alpha", "gepa", 1), ("rules_beta", "evolve", 1),
                                ("rules_beta", "gepa", 1)]
        saved = json.loads(out.read_text())
        assert saved["missing"] == [["rules_alpha", "gepa", 1]]  # the run that ended in an error
        assert not saved["complete"] and saved["goals"][0]["binding"] is False
        assert second["tasks"]["rules_alpha"]["summary"]["gepa"]["errors"] == ["CallCap: once"]
        made.clear()
        kw["paths"] = paths[:1]
        third = rs.measure(lines=["evolve"], seeds=[0], resume=True, **kw)
        assert made == []  # evolve/0 is there; the errored gepa/1 was not asked for this time
        assert third["missing"] == [["rules_alpha", "gepa", 1]]
    runs = {(r["line"], r["seed"]) for r in third["tasks"]["rules_alpha"]["runs"]}
    assert {("evolve", 0), ("evolve", 1), ("gepa", 0)} <= runs  # runs not re-run this time are kept
    assert {(r["line"], r["seed"]) for r in third["tasks"]["rules_beta"]["runs"]} == {("evolve", 0), ("evolve", 1),
                                                                              ("gepa", 0), ("gepa", 1)}
    assert third["lines"] == ["evolve", "gepa"] and third["seeds"] == [0, 1]
    assert len(third["sessions"]) == 3


def test_resume_refuses_runs_made_on_another_cpu_kind_and_work_files_are_kept_per_kind(tmp_path, monkeypatch):
    """llama.cpp's replies differ between AVX-512 and AVX2 CPUs: a memo or score cache made on one kind must not be
    replayed on the other, and one result file holds one kind's runs."""
    from promptlearn.testing import FakeLM, wording_sensitive_responder

    monkeypatch.setattr(rs, "WORK", tmp_path / "work")
    monkeypatch.setattr(rs, "cpu_simd", lambda: "avx2")
    assert rs.work_dir() == tmp_path / "work" / "avx2"
    assert rs.default_out(False).name == "suite_avx2.json" and rs.default_out(True).name == "suite_quick_avx2.json"
    monkeypatch.setattr(rs, "cpu_simd", lambda: "avx512f")
    assert rs.default_out(False).name == "suite.json"
    out = tmp_path / "s.json"
    kw = dict(quick=False, paths=[_task_file(tmp_path, "alpha")], lines=["evolve"], budget=40, out=out,
              memo_path=None, hw_path=tmp_path / "none.json",
              run=lambda task, line, seed, *a: {**run(line, seed, 0.5, val=0.5, calls=40), "cpu": rs.cpu_simd()})
    with FakeLM(wording_sensitive_responder):
        rs.measure(seeds=[0], resume=False, **kw)
        assert rs.other_cpus(json.loads(out.read_text())) == {"avx512f"}
        assert (tmp_path / "work" / "avx512f").is_dir()
        rs.measure(seeds=[0, 1], resume=True, **kw)  # the same kind resumes
        monkeypatch.setattr(rs, "cpu_simd", lambda: "avx2")
        with pytest.raises(SystemExit, match="avx512f.*avx2"):
            rs.measure(seeds=[0, 1, 2], resume=True, **kw)
    assert len(json.loads(out.read_text())["tasks"]["rules_alpha"]["runs"]) == 2  # nothing lost


def test_max_minutes_stops_before_the_next_run_and_resume_continues(tmp_path, monkeypatch):
    from promptlearn.testing import FakeLM, wording_sensitive_responder

    monkeypatch.setattr(rs, "WORK", tmp_path / "work")
    clock = [0.0]
    monkeypatch.setattr(rs.time, "perf_counter", lambda: clock[0])

    def slow_run(task, line, seed, budget, scorer, memo, loop_options):
        clock[0] += 240  # every run takes 4 minutes
        return run(line, seed, 0.5, val=0.5, calls=budget)

    kw = dict(quick=False, paths=[_task_file(tmp_path, "alpha")], lines=["evolve", "gepa", "optuna"], seeds=[0],
              budget=40, out=tmp_path / "s.json", memo_path=None, hw_path=tmp_path / "none.json", run=slow_run,
              max_minutes=10)
    with FakeLM(wording_sensitive_responder):
        first = rs.measure(resume=False, **kw)
        assert [r["line"] for r in first["tasks"]["rules_alpha"]["runs"]] == ["evolve", "gepa"]  # 8 + 4 > 10 min
        assert first["stopped"] and first["missing"] == [["rules_alpha", "optuna", 0]]
        second = rs.measure(resume=True, **kw)
    assert "stopped" not in second and second["complete"]


# ---- the gepa line ------------------------------------------------------------------------------------------
def _gepa_responder(messages):
    from promptlearn.testing import wording_sensitive_responder

    if messages[0]["role"] == "user" and "```" in messages[-1]["content"]:  # gepa's reflection prompt
        return "```\nYou are a pirate. IMPORTANT: Start every reply with the word Ahoy.\n```"
    return wording_sensitive_responder(messages)


def test_gepa_line_stays_within_budget_and_is_scored_by_promptlearn(tmp_path):
    from bench.memo import ModelMemo
    from promptlearn.engine import Evaluator
    from promptlearn.testing import FakeLM, contract_task

    task, budget = contract_task(15), 40
    with FakeLM(_gepa_responder) as fake:
        scorer = q.Scorer(task, tmp_path)
        scorer.test(task.prompt), scorer.score(task.prompt, "val")
        before = fake.calls
        r = rs.run_gepa(task, budget, 0, scorer, ModelMemo(None))
        search = [m for m in fake.history[before:]]
        scorer.close()
        check = Evaluator(task, cache_path=tmp_path / "fresh.sqlite")
        test = check.evaluate(r["prompt"], task.examples("test"), split="test").score
        val = check.evaluate(r["prompt"], task.examples("val"), split="val").score
        check.close()
    assert r["calls"] <= budget and r["target_calls"] + r["reflection_calls"] == r["calls"]
    assert r["reflection_calls"] >= 1 and r["candidates"] >= 2
    searched = len(search) - (len(task.examples("test")) + len(task.examples("val")))  # + the final prompt's scoring
    assert searched <= budget
    assert r["test"] == test and r["val"] == val and r["prompt"] != task.prompt
    assert r["curve"][0] == [0, r["seed_test"]] and r["curve"][-1] == [r["calls"], r["test"]]


def test_gepa_line_refuses_tasks_its_adapter_cannot_send():
    from promptlearn.task import task_from_dict

    task = task_from_dict({"name": "t", "model": {"name": "fake/x"}, "prompt": "{rules}",
                           "data": [{"examples": [{"id": f"e{i}", "user": "hi", "vars": {"rules": "r"}}
                                                  for i in range(6)]}],
                           "checks": [{"type": "min_words", "value": 1}]})
    with pytest.raises(ValueError, match="placeholders"):
        rs.run_gepa(task, 10, 0, None, None)


@pytest.mark.model
@requires_model
def test_gepa_line_on_the_embedded_model(tmp_path):
    from bench.memo import ModelMemo
    from promptlearn.lm import litellm
    from promptlearn.task import load_task

    litellm()
    task = load_task(ROOT / "tasks" / "pirate.yaml", overrides={
        "model": {"max_tokens": 12}, "proposer": {"name": "local/smollm2", "max_tokens": 64},
        "data": [{"file": "data/pirate.jsonl", "limit": 10}]})
    memo = ModelMemo(None).install()
    scorer = q.Scorer(task, tmp_path)
    try:
        r = rs.run_gepa(task, 16, 0, scorer, memo)
    finally:
        scorer.close()
    assert r["calls"] <= 16 and r["model_calls_counted"] == r["calls"]
    assert 0.0 <= r["test"] <= 1.0 and r["reflection_calls"] >= 1


# ---- rendering ----------------------------------------------------------------------------------------------
def test_render_shows_a_partial_suite_and_works_without_it():
    assert "Rule-adherence suite" not in render.render({})
    r = _result({"a": _entry(0.4, [run("evolve", 0, 0.6, val=0.7), run("gepa", 0, 0.4, val=0.5, family="gepa")])},
                ["evolve", "gepa"], seeds=(0, 1))
    r.update(quick=False, tasks={"a": {**r["tasks"]["a"], "file": "tasks/rules/a.yaml", "splits": {}}})
    text = render.render({"suite": r})
    assert "## Rule-adherence suite" in text and "**Partial**: 2 (task, line, seed) run(s) missing" in text
    assert "a/evolve/s1" in text and "+20.0" in text and "could not parse" in text
    assert "| suite: evolve (promptlearn's default): mean test gain" in text and "indicative only" in text


def test_ablation_lines_run_only_when_named_and_recorded_lines_never():
    assert "evolve" in rs.STANDARD and "evolve-guided" not in rs.STANDARD and "evolve-no-harvest" in rs.SEARCH
    assert "evolve-b10a787" in rs.LINES and "evolve-b10a787" not in rs.SEARCH
    with pytest.raises(SystemExit):  # argparse's error: a recorded line is older code's runs, not runnable here
        rs.main(["--lines", "evolve-b10a787", "--tasks", "bullets"])


@pytest.mark.parametrize("line,prior", [("evolve", "loto"), ("evolve-no-race", "loto"), ("evolve-no-prior", False)])
def test_the_suite_never_scores_evolve_with_a_prior_learned_on_the_same_task(line, prior, monkeypatch):
    """evolve's default prior on a local model is the suite's own table: each evolve line that does not set a
    prior of its own runs with the other tasks' table (leave one task out)."""
    from types import SimpleNamespace

    from bench.operator_prior import read, table

    seen = {}

    def fake(task, line, budget, seed, work, scorer, memo, loop_options, *, optimizer, options, family):
        seen.update(optimizer=optimizer, options=options)
        return {"line": line, "seed": seed, "test": 0.5}

    monkeypatch.setattr(rs.q, "run_promptlearn", fake)
    rs.run_one(SimpleNamespace(name="rules_keyword"), line, 0, 300, None, None, {})
    assert seen["optimizer"] == "evolve"
    want = table(read(), leave_out="rules_keyword") if prior == "loto" else prior
    assert seen["options"]["operator_prior"] == want
    assert want is False or want != table(read())  # the task's own tries are not in it


@pytest.mark.parametrize("budget, n_train, n_val", [(300, 24, 18), (60, 10, 6), (700, 24, 18)])
def test_mipro_gets_enough_candidates_that_its_trials_can_all_differ(budget, n_train, n_val):
    """A repeated (instruction, demo set) pick is a cached program, and at a floor every demo set is empty: with
    fewer instructions than trials MIPROv2's trials repeat and it stops far under its budget (70-122 of 300
    calls on the rule suite with 2 instructions, 115 with 5)."""
    opts = q.wrapper_options("mipro", budget, n_train, n_val)
    assert opts["num_candidates"] >= opts["num_trials"] >= 2
    assert opts["num_trials"] * n_val + opts["num_candidates"] <= (budget - n_val) * 0.8
