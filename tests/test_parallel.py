"""Parallel search: parallel 1 is the serial loop byte for byte; P > 1 decides in proposal order whatever the
timing; the budget holds with P proposals in flight; optimizers use only the OptimizerContext."""

from __future__ import annotations

import importlib.util
import json
import random
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from conftest import requires_model
from promptlearn.context import OptimizerContext
from promptlearn.errors import RunError, TaskError
from promptlearn.lm import Budget, Ledger
from promptlearn.run import optimize
from promptlearn.store import SQLiteRunStore
from promptlearn.testing import FakeLM, contract_task, wording_sensitive_responder
from promptlearn.testing_server import LoopbackServer

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
GOLDEN = json.loads((FIXTURES / "serial_lineage.json").read_text())
HAS = {"optuna": importlib.util.find_spec("optuna") is not None, "dspy": importlib.util.find_spec("dspy") is not None}


def _case_id(case: dict) -> str:
    return f"{case['optimizer']}-{case['budget']}"


@pytest.mark.parametrize("case", GOLDEN, ids=_case_id)
def test_parallel_1_is_todays_serial_lineage_byte_for_byte(case, tmp_path):
    """serial_lineage.json was written by the loop before parallel search existed (make_serial_lineage.py)."""
    if case["optimizer"] in HAS and not HAS[case["optimizer"]]:
        pytest.skip(f"needs promptlearn[{case['optimizer']}]")
    from make_serial_lineage import run_case

    got = run_case(case["optimizer"], case["responder"], case["budget"], {**case["options"], "parallel": 1}, tmp_path)
    got["options"] = case["options"]
    assert json.dumps(got, sort_keys=True) == json.dumps(case, sort_keys=True)


def _lineage(run_dir: Path) -> dict[str, Any]:
    store = SQLiteRunStore(run_dir, create=False)
    lin = store.lineage()
    lin.pop("run_id")
    return lin


@pytest.mark.parametrize("optimizer", ["evolve", "optuna"])
def test_parallel_search_differs_from_serial_but_is_deterministic_and_within_budget(optimizer, tmp_path):
    if optimizer in HAS and not HAS[optimizer]:
        pytest.skip(f"needs promptlearn[{optimizer}]")
    task = contract_task(max_calls=160, optimizer=optimizer)
    runs = {}
    for name, p in [("p1", 1), ("p8a", 8), ("p8b", 8)]:
        with FakeLM(wording_sensitive_responder) as fake:
            res = optimize(task, seed=3, run_dir=tmp_path / name, cache_path=tmp_path / f"{name}.sqlite",
                           parallel=p)
        assert res.ledger.requests <= 160 and fake.calls <= 160
        runs[name] = res
    assert _lineage(tmp_path / "p8a") == _lineage(tmp_path / "p8b")
    assert _lineage(tmp_path / "p8a") != _lineage(tmp_path / "p1")  # P children per round: another search
    assert runs["p8a"].ledger.requests == runs["p8b"].ledger.requests
    assert runs["p8a"].stop_reason and runs["p8a"].stop_reason.startswith("budget stop")
    # A budget stop still scores seed and best on test (the test reserve is held back from the search).
    assert runs["p8a"].seed.test is not None and runs["p8a"].best.test is not None


def _loopback_task(base_url: str, max_calls: int, parallel: int, concurrency: int = 16) -> Any:
    from promptlearn.task import task_from_dict

    users = [f"Question number {i}: tell me about topic {i * 7 % 11}" for i in range(24)]
    model = {"name": "openai/loopback", "api_base": base_url, "max_tokens": 16, "timeout": 5, "retries": 8,
             "concurrency": concurrency}
    return task_from_dict({
        "name": "par", "prompt": "You are a pirate. Start every reply with the word Ahoy.", "protected": ["Ahoy"],
        "model": model, "proposer": model,
        "data": [{"examples": [{"id": f"q{i}", "user": u} for i, u in enumerate(users)]}],
        "checks": [{"type": "starts_with", "value": "Ahoy", "name": "ahoy"}],
        "splits": {"train": 0.4, "val": 0.3, "test": 0.3, "seed": 0},
        "budget": {"max_calls": max_calls}, "optimizer": {"name": "evolve", "parallel": parallel}})


def _responder(body: dict) -> str:
    return wording_sensitive_responder(body["messages"])


def test_p16_same_lineage_whatever_the_timing_through_the_real_http_path(tmp_path):
    """Two P=16 runs against the loopback server, one with random per-request latency (so evaluations finish
    in another order every time): the same lineage, scores, requests and stop; the budget never passed."""
    rnd, lock = random.Random(5), threading.Lock()

    def jitter(body: dict) -> float:
        with lock:
            return rnd.uniform(0, 0.03)

    out = {}
    for name, latency in [("steady", 0.0), ("jitter", jitter)]:
        with LoopbackServer(_responder, latency=latency) as srv:
            res = optimize(_loopback_task(srv.base_url, 200, 16), seed=3, run_dir=tmp_path / name,
                           cache_path=tmp_path / f"{name}.sqlite")
            sent = len(srv.requests)
        assert res.ledger.requests <= 200 and sent <= 200
        out[name] = (res, _lineage(tmp_path / name), SQLiteRunStore(tmp_path / name, create=False).scores())
    (a, la, sa), (b, lb, sb) = out["steady"], out["jitter"]
    assert la == lb and sa == sb
    assert (a.ledger.requests, a.stop_reason, a.best.prompt) == (b.ledger.requests, b.stop_reason, b.best.prompt)
    assert len(la["nodes"]) > 16  # several rounds of 16


def test_resume_after_ctrl_c_with_p8_replays_the_lineage(tmp_path):
    task = contract_task(max_calls=160)
    with FakeLM(wording_sensitive_responder) as fake:
        ref = optimize(task, seed=3, run_dir=tmp_path / "ref", cache_path=tmp_path / "c0.sqlite", parallel=8)
        n = fake.calls

    with FakeLM() as fake:
        def stop_halfway(messages: Any) -> str:
            if fake.calls == n // 2:
                raise KeyboardInterrupt
            return wording_sensitive_responder(messages)

        fake.responder = stop_halfway
        with pytest.raises(KeyboardInterrupt):
            optimize(task, seed=3, run_dir=tmp_path / "r", cache_path=tmp_path / "c1.sqlite", parallel=8)
        assert SQLiteRunStore(tmp_path / "r", create=False).get_meta("status") == "interrupted"
        fake.responder = wording_sensitive_responder
        with pytest.raises(RunError, match="parallel 8"):  # a resumed run keeps its own P
            optimize(task, resume=tmp_path / "r", cache_path=tmp_path / "c1.sqlite", parallel=4)
        res = optimize(task, resume=tmp_path / "r", cache_path=tmp_path / "c1.sqlite")
        total = fake.calls - 1
    assert _lineage(tmp_path / "r")["nodes"] == _lineage(tmp_path / "ref")["nodes"]
    assert res.best.prompt == ref.best.prompt and res.ledger.requests == ref.ledger.requests
    assert n <= total <= n + task.model.max_concurrency  # only calls cut off in flight are made again


def test_bad_parallel_is_a_task_error_before_any_call(tmp_path):
    with FakeLM() as fake:
        for bad in (0, -2, "four", 1.5):
            with pytest.raises(TaskError, match="optimizer.parallel"):
                optimize(contract_task(), run_dir=tmp_path / f"r{bad}", cache_path=tmp_path / "c.sqlite",
                         options={"parallel": bad})
        assert fake.calls == 0
    assert not any(tmp_path.glob("r*"))


def test_default_parallel_is_1_for_the_embedded_model_and_fills_a_remote_models_concurrency():
    from promptlearn.run import default_parallel
    from promptlearn.task import task_from_dict

    def task(model: dict) -> Any:
        return task_from_dict({"name": "d", "prompt": "p", "model": model, "data": [{"examples": [{"user": "u"}]}],
                               "checks": [{"type": "starts_with", "value": "A"}]})

    assert default_parallel(task({"name": "local/smollm2-135m"})) == 1
    assert default_parallel(task({"name": "openai/x", "concurrency": 16})) > 1
    assert default_parallel(task({"name": "openai/x", "concurrency": 16})) >= default_parallel(
        task({"name": "openai/x", "concurrency": 4}))


def test_a_grant_holds_its_calls_for_its_own_requests_only():
    ledger = Ledger(Budget(max_calls=10))
    g = ledger.open_grant(6)
    assert ledger.free_calls() == 4
    for _ in range(4):  # others may take only what no grant holds
        ledger.reserve(0)
    with pytest.raises(Exception, match="max_calls"):
        ledger.reserve(0)
    token = Ledger.use_grant(g)
    try:
        for _ in range(6):  # the grant's own requests draw on it
            ledger.reserve(0)
        with pytest.raises(Exception, match="max_calls"):  # past its grant: the common pool, which is empty
            ledger.reserve(0)
    finally:
        Ledger.reset_grant(token)
    ledger.close_grant(g)
    assert ledger.free_calls() == 0
    h = ledger.open_grant(5)
    assert h.size == 0  # nothing free to grant


def test_an_unused_grant_is_given_back():
    ledger = Ledger(Budget(max_calls=10))
    g = ledger.open_grant(8)
    token = Ledger.use_grant(g)
    ledger.hit()  # a cache hit counts as a request, from the grant
    Ledger.reset_grant(token)
    ledger.close_grant(g)
    assert ledger.free_calls() == 9 and ledger.total.requests == 1


class StrictContext:
    """Only what OptimizerContext lists: anything else raises, so an optimizer reaching past it fails."""

    ALLOWED = set(OptimizerContext.__annotations__) | {
        n for n in vars(OptimizerContext) if not n.startswith("_")}

    def __init__(self, ctx: Any):
        object.__setattr__(self, "_ctx", ctx)

    def __getattr__(self, name: str) -> Any:
        if name not in StrictContext.ALLOWED:
            raise AttributeError(f"optimizer used ctx.{name}, which OptimizerContext does not list")
        return getattr(object.__getattribute__(self, "_ctx"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"optimizer set ctx.{name}: the context is read-only")


@pytest.mark.parametrize("optimizer", ["evolve", "mutate", "optuna", "dspy"])
@pytest.mark.parametrize("parallel", [1, 4])
def test_builtin_optimizers_use_only_the_optimizer_context(optimizer, parallel, tmp_path, monkeypatch):
    if optimizer in HAS and not HAS[optimizer]:
        pytest.skip(f"needs promptlearn[{optimizer}]")
    import test_optimizer_contract as contract

    from promptlearn.optimizers import get_optimizer

    cls = get_optimizer(optimizer)
    run = cls.run
    monkeypatch.setattr(cls, "run", lambda self, ctx: run(self, StrictContext(ctx)))
    responder = {"mutate": contract.rewriting_responder, "dspy": contract.dspy_responder}.get(
        optimizer, wording_sensitive_responder)
    with FakeLM(responder):
        res = optimize(contract_task(max_calls=120, optimizer=optimizer), seed=3, run_dir=tmp_path / "r",
                       cache_path=tmp_path / "c.sqlite", parallel=parallel)
    assert res.candidates >= 2


@pytest.mark.model
@requires_model
def test_p4_on_the_embedded_model_is_deterministic_and_within_budget(tmp_path):
    """The real model (concurrency 1: the proposals' requests queue for it): two P=4 runs, separate caches."""
    from promptlearn.task import load_task

    task = load_task(Path(__file__).resolve().parent.parent / "tasks" / "pirate.yaml", overrides={
        "model": {"max_tokens": 12}, "data": [{"file": "data/pirate.jsonl", "limit": 10}]})
    runs = [optimize(task, "evolve", budget=40, seed=0, run_dir=tmp_path / f"r{i}", cache_path=tmp_path / f"c{i}",
                     parallel=4) for i in range(2)]
    assert all(r.ledger.requests <= 40 for r in runs)
    assert _lineage(tmp_path / "r0") == _lineage(tmp_path / "r1")
    assert SQLiteRunStore(tmp_path / "r0", create=False).get_meta("config")["parallel"] == 4
    assert len(runs[0].lineage["nodes"]) > 2 and runs[0].best.test is not None


def test_cli_parallel_flag_and_task_file_option(tmp_path, monkeypatch, capsys):
    from test_cli_export_check import cli, write_task

    path = write_task(tmp_path / "task.yaml")
    with FakeLM(wording_sensitive_responder):
        code, out, err = cli(monkeypatch, capsys, "optimize", path, "--parallel", "3", "--run-dir", tmp_path / "a",
                             "--cache", tmp_path / "c.sqlite", "--budget-calls", "60", "--json")
        assert code == 0, err
        assert SQLiteRunStore(tmp_path / "a", create=False).get_meta("config")["parallel"] == 3
        code, _, err = cli(monkeypatch, capsys, "optimize", path, "--parallel", "0", "--run-dir", tmp_path / "b")
        assert code == 2 and not (tmp_path / "b").exists()
        code, _, err = cli(monkeypatch, capsys, "optimize", path, "-o", "parallel=two", "--run-dir", tmp_path / "b")
        assert code == 2 and "optimizer.parallel" in err and not (tmp_path / "b").exists()
