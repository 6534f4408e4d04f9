"""MLflow tracking and the MLflow Prompt Registry against a real `mlflow server` (tests/mlflow_server.py: SQLite
backend store, local artifact root, 127.0.0.1), started once for this module; what was logged is read back with
MLflow's own client. In CI (CI=true) a server that cannot start fails these tests.

The embedded-model test optimizes a tiny pirate task with tracking on, registers its best prompt, and gates on the
`@production` version with the model running again (no cache): the gate's score is the run's test score. The
others use the scripted fake model. The last test kills the server in the middle of a run.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from promptlearn.export.mlflow_export import provenance_tags
from promptlearn.export.mlflow_registry import read_registry_prompt
from promptlearn.mlflow_tracking import ARTIFACTS, TrackingWarning
from promptlearn.optimizers import _PLUGINS, register_optimizer
from promptlearn.run import optimize
from promptlearn.store import SQLiteRunStore
from promptlearn.task import render_prompt
from promptlearn.testing import FakeLM, contract_task, wording_sensitive_responder

from conftest import requires_model
from mlflow_server import MlflowServer, free_port
from test_cli_export_check import cli, tiny_pirate, write_task
from test_secrets import MARKS, leaks


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    yield srv
    srv.stop()


@pytest.fixture
def registry(server, monkeypatch):
    """MLflow's own setting names the server for export and check."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    return server


def mlflow_client(server: MlflowServer) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=server.uri, registry_uri=server.uri)


def progress_events(run_dir: Path) -> int:
    return len(SQLiteRunStore(run_dir, create=False).events("progress"))


# ---- tracking --------------------------------------------------------------------------------------------------


def test_a_run_logs_params_metric_history_final_scores_and_files(server, tmp_path):
    task = contract_task(max_calls=120)
    with FakeLM(wording_sensitive_responder):
        res = optimize(task, "evolve", seed=1, run_dir=tmp_path / "run", cache_path=tmp_path / "c.sqlite",
                       tracking={"mlflow": server.uri, "experiment": "tracking-test"})
    assert res.tracking and res.tracking["error"] is None and res.best.id != res.seed.id
    client = mlflow_client(server)
    run = client.get_run(res.tracking["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == res.run_id
    assert client.get_experiment(run.info.experiment_id).name == "tracking-test"
    assert run.data.params == {"task": "contract", "task_fingerprint": task.fingerprint(), "optimizer": "evolve",
                               "seed": "1", "target_model": "fake/target", "proposer_model": "fake/target",
                               "judge_model": "fake/target", "promptlearn_version": "0.1.0",
                               "budget.max_calls": "120"}
    # linked both ways: the MLflow run names the promptlearn run, the run store names the MLflow run
    assert run.data.tags["promptlearn.run_id"] == res.run_id
    assert run.data.tags["promptlearn.run_dir"] == str((tmp_path / "run").resolve())
    assert SQLiteRunStore(tmp_path / "run", create=False).get_meta("mlflow")["run_id"] == run.info.run_id
    history = client.get_metric_history(run.info.run_id, "best_val")
    steps = [m.step for m in sorted(history, key=lambda m: (m.timestamp, m.step))]
    assert len(history) == progress_events(tmp_path / "run") + 1  # every progress event, and the final value
    assert steps == sorted(steps) and steps[-1] > 0  # step = proposals
    assert min(history, key=lambda m: m.step).value == res.seed.val
    assert max(history, key=lambda m: (m.step, m.timestamp)).value == res.best.val
    calls = client.get_metric_history(run.info.run_id, "calls")
    assert [m.value for m in calls] == sorted(m.value for m in calls) and calls[-1].value == res.ledger.calls
    m = run.data.metrics
    assert (m["seed_val"], m["seed_test"], m["best_test"]) == (res.seed.val, res.seed.test, res.best.test)
    assert m["overfit_gap"] == pytest.approx(res.overfit_gap)
    assert m["test_fixed"] == res.best.test_side_effects["fixed"]
    assert m["test_broken"] == res.best.test_side_effects["broken"]
    assert m["candidates"] == res.candidates and m["tokens"] == res.ledger.tokens
    assert sorted(a.path for a in client.list_artifacts(run.info.run_id)) == sorted(ARTIFACTS)
    got = Path(client.download_artifacts(run.info.run_id, "best_prompt.txt", str(tmp_path)))
    assert got.read_text() == res.best.prompt


def test_cli_optimize_mlflow_and_the_task_files_tracking_section(server, tmp_path, monkeypatch, capsys):
    task = write_task(tmp_path / "task.yaml", tracking={"mlflow": "http://127.0.0.1:9", "experiment": "from-task"})
    with FakeLM(wording_sensitive_responder):  # --mlflow replaces the file's URI; its experiment stays
        code, out, err = cli(monkeypatch, capsys, "optimize", task, "--mlflow", server.uri, "--run-dir",
                             tmp_path / "run", "--cache", tmp_path / "c.sqlite", "--json")
    assert code == 0, err
    info = json.loads(out)["tracking"]  # stdout stays one JSON object (MLflow prints no run links there)
    assert info["error"] is None and info["experiment"] == "from-task"
    run = mlflow_client(server).get_run(info["run_id"])
    assert run.data.tags["promptlearn.run_id"] == "run"
    assert mlflow_client(server).get_experiment(run.info.experiment_id).name == "from-task"
    with FakeLM(wording_sensitive_responder):
        code, out, err = cli(monkeypatch, capsys, "optimize", task, "--mlflow", server.uri, "--run-dir",
                             tmp_path / "run2", "--cache", tmp_path / "c.sqlite")
    assert code == 0 and "mlflow: run " in out and "in experiment from-task" in out


def test_a_resumed_run_goes_on_in_the_same_mlflow_run(server, tmp_path):
    task = contract_task(max_calls=120)
    with FakeLM(wording_sensitive_responder):
        first = optimize(task, "evolve", seed=0, run_dir=tmp_path / "run", cache_path=tmp_path / "c.sqlite",
                         options={"max_candidates": 2}, tracking=server.uri)
        again = optimize(task, resume=tmp_path / "run", cache_path=tmp_path / "c.sqlite", budget=200,
                         extend_budget=True, tracking=server.uri)
    assert again.tracking["run_id"] == first.tracking["run_id"]
    assert mlflow_client(server).get_run(first.tracking["run_id"]).info.status == "FINISHED"


def test_nothing_secret_reaches_the_tracking_server(server, tmp_path, monkeypatch):
    """MLflow's own credential variables are MLflow's business: none of them lands in a param, tag, metric or
    artifact, in the server's store, or in the run directory."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ci-user")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw-" + MARKS[0])
    monkeypatch.setenv("OPENAI_API_KEY", "sk-" + MARKS[1])
    with FakeLM(wording_sensitive_responder):
        res = optimize(contract_task(), seed=1, run_dir=tmp_path / "run", cache_path=tmp_path / "c.sqlite",
                       tracking=server.uri)
    run = mlflow_client(server).get_run(res.tracking["run_id"])
    text = json.dumps([run.data.params, run.data.tags, run.data.metrics, res.to_json()])
    assert not any(m in text for m in MARKS)
    assert leaks(tmp_path, server.root) == []


# ---- the prompt registry ---------------------------------------------------------------------------------------


class _Fixed:
    """An optimizer that proposes one given prompt (so two runs have two known best prompts)."""

    name: ClassVar[str] = "fixed-proposal-test"
    prompt: ClassVar[str] = ""

    def run(self, ctx: Any) -> None:
        ctx.propose(self.prompt, (ctx.seed_candidate.id,), "fixed")


def fixed_run(prompt: str, run_dir: Path, cache: Path) -> Any:
    cls = type("FixedProposal", (_Fixed,), {"prompt": prompt})
    register_optimizer(cls)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FakeLM(wording_sensitive_responder):
            return optimize(write_task(run_dir.parent / "task.yaml"), _Fixed.name, seed=0, run_dir=run_dir,
                            cache_path=cache)
    finally:
        _PLUGINS.pop(_Fixed.name, None)


FIRST = "You are a pirate. IMPORTANT: Start every reply with the word Ahoy. Rules: each reply."
SECOND = ('You are a pirate who knows {topic}. IMPORTANT: Start every reply with the word Ahoy. Remember: '
          'log lines look like {"level": "info"}; keep "}}" and "{{" as they are.')


def test_export_alias_moves_and_check_gates_on_that_version(registry, tmp_path, monkeypatch, capsys):
    from mlflow.genai import load_prompt

    from promptlearn.export import prompt_sha256, read_prompt
    from promptlearn.gate import export_run

    monkeypatch.chdir(tmp_path)
    one = fixed_run(FIRST, tmp_path / "runs" / "one", tmp_path / "c.sqlite")
    two = fixed_run(SECOND, tmp_path / "runs" / "two", tmp_path / "c.sqlite")
    assert one.best.prompt == FIRST and two.best.prompt == SECOND

    code, out, err = cli(monkeypatch, capsys, "export", "one", "--to", "mlflow://prompts/pirate", "--alias",
                         "production")
    assert code == 0, err
    assert "to mlflow://prompts/pirate/1 (alias production)" in out
    client = mlflow_client(registry)
    v1 = client.get_prompt_version_by_alias("pirate", "production")
    assert v1.version == 1 and v1.template == FIRST
    prov = export_run("one", tmp_path / "app.yaml", "assistant.prompt").provenance  # what a config file gets
    assert {k: v for k, v in v1.tags.items() if k in provenance_tags(prov)} == provenance_tags(prov)

    def gate(ref: str) -> dict:
        with FakeLM(wording_sensitive_responder):
            code, out, err = cli(monkeypatch, capsys, "check", tmp_path / "runs" / "task.yaml", "--prompt-from",
                                 ref, "--split", "test", "--json", "--cache", tmp_path / "fresh.sqlite")
        assert code in (0, 1) and out, err
        return json.loads(out)

    rep = gate("mlflow://prompts/pirate@production")
    assert rep["score"] == one.best.test and rep["config"].endswith("= mlflow://prompts/pirate/1")
    assert rep["prompt_sha256"] == prompt_sha256(FIRST)  # the gate scored exactly that version

    code, out, err = cli(monkeypatch, capsys, "export", "two", "--to", "mlflow://prompts/pirate", "--alias",
                         "production")
    assert code == 0, err
    v2 = client.get_prompt_version_by_alias("pirate", "production")
    assert v2.version == 2 and "{{topic}}" in v2.template and '{"level": "info"}' in v2.template
    assert client.get_prompt_version("pirate", 1).aliases == []  # the alias moved off version 1
    assert read_prompt("mlflow://prompts/pirate@production") == SECOND  # back in promptlearn's syntax, exactly
    assert read_prompt("mlflow://prompts/pirate/1") == FIRST and read_prompt("mlflow://prompts/pirate") == SECOND
    # the app's own load and format give what promptlearn renders for the same variables
    app = load_prompt("prompts:/pirate@production", cache_ttl_seconds=0).format(topic="tides")
    assert app == render_prompt(SECOND, {"topic": "tides"})
    rep = gate("mlflow://prompts/pirate@production")
    assert rep["score"] == two.best.test and rep["config"].endswith("= mlflow://prompts/pirate/2")
    assert rep["prompt_sha256"] == prompt_sha256(SECOND)
    assert gate("mlflow://prompts/pirate/1")["prompt_sha256"] == prompt_sha256(FIRST)


def test_registry_errors_are_one_line_exit_2(registry, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    fixed_run(FIRST, tmp_path / "runs" / "one", tmp_path / "c.sqlite")
    task = tmp_path / "runs" / "task.yaml"
    for args, message in [
        (["check", task, "--prompt-from", "mlflow://prompts/never-made@production"], "cannot read"),
        (["check", task, "--prompt-from", "mlflow://prompts/bad name"], "bad prompt name"),
        (["export", "one", "--to", "mlflow://prompts/x@production"], "move an alias with --alias"),
        (["export", "one", "--to", "mlflow://prompts/x", "--key", "a.b"], "drop --key"),
        (["export", "one", "--to", "app.yaml", "--alias", "production"], "needs --key"),
    ]:
        code, _, err = cli(monkeypatch, capsys, *args)
        lines = [ln for ln in err.strip().splitlines() if not ln.startswith("promptlearn: warning:")]
        assert code == 2 and len(lines) == 1 and message in lines[0], (args, err)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    code, _, err = cli(monkeypatch, capsys, "export", "one", "--to", "mlflow://prompts/x")
    assert code == 2 and "set MLFLOW_TRACKING_URI" in err


def test_a_prompt_whose_braces_mlflow_would_read_otherwise_is_not_registered(registry, tmp_path, monkeypatch,
                                                                              capsys):
    monkeypatch.chdir(tmp_path)
    literal = FIRST + " Templates write {{name}} for a name."
    fixed_run(literal, tmp_path / "runs" / "one", tmp_path / "c.sqlite")
    code, _, err = cli(monkeypatch, capsys, "export", "one", "--to", "mlflow://prompts/braces")
    assert code == 2 and "cannot go to the registry" in err
    assert mlflow_client(registry).search_prompts(filter_string="name='braces'") == []


def test_decoding_options_travel_with_the_registered_version(registry, tmp_path, monkeypatch):
    from promptlearn.export.mlflow_export import export_to_registry
    from promptlearn.gate import read_prompt_source

    class Guided:
        name: ClassVar[str] = "guided-registry-test"

        def run(self, ctx: Any) -> None:
            ctx.propose(FIRST, (ctx.seed_candidate.id,), "fixed", {"guidance": 1.5})

    register_optimizer(Guided)
    try:
        with FakeLM(wording_sensitive_responder):
            optimize(contract_task(), Guided.name, seed=0, run_dir=tmp_path / "run", cache_path=tmp_path / "c")
    finally:
        _PLUGINS.pop(Guided.name, None)
    reg = export_to_registry(tmp_path / "run", "mlflow://prompts/guided")
    assert reg.decoding == {"guidance": 1.5}
    where, key, prompt, decoding = read_prompt_source(f"mlflow://prompts/guided/{reg.version}")
    assert (prompt, decoding, key) == (FIRST, {"guidance": 1.5}, None)
    assert read_registry_prompt("mlflow://prompts/guided").tags["promptlearn.decoding"] == '{"guidance": 1.5}'


# ---- the embedded model ----------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.model
@requires_model
def test_embedded_model_run_logged_registered_and_gated(registry, tmp_path, monkeypatch, capsys):
    """A real optimization logs to MLflow; its best prompt goes to the registry; `check` on `@production`, with
    the model answering again (no cache), gives exactly the run's test score."""
    from promptlearn.local import get_model

    monkeypatch.setenv("PROMPTLEARN_THREADS", os.environ.get("PROMPTLEARN_THREADS", "1"))
    get_model("smollm2")
    task = tiny_pirate(tmp_path)
    res = optimize(task, budget=40, seed=0, run_dir=tmp_path / "run", cache_path=tmp_path / "c.sqlite",
                   tracking={"mlflow": registry.uri, "experiment": "embedded"})
    assert res.tracking["error"] is None and res.best.test is not None
    client = mlflow_client(registry)
    run = client.get_run(res.tracking["run_id"])
    assert run.data.params["target_model"] == "local/smollm2" and run.data.params["task"] == "pirate-tiny"
    assert run.data.params["budget.max_calls"] == "40"
    assert run.data.tags["promptlearn.run_id"] == res.run_id
    history = client.get_metric_history(run.info.run_id, "best_val")
    assert len(history) == progress_events(tmp_path / "run") + 1
    assert run.data.metrics["best_test"] == res.best.test and run.data.metrics["seed_test"] == res.seed.test
    assert client.get_metric_history(run.info.run_id, "calls")[-1].value == res.ledger.calls
    assert sorted(a.path for a in client.list_artifacts(run.info.run_id)) == sorted(ARTIFACTS)

    code, out, err = cli(monkeypatch, capsys, "export", tmp_path / "run", "--to", "mlflow://prompts/pirate-tiny",
                         "--alias", "production")
    assert code == 0, err
    assert read_registry_prompt("mlflow://prompts/pirate-tiny@production").tags["promptlearn.mlflow_run_id"] == \
        run.info.run_id
    code, out, err = cli(monkeypatch, capsys, "check", task, "--prompt-from", "mlflow://prompts/pirate-tiny@production",
                         "--split", "test", "--json", "--no-cache")
    assert code in (0, 1), err
    rep = json.loads(out)
    n_prompts = 1 if res.best.prompt == res.seed.prompt else 2
    assert rep["calls"] == n_prompts * rep["n_examples"] and rep["cached_calls"] == 0  # the model ran again
    assert rep["score"] == res.best.test and rep["seed_score"] == res.seed.test
    assert rep["checks"] == dict(res.best.test_checks)


# ---- a tracker that dies (last: it kills this module's server) -------------------------------------------------


def lineage(run_dir: Path) -> list[tuple[str, str]]:
    return [(c["id"], c["status"]) for c in SQLiteRunStore(run_dir, create=False).candidates()]


def test_the_tracker_killed_mid_run_leaves_a_finished_optimization_and_one_warning(server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow's own retry setting: fail at once
    task = contract_task(max_calls=120)
    with FakeLM(wording_sensitive_responder):
        plain = optimize(task, "evolve", seed=4, run_dir=tmp_path / "plain", cache_path=tmp_path / "a.sqlite")

    def kill_after_two(ctx: Any) -> None:
        """At the second proposal, once the MLflow run exists and holds metrics, the server dies."""
        import time

        if ctx.proposals >= 2 and server.proc is not None and server.proc.poll() is None:
            deadline, client = time.monotonic() + 120, mlflow_client(server)
            query = f"tags.`promptlearn.run_id` = '{ctx.store.run_id}'"
            while time.monotonic() < deadline:
                runs = client.search_runs([client.get_experiment_by_name("killed").experiment_id], query) \
                    if client.get_experiment_by_name("killed") else []
                if runs and runs[0].data.metrics:
                    break
                time.sleep(0.2)
            server.kill()

    with warnings.catch_warnings(record=True) as caught, FakeLM(wording_sensitive_responder):
        warnings.simplefilter("always")
        res = optimize(task, "evolve", seed=4, run_dir=tmp_path / "tracked", cache_path=tmp_path / "b.sqlite",
                       tracking={"mlflow": server.uri, "experiment": "killed"}, on_progress=kill_after_two)
    assert server.proc is not None and server.proc.poll() is not None  # it really died mid-run
    told = [str(w.message) for w in caught if issubclass(w.category, TrackingWarning)]
    assert len(told) == 1 and "MLflow tracking stopped" in told[0] and server.uri in told[0], told
    assert res.tracking["error"] and res.tracking["run_id"]  # the run had started there before the kill
    store = SQLiteRunStore(tmp_path / "tracked", create=False)
    assert store.get_meta("status") == "finished" and store.get_meta("mlflow")["error"] == res.tracking["error"]
    assert lineage(tmp_path / "tracked") == lineage(tmp_path / "plain")  # the same optimization, untouched
    assert (res.best.id, res.best.test, res.stop_reason) == (plain.best.id, plain.best.test, plain.stop_reason)


def test_cli_says_at_the_end_that_tracking_failed(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    task = write_task(tmp_path / "task.yaml")
    dead = f"http://127.0.0.1:{free_port()}"
    with FakeLM(wording_sensitive_responder):
        code, out, err = cli(monkeypatch, capsys, "optimize", task, "--mlflow", dead, "--run-dir", tmp_path / "run",
                             "--cache", tmp_path / "c.sqlite")
    assert code == 0 and "best prompt:" in out
    assert err.count("MLflow tracking stopped") == 1  # the warning when it failed
    assert err.strip().splitlines()[-1].startswith("promptlearn: warning: MLflow tracking failed")  # and at the end
    assert yaml.safe_load((tmp_path / "run" / "run.yaml").read_text())["task"]["name"] == "contract"


def test_a_uri_mlflow_has_no_store_for_is_one_warning_and_a_finished_run(tmp_path):
    with warnings.catch_warnings(record=True) as caught, FakeLM(wording_sensitive_responder):
        warnings.simplefilter("always")
        res = optimize(contract_task(), seed=0, run_dir=tmp_path / "run", cache_path=tmp_path / "c.sqlite",
                       tracking="nosuchscheme://tracker")
    told = [str(w.message) for w in caught if issubclass(w.category, TrackingWarning)]
    assert len(told) == 1 and "nosuchscheme://tracker" in told[0], told
    assert res.tracking["run_id"] is None and res.tracking["error"] == told[0].split("stopped: ")[1].split("; the")[0]
    assert SQLiteRunStore(tmp_path / "run", create=False).get_meta("status") == "finished"
