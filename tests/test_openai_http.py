"""The direct OpenAI-compatible transport (promptlearn.openai_http): what it sends, when it is used, how it fails.

Faults, retries, secrets and pricing run through both transports in test_reliability, test_secrets and
test_prefix_caching; here are the pieces only this path has.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import requires_model
from promptlearn.engine import Evaluator
from promptlearn.errors import TaskError
from promptlearn.openai_http import endpoint, request_body, wire_model
from promptlearn.task import ModelConfig, load_task, task_from_dict
from promptlearn.testing_server import LoopbackServer

PIRATE = Path(__file__).resolve().parents[1] / "tasks" / "pirate.yaml"


def task(base_url: str, **model):
    return task_from_dict({
        "name": "http", "prompt": "You are terse.",
        "model": {"name": "openai/loopback", "api_base": base_url, "max_tokens": 8, "retries": 0, **model},
        "data": [{"examples": [{"id": f"q{i}", "user": f"question {i}"} for i in range(6)]}],
        "checks": [{"type": "contains", "value": "Echo"}], "splits": {"train": 0.0, "val": 1.0, "test": 0.0},
    })


@pytest.mark.parametrize("name,api_base,transport,direct", [
    ("openai/qwen2.5", "http://127.0.0.1:8000/v1", "auto", True),
    ("openai/gpt-4o-mini", None, "auto", False),            # api.openai.com through litellm
    ("openai/o3-mini", "https://api.openai.com/v1", "auto", False),  # litellm maps its parameters per model
    ("ollama/llama3", "http://127.0.0.1:11434", "auto", False),  # litellm's own ollama provider
    ("openai/qwen2.5", "http://127.0.0.1:8000/v1", "litellm", False),
    ("hosted_vllm/qwen", "http://127.0.0.1:8000/v1", "http", True),
    ("local/smollm2", None, "auto", False),
])
def test_which_models_post_directly(name, api_base, transport, direct):
    assert ModelConfig(name=name, api_base=api_base, transport=transport).direct_http is direct


def test_http_transport_without_a_server_is_a_clear_task_error():
    with pytest.raises(TaskError, match=r"model.*api_base"):
        task_from_dict({"name": "x", "prompt": "p", "model": {"name": "openai/x", "transport": "http"},
                        "data": [{"examples": [{"id": "a", "user": "u"}]}]})


def test_request_body_is_what_the_openai_sdk_sends():
    body = request_body("openai/qwen2.5", [{"role": "user", "content": "hi"}],
                        {"temperature": 0.0, "max_tokens": 8, "seed": 3, "api_base": "http://x/v1", "guidance": 2.0,
                         "top_p": 0.5, "extra_body": {"top_k": 20}})
    assert body == {"model": "qwen2.5", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.0,
                    "max_tokens": 8, "seed": 3, "top_p": 0.5, "top_k": 20}
    assert endpoint("http://h:1/v1/") == "http://h:1/v1/chat/completions"
    assert wire_model("openai/org/model:tag") == "org/model:tag"


@pytest.mark.parametrize("transport", ["http", "litellm"])
def test_both_transports_send_the_same_request_and_get_the_same_scores(tmp_path, transport, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key-0000")
    with LoopbackServer() as srv:
        t = task(srv.base_url, transport=transport, params={"top_p": 0.9})
        ev = Evaluator(t, use_cache=False)
        try:
            res = ev.evaluate(t.prompt, t.examples("val"))
        finally:
            ev.close()
        reqs = srv.requests
    assert res.complete and res.score == 1.0 and ev.ledger.total.calls == 6
    bodies = sorted((r["body"] for r in reqs), key=lambda b: b["messages"][1]["content"])
    assert [b["messages"] for b in bodies] == [
        [{"role": "system", "content": "You are terse."}, {"role": "user", "content": f"question {i}"}]
        for i in range(6)]
    assert all(b["model"] == "loopback" and b["max_tokens"] == 8 and b["top_p"] == 0.9 and b["temperature"] == 0
               for b in bodies)
    assert {r["headers"]["authorization"] for r in reqs} == {"Bearer sk-test-not-a-real-key-0000"}
    assert ev.ledger.total.prompt_tokens == sum(len(" ".join(m["content"] for m in b["messages"]).split())
                                                for b in bodies)


def test_connection_refused_is_retried_then_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTLEARN_BACKOFF_BASE", "0.001")
    with LoopbackServer() as srv:
        base = srv.base_url  # the server is gone after this block: nothing listens on the port
    t = task(base, retries=2, transport="http")
    ev = Evaluator(t, use_cache=False)
    from promptlearn.errors import ModelError

    try:
        with pytest.raises(ModelError, match=r"openai/loopback: failed after 3 attempts: APIConnectionError"):
            ev.evaluate(t.prompt, t.examples("val")[:1])
    finally:
        ev.close()
    assert ev.ledger.total.calls == 0


@pytest.mark.model
@requires_model
def test_embedded_model_behind_a_server_gives_the_same_replies_as_in_process(tmp_path):
    """The one-model-string promise on the real model: SmolLM2 served over HTTP (the server runs the same GGUF
    with its chat template) and reached through the direct transport gives the replies and scores it gives
    in-process."""
    from promptlearn.local import get_model


    def serve(body):
        return get_model("smollm2").chat(body["messages"], max_tokens=body["max_tokens"],
                                         temperature=body["temperature"], seed=body.get("seed", 0)).text

    local = load_task(PIRATE)
    examples = local.examples("val")[:4]
    ev = Evaluator(local, cache_path=tmp_path / "local.sqlite")
    try:
        in_process = ev.evaluate(local.prompt, examples)
    finally:
        ev.close()
    with LoopbackServer(responder=serve) as srv:
        remote = load_task(PIRATE, overrides={"model": {"name": "openai/smollm2", "api_base": srv.base_url,
                                                        "concurrency": 1}})
        assert remote.model.direct_http
        ev = Evaluator(remote, cache_path=tmp_path / "remote.sqlite")
        try:
            over_http = ev.evaluate(remote.prompt, examples)
        finally:
            ev.close()
        assert len(srv.requests) == len(examples)
    replies = {k: [t.reply for t in r.turns] for k, r in in_process.results.items()}
    assert replies == {k: [t.reply for t in r.turns] for k, r in over_http.results.items()}
    assert all(any(t.reply for t in r.turns) for r in in_process.results.values())
    assert over_http.score == in_process.score
