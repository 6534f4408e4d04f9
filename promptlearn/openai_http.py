"""A direct client for OpenAI-compatible servers: vLLM, llama.cpp's server, Ollama's /v1, LM Studio, TGI, ...

Why: litellm's generic call path costs about 4.5 ms of CPU per call here (request transformation, the OpenAI
SDK, httpx, logging hooks, pricing), so one Python process tops out near 220 calls/s: a third of what 64 calls
in flight to a 100 ms server allow (bench/results/concurrency*.json). For the one protocol self-hosted servers all
speak, this module posts the same JSON body the OpenAI SDK would, over one pooled aiohttp session per event loop
and server, for about 0.5 ms per call. `openai/<name>` models with an `api_base` use it (`transport: auto`);
`transport: litellm` in the model config sends them through litellm instead. Every other provider goes through
litellm.

Errors carry the names litellm gives them (RateLimitError, NotFoundError, ...), so messages read the same on both
paths; `FATAL` are the ones a retry cannot fix.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from typing import Any, Mapping, Sequence

import aiohttp


class APIError(Exception):
    """A failed call. `headers` (lower-cased) let the retry loop honour Retry-After; they never reach messages."""

    def __init__(self, message: str, status: int | None = None, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = {k.lower(): v for k, v in (headers or {}).items()}


class BadRequestError(APIError):
    pass


class AuthenticationError(APIError):
    pass


class PermissionDeniedError(APIError):
    pass


class NotFoundError(APIError):
    pass


class RateLimitError(APIError):
    pass


class InternalServerError(APIError):
    pass


class APIConnectionError(APIError):
    pass


class Timeout(APIError):
    pass


class MalformedResponse(APIError):
    pass


FATAL: tuple[type[APIError], ...] = (BadRequestError, AuthenticationError, PermissionDeniedError, NotFoundError)
_BY_STATUS: dict[int, type[APIError]] = {400: BadRequestError, 401: AuthenticationError, 403: PermissionDeniedError,
                                         404: NotFoundError, 413: BadRequestError, 422: BadRequestError,
                                         429: RateLimitError}

# One session per (event loop, server): connections are reused across calls, and a session never outlives its loop.
_Sessions = dict[str, tuple[aiohttp.ClientSession, dict[str, Any]]]  # api_base -> (session, proxy arguments)
_sessions: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Sessions]" = weakref.WeakKeyDictionary()


def endpoint(api_base: str) -> str:
    """The chat-completions URL for an api_base, as the OpenAI SDK builds it (`<base>/chat/completions`)."""
    return api_base.rstrip("/") + "/chat/completions"


def wire_model(name: str) -> str:
    """The model name the server sees: `openai/qwen2.5` -> `qwen2.5` (litellm strips the provider the same way)."""
    return name.split("/", 1)[1] if "/" in name else name


def request_body(model: str, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body: model, messages and every request parameter; `extra_body` merges in as the SDK does."""
    body: dict[str, Any] = {"model": wire_model(model), "messages": list(messages)}
    for key, value in params.items():
        if key == "extra_body" and isinstance(value, Mapping):
            body.update(value)
        elif key not in ("api_base", "guidance"):
            body[key] = value
    return body


def _session(api_base: str) -> tuple[aiohttp.ClientSession, dict[str, Any]]:
    """The pooled session for this loop and server, and the proxy arguments for its requests.

    The proxy (HTTPS_PROXY, NO_PROXY, ...) is looked up once here: aiohttp's trust_env would look it up, and
    netrc too, in a worker thread on every request, which doubled the CPU of a call."""
    loop = asyncio.get_running_loop()
    per_loop = _sessions.setdefault(loop, {})
    entry = per_loop.get(api_base)
    if entry is None or entry[0].closed:
        from aiohttp.helpers import get_env_proxy_for_url
        from yarl import URL

        try:
            proxy, proxy_auth = get_env_proxy_for_url(URL(api_base))
            proxy_args: dict[str, Any] = {"proxy": proxy, "proxy_auth": proxy_auth}
        except LookupError:
            proxy_args = {}
        # limit=0: the LM's own semaphore bounds the calls in flight
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
                                        json_serialize=json.dumps)
        entry = per_loop[api_base] = (session, proxy_args)
    return entry


async def close_sessions() -> None:
    """Close the sessions opened on the running loop (call before closing the loop)."""
    per_loop = _sessions.pop(asyncio.get_running_loop(), {})
    for session, _ in per_loop.values():
        await session.close()


async def chat(api_base: str, model: str, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any], *,
               api_key: str | None, timeout: float) -> dict[str, Any]:
    """POST one chat completion and return the parsed response; raise an APIError subclass on any failure."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    session, proxy_args = _session(api_base)
    try:
        async with session.post(endpoint(api_base), json=request_body(model, messages, params), headers=headers,
                                timeout=aiohttp.ClientTimeout(total=timeout), **proxy_args) as resp:
            raw = await resp.read()
            if resp.status >= 400:
                cls = _BY_STATUS.get(resp.status, InternalServerError if resp.status >= 500 else BadRequestError)
                raise cls(f"Error code: {resp.status} - {_error_text(raw)}", resp.status, resp.headers)
    except asyncio.TimeoutError:
        raise Timeout(f"no response within {timeout:g} s") from None
    except aiohttp.ClientError as e:
        raise APIConnectionError(f"{type(e).__name__}: {e}") from None
    try:
        data = json.loads(raw)
    except ValueError:
        raise MalformedResponse(f"the server's reply is not JSON: {raw[:120]!r}") from None
    if not isinstance(data, dict):
        raise MalformedResponse("the server's reply is not a JSON object")
    return data


def reply_text(data: Mapping[str, Any]) -> str:
    choices = data.get("choices") or []
    if not choices or not isinstance(choices[0], Mapping):
        raise MalformedResponse("the model returned no choices")
    message = choices[0].get("message") or {}
    return str(message.get("content") or "").strip()


def usage(data: Mapping[str, Any]) -> tuple[int, int, int]:
    """(prompt, completion, cached prompt) tokens; servers that report none count 0."""
    u = data.get("usage") or {}
    details = u.get("prompt_tokens_details") or {}
    cached = (details.get("cached_tokens") if isinstance(details, Mapping) else 0) or 0
    return int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0), int(cached)


def _error_text(raw: bytes) -> str:
    """The server's own error message (OpenAI's {"error": {"message": ...}} or any text), one line."""
    try:
        data = json.loads(raw)
        err = data.get("error", data) if isinstance(data, dict) else data
        text = err.get("message", err) if isinstance(err, dict) else err
    except ValueError:
        text = raw.decode("utf-8", "replace")
    return " ".join(str(text).split())[:300]
