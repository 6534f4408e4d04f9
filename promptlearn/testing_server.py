"""An OpenAI-compatible HTTP server on 127.0.0.1 for tests and benchmarks.

Why: the "remote model" path (`openai/<name>` + api_base) must be exercised without a network or a
real provider, provider faults (429, 5xx, hangs, resets, broken bodies) must be injectable on demand,
and tests need to see exactly which requests were sent. Token counts are whitespace word counts.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from typing import Any, Callable, Iterable, Optional

from aiohttp import web

FAULT_KINDS = (
    "429", "429-no-retry-after", "500", "503", "timeout", "reset", "malformed", "empty_choices",
)
FaultPolicy = Callable[[dict], Optional[str]]  # request body -> fault kind or None (ok)


def _body_key(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


class FaultPlan:
    """Stateful fault policy: call it with a request body, get a kind from FAULT_KINDS or None."""

    def __init__(self, decide: Callable[[dict], Optional[str]]):
        self._decide, self._lock = decide, threading.Lock()

    def __call__(self, body: dict) -> Optional[str]:
        with self._lock:
            return self._decide(body)

    @staticmethod
    def _check(kinds: Iterable[Optional[str]]) -> list:
        kinds = list(kinds)
        bad = [k for k in kinds if k is not None and k not in FAULT_KINDS]
        if bad:
            raise ValueError(f"unknown fault kinds {bad}; expected some of {FAULT_KINDS}")
        return kinds

    @classmethod
    def never(cls) -> "FaultPlan":
        return cls(lambda body: None)

    @classmethod
    def always(cls, kind: str) -> "FaultPlan":
        (kind,) = cls._check([kind])
        return cls(lambda body: kind)

    @classmethod
    def sequence(cls, kinds: Iterable[Optional[str]]) -> "FaultPlan":
        """The n-th request gets kinds[n] (None = ok); every request after the list is ok."""
        kinds, count = cls._check(kinds), [0]

        def decide(body: dict) -> Optional[str]:
            n, count[0] = count[0], count[0] + 1
            return kinds[n] if n < len(kinds) else None
        return cls(decide)

    @classmethod
    def random(cls, rate: float = 0.2, kinds: Iterable[str] = ("429", "500", "503"), seed: int = 0) -> "FaultPlan":
        """Deterministic pseudo-random faults keyed on (seed, body hash, times this body was seen).

        Independent of arrival order (so concurrent runs reproduce), and a retry of an identical
        body is a fresh draw, so retries heal with probability 1 - rate each.
        """
        kinds, seen = cls._check(kinds), dict[str, int]()
        if not kinds:
            raise ValueError("kinds must not be empty")

        def decide(body: dict) -> Optional[str]:
            key = _body_key(body)
            n = seen[key] = seen.get(key, -1) + 1
            digest = hashlib.sha256(f"{seed}:{key}:{n}".encode()).digest()
            if int.from_bytes(digest[:8], "big") / 2**64 >= rate:
                return None
            return kinds[int.from_bytes(digest[8:16], "big") % len(kinds)]
        return cls(decide)


def _text(content: Any) -> str:
    """Message content as text: plain strings, or the text parts of a multimodal list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def echo_responder(body: dict) -> str:
    """Default reply: deterministic "Echo: <last user message>"."""
    users = [m for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") == "user"]
    return "Echo: " + (_text(users[-1].get("content")) if users else "")


def _words(text: str) -> int:
    return len(text.split())


class LoopbackServer:
    """`with LoopbackServer(...) as srv:` serves on srv.base_url from a background thread + event loop."""

    def __init__(self, responder: Callable[[dict], str] = echo_responder,
                 latency: float | Callable[[dict], float] = 0.0,
                 faults: Optional[FaultPolicy] = None, hang_seconds: float = 30.0, retry_after: float = 1.0,
                 request_log_path: Optional[str] = None, model: str = "loopback", port: int = 0,
                 host: str = "127.0.0.1", response_log_path: Optional[str] = None):
        self.responder, self.latency, self.faults = responder, latency, faults
        self.hang_seconds, self.retry_after, self.request_log_path = hang_seconds, retry_after, request_log_path
        self.response_log_path = response_log_path  # one line per reply fully written: which requests got answered
        self.model, self.host, self.port = model, host, port
        self._records: list = []
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._runner: Optional[web.AppRunner] = None
        self._closing: Optional[asyncio.Event] = None

    # ---- lifecycle -------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def requests(self) -> list:
        """Snapshot of chat-completion request records: body, headers (lower-cased, secrets kept), fault, time."""
        with self._lock:
            return list(self._records)

    def start(self, timeout: float = 10.0) -> "LoopbackServer":
        ready, error = threading.Event(), []

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:  # noqa: BLE001 - reported to start() instead of dying silently
                error.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="loopback-server", daemon=True)
        self._thread.start()
        if not ready.wait(timeout) or error:
            self.stop()
            raise RuntimeError(f"loopback server failed to start: {error[0] if error else 'timeout'}")
        return self

    async def _serve(self) -> None:
        self._closing = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
        await site.start()
        self.port = self._runner.addresses[0][1]  # the OS-chosen port when port=0

    def stop(self, timeout: float = 10.0) -> None:
        """Bounded shutdown: release hanging handlers, close the runner, stop the loop, join the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or loop.is_closed():
            return
        try:
            if self._closing is not None:
                loop.call_soon_threadsafe(self._closing.set)
            if self._runner is not None:
                asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(timeout)
        except Exception:  # noqa: BLE001 - best effort: stopping the loop below still ends the thread
            pass
        finally:
            try:
                loop.call_soon_threadsafe(loop.stop)
            except RuntimeError:
                pass  # loop already closed
            thread.join(timeout)

    def __enter__(self) -> "LoopbackServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---- handlers --------------------------------------------------------------------------------
    def _record(self, body: Any, request: web.Request, fault: Optional[str]) -> None:
        rec = {"body": body, "headers": {k.lower(): v for k, v in request.headers.items()},
               "fault": fault, "time": time.time()}
        with self._lock:
            self._records.append(rec)
            if self.request_log_path:
                with open(self.request_log_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(rec, default=str) + "\n")
                    f.flush()

    def _responded(self, body: Any) -> None:
        if self.response_log_path:
            with self._lock, open(self.response_log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"key": _body_key(body), "time": time.time()}) + "\n")
                f.flush()

    @staticmethod
    def _error(status: int, message: str, kind: str, headers: Optional[dict] = None) -> web.Response:
        return web.json_response({"error": {"message": message, "type": kind, "code": status}},
                                 status=status, headers=headers)

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": self.model, "object": "model", "created": 0, "owned_by": "loopback"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = json.loads(await request.read())
            assert isinstance(body, dict)
        except Exception:  # noqa: BLE001 - any body that is not a JSON object is a 400
            self._record(None, request, None)
            return self._error(400, "request body is not a JSON object", "invalid_request_error")
        fault = self.faults(body) if self.faults else None
        self._record(body, request, fault)
        delay = self.latency(body) if callable(self.latency) else self.latency  # a function: jitter per request
        if delay > 0:
            await asyncio.sleep(delay)
        if fault == "reset":  # RST instead of FIN: the client sees "connection reset", no response
            sock = request.transport.get_extra_info("socket") if request.transport else None
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            if request.transport:
                request.transport.abort()
            raise asyncio.CancelledError()  # aiohttp drops the handler without writing anything
        if fault == "429":
            return self._error(429, "rate limited (injected)", "rate_limit_error",
                               {"Retry-After": f"{self.retry_after:g}"})
        if fault == "429-no-retry-after":
            return self._error(429, "rate limited (injected)", "rate_limit_error")
        if fault in ("500", "503"):
            return self._error(int(fault), f"server error {fault} (injected)", "server_error")
        if fault == "timeout":  # outlast the client's timeout; released early when the server stops
            assert self._closing is not None  # made before the server takes requests
            try:
                await asyncio.wait_for(self._closing.wait(), self.hang_seconds)
                return self._error(503, "server shutting down", "server_error")
            except asyncio.TimeoutError:
                pass
        try:
            reply = "" if fault in ("malformed", "empty_choices") else str(self.responder(body))
        except Exception as exc:  # noqa: BLE001 - a broken test responder is the server's 500
            return self._error(500, f"responder failed: {exc!r}", "server_error")
        cid, created, model = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time()), body.get("model") or self.model
        prompt_tokens = sum(_words(_text(m.get("content"))) for m in body.get("messages") or [] if isinstance(m, dict))
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": _words(reply),
                 "total_tokens": prompt_tokens + _words(reply)}
        if body.get("stream"):
            return await self._stream(request, fault, cid, created, model, reply, usage, body)
        if fault == "malformed":
            return web.Response(status=200, text='{"id": "chatcmpl-broken", "choices": [{"message": ',
                                content_type="application/json")
        choices = [] if fault == "empty_choices" else [
            {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}]
        resp = web.json_response({"id": cid, "object": "chat.completion", "created": created, "model": model,
                                  "choices": choices, "usage": usage})
        if self.response_log_path and fault is None:
            await resp.prepare(request)
            await resp.write_eof()
            self._responded(body)
        return resp

    async def _stream(self, request: web.Request, fault: Optional[str], cid: str, created: int, model: str,
                      reply: str, usage: dict, body: dict) -> web.StreamResponse:
        """SSE: a role chunk, one chunk per word, a finish chunk, optional usage chunk, then [DONE]."""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)

        def chunk(choices: list, **extra: Any) -> bytes:
            data = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": choices, **extra}
            return f"data: {json.dumps(data)}\n\n".encode()

        def delta(d: dict, finish: Optional[str] = None) -> list:
            return [{"index": 0, "delta": d, "finish_reason": finish}]

        if fault == "malformed":
            await resp.write(b'data: {"id": "chatcmpl-broken", "choices": [\n\n')
        elif fault == "empty_choices":
            await resp.write(chunk([]))
        else:
            await resp.write(chunk(delta({"role": "assistant", "content": ""})))
            for piece in re.findall(r"\s*\S+\s*", reply) or ([reply] if reply else []):
                await resp.write(chunk(delta({"content": piece})))
            await resp.write(chunk(delta({}, "stop")))
            if (body.get("stream_options") or {}).get("include_usage"):
                await resp.write(chunk([], usage=usage))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        if fault is None:
            self._responded(body)
        return resp


def main(argv: Optional[list] = None) -> int:
    """CLI for other processes: prints `READY <base_url>` once listening, serves until SIGTERM/SIGINT."""
    p = argparse.ArgumentParser(prog="python -m promptlearn.testing_server", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency", type=float, default=0.0)
    p.add_argument("--fault-rate", type=float, default=0.0)
    p.add_argument("--fault-kinds", default="429,500,503", help="comma-separated kinds for --fault-rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hang-seconds", type=float, default=30.0)
    p.add_argument("--log", default=None, help="append each request as a JSON line to this file")
    p.add_argument("--response-log", default=None,
                   help="append {key: body hash, time} for each successful reply once it is written")
    args = p.parse_args(argv)
    faults = (FaultPlan.random(args.fault_rate, args.fault_kinds.split(","), args.seed)
              if args.fault_rate > 0 else None)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with LoopbackServer(latency=args.latency, faults=faults, hang_seconds=args.hang_seconds,
                        request_log_path=args.log, port=args.port, host=args.host,
                        response_log_path=args.response_log) as srv:
        print(f"READY {srv.base_url}", flush=True)
        while not stop.wait(0.2):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
