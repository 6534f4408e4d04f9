"""Tests for the loopback OpenAI-compatible server. Every network call and wait is bounded."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("aiohttp")
httpx = pytest.importorskip("httpx")

from promptlearn.testing_server import FAULT_KINDS, FaultPlan, LoopbackServer, echo_responder  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
T = 5.0  # default client timeout (s)


def chat_body(text: str = "hello there", **extra) -> dict:
    return {"model": "loopback", "messages": [{"role": "system", "content": "be brief"},
                                              {"role": "user", "content": text}], **extra}


def post(srv: LoopbackServer, body: dict, **kw) -> "httpx.Response":
    return httpx.post(srv.base_url + "/chat/completions", json=body, timeout=kw.pop("timeout", T), **kw)


# ---- normal operation -----------------------------------------------------------------------------

def test_normal_completion_with_urllib():
    with LoopbackServer() as srv:
        assert srv.base_url.startswith("http://127.0.0.1:") and srv.port > 0
        req = urllib.request.Request(srv.base_url + "/chat/completions", data=json.dumps(chat_body()).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=T) as resp:
            assert resp.status == 200
            data = json.loads(resp.read())
    assert data["object"] == "chat.completion" and data["id"] and isinstance(data["created"], int)
    assert data["model"] == "loopback"
    (choice,) = data["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    assert choice["message"] == {"role": "assistant", "content": "Echo: hello there"}
    # whitespace word counts: "be brief" + "hello there" = 4; "Echo: hello there" = 3
    assert data["usage"] == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}


def test_models_endpoint():
    with LoopbackServer(model="m1") as srv:
        data = httpx.get(srv.base_url + "/models", timeout=T).json()
    assert data["object"] == "list" and data["data"][0]["id"] == "m1"


def test_custom_responder_and_request_records_keep_auth_headers():
    seen = []

    def responder(body):
        seen.append(body)
        return "custom:" + str(len(body["messages"]))

    with LoopbackServer(responder=responder) as srv:
        r = post(srv, chat_body(), headers={"Authorization": "Bearer sk-secret", "api-key": "k2", "X-Api-Key": "k3"})
        assert r.json()["choices"][0]["message"]["content"] == "custom:2"
        (rec,) = srv.requests
    assert seen == [chat_body()] and rec["body"] == chat_body() and rec["fault"] is None
    assert rec["headers"]["authorization"] == "Bearer sk-secret"
    assert rec["headers"]["api-key"] == "k2" and rec["headers"]["x-api-key"] == "k3"
    assert abs(rec["time"] - time.time()) < 60


def test_echo_responder_uses_last_user_message_and_text_parts():
    body = {"messages": [{"role": "user", "content": "first"}, {"role": "assistant", "content": "x"},
                         {"role": "user", "content": [{"type": "text", "text": "second"}]}]}
    assert echo_responder(body) == "Echo: second"
    assert echo_responder({"messages": []}) == "Echo: "


def test_invalid_json_request_is_400():
    with LoopbackServer() as srv:
        r = httpx.post(srv.base_url + "/chat/completions", content=b"{nope", timeout=T)
    assert r.status_code == 400 and "error" in r.json()


def test_streaming_sse():
    with LoopbackServer() as srv:
        body = chat_body("one two three", stream=True, stream_options={"include_usage": True})
        with httpx.stream("POST", srv.base_url + "/chat/completions", json=body, timeout=T) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            lines = [ln for ln in r.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]" and all(ln.startswith("data: ") for ln in lines)
    chunks = [json.loads(ln[6:]) for ln in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Echo: one two three"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] == 4


# ---- faults ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,status,retry_after", [
    ("429", 429, True), ("429-no-retry-after", 429, False), ("500", 500, False), ("503", 503, False)])
def test_status_faults(kind, status, retry_after):
    with LoopbackServer(faults=FaultPlan.always(kind), retry_after=2) as srv:
        r = post(srv, chat_body())
        assert srv.requests[0]["fault"] == kind
    assert r.status_code == status and "error" in r.json()
    assert ("retry-after" in r.headers) is retry_after
    if retry_after:
        assert r.headers["retry-after"] == "2"


def test_malformed_fault_is_200_with_invalid_json():
    with LoopbackServer(faults=FaultPlan.always("malformed")) as srv:
        r = post(srv, chat_body())
    assert r.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.text)


def test_empty_choices_fault():
    with LoopbackServer(faults=FaultPlan.always("empty_choices")) as srv:
        r = post(srv, chat_body())
    assert r.status_code == 200 and r.json()["choices"] == [] and r.json()["object"] == "chat.completion"


def test_reset_fault_raises_connection_error():
    with LoopbackServer(faults=FaultPlan.sequence(["reset"])) as srv:
        with pytest.raises(httpx.TransportError):
            post(srv, chat_body())
        with pytest.raises((ConnectionError, urllib.error.URLError)):
            srv.faults = FaultPlan.always("reset")
            req = urllib.request.Request(srv.base_url + "/chat/completions", data=b"{}", method="POST")
            urllib.request.urlopen(req, timeout=T)
        srv.faults = None
        assert post(srv, chat_body()).status_code == 200  # server survives resets


def _status_or_error(srv):
    try:
        return post(srv, chat_body(), timeout=20).status_code
    except httpx.TransportError as exc:
        return exc


def test_timeout_fault_exceeds_client_timeout_and_stop_is_bounded():
    srv = LoopbackServer(faults=FaultPlan.always("timeout"), hang_seconds=30).start()
    try:
        t0 = time.monotonic()
        with pytest.raises(httpx.TimeoutException):
            post(srv, chat_body(), timeout=0.3)
        assert time.monotonic() - t0 < 3
        # a second hanging request still in flight while we stop: shutdown must not wait for hang_seconds
        outcome = []
        hung = threading.Thread(target=lambda: outcome.append(_status_or_error(srv)), daemon=True)
        hung.start()
        time.sleep(0.2)
    finally:
        t0 = time.monotonic()
        srv.stop()
        stop_s = time.monotonic() - t0
    hung.join(10)
    assert stop_s < 5 and not hung.is_alive()
    assert outcome and outcome[0] != 200  # released with a 503 (or a dropped connection), never a fake success
    assert not srv._thread.is_alive()


def test_timeout_fault_answers_after_hang_seconds():
    with LoopbackServer(faults=FaultPlan.always("timeout"), hang_seconds=0.3) as srv:
        t0 = time.monotonic()
        r = post(srv, chat_body())
        assert time.monotonic() - t0 >= 0.3 and r.status_code == 200


def test_fault_plan_sequence_and_always_and_validation():
    plan = FaultPlan.sequence(["500", None, "429"])
    assert [plan({}) for _ in range(5)] == ["500", None, "429", None, None]
    assert {FaultPlan.always("503")({"a": i}) for i in range(3)} == {"503"}
    assert FaultPlan.never()({}) is None
    with pytest.raises(ValueError):
        FaultPlan.always("418")
    with pytest.raises(ValueError):
        FaultPlan.random(kinds=["500", "bogus"])
    assert len(FAULT_KINDS) == 8


def test_fault_plan_random_is_deterministic_and_heals_on_retry():
    bodies = [chat_body(f"q{i}") for i in range(1000)]
    a, b, c = (FaultPlan.random(rate=0.2, kinds=["429", "500"], seed=s) for s in (0, 0, 1))
    da, db, dc = [a(x) for x in bodies], [b(x) for x in bodies], [c(x) for x in bodies]
    assert da == db and da != dc
    assert set(da) == {None, "429", "500"}
    assert 0.15 < sum(d is not None for d in da) / len(da) < 0.25
    # order-independent: a fresh plan fed the bodies backwards decides the same per body
    rev = FaultPlan.random(rate=0.2, kinds=["429", "500"], seed=0)
    assert [rev(x) for x in reversed(bodies)][::-1] == da
    # the retry of a failed body (seen count 1) is a fresh draw: most heal
    failed = [x for x, d in zip(bodies, da) if d is not None]
    retry = [a(x) for x in failed]
    assert sum(d is None for d in retry) / len(retry) > 0.65


def test_random_faults_end_to_end_retry_until_ok():
    with LoopbackServer(faults=FaultPlan.random(rate=0.5, kinds=["500", "503", "429"], seed=3)) as srv:
        outcomes = []
        for i in range(20):
            for attempt in range(10):  # bounded retries; P(10 faults in a row) = 1e-3 per body
                if post(srv, chat_body(f"item {i}")).status_code == 200:
                    outcomes.append(attempt)
                    break
        recs = srv.requests
    assert len(outcomes) == 20 and any(a > 0 for a in outcomes)
    assert len(recs) == sum(outcomes) + 20
    assert sum(r["fault"] is not None for r in recs) == sum(outcomes)


# ---- concurrency, logs, lifecycle -----------------------------------------------------------------

def test_concurrent_requests_overlap():
    n, latency = 64, 0.1

    async def burst(url):
        async with httpx.AsyncClient(timeout=T, limits=httpx.Limits(max_connections=n)) as client:
            async def one(i):
                r = await client.post(url, json=chat_body(f"req {i}"))
                return r.json()["choices"][0]["message"]["content"]
            return await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), 20)

    with LoopbackServer(latency=latency) as srv:
        t0 = time.monotonic()
        replies = asyncio.run(burst(srv.base_url + "/chat/completions"))
        elapsed = time.monotonic() - t0
        assert len(srv.requests) == n
    assert replies == [f"Echo: req {i}" for i in range(n)]
    assert latency <= elapsed < 1.5, f"{n} requests took {elapsed:.2f}s (serial would be {n * latency:.1f}s)"


def test_request_log_file(tmp_path):
    log = tmp_path / "requests.jsonl"
    with LoopbackServer(faults=FaultPlan.sequence([None, "503"]), request_log_path=str(log)) as srv:
        for i in range(3):
            post(srv, chat_body(f"m{i}"), headers={"Authorization": "Bearer sk-log"})
        lines = log.read_text().splitlines()  # written (and flushed) while the server is still running
    recs = [json.loads(ln) for ln in lines]
    assert [r["body"]["messages"][-1]["content"] for r in recs] == ["m0", "m1", "m2"]
    assert [r["fault"] for r in recs] == [None, "503", None]
    assert all(r["headers"]["authorization"] == "Bearer sk-log" and r["time"] > 0 for r in recs)


def test_no_thread_leak_and_restart_ports_differ():
    before = threading.active_count()
    ports = []
    for _ in range(3):
        with LoopbackServer() as srv:
            post(srv, chat_body())
            ports.append(srv.port)
        assert not srv._thread.is_alive()
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before
    assert all(p > 0 for p in ports)


def test_cli_subprocess_ready_serves_and_stops_on_sigterm(tmp_path):
    log = tmp_path / "cli.jsonl"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "promptlearn.testing_server", "--port", "0", "--latency", "0.01",
                             "--fault-rate", "0", "--log", str(log)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(tmp_path))
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout], daemon=True).start()
    try:
        try:
            first = lines.get(timeout=30)
        except queue.Empty:
            pytest.fail("server CLI did not print READY within 30s: " + (proc.stderr.read() if proc.poll() else ""))
        assert first.startswith("READY http://127.0.0.1:")
        base_url = first.split()[1]
        r = httpx.post(base_url + "/chat/completions", json=chat_body("from cli"), timeout=T)
        assert r.json()["choices"][0]["message"]["content"] == "Echo: from cli"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert json.loads(log.read_text().splitlines()[0])["body"]["messages"][-1]["content"] == "from cli"


# ---- real clients ---------------------------------------------------------------------------------

def test_openai_client():
    openai = pytest.importorskip("openai")
    with LoopbackServer(faults=FaultPlan.sequence([None, None, "429", "reset", "timeout", "empty_choices"]),
                        hang_seconds=10, retry_after=0.1) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="sk-test", max_retries=0, timeout=T)
        resp = client.chat.completions.create(model="loopback", messages=[{"role": "user", "content": "hi"}])
        assert resp.choices[0].message.content == "Echo: hi" and resp.usage.total_tokens == 3
        stream = client.chat.completions.create(model="loopback", messages=[{"role": "user", "content": "a b"}],
                                                stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Echo: a b"
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="loopback", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.APIConnectionError):
            client.chat.completions.create(model="loopback", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.APITimeoutError):
            client.with_options(timeout=0.3).chat.completions.create(
                model="loopback", messages=[{"role": "user", "content": "x"}])
        assert client.chat.completions.create(model="loopback", messages=[{"role": "user", "content": "x"}]
                                              ).choices == []
        assert srv.requests[0]["headers"]["authorization"] == "Bearer sk-test"
        # the client honours Retry-After and retries: one 429, then success
        srv.faults = FaultPlan.sequence(["429"])
        retrying = openai.OpenAI(base_url=srv.base_url, api_key="sk-test", max_retries=2, timeout=T)
        n0 = len(srv.requests)
        assert retrying.chat.completions.create(model="loopback", messages=[{"role": "user", "content": "r"}]
                                                ).choices[0].message.content == "Echo: r"
        assert [r["fault"] for r in srv.requests[n0:]] == ["429", None]


def test_litellm_remote_model_path():
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch at import
    litellm = pytest.importorskip("litellm")
    with LoopbackServer() as srv:
        resp = litellm.completion(model="openai/loopback", api_base=srv.base_url, api_key="sk-lite",
                                  messages=[{"role": "user", "content": "via litellm"}], timeout=T, num_retries=0)
        assert resp.choices[0].message.content == "Echo: via litellm"
        (rec,) = srv.requests
    assert rec["headers"]["authorization"] == "Bearer sk-lite" and rec["body"]["model"] == "loopback"
