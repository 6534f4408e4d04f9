"""The evaluation engine on the real litellm call path: cache, ledger, hard budget, retries, multi-turn history.

Scripted models are `fake/<x>` (FakeLM) or `openai/loopback` against the loopback server; one test runs the
embedded SmolLM2 model.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from promptlearn.engine import Evaluator, evaluate
from promptlearn.errors import ModelError
from promptlearn.lm import Ledger
from promptlearn.task import load_task, task_from_dict
from promptlearn.testing_server import FaultPlan, LoopbackServer

from conftest import requires_model

REPO = Path(__file__).resolve().parents[1]
PIRATE = REPO / "tasks" / "pirate.yaml"


def make_task(n: int = 5, *, model: Any = "fake/x", budget: dict | None = None, rows: list | None = None,
              **extra: Any):
    rows = rows if rows is not None else [{"id": f"ex{i}", "user": f"question {i}"} for i in range(n)]
    raw = {"name": "t", "model": model, "prompt": "Start every reply with Ahoy.",
           "data": [{"examples": rows, "split": "val"}],
           "checks": [{"type": "starts_with", "name": "ahoy", "value": "Ahoy"}], **extra}
    if budget:
        raw["budget"] = budget
    return task_from_dict(raw)


@pytest.fixture
def evaluator_factory(tmp_path):
    made: list[Evaluator] = []

    def make(task, **kw) -> Evaluator:
        kw.setdefault("cache_path", tmp_path / "cache.sqlite")
        ev = Evaluator(task, **kw)
        made.append(ev)
        return ev

    yield make
    for ev in made:
        ev.close()


# ---- scoring ------------------------------------------------------------------------------------------


def test_scores_each_example_with_task_checks(fake_lm, evaluator_factory):
    fake_lm.responder = lambda msgs: "Ahoy there" if "1" in msgs[-1]["content"] else "Hello"
    task = make_task(4)
    ev = evaluator_factory(task)
    res = ev.evaluate(task.prompt, task.examples("val"), split="val")
    assert res.complete and res.stop_reason is None
    assert list(res.results) == ["ex0", "ex1", "ex2", "ex3"]
    assert res.per_example() == {"ex0": 0.0, "ex1": 1.0, "ex2": 0.0, "ex3": 0.0}
    assert res.score == 0.25 and res.check_rates() == {"ahoy": 0.25}
    assert "ahoy" in res.results["ex0"].feedback
    assert res.usage.calls == 4 and res.usage.cached_calls == 0
    assert res.usage.prompt_tokens > 0 and res.usage.completion_tokens == 5  # word counts: 2 + 1 + 1 + 1


# ---- cache ----------------------------------------------------------------------------------------------


def test_second_evaluation_is_all_cache_hits(fake_lm, evaluator_factory):
    fake_lm.responder = lambda msgs: "Ahoy " + msgs[-1]["content"]
    task = make_task(5)
    ev = evaluator_factory(task)
    first = ev.evaluate(task.prompt, task.examples("val"))
    assert fake_lm.calls == 5 and first.usage.calls == 5
    second = ev.evaluate(task.prompt, task.examples("val"))
    assert fake_lm.calls == 5
    assert second.usage.calls == 0 and second.usage.cached_calls == 5
    assert ev.ledger.total.calls == 5 and ev.ledger.total.cached_calls == 5
    assert second.per_example() == first.per_example()
    assert [r.turns[0].reply for r in second.results.values()] == [r.turns[0].reply for r in first.results.values()]


def test_cache_is_shared_across_evaluators_and_keyed_on_prompt(fake_lm, evaluator_factory):
    task = make_task(3)
    evaluator_factory(task).evaluate(task.prompt, task.examples("val"))
    assert fake_lm.calls == 3
    again = evaluator_factory(task).evaluate(task.prompt, task.examples("val"))  # new process would look the same
    assert fake_lm.calls == 3 and again.usage.cached_calls == 3
    other = evaluator_factory(task).evaluate("A different prompt.", task.examples("val"))
    assert fake_lm.calls == 6 and other.usage.calls == 3


def test_use_cache_false_always_calls(fake_lm, evaluator_factory):
    task = make_task(2)
    ev = evaluator_factory(task, use_cache=False)
    ev.evaluate(task.prompt, task.examples("val"))
    ev.evaluate(task.prompt, task.examples("val"))
    assert fake_lm.calls == 4 and ev.ledger.total.cached_calls == 0


def test_sample_index_separates_samples_only_when_temperature_positive(fake_lm, evaluator_factory):
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    hot = evaluator_factory(make_task(1, model={"name": "fake/x", "temperature": 0.8}))
    a = hot.run(hot.lm.complete(msgs, sample=0))
    b = hot.run(hot.lm.complete(msgs, sample=1))
    assert fake_lm.calls == 2 and not a.cached and not b.cached
    assert hot.run(hot.lm.complete(msgs, sample=1)).cached and fake_lm.calls == 2
    assert [p.get("seed") for p in fake_lm.params] == [0, 1]  # a different seed per sample

    cold = evaluator_factory(make_task(1, model={"name": "fake/x", "temperature": 0}))
    cold.run(cold.lm.complete(msgs, sample=0))
    assert cold.run(cold.lm.complete(msgs, sample=1)).cached  # greedy: every sample is the same request
    assert fake_lm.calls == 3


# ---- hard budget ---------------------------------------------------------------------------------------


def test_max_calls_budget_stops_evaluation(fake_lm, evaluator_factory):
    task = make_task(5, budget={"max_calls": 3})
    ev = evaluator_factory(task)
    res = ev.evaluate(task.prompt, task.examples("val"))
    assert not res.complete
    assert "max_calls" in res.stop_reason
    assert fake_lm.calls == 3 and ev.ledger.total.calls == 3
    assert len(res.results) == 3


@pytest.mark.parametrize("max_calls", [0, 1, 3, 7])
def test_budget_never_exceeded_under_concurrency(fake_lm, evaluator_factory, max_calls):
    async def slow_acompletion(*a, **k):  # hold calls in flight so many race for the budget at once
        await asyncio.sleep(0.01)
        return original(*a, **k)

    from promptlearn.lm import litellm

    handler = next(p["custom_handler"] for p in litellm().custom_provider_map if p["provider"] == "fake")
    original = handler.completion
    handler.acompletion = slow_acompletion
    try:
        task = make_task(20, model={"name": "fake/x", "concurrency": 8}, budget={"max_calls": max_calls})
        ev = evaluator_factory(task)
        res = ev.evaluate(task.prompt, task.examples("val"))
    finally:
        del handler.acompletion
    assert fake_lm.calls == max_calls and ev.ledger.total.calls == max_calls
    assert not res.complete and "max_calls" in res.stop_reason
    assert len(res.results) == max_calls


def test_max_tokens_budget_stops(fake_lm, evaluator_factory):
    fake_lm.responder = lambda msgs: "Ahoy matey"
    task = make_task(10, model={"name": "fake/x", "max_tokens": 20}, budget={"max_tokens": 100})
    ev = evaluator_factory(task)
    res = ev.evaluate(task.prompt, task.examples("val"))
    assert not res.complete and "max_tokens" in res.stop_reason
    assert 0 < fake_lm.calls < 10
    assert ev.ledger.total.tokens <= 100


def test_cache_hits_count_toward_max_calls_but_cost_nothing(fake_lm, evaluator_factory):
    task = make_task(3, budget={"max_calls": 6, "max_tokens": 10_000})
    ev = evaluator_factory(task)
    first = ev.evaluate(task.prompt, task.examples("val"))
    again = ev.evaluate(task.prompt, task.examples("val"))  # every request is cached: 3 requests, 0 calls
    assert first.complete and again.complete and fake_lm.calls == 3
    assert (again.usage.calls, again.usage.cached_calls, again.usage.requests) == (0, 3, 3)
    assert again.usage.tokens == 0 and again.usage.usd == 0  # tokens and USD count real spend only
    third = ev.evaluate(task.prompt, task.examples("val"))  # 6 requests made: a seventh passes max_calls
    assert not third.complete and "max_calls" in third.stop_reason and fake_lm.calls == 3
    assert third.stop is not None and third.stop.limit == "max_calls" and third.stop.used == 6


# ---- retries against the loopback server --------------------------------------------------------------


def loopback_task(srv: LoopbackServer, n: int = 1, **model: Any):
    return make_task(n, model={"name": "openai/loopback", "api_base": srv.base_url, **model})


def test_transient_faults_are_retried(evaluator_factory):
    with LoopbackServer(faults=FaultPlan.sequence(["429", "500", "503"]), retry_after=0.01) as srv:
        task = loopback_task(srv)
        ev = evaluator_factory(task)
        res = ev.evaluate(task.prompt, task.examples("val"))
        assert [r["fault"] for r in srv.requests] == ["429", "500", "503", None]
    assert res.complete and res.results["ex0"].turns[0].reply == "Echo: question 0"
    assert ev.ledger.total.calls == 1 and ev.ledger.total.retries == 3


def test_persistent_fault_is_model_error_after_retries(evaluator_factory):
    with LoopbackServer(faults=FaultPlan.always("500")) as srv:
        task = loopback_task(srv, retries=2)
        ev = evaluator_factory(task)
        with pytest.raises(ModelError, match="failed after 3 attempts"):
            ev.evaluate(task.prompt, task.examples("val"))
        assert len(srv.requests) == 3
    assert ev.ledger.total.calls == 0
    assert len(ev.cache) == 0  # a failure is never cached


def test_retry_after_header_is_honored(evaluator_factory, monkeypatch):
    monkeypatch.setenv("PROMPTLEARN_BACKOFF_BASE", "0.001")
    with LoopbackServer(retry_after=1.0) as srv:
        task = loopback_task(srv)
        ev = evaluator_factory(task)
        ev.run(ev.lm.complete([{"role": "user", "content": "warm up"}]))  # connection set up outside the clock
        srv.faults = FaultPlan.sequence(["429"])
        start = time.perf_counter()
        res = ev.evaluate(task.prompt, task.examples("val"))
        elapsed = time.perf_counter() - start
        gap = srv.requests[-1]["time"] - srv.requests[-2]["time"]
    assert res.complete and res.usage.retries == 1 and [r["fault"] for r in srv.requests] == [None, "429", None]
    assert elapsed >= 0.9 and gap >= 0.9


@pytest.mark.parametrize("transport", ["litellm", "http"])
def test_fatal_error_is_not_retried(evaluator_factory, monkeypatch, transport):
    if transport == "litellm":
        from promptlearn.lm import litellm

        owner, name = litellm(), "acompletion"
    else:
        from promptlearn import openai_http

        owner, name = openai_http, "chat"
    attempts = []
    real = getattr(owner, name)

    async def counting(*a, **k):
        attempts.append(1)
        return await real(*a, **k)

    monkeypatch.setattr(owner, name, counting)
    with LoopbackServer() as srv:  # a wrong path: 404 Not Found is fatal, retrying cannot help
        task = make_task(1, model={"name": "openai/loopback", "api_base": srv.base_url + "/nothing-here",
                                   "retries": 3, "transport": transport})
        ev = evaluator_factory(task)
        with pytest.raises(ModelError, match="openai/loopback: NotFoundError"):
            ev.evaluate(task.prompt, task.examples("val"))
    assert attempts == [1]


def test_retry_after_parsing():
    from promptlearn.lm import _retry_after

    class Err(Exception):
        pass

    e = Err()
    assert _retry_after(e) is None
    e.headers = {"Retry-After": "2"}
    assert _retry_after(e) == 2.0
    e.headers = {"retry-after-ms": "150"}
    assert _retry_after(e) == 0.15
    e.headers = {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}  # an HTTP date: fall back to backoff
    assert _retry_after(e) is None


# ---- the remote path sends exactly the task's request --------------------------------------------------


def test_openai_model_string_sends_system_and_user_exactly(evaluator_factory):
    pirate = load_task(PIRATE)
    examples = pirate.examples("val")[:3]
    with LoopbackServer(responder=lambda body: "Ahoy! " + body["messages"][-1]["content"]) as srv:
        task = load_task(PIRATE, overrides={"model": {"name": "openai/loopback", "api_base": srv.base_url}})
        assert task.prompt == pirate.prompt and task.model.max_tokens == pirate.model.max_tokens
        ev = evaluator_factory(task)
        res = ev.evaluate(task.prompt, examples, split="val")
        bodies = sorted((r["body"] for r in srv.requests), key=lambda b: b["messages"][-1]["content"])
    assert res.complete and res.score == 1.0
    expected = sorted(([{"role": "system", "content": pirate.prompt}, {"role": "user", "content": e.turns[0].user}]
                       for e in examples), key=lambda m: m[-1]["content"])
    assert [b["messages"] for b in bodies] == expected
    for b in bodies:
        assert b["model"] == "loopback"
        assert b["temperature"] == 0 and b["max_tokens"] == pirate.model.max_tokens and b.get("seed") == 0
        assert not b.get("stream")
    assert [r.turns[0].reply for r in res.results.values()] == ["Ahoy! " + e.turns[0].user for e in examples]


# ---- multi-turn -------------------------------------------------------------------------------------------


def test_multi_turn_history_uses_own_replies_and_given_turns(fake_lm, evaluator_factory):
    fake_lm.responder = lambda msgs: f"Ahoy reply {sum(m['role'] == 'user' for m in msgs)}"
    row = {"id": "chat", "messages": [
        {"role": "user", "content": "first"},
        {"role": "user", "content": "second"}, {"role": "assistant", "content": "a given answer"},
        {"role": "user", "content": "third"}]}
    task = make_task(rows=[row])
    ev = evaluator_factory(task)
    res = ev.evaluate(task.prompt, task.examples("val"))
    assert fake_lm.history == [
        [{"role": "system", "content": task.prompt}, {"role": "user", "content": "first"}],
        [{"role": "system", "content": task.prompt}, {"role": "user", "content": "first"},
         {"role": "assistant", "content": "Ahoy reply 1"}, {"role": "user", "content": "second"},
         {"role": "assistant", "content": "a given answer"}, {"role": "user", "content": "third"}],
    ]
    turns = res.results["chat"].turns
    assert [t.reply for t in turns] == ["Ahoy reply 1", "Ahoy reply 3"]  # only generated turns are scored
    assert all(set(t.checks) == {"ahoy"} for t in turns)


def test_turn_checks_apply_only_to_their_turn(fake_lm, evaluator_factory):
    fake_lm.enqueue("Ahoy one", "Ahoy two")
    row = {"id": "c", "messages": [
        {"role": "user", "content": "a", "checks": [{"type": "contains", "name": "has_one", "value": "one"}]},
        {"role": "user", "content": "b"}]}
    task = make_task(rows=[row])
    res = evaluator_factory(task).evaluate(task.prompt, task.examples("val"))
    t1, t2 = res.results["c"].turns
    assert set(t1.checks) == {"has_one", "ahoy"} and set(t2.checks) == {"ahoy"}
    assert res.score == 1.0


# ---- placeholders ---------------------------------------------------------------------------------------


def test_placeholders_rendered_per_example(fake_lm, evaluator_factory):
    rows = [{"id": "ann", "user": "hi", "vars": {"user_name": "Ann"}},
            {"id": "bob", "user": "hi", "vars": {"user_name": "Bob"}},
            {"id": "none", "user": "hi"}]
    task = task_from_dict({"name": "t", "model": "fake/x", "prompt": "You help {user_name}. Say Ahoy.",
                           "protected": ["Say Ahoy."], "data": [{"examples": rows, "split": "val"}]})
    evaluator_factory(task).evaluate(task.prompt, task.examples("val"))
    systems = sorted(h[0]["content"] for h in fake_lm.history)
    assert systems == ["You help Ann. Say Ahoy.", "You help Bob. Say Ahoy.", "You help {user_name}. Say Ahoy."]
    assert task.violations("You help someone.") == ["protected clause 'Say Ahoy.'", "placeholder '{user_name}'"]


# ---- public evaluate() and the embedded model ---------------------------------------------------------


def test_evaluate_function_uses_task_seed_prompt(fake_lm, tmp_path):
    task = make_task(2)
    res = evaluate(task, split="val", cache_path=tmp_path / "c.sqlite")
    assert res.prompt == task.prompt and res.split == "val" and len(res.results) == 2
    assert all(h[0]["content"] == task.prompt for h in fake_lm.history)


def test_ledger_reservation_blocks_concurrent_overrun():
    from promptlearn.errors import BudgetExceeded
    from promptlearn.lm import Budget

    led = Ledger(Budget(max_calls=2))
    led.reserve(0)
    led.reserve(0)
    with pytest.raises(BudgetExceeded, match="max_calls"):
        led.reserve(0)
    led.release(0)
    led.reserve(0)


@pytest.mark.model
@requires_model
def test_real_model_pirate_val_and_cache(tmp_path):
    task = load_task(PIRATE, overrides={
        "model": {"max_tokens": 8},
        "data": [{"file": "data/pirate.jsonl", "limit": 5}],
        "splits": {"train": 0.0, "val": 1.0, "test": 0.0}})
    examples = task.examples("val")
    assert len(examples) == 5
    first = evaluate(task, split="val", cache_path=tmp_path / "c.sqlite")
    assert first.complete and first.usage.calls == len(examples) and first.usage.cached_calls == 0
    assert 0.0 <= first.score <= 1.0
    assert all(r.turns[0].reply.strip() for r in first.results.values())
    assert first.usage.completion_tokens > 0 and first.usage.usd == 0.0
    second = evaluate(task, split="val", cache_path=tmp_path / "c.sqlite")
    assert second.usage.calls == 0 and second.usage.cached_calls == len(examples)
    assert second.score == first.score
    assert [r.turns[0].reply for r in second.results.values()] == [r.turns[0].reply for r in first.results.values()]
