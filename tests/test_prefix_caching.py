"""Pay for the system prompt once: run order that maximises prefix reuse without changing results, KV-cache reuse
on the embedded model, cacheable system blocks for Anthropic, and cached input tokens priced at their real price."""

from __future__ import annotations

import random
from typing import Any

import pytest

from promptlearn.engine import Evaluator
from promptlearn.task import task_from_dict
from promptlearn.testing_server import FaultPlan, LoopbackServer

from conftest import requires_model

PROMPT = "You help {team}. Start every reply with Ahoy."


def rows(n: int = 8, turns: int = 1) -> list[dict[str, Any]]:
    """Examples whose rendered system prompts differ ({team}), some multi-turn, ids not in sorted order."""
    out = []
    for i in range(n):
        msgs = [{"role": "user", "content": f"question {i} part {t}"} for t in range(turns + i % 2)]
        out.append({"id": f"ex{(i * 5) % n}", "messages": msgs, "vars": {"team": ["red", "blue", "green"][i % 3]}})
    return out


def make_task(model: Any = "fake/x", *, n: int = 8, turns: int = 1, prompt: str = PROMPT, **extra: Any):
    raw = {"name": "t", "model": model, "prompt": prompt, "data": [{"examples": rows(n, turns), "split": "val"}],
           "checks": [{"type": "starts_with", "name": "ahoy", "value": "Ahoy"}], **extra}
    return task_from_dict(raw)


@pytest.fixture
def evaluator_factory(tmp_path):
    made: list[Evaluator] = []

    def make(task, **kw) -> Evaluator:
        kw.setdefault("cache_path", tmp_path / f"cache{len(made)}.sqlite")
        ev = Evaluator(task, **kw)
        made.append(ev)
        return ev

    yield make
    for ev in made:
        ev.close()


def responder(msgs: list[dict[str, str]]) -> str:
    """Deterministic and history-dependent, so a wrong history or a swapped result would show."""
    ahoy = "Ahoy" if ("red" in msgs[0]["content"]) != ("1" in msgs[-1]["content"]) else "Hello"
    return f"{ahoy} {len(msgs)} {msgs[-1]['content']}"


# ---- order: maximise reuse, never change results ----------------------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 8])
def test_shuffled_input_order_gives_identical_results_and_scores(fake_lm, evaluator_factory, concurrency):
    fake_lm.responder = responder
    task = make_task({"name": "fake/x", "concurrency": concurrency}, turns=2)
    examples = task.examples("val")
    runs = []
    for seed in range(4):
        shuffled = list(examples)
        random.Random(seed).shuffle(shuffled)
        fake_lm.history.clear()
        ev = evaluator_factory(task, use_cache=False)
        res = ev.evaluate(task.prompt, shuffled, split="val")
        assert list(res.results) == [e.id for e in shuffled]  # results come back in the caller's order
        runs.append((res.score, {k: v for k, v in res.results.items()}, res.per_example(), list(fake_lm.history)))
    first = runs[0]
    assert 0 < first[0] < 1
    for score, results, per_example, history in runs[1:]:
        assert score == first[0] and per_example == first[2] and results == first[1]
        if concurrency == 1:
            assert history == first[3]  # the very same request sequence, whatever the input order


def test_concurrency_one_runs_conversations_back_to_back_sorted_by_system_prompt(fake_lm, evaluator_factory):
    fake_lm.responder = responder
    task = make_task({"name": "fake/x", "concurrency": 1}, turns=2)
    ev = evaluator_factory(task, use_cache=False)
    examples = task.examples("val")
    ev.evaluate(task.prompt, list(reversed(examples)), split="val")
    # every conversation's turns follow each other: each request extends the previous one or starts a new chat
    starts = [i for i, h in enumerate(fake_lm.history) if sum(m["role"] == "user" for m in h) == 1]
    assert len(starts) == len(examples)
    for i in range(1, len(fake_lm.history)):
        if i not in starts:
            prev, cur = fake_lm.history[i - 1], fake_lm.history[i]
            assert cur[:len(prev)] == prev and cur[len(prev)]["role"] == "assistant"
    # conversations run sorted by rendered system prompt, then user turns, then id
    firsts = [(fake_lm.history[i][0]["content"], fake_lm.history[i][1]["content"]) for i in starts]
    assert firsts == sorted(firsts)
    systems = [s for s, _ in firsts]
    assert len({s for s in systems}) == 3 and sum(a != b for a, b in zip(systems, systems[1:])) == 2


def test_order_is_canonical_even_under_retries(evaluator_factory):
    """Faults keyed on the request body: retries happen in place, and the request order and results do not
    depend on the input order."""
    seen = []
    for seed in range(3):
        with LoopbackServer(faults=FaultPlan.random(0.4, ("500", "503"), seed=7), retry_after=0.0) as srv:
            task = make_task({"name": "openai/loopback", "api_base": srv.base_url, "concurrency": 1, "retries": 20})
            examples = task.examples("val")
            random.Random(seed).shuffle(examples)
            ev = evaluator_factory(task, use_cache=False)
            res = ev.evaluate(task.prompt, examples, split="val")
            log = [(r["body"]["messages"][-1]["content"], r["fault"]) for r in srv.requests]
        assert res.complete and res.usage.retries > 0
        seen.append((res.per_example(), {k: v.turns for k, v in res.results.items()}, log))
    for other in seen[1:]:
        assert other == seen[0]


# ---- the embedded model reuses the KV cache of the shared prefix ------------------------------------------


@requires_model
@pytest.mark.model
def test_real_model_reuses_system_prefix_across_examples(evaluator_factory):
    from promptlearn.local import get_model

    long_prompt = "You are a careful assistant for a shipping company. " + " ".join(
        f"Rule {i}: answer in plain words and never mention rule {i}." for i in range(25))
    n = 5
    raw = {"name": "t", "model": {"name": "local/smollm2", "max_tokens": 3}, "prompt": long_prompt,
           "data": [{"examples": [{"id": f"q{i}", "user": f"{w} is my question?"}
                                  for i, w in enumerate(["Zebra", "Apple", "Mango", "Kiwi", "Lemon"])],
                     "split": "val"}],
           "checks": [{"type": "min_words", "value": 1}]}
    task = task_from_dict(raw)
    model = get_model("smollm2")
    examples = task.examples("val")
    ev = evaluator_factory(task, use_cache=False)
    order = ev.schedule(task.prompt, examples)
    tokens = [model.tokenize(model.render([{"role": "system", "content": long_prompt},
                                           {"role": "user", "content": ex.turns[0].user}])) for ex in order]
    shared = [_common(a, b) for a, b in zip(tokens, tokens[1:])]
    # the system message ends where the rendering of the system message alone stops agreeing with the request
    boundary = _common(model.tokenize(model.render([{"role": "system", "content": long_prompt}])), tokens[0])
    assert len(model.tokenize(long_prompt)) < boundary <= min(shared) and len(model.tokenize(long_prompt)) > 250

    model.llama.reset()  # nothing left from earlier tests: the first request pays in full
    res = ev.evaluate(task.prompt, examples, split="val")
    assert res.complete
    u = ev.ledger.total
    assert u.calls == n and u.prompt_tokens == sum(len(t) for t in tokens)
    # every request after the first reuses the system message, up to its message boundary (see LocalModel._prefill)
    assert u.cached_prompt_tokens == (n - 1) * boundary


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


# ---- APIs: the system prompt marked cacheable where the provider needs it; cached tokens at their price ----


class UsageServer(LoopbackServer):
    """A loopback server for /v1/chat/completions (OpenAI shape) and /v1/messages (Anthropic shape) that
    reports cached input tokens the way each provider does, and records every request body."""

    def __init__(self, prompt_tokens: int = 1000, cached: int = 800, created: int = 0, completion: int = 10):
        super().__init__()
        self.usage = (prompt_tokens, cached, created, completion)

    async def _serve(self) -> None:
        import asyncio

        from aiohttp import web

        self._closing = asyncio.Event()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/v1/messages", self._anthropic)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = self._runner.addresses[0][1]

    async def _openai(self, request):
        from aiohttp import web

        body = await request.json()
        self._record(body, request, None)
        prompt, cached, _, completion = self.usage
        return web.json_response({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Ahoy there"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                      "prompt_tokens_details": {"cached_tokens": cached}}})

    async def _anthropic(self, request):
        from aiohttp import web

        body = await request.json()
        self._record(body, request, None)
        prompt, cached, created, completion = self.usage
        return web.json_response({
            "id": "msg_1", "type": "message", "role": "assistant", "model": body["model"],
            "content": [{"type": "text", "text": "Ahoy there"}], "stop_reason": "end_turn", "stop_sequence": None,
            # Anthropic counts uncached input apart from cache reads and cache writes
            "usage": {"input_tokens": prompt - cached - created, "output_tokens": completion,
                      "cache_read_input_tokens": cached, "cache_creation_input_tokens": created}})


def price(model: str, *, uncached: int = 0, read: int = 0, write: int = 0, out: int = 0) -> float:
    """USD from litellm's bundled cost map, the way the provider bills."""
    from promptlearn.lm import litellm

    e = litellm().model_cost[model]
    return (uncached * e["input_cost_per_token"] + read * e["cache_read_input_token_cost"]
            + write * e.get("cache_creation_input_token_cost", 0.0) + out * e["output_cost_per_token"])


OPENAI_MODEL, ANTHROPIC_MODEL = "gpt-4o-mini", "claude-haiku-4-5"


def test_cost_map_has_the_models_and_cache_prices():
    from promptlearn.lm import litellm

    for m in (OPENAI_MODEL, ANTHROPIC_MODEL):
        e = litellm().model_cost[m]
        assert 0 < e["cache_read_input_token_cost"] < e["input_cost_per_token"]
    assert litellm().model_cost[ANTHROPIC_MODEL]["cache_creation_input_token_cost"] > \
        litellm().model_cost[ANTHROPIC_MODEL]["input_cost_per_token"]


@pytest.mark.parametrize("model", ["anthropic/claude-haiku-4-5", "claude-haiku-4-5",
                                   "bedrock/anthropic.claude-haiku-4-5-20251001-v1:0",
                                   "bedrock/converse/us.anthropic.claude-sonnet-4-5-20250929-v1:0",
                                   "vertex_ai/claude-sonnet-4-5@20250929"])
def test_anthropic_models_get_a_cacheable_system_block(model):
    from promptlearn.lm import cacheable

    msgs = [{"role": "system", "content": "Be a pirate."}, {"role": "user", "content": "hi"}]
    assert cacheable(model, msgs) == [
        {"role": "system",
         "content": [{"type": "text", "text": "Be a pirate.", "cache_control": {"type": "ephemeral"}}]},
        {"role": "user", "content": "hi"}]
    assert msgs[0] == {"role": "system", "content": "Be a pirate."}  # the caller's messages are not touched


@pytest.mark.parametrize("model", ["openai/gpt-4o-mini", "gpt-4o-mini", "ollama/llama3", "hosted_vllm/qwen",
                                   "local/smollm2", "fake/x", "bedrock/amazon.nova-lite-v1:0", "gemini/gemini-2.0"])
def test_other_providers_cache_prefixes_themselves_and_get_plain_messages(model):
    from promptlearn.lm import cacheable

    msgs = [{"role": "system", "content": "Be a pirate."}, {"role": "user", "content": "hi"}]
    assert cacheable(model, msgs) is msgs


def test_openai_requests_keep_the_system_prompt_first_and_byte_identical(evaluator_factory):
    with UsageServer() as srv:
        task = make_task({"name": "openai/gpt-4o-mini", "api_base": srv.base_url}, n=4,
                         prompt="You are a pirate. Start every reply with Ahoy.")
        ev = evaluator_factory(task, use_cache=False)
        res = ev.evaluate(task.prompt, task.examples("val"))
        bodies = [r["body"] for r in srv.requests]
    assert res.complete and len(bodies) >= 4
    assert all(b["messages"][0] == {"role": "system", "content": task.prompt} for b in bodies)
    assert not any("cache_control" in str(b) for b in bodies)


@pytest.mark.parametrize("transport", ["http", "litellm"])
def test_openai_cached_input_tokens_are_priced_at_the_cache_read_price(evaluator_factory, transport):
    with UsageServer(prompt_tokens=1000, cached=800, completion=10) as srv:
        task = make_task({"name": f"openai/{OPENAI_MODEL}", "api_base": srv.base_url, "transport": transport}, n=3)
        ev = evaluator_factory(task, use_cache=False)
        res = ev.evaluate(task.prompt, task.examples("val"))
        calls = len(srv.requests)
    u = ev.ledger.total
    assert res.complete and u.calls == calls and calls >= 3
    assert u.prompt_tokens == 1000 * calls and u.cached_prompt_tokens == 800 * calls
    expected = price(OPENAI_MODEL, uncached=200, read=800, out=10)
    assert u.usd == pytest.approx(expected * calls, rel=1e-9)
    assert u.usd < price(OPENAI_MODEL, uncached=1000, out=10) * calls  # less than paying every token in full


def test_anthropic_system_block_is_cacheable_and_cache_reads_and_writes_are_priced(evaluator_factory, monkeypatch):
    monkeypatch.setenv("PL_TEST_ANTHROPIC_KEY", "test-key-not-secret")
    with UsageServer(prompt_tokens=1000, cached=800, created=0, completion=10) as srv:
        model = {"name": f"anthropic/{ANTHROPIC_MODEL}", "api_base": srv.base_url.removesuffix("/v1"),
                 "api_key_env": "PL_TEST_ANTHROPIC_KEY"}
        task = make_task(model, n=3)
        ev = evaluator_factory(task, use_cache=False)
        res = ev.evaluate(task.prompt, task.examples("val"))
        bodies = [r["body"] for r in srv.requests]
        srv.usage = (1000, 700, 100, 10)  # a request that writes part of the prefix to the cache
        ev2 = evaluator_factory(task, use_cache=False)
        res2 = ev2.evaluate(task.prompt, task.examples("val")[:1])
    assert res.complete and res2.complete and len(bodies) >= 3
    for b, _ex in zip(bodies, sorted(task.examples("val"), key=lambda e: e.id)):
        assert b["system"] == [{"type": "text", "text": b["system"][0]["text"], "cache_control": {"type": "ephemeral"}}]
        assert b["system"][0]["text"].startswith("You help ") and "{team}" not in b["system"][0]["text"]
        assert all(m["role"] != "system" for m in b["messages"])
    u = ev.ledger.total
    assert u.prompt_tokens == 1000 * len(bodies) and u.cached_prompt_tokens == 800 * len(bodies)
    assert u.usd == pytest.approx(price(ANTHROPIC_MODEL, uncached=200, read=800, out=10) * len(bodies), rel=1e-9)
    assert ev2.ledger.total.usd == pytest.approx(price(ANTHROPIC_MODEL, uncached=200, read=700, write=100, out=10),
                                                 rel=1e-9)


def test_cache_key_ignores_cache_marking(evaluator_factory, monkeypatch):
    """Marking the system prompt for the provider does not change the response cache's key."""
    monkeypatch.setenv("PL_TEST_ANTHROPIC_KEY", "test-key-not-secret")
    with UsageServer() as srv:
        model = {"name": f"anthropic/{ANTHROPIC_MODEL}", "api_base": srv.base_url.removesuffix("/v1"),
                 "api_key_env": "PL_TEST_ANTHROPIC_KEY"}
        task = make_task(model, n=2)
        ev = evaluator_factory(task)
        ev.evaluate(task.prompt, task.examples("val"))
        first = len(srv.requests)
        ev.evaluate(task.prompt, task.examples("val"))
        assert len(srv.requests) == first  # all from the cache
    assert ev.ledger.total.cached_calls == first


# ---- threads: leave busy cores to the processes that are using them ---------------------------------------


def test_threads_take_the_idle_cores_or_the_env_override(monkeypatch):
    import os

    from promptlearn import local

    cpus = len(os.sched_getaffinity(0))
    monkeypatch.delenv("PROMPTLEARN_THREADS", raising=False)
    monkeypatch.setattr(local, "busy_elsewhere", lambda: 0)
    assert local.threads() == cpus
    monkeypatch.setattr(local, "busy_elsewhere", lambda: cpus + 5)
    assert local.threads() == 1
    monkeypatch.setenv("PROMPTLEARN_THREADS", "3")
    assert local.threads() == 3


def test_busy_elsewhere_is_runnable_tasks_minus_this_process(monkeypatch):
    """/proc/loadavg's running count includes this process's running threads (at least the one reading it)."""
    import io
    import os

    from promptlearn import local

    proc = {"/proc/loadavg": "2.10 1.50 0.90 5/312 4242\n", "/proc/self/task/11/stat": "11 (python3) R 1 11",
            "/proc/self/task/12/stat": "12 (llama (gen)) R 1 11", "/proc/self/task/13/stat": "13 (python3) S 1 11"}
    listdir = os.listdir
    monkeypatch.setattr(local.os, "listdir", lambda p: ["11", "12", "13"] if p == "/proc/self/task" else listdir(p))
    monkeypatch.setattr(local, "open", lambda path, *a, **kw: io.StringIO(proc[path]), raising=False)
    assert local.busy_elsewhere() == 3  # 5 running, 2 of them ours (a ')' inside a thread name is no trouble)
    proc["/proc/loadavg"] = "0.10 0.10 0.10 1/312 4242\n"
    assert local.busy_elsewhere() == 0  # the two snapshots disagree (ours ran after loadavg was read): not -1
    proc["/proc/loadavg"] = "2.10 1.50 0.90 5/312 4242\n"
    proc["/proc/self/task/12/stat"] = proc["/proc/self/task/11/stat"] = "11 (python3) S 1 11"
    assert local.busy_elsewhere() == 4  # none of ours marked R: the reader itself still runs
    proc["/proc/loadavg"] = "garbled"
    assert local.busy_elsewhere() == 0  # unknown counts as idle


def test_busy_elsewhere_sees_another_busy_process():
    import subprocess
    import sys
    import time

    from promptlearn.local import busy_elsewhere

    child = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 3: pass"])
    try:
        time.sleep(0.3)
        seen = [busy_elsewhere() for _ in range(20)]
    finally:
        child.kill()
        child.wait()
    assert max(seen) >= 1


@requires_model
@pytest.mark.model
@pytest.mark.slow
def test_real_model_replies_do_not_depend_on_threads_or_prefix_reuse(monkeypatch):
    """The thread count follows the machine's load and the KV cache follows the request order: neither may
    change a reply, or scores would depend on what else the machine was doing."""
    from promptlearn.local import get_model

    model = get_model("smollm2")
    system = {"role": "system", "content": "You are a pirate. " + "Always be kind and brief. " * 6}
    asks = [[system, {"role": "user", "content": q}] for q in ("Where is the treasure?", "Name three fish.")]
    replies = {}
    for threads in ("1", "2"):
        monkeypatch.setenv("PROMPTLEARN_THREADS", threads)
        for reuse in (False, True):
            out = []
            model.llama.reset()
            for msgs in asks:
                if not reuse:
                    model.llama.reset()
                r = model.chat(msgs, max_tokens=8)
                assert model.threads == int(threads)
                out.append(r.text)
                assert (r.reused_prompt_tokens > 0) == (reuse and msgs is asks[1])
            replies[threads, reuse] = out
    assert len(set(map(tuple, replies.values()))) == 1, replies


@requires_model
@pytest.mark.model
def test_real_model_multi_turn_replies_do_not_depend_on_what_ran_before():
    """A SysBench conversation (3 turns, 96-token replies), each turn run cold, run as the natural continuation of
    the previous turn (its KV cache reused), and run after an unrelated request (a judge call between turns):
    identical replies. Reusing the KV cache at arbitrary points made the continuation drift from the cold run."""
    from pathlib import Path

    from promptlearn.local import get_model
    from promptlearn.task import load_task, render_prompt

    task = load_task(Path(__file__).resolve().parents[1] / "tasks" / "sysbench_persona.yaml")
    ex = {e.id: e for e in task.examples("val")}["sysbench-2"]
    system = render_prompt(task.prompt, ex.meta.get("vars", {}))
    model = get_model("smollm2")

    def conversation(mode: str) -> list[str]:
        msgs, out, prev_prompt = [{"role": "system", "content": system}], [], 0
        for turn in ex.turns[:3]:
            msgs.append({"role": "user", "content": turn.user})
            if mode == "cold":
                model.llama.reset()
            elif mode == "judge between":
                model.chat([{"role": "system", "content": "You judge replies."},
                            {"role": "user", "content": "Is this polite? " + turn.user}], max_tokens=4)
            reply = model.chat(msgs, max_tokens=96)
            if mode == "continued" and prev_prompt:  # the previous turn's whole prompt is reused
                assert reply.reused_prompt_tokens >= prev_prompt
            elif mode != "continued":
                assert reply.reused_prompt_tokens == 0
            prev_prompt = reply.prompt_tokens
            out.append(reply.text)
            msgs.append({"role": "assistant", "content": reply.text})
        return out

    cold = conversation("cold")
    assert all(cold) and len(set(cold)) == 3
    assert conversation("continued") == cold
    assert conversation("judge between") == cold


@requires_model
@pytest.mark.model
def test_real_model_request_longer_than_the_context_is_refused_once_not_retried():
    """A prompt that cannot fit the context window is the request's fault: one ModelError marked bad_request
    (an optimizer skips such a proposal), no retries, and the model keeps working (nothing was decoded)."""
    import asyncio

    from promptlearn.errors import ModelError
    from promptlearn.lm import LM, Ledger
    from promptlearn.task import ModelConfig

    ledger = Ledger()
    lm = LM(ModelConfig(name="local/smollm2", max_tokens=8, retries=6), cache=None, ledger=ledger)
    with pytest.raises(ModelError, match="exceed context window") as info:
        asyncio.run(lm.complete([{"role": "system", "content": "word " * 5000}, {"role": "user", "content": "hi"}]))
    assert info.value.bad_request and "attempts" not in str(info.value)
    ok = asyncio.run(lm.complete([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]))
    assert ok.text and ledger.total.calls == 1
