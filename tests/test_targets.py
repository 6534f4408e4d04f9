"""Several target models: schema, aggregation, per-target acceptance, ledger and cache per target, migration,
the transfer report, and check / export, with the scripted fake model and the loopback server as a second
provider."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import pytest

from promptlearn.engine import Evaluation, Evaluator
from promptlearn.errors import ConfigError, TaskError
from promptlearn.loop import paired_confidence
from promptlearn.run import optimize
from promptlearn.store import SQLiteRunStore
from promptlearn.targets import MultiEvaluation, aggregate, decide, make_evaluator
from promptlearn.task import task_from_dict
from promptlearn.testing import FakeLM, wording_sensitive_responder
from promptlearn.types import CheckResult, ExampleResult, TurnResult

SEED = "You are a pirate. Start every reply with the word Ahoy."


class TwoModels(FakeLM):
    """fake/a (max_tokens 16) answers like the contract target (it needs emphatic wording); fake/b (max_tokens
    17) opens with Ahoy whenever the prompt asks, except when the prompt shouts IMPORTANT, which derails it."""

    def reply(self, messages: Sequence[dict[str, str]], params: dict[str, Any]) -> str:
        text = super().reply(messages, params)
        system = next((m["content"] for m in messages if m["role"] == "system"), "")
        if params.get("max_tokens") == 17 and system:
            ok = "Ahoy" in system and "IMPORTANT" not in system
            return f"{'Ahoy' if ok else 'Well'}! About {messages[-1]['content'][:20]}"
        return text


def raw_task(n: int = 20, **extra: Any) -> dict[str, Any]:
    users = [f"Question number {i}: tell me about topic {i * 7 % 11}" for i in range(n)]
    raw = {"name": "two", "prompt": SEED, "protected": ["Ahoy"],
           "targets": [{"name": "fake/a", "max_tokens": 16}, {"name": "fake/b", "max_tokens": 17, "label": "b"}],
           "data": [{"examples": [{"id": f"q{i}", "user": u} for i, u in enumerate(users)]}],
           "checks": [{"type": "starts_with", "value": "Ahoy", "name": "ahoy"}],
           "splits": {"train": 0.4, "val": 0.3, "test": 0.3, "seed": 0}, "budget": {"max_calls": 400}}
    raw.update(extra)
    return raw


# ---- schema ----------------------------------------------------------------------------------------------------

def test_targets_take_model_shorthands_and_the_first_is_the_default_proposer():
    t = task_from_dict(raw_task(targets=["fake/a", {"name": "fake/b", "guidance": 1.5, "label": "cfg"},
                                         {"model": "fake/c", "constraints": {"broken": "<= 1"}}]))
    assert [x.key for x in t.spec.targets] == ["fake/a", "cfg", "fake/c"]
    assert t.spec.targets[1].model.guidance == 1.5 and t.spec.targets[2].constraints == {"broken": "<= 1"}
    assert t.model.name == "fake/a" and t.proposer.name == "fake/a"


@pytest.mark.parametrize("change, match", [
    ({"model": "fake/x"}, "give `model:` .* or `targets:`"),
    ({"targets": ["fake/a"]}, "two or more models"),
    ({"targets": ["fake/a", {"name": "fake/a"}]}, "two targets are named 'fake/a'"),
    ({"targets": [{"name": "fake/a", "label": "x"}, {"name": "fake/a", "label": "y"}]}, "same model config"),
    ({"targets": ["fake/a", {"name": "fake/b", "weight": 2}]}, "weight.*only with.*aggregate: mean"),
    ({"targets": ["fake/a", {"name": "fake/b", "constraints": {"broken": "2"}}]}, "must look like '<= 2'"),
    ({"migrate": {"from": "fake/old"}}, "does not combine with `targets:`"),
])
def test_bad_targets_are_one_line_task_errors(change, match):
    with pytest.raises(TaskError, match=match):
        task_from_dict(raw_task(**change))


def test_make_task_takes_targets_instead_of_a_model():
    from promptlearn import make_task

    t = make_task("api", SEED, ["Hi", "Ho"], targets=["fake/a", {"name": "fake/b", "label": "b"}])
    assert [x.key for x in t.spec.targets] == ["fake/a", "b"] and t.model.name == "fake/a"
    assert make_task("one", SEED, ["Hi"]).model.name == "local/smollm2"


def test_aggregate_is_the_worst_target_or_the_weighted_mean():
    assert aggregate({"a": 0.9, "b": 0.3}, "min", {}) == 0.3
    assert aggregate({"a": 0.9, "b": 0.3}, "mean", {"a": 1, "b": 1}) == pytest.approx(0.6)
    assert aggregate({"a": 0.9, "b": 0.3}, "mean", {"a": 3, "b": 1}) == pytest.approx(0.75)


# ---- acceptance ------------------------------------------------------------------------------------------------

def _ev(scores: dict[str, list[float]], how: str = "min", weights: dict[str, float] | None = None) -> MultiEvaluation:
    def one(values: list[float]) -> Evaluation:
        return Evaluation("p", "val", {f"e{i}": ExampleResult(f"e{i}", (TurnResult("r", {"c": CheckResult(v)}),))
                                       for i, v in enumerate(values)})

    by = {k: one(v) for k, v in scores.items()}
    first = next(iter(by.values()))
    return MultiEvaluation("p", "val", dict(first.results), by_target=by, aggregate=how, weights=weights or {})


def _decide(new: MultiEvaluation, best: MultiEvaluation, raw: dict[str, Any] | None = None) -> Any:
    task = task_from_dict(raw or raw_task(targets=[{"name": "fake/a", "label": "a"},
                                                   {"name": "fake/b", "label": "b"}]))
    return decide(new, best, best, task.examples("val"), task, confidence=0.8, bootstrap=500, seed_value=1,
                  paired=paired_confidence)


def test_a_prompt_better_on_the_aggregate_but_significantly_worse_on_one_target_is_not_accepted():
    best = _ev({"a": [1] * 6 + [0] * 6, "b": [1] * 10 + [0] * 2}, "mean")
    new = _ev({"a": [1] * 12, "b": [1] * 6 + [0] * 6}, "mean")  # mean 0.75 > 0.67, but b loses 4 of 10
    raw = raw_task(targets=[{"name": "fake/a", "label": "a"}, {"name": "fake/b", "label": "b"}],
                   objective={"aggregate": "mean"})
    d = _decide(new, best, raw)
    assert new.score > best.score and not d.accepted
    assert d.reason.startswith("significantly worse on b") and d.event["targets"]["b"]["confidence_worse"] >= 0.8


def test_min_aggregate_accepts_only_when_the_worst_target_improves():
    best = _ev({"a": [1] * 12, "b": [0] * 12})
    only_a = _ev({"a": [1] * 12, "b": [0] * 12})
    lifts_b = _ev({"a": [1] * 12, "b": [1] * 9 + [0] * 3})
    assert not _decide(only_a, best).accepted
    d = _decide(lifts_b, best)
    assert d.accepted and "min over 2 targets" in d.reason and d.event["confidence"] >= 0.8


def test_side_effect_constraints_hold_per_target():
    raw = raw_task(targets=[{"name": "fake/a", "label": "a"},
                            {"name": "fake/b", "label": "b", "constraints": {"broken": "<= 0"}}])
    task = task_from_dict(raw)
    ids = [e.id for e in task.examples("val")]
    n = len(ids)

    def ev(a: list[float], b: list[float]) -> MultiEvaluation:
        out = _ev({"a": a, "b": b})
        remap = {k: Evaluation("p", "val", {ids[i]: ExampleResult(ids[i], r.turns) for i, r in
                                            enumerate(e.results.values())}) for k, e in out.by_target.items()}
        return MultiEvaluation("p", "val", dict(remap["a"].results), by_target=remap)

    seed = ev([0] * n, [1] + [0] * (n - 1))
    new = ev([1] * n, [0] + [1] * (n - 1))  # far better on both, but breaks b's one seed pass
    d = decide(new, seed, seed, task.examples("val"), task, confidence=0.8, bootstrap=500, seed_value=0,
               paired=paired_confidence)
    assert not d.accepted and d.reason == "violates b: broken = 1 (needs <= 0)"


# ---- a run over two targets --------------------------------------------------------------------------------------

def test_a_multi_target_run_scores_every_candidate_on_every_target_and_splits_the_ledger(tmp_path):
    task = task_from_dict(raw_task())
    with TwoModels(wording_sensitive_responder) as fake:
        # seed 0: one whose run finds the rewrite that works on both (5 of seeds 0-7 do; seed 1 did until
        # fixed_example joined evolve's draws at a floor, where this seed prompt starts)
        res = optimize(task, seed=0, run_dir=tmp_path / "run", cache_path=tmp_path / "c.sqlite")
    assert res.ledger.requests <= 400
    info = res.targets
    assert info is not None and [t["key"] for t in info["targets"]] == ["fake/a", "b"]
    seed, best = info["candidates"][res.seed.id], info["candidates"][res.best.id]
    assert seed["test"] == {"fake/a": 0.0, "b": 1.0} and res.seed.test == 0.0  # min over the targets
    assert best["test"]["fake/a"] == 1.0 and best["test"]["b"] == 1.0  # the "Rules:" rewrite works on both
    assert "IMPORTANT" not in res.best.prompt
    # every request of a target went to that model's parameters: the two share no reply
    by_target = {t["key"]: t["calls"] for t in info["targets"]}
    sent = [p["max_tokens"] for p in fake.params]
    store = SQLiteRunStore(tmp_path / "run", create=False)
    proposer = store.get_meta("ledger_by_tag").get("proposer", {}).get("calls", 0)  # fake/a config, if called
    assert by_target["b"] == sent.count(17) and by_target["fake/a"] + proposer == sent.count(16)
    assert by_target["b"] > 0 and by_target["fake/a"] + by_target["b"] + proposer == res.ledger.calls
    scores = store.scores()[res.best.id]
    assert scores["test@b"]["score"] == 1.0 and scores["val@fake/a"]["score"] == 1.0
    promotes = [e for e in store.events() if e["kind"] == "promote"]
    assert promotes and all(set(e["targets"]) == {"fake/a", "b"} for e in promotes)
    from promptlearn.report import write_report

    page = write_report(tmp_path / "run").read_text()
    assert "targets <b>fake/a, b</b>" in page and "Ledger by target" in page and 'data-plot="transfer"' in page


def test_one_model_tasks_still_get_the_plain_evaluator():
    from promptlearn.testing import contract_task

    ev = make_evaluator(contract_task())
    try:
        assert type(ev) is Evaluator
    finally:
        ev.close()


def test_the_loopback_server_is_a_second_provider(tmp_path, monkeypatch):
    from promptlearn.testing_server import LoopbackServer

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key-0000")

    def serve(body: dict) -> str:  # a remote model that follows any prompt mentioning Ahoy
        system = body["messages"][0]["content"] if body["messages"][0]["role"] == "system" else ""
        return ("Ahoy! " if "Ahoy" in system else "Hello! ") + body["messages"][-1]["content"][:20]

    with LoopbackServer(responder=serve) as srv:
        raw = raw_task(targets=[{"name": "fake/a", "max_tokens": 16},
                                {"name": "openai/loopback", "api_base": srv.base_url, "label": "remote"}])
        with TwoModels(wording_sensitive_responder):
            res = optimize(task_from_dict(raw), seed=0, run_dir=tmp_path / "run", cache_path=tmp_path / "c.sqlite")
        served = len(srv.requests)
    info = res.targets
    assert info is not None
    remote = next(t for t in info["targets"] if t["key"] == "remote")
    assert served == remote["calls"] > 0
    assert info["candidates"][res.seed.id]["test"] == {"fake/a": 0.0, "remote": 1.0}


# ---- migration ---------------------------------------------------------------------------------------------------

def test_migration_sets_the_bar_on_the_old_model_and_reports_fixed_and_broken(tmp_path):
    raw = raw_task()
    raw.pop("targets")
    raw.update(model={"name": "fake/a", "max_tokens": 16}, migrate={"from": {"name": "fake/b", "max_tokens": 17}})
    with TwoModels(wording_sensitive_responder):
        res = optimize(task_from_dict(raw), seed=0, run_dir=tmp_path / "run", cache_path=tmp_path / "c.sqlite")
    mig = res.migration
    assert mig is not None and mig["from"] == "fake/b" and mig["to"] == "fake/a"
    assert mig["bar"] == 1.0 and mig["seed_on_to"] == 0.0  # the old prompt works on the old model only
    assert mig["best_on_to"] == res.best.test and mig["reaches_bar"] == (res.best.test >= 1.0)
    assert mig["fixed"] == 0 and mig["broken"] == len(mig["broken_ids"])
    assert res.to_json()["migration"] == mig
    page = (tmp_path / "run" / "report.html")
    from promptlearn.report import write_report

    assert "Migration fake/b → fake/a" in write_report(tmp_path / "run", page).read_text()


def test_cli_migrate_from_to_resolves_target_labels(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from promptlearn.cli import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "task.yaml").write_text(json.dumps(raw_task()))
    with TwoModels(wording_sensitive_responder):
        out = CliRunner().invoke(app, ["optimize", "task.yaml", "--migrate-from", "b", "--to", "fake/a", "--json",
                                       "--run-dir", "run", "--cache", "c.sqlite"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert "targets" not in data and data["migration"]["from"] == "fake/b" and data["migration"]["bar"] == 1.0
    bad = CliRunner().invoke(app, ["optimize", "task.yaml", "--migrate-from", "b"])
    assert bad.exit_code != 0 and "together" in str(bad.exception or bad.output)


# ---- transfer report, check and export -------------------------------------------------------------------------

def test_transfer_report_shows_a_prompt_tuned_for_one_target_hurting_the_other(tmp_path):
    from promptlearn.transfer import transfer_report

    task = task_from_dict(raw_task())
    with TwoModels(wording_sensitive_responder):
        rep = transfer_report(task, budget=160, seed=0, out_dir=tmp_path / "tr", cache_path=tmp_path / "c.sqlite")
    rows = {r["label"]: r["test"] for r in rep.rows}
    assert list(rows) == ["seed", "best for fake/a", "best for b", "best over all (min)"]
    assert rows["seed"] == {"fake/a": 0.0, "b": 1.0}
    assert rows["best for b"]["b"] == 1.0
    assert min(rows["best over all (min)"].values()) >= min(rows["seed"].values())
    page = (tmp_path / "tr" / "transfer.html").read_text()
    assert "<svg" in page and "best for fake/a" in page
    assert json.loads((tmp_path / "tr" / "transfer.json").read_text())["rows"][0]["test"] == rows["seed"]
    with TwoModels(wording_sensitive_responder) as fake:  # finished runs are replayed, not searched again
        again = transfer_report(task, budget=160, seed=0, out_dir=tmp_path / "tr", cache_path=tmp_path / "c.sqlite")
    assert fake.calls == 0 and [r["test"] for r in again.rows] == [r["test"] for r in rep.rows]


def test_check_gates_each_target_and_export_carries_the_targets(tmp_path):
    import yaml

    from promptlearn.gate import check_prompt, export_run

    task = task_from_dict(raw_task())
    with TwoModels(wording_sensitive_responder):
        res = optimize(task, seed=0, run_dir=tmp_path / "run", cache_path=tmp_path / "c.sqlite")
        shout = "You are a pirate. IMPORTANT: Start every reply with the word Ahoy."
        rep = check_prompt(task, shout, "test", min_score=0.5, cache_path=tmp_path / "c.sqlite")
        ok = check_prompt(task, res.best.prompt, "test", target_min={"b": 0.9}, cache_path=tmp_path / "c.sqlite")
        with pytest.raises(ConfigError, match="no target named nope; its targets: fake/a, b"):
            check_prompt(task, shout, "test", target_min={"nope": 0.5})
    assert not rep.passed and rep.targets["b"]["score"] == 0.0 < rep.targets["fake/a"]["score"]
    assert any(r.startswith("target b: score 0.0000 is below the minimum 0.5") for r in rep.reasons)
    assert rep.to_json()["targets"]["b"]["broken"] == len(task.examples("test"))
    assert ok.passed and ok.targets["b"]["min_score"] == 0.9
    info = export_run(tmp_path / "run", tmp_path / "app.yaml", "assistant.prompt")
    assert [t["target"] for t in info.targets] == ["fake/a", "b"]
    assert info.targets[1]["test"] == res.targets["candidates"][res.best.id]["test"]["b"]  # type: ignore[index]
    assert "fake/b" in (tmp_path / "app.yaml").read_text() and yaml.safe_load((tmp_path / "app.yaml").read_text())


def test_cli_transfer_and_check_with_targets(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from promptlearn.cli import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "task.yaml").write_text(json.dumps(raw_task()))
    (tmp_path / "p.txt").write_text("You are a pirate. IMPORTANT: Start every reply with the word Ahoy.")
    with TwoModels(wording_sensitive_responder):
        out = CliRunner().invoke(app, ["transfer", "task.yaml", "--budget-calls", "120", "--out", "tr",
                                       "--cache", "c.sqlite"])
        check = CliRunner().invoke(app, ["check", "task.yaml", "--prompt-from", "p.txt", "--target-min", "b=0.5",
                                         "--cache", "c.sqlite"])
    assert out.exit_code == 0, out.output
    assert "best for fake/a" in out.stdout and "transfer.html" in out.stdout
    assert check.exit_code == 1 and "target b: score 0.0000 is below the minimum 0.5" in check.stdout


@pytest.mark.model
@pytest.mark.slow
def test_greedy_and_guided_decoding_of_the_embedded_model_are_two_real_targets(tmp_path):
    """The real model: two targets that differ only in decoding get their own replies (the cache is keyed by the
    model's parameters) and their own stored results."""
    from promptlearn.task import load_task

    root = Path(__file__).resolve().parents[1]
    base = load_task(root / "tasks" / "pirate.yaml").model.model_dump(mode="json")
    task = load_task(root / "tasks" / "pirate.yaml", overrides={
        "model": None, "targets": [{"label": "greedy", "model": base},
                                   {"label": "cfg", "model": {**base, "guidance": 2.0}}],
        "data": [{"file": "data/pirate.jsonl", "limit": 12}]})
    store = SQLiteRunStore(tmp_path / "run")
    ev = make_evaluator(task, cache_path=tmp_path / "c.sqlite", store=store)
    try:
        res = ev.evaluate(task.prompt, task.examples("all")[:6], split="custom")
    finally:
        ev.close()
    assert isinstance(res, MultiEvaluation) and res.complete
    greedy, cfg = res.by_target["greedy"], res.by_target["cfg"]
    assert any(greedy.results[k].turns[0].reply != cfg.results[k].turns[0].reply for k in greedy.results)
    assert res.score == min(greedy.score, cfg.score)
    from promptlearn.types import candidate_id

    first = next(iter(cfg.results))
    stored = SQLiteRunStore(tmp_path / "run", create=False).get_result(f"{candidate_id(task.prompt)}@cfg", first)
    assert stored is not None and stored[0].turns[0].reply == cfg.results[first].turns[0].reply


def test_an_interrupted_multi_target_run_resumes_without_repeating_a_call(tmp_path):
    task = task_from_dict(raw_task())

    def lineage(run: Path) -> list[tuple[str, str, str]]:
        return [(c["id"], c["operator"], c["status"]) for c in SQLiteRunStore(run, create=False).candidates()]

    with TwoModels(wording_sensitive_responder) as fake:
        whole = optimize(task, seed=2, run_dir=tmp_path / "a", cache_path=tmp_path / "c1.sqlite")
        calls = fake.calls

    class Interrupting(TwoModels):
        def reply(self, messages: Sequence[dict[str, str]], params: dict[str, Any]) -> str:
            if self.calls == calls // 2:
                self.history.append([])  # counted, never answered
                raise KeyboardInterrupt
            return super().reply(messages, params)

    with Interrupting(wording_sensitive_responder) as fake:
        with pytest.raises(KeyboardInterrupt):
            optimize(task, seed=2, run_dir=tmp_path / "r", cache_path=tmp_path / "c2.sqlite")
        resumed = optimize(task, resume=tmp_path / "r", cache_path=tmp_path / "c2.sqlite")
        made = fake.calls - 1
    assert made == calls and lineage(tmp_path / "r") == lineage(tmp_path / "a")
    assert resumed.best.prompt == whole.best.prompt and resumed.targets == whole.targets


def test_cli_eval_shows_each_targets_score(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from promptlearn.cli import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "task.yaml").write_text(json.dumps(raw_task()))
    with TwoModels(wording_sensitive_responder):
        out = CliRunner().invoke(app, ["eval", "task.yaml", "--json"])
        table = CliRunner().invoke(app, ["eval", "task.yaml"])
    data = json.loads(out.stdout)
    assert data["targets"] == {"fake/a": 0.0, "b": 1.0} and data["score"] == 0.0
    assert "on b" in table.stdout
