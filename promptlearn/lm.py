"""Every model call goes through here: litellm (imported lazily), retries, cache, ledger and hard budget.

This is the only module that imports litellm; the embedded local model registers as its `local` provider.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import gc
import os
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping, Protocol, Sequence

from promptlearn.cache import ReplyCache, request_key
from promptlearn.errors import BudgetExceeded, ModelError, TaskError
from promptlearn.types import Usage

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch a price list at import

_litellm = None
# Collects the usage of every call made inside one example's evaluation (per-example cost in the run store).
usage_sink: contextvars.ContextVar[list[Usage] | None] = contextvars.ContextVar("usage_sink", default=None)
# The grant the current task's requests draw on (a proposal stage in flight; see Ledger.open_grant).
_grant: contextvars.ContextVar["Grant | None"] = contextvars.ContextVar("_grant", default=None)
_litellm_lock = threading.Lock()


def litellm() -> Any:
    """Import litellm once, offline, with the local provider registered."""
    global _litellm
    with _litellm_lock:
        if _litellm is None:
            os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
            import litellm as _lt

            _lt.telemetry = False
            _lt.suppress_debug_info = True
            _lt.drop_params = True
            _register_local(_lt)
            # litellm leaves ~300,000 objects behind at import; every full garbage collection walked them all and
            # stalled every call in flight for ~0.2 s (bench concurrency). Frozen, the collector skips them.
            gc.freeze()
            atexit.register(gc.unfreeze)  # frozen objects would be finalized after module teardown (llama-cpp errors)
            _litellm = _lt
    return _litellm


# One model call: (messages, call arguments) -> (reply text, (prompt, completion, cached prompt) tokens, USD).
_Send = Callable[[list[dict[str, str]], dict[str, Any]], Awaitable[tuple[str, tuple[int, int, int], float]]]


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    usd: float = 0.0
    cached: bool = False
    retries: int = 0
    seconds: float = 0.0


@dataclass
class Grant:
    """Requests set aside in a ledger for one piece of work (a proposal's stage), drawn on by the requests made
    while it is the current grant (`Ledger.use_grant`)."""

    ledger: "Ledger"
    size: int
    used: int = 0
    closed: bool = False


class Transport(Protocol):
    """Where a run's cache misses go instead of straight to the model: a worker run's job pool
    (promptlearn.workers.JobPool), whose workers make the call.

    `send` returns the Completion the model gave (`LM.call_model`'s, made by whichever process runs it) and
    raises what call_model raises (ModelError for a fault that never healed), or BudgetExceeded when the run's
    shared budget refuses the call. The reply is already in the shared reply cache when it returns. Called
    concurrently from one event loop; `concurrency` is how many requests it takes at once (the workers' caps
    apply on their side).
    """

    concurrency: int

    async def send(self, lm: "LM", key: str, msgs: list[dict[str, str]], sample: int) -> Completion:
        ...


@dataclass
class Budget:
    max_calls: int | None = None
    max_usd: float | None = None
    max_tokens: int | None = None
    max_seconds: float | None = None


class Ledger:
    """Running totals of calls, tokens, USD and time, per tag too; enforces the hard budget before each request.

    `max_calls` counts requests, cache hits included, so the same command with the same seed makes the same
    decisions whatever the cache holds (a re-run that finds every reply cached makes 0 calls and stops at the
    same point). `max_tokens` and `max_usd` count real spend only (a hit costs nothing).
    In-flight calls hold a reservation of one request and their estimated tokens, so concurrent calls never
    together pass `max_calls` or `max_tokens`. USD and seconds are known only once a call returns: they are
    checked before each call, so calls already in flight may pass `max_usd` or `max_seconds` by their own cost.

    Grants extend the reservations to whole pieces of work: `open_grant(n)` sets n requests aside (they count as
    spent for every other caller), and requests made under it draw on them first, so work granted in a fixed
    order gets the same budget whatever the timing (parallel search, promptlearn.inflight). A request past its
    grant falls back to the common pool under the same one rule, so the budget holds exactly either way.
    """

    def __init__(self, budget: Budget | None = None, *, start: Usage | None = None):
        self.budget = budget or Budget()
        #: where this run's cache misses go (None: to the model from this process; a worker run: its job pool)
        self.transport: Transport | None = None
        self.total = start or Usage()
        self.by_tag: dict[str, Usage] = {}
        self._pending_calls = 0
        self._pending_tokens = 0
        self._held = 0  # requests set aside by open grants and not drawn on yet
        self._started = time.monotonic() - (start.seconds if start else 0.0)
        self._lock = threading.Lock()

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def check(self, est_tokens: int = 0) -> None:
        """Raise BudgetExceeded if one more call of about est_tokens would pass a limit."""
        self._check_requests()
        self._check_spend(est_tokens)

    def _check_spend(self, est_tokens: int) -> None:
        b, t = self.budget, self.total
        if b.max_tokens is not None and t.tokens + self._pending_tokens + est_tokens > b.max_tokens:
            raise BudgetExceeded("max_tokens", t.tokens, b.max_tokens)
        if b.max_usd is not None and t.usd >= b.max_usd:
            raise BudgetExceeded("max_usd", round(t.usd, 6), b.max_usd)
        if b.max_seconds is not None and self.elapsed() >= b.max_seconds:
            raise BudgetExceeded("max_seconds", round(self.elapsed(), 1), b.max_seconds)

    def reserve(self, est_tokens: int) -> None:
        with self._lock:
            if not self._draw(1):  # a request its grant holds passed the max_calls rule when it was granted
                self._check_requests()
            self._check_spend(est_tokens)
            self._pending_calls += 1
            self._pending_tokens += est_tokens

    def _check_requests(self) -> None:
        """The one rule of `max_calls`: requests made (cache hits included), those in flight and those set aside
        by grants, plus this one."""
        if (free := self._free()) is not None and free < 1:
            raise BudgetExceeded("max_calls", self.total.requests, self.budget.max_calls or 0)

    def _free(self) -> int | None:
        b = self.budget
        return None if b.max_calls is None else b.max_calls - self.total.requests - self._pending_calls - self._held

    def _draw(self, n: int) -> int:
        """Take up to n requests from the current task's grant (under the lock); how many it had."""
        g = _grant.get()
        if g is None or g.ledger is not self or g.closed:
            return 0
        took = min(n, g.size - g.used)
        g.used += took
        self._held -= took
        return took

    def hit(self, tag: str | None = None) -> None:
        """Count one request served from the cache: it costs nothing but counts toward `max_calls`."""
        with self._lock:
            if not self._draw(1):
                self._check_requests()
        self.add(Usage(cached_calls=1), tag)

    def replay(self, usage: Usage, tag: str | None = None) -> None:
        """Count a stored result's original usage (a resumed run pays for its past calls once), from the grant."""
        with self._lock:
            self._draw(usage.requests)
        self.add(usage, tag)

    def release(self, est_tokens: int) -> None:
        with self._lock:
            self._pending_calls -= 1
            self._pending_tokens -= est_tokens

    # ---- grants -------------------------------------------------------------------------------------------
    def free_calls(self) -> int | None:
        """Requests nobody has made, holds in flight or has set aside: None without `max_calls`."""
        with self._lock:
            free = self._free()
            return None if free is None else max(0, free)

    def open_grant(self, size: int) -> Grant:
        """Set `size` requests aside (at most what is free); the caller makes it current with use_grant."""
        with self._lock:
            free = self._free()
            size = size if free is None else max(0, min(size, free))
            self._held += size
            return Grant(self, size)

    def close_grant(self, g: Grant) -> None:
        """Give back what the grant did not use."""
        with self._lock:
            if not g.closed:
                g.closed = True
                self._held -= g.size - g.used

    @staticmethod
    def use_grant(g: Grant | None) -> contextvars.Token:
        """Make `g` the grant of this task (and of the tasks it starts); reset with _grant.reset(token)."""
        return _grant.set(g)

    @staticmethod
    def reset_grant(token: contextvars.Token) -> None:
        _grant.reset(token)

    def add(self, usage: Usage, tag: str | None = None) -> None:
        sink = usage_sink.get()
        if sink is not None:
            sink.append(usage)
        with self._lock:
            self.total = self.total + usage
            if tag:
                self.by_tag[tag] = self.by_tag.get(tag, Usage()) + usage

    def snapshot(self) -> Usage:
        with self._lock:
            return Usage(**{**self.total.__dict__, "seconds": self.elapsed()})


class LM:
    """One model (target, proposer or judge) bound to a cache and a ledger."""

    def __init__(self, config: Any, *, cache: ReplyCache | None, ledger: Ledger):
        self.config = config
        self.cache = cache
        self.ledger = ledger
        self._sem: asyncio.Semaphore | None = None
        self._sem_loop: asyncio.AbstractEventLoop | None = None

    @property
    def name(self) -> str:
        return self.config.name

    def params(self) -> dict[str, Any]:
        """Request parameters that change the reply (and so the cache key). No secrets here."""
        c = self.config
        p: dict[str, Any] = {"temperature": c.temperature, "max_tokens": c.max_tokens, **c.params}
        if c.seed is not None:
            p["seed"] = c.seed
        if c.api_base:
            p["api_base"] = c.api_base
        if c.guidance != 1.0:
            p["guidance"] = c.guidance
        return p

    def sample_key(self, sample: int) -> int:
        """The sample number as it enters a request's key: greedy decoding gives one reply whatever the number."""
        return sample if self.config.temperature > 0 else 0

    def _from_cache(self, key: str, tag: str | None) -> Completion | None:
        """The cached reply to this request, counted as a request; None when it is not cached."""
        hit = self.cache.get(key) if self.cache is not None else None
        if hit is None:
            return None
        self.ledger.hit(tag)
        return Completion(hit["text"], hit.get("prompt_tokens", 0), hit.get("completion_tokens", 0), cached=True)

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._sem is None or self._sem_loop is not loop:
            transport = self.ledger.transport
            cap = transport.concurrency if transport is not None else self.config.max_concurrency
            self._sem, self._sem_loop = asyncio.Semaphore(cap), loop
        return self._sem

    async def complete(self, messages: Sequence[Mapping[str, str]], *, sample: int = 0,
                       tag: str | None = None) -> Completion:
        """One chat completion: from the cache if seen before, else from the model within the budget."""
        msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
        params = self.params()
        key = request_key(self.name, params, msgs, self.sample_key(sample))
        if (cached := self._from_cache(key, tag)) is not None:
            return cached
        est = sum(len(m["content"]) for m in msgs) // 3 + self.config.max_tokens
        async with self._semaphore():
            if (cached := self._from_cache(key, tag)) is not None:  # filled while we waited for a slot
                return cached
            self.ledger.reserve(est)
            transport = self.ledger.transport
            try:
                if transport is not None:
                    result = await transport.send(self, key, msgs, sample)
                else:
                    result = await self.call_model(msgs, params, sample)
            finally:
                self.ledger.release(est)
        self.ledger.add(Usage(calls=1, retries=result.retries, prompt_tokens=result.prompt_tokens,
                              completion_tokens=result.completion_tokens,
                              cached_prompt_tokens=result.cached_prompt_tokens, usd=result.usd,
                              seconds=result.seconds), tag)  # call time, so the ledger's per-tag seconds add up
        if self.cache is not None and transport is None:  # a transport's worker has cached it already
            self.cache.put(key, self.name, {"text": result.text, "prompt_tokens": result.prompt_tokens,
                                            "completion_tokens": result.completion_tokens, "usd": result.usd})
        return result

    async def call_model(self, msgs: list[dict[str, str]], params: dict[str, Any], sample: int) -> Completion:
        """One request to the model itself, with retries and backoff; no cache, ledger or budget."""
        c = self.config
        kwargs = {k: v for k, v in params.items() if k != "guidance"}
        if c.temperature > 0 and "seed" in kwargs:
            kwargs["seed"] = kwargs["seed"] + sample
        if c.guidance != 1.0:
            kwargs["guidance"] = c.guidance
        kwargs.update(self._credentials())
        secrets = [v for k, v in kwargs.items() if k == "api_key" and isinstance(v, str)]
        send, fatal, bad_request = self._http_send() if c.direct_http else self._litellm_send()
        rng: random.Random | None = None  # backoff jitter, made only when a call fails (seeding costs CPU)
        start = time.perf_counter()
        for attempt in range(c.retries + 1):
            try:
                text, tokens, usd = await send(msgs, kwargs)
                return Completion(text, *tokens, usd=usd, retries=attempt, seconds=time.perf_counter() - start)
            except fatal as e:
                raise ModelError(f"{c.name}: {_safe_message(e, secrets)}",
                                 bad_request=isinstance(e, bad_request)) from None
            except Exception as e:  # noqa: BLE001 - rate limits, 5xx, timeouts, resets, malformed replies
                if attempt >= c.retries:
                    raise ModelError(f"{c.name}: failed after {attempt + 1} attempts: "
                                     f"{_safe_message(e, secrets)}") from None
                rng = rng or random.Random(hash(tuple(m["content"] for m in msgs)))
                delay = _backoff(e, attempt, rng)
                refused = _connection_error(e) if _retry_notice is not None else None
                if refused is not None:
                    _notice(c.name, attempt, f"{c.name}: cannot reach the server ({_safe_message(refused, secrets)});"
                                             f" retrying ({attempt + 1} of {c.retries}) in {delay:.1f} s")
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _litellm_send(self) -> tuple[_Send, tuple[type[Exception], ...], type[Exception]]:
        """One call through litellm: (send, errors no retry can fix, the bad-request error type)."""
        lt, c = litellm(), self.config

        async def send(msgs: list[dict[str, str]], kwargs: dict[str, Any]) -> tuple[str, tuple[int, int, int], float]:
            resp = await lt.acompletion(model=c.name, messages=cacheable(c.name, msgs), timeout=c.timeout,
                                        max_retries=0, **kwargs)
            return _reply_text(resp), _usage(resp), _cost(lt, resp, c.name)

        return send, (lt.AuthenticationError, lt.BadRequestError, lt.NotFoundError, lt.PermissionDeniedError,
                      lt.ContextWindowExceededError, TaskError), lt.BadRequestError

    def _http_send(self) -> tuple[_Send, tuple[type[Exception], ...], type[Exception]]:
        """One call straight to an OpenAI-compatible server (promptlearn.openai_http), priced from litellm's
        cost map when the model is in it."""
        from promptlearn import openai_http as http

        c = self.config
        if c.name not in _UNPRICED:  # import litellm (seconds) now, not in the middle of replies in flight:
            litellm()  # pricing the first reply would block the loop and time out the requests still running

        async def send(msgs: list[dict[str, str]], kwargs: dict[str, Any]) -> tuple[str, tuple[int, int, int], float]:
            body = {k: v for k, v in kwargs.items() if k != "api_key"}
            data = await http.chat(c.api_base, c.name, msgs, body, api_key=kwargs.get("api_key"), timeout=c.timeout)
            tokens = http.usage(data)
            return http.reply_text(data), tokens, _token_cost(c.name, *tokens)

        return send, http.FATAL + (TaskError,), http.BadRequestError

    def _credentials(self) -> dict[str, Any]:
        c = self.config
        if c.api_key_env:
            key = os.environ.get(c.api_key_env)
            if not key:
                raise TaskError(f"environment variable {c.api_key_env} is not set", field="model.api_key_env",
                                fix=f"export {c.api_key_env}=...")
            return {"api_key": key}
        if c.api_base and not c.is_local:
            return {"api_key": os.environ.get("OPENAI_API_KEY", "no-key")}
        return {}


# Called with one line per backoff while a server refuses connections. Off by default, so a library user's
# terminal stays quiet; the CLI turns it on (stderr). Lines carry _safe_message: never a key.
_retry_notice: Callable[[str], None] | None = None
_noticed: dict[str, tuple[int, float]] = {}  # model -> (attempt, time) of its last line
_noticed_lock = threading.Lock()


def set_retry_notice(fn: Callable[[str], None] | None) -> None:
    """Have `fn(line)` told of each backoff after a refused connection (None: stay quiet)."""
    global _retry_notice
    _retry_notice = fn
    with _noticed_lock:
        _noticed.clear()  # a new listener hears the next backoff whatever an earlier one was told


def _connection_error(err: BaseException) -> BaseException | None:
    """The innermost connection failure behind an error (litellm reports a refused connection as an
    InternalServerError caused by one), or None when the server was reached."""
    found, seen = None, 0
    cur: BaseException | None = err
    while cur is not None and seen < 10:
        if isinstance(cur, ConnectionError) or type(cur).__name__ in ("APIConnectionError", "ConnectError"):
            found = cur
        cur, seen = cur.__cause__ or cur.__context__, seen + 1
    return found


def _notice(model: str, attempt: int, line: str) -> None:
    """One line per backoff: the calls in flight to one server fail together, so they share it."""
    now = time.monotonic()
    with _noticed_lock:
        last = _noticed.get(model)
        if last is not None and attempt <= last[0] and now - last[1] < 5.0:  # a late call's earlier backoff too
            return
        _noticed[model] = (attempt, now)
    fn = _retry_notice
    if fn is not None:
        fn(line)


def require_key(config: Any, *, field: str = "model", file: str | None = None) -> None:
    """Refuse a remote model whose provider key is not in the environment, before its first call (without one,
    `openai/gpt-4o-mini` was retried as a server error for 30 s). litellm names the variable the provider reads.

    Skipped for the embedded model, for `api_key_env` (the call itself refuses an unset variable) and for a
    self-hosted server (api_base not on api.openai.com), which may need no key. Only key and token variables
    count: AWS, Vertex and Ollama settings have defaults outside the environment (profiles, ADC, localhost).
    """
    if config.is_local or config.api_key_env or (config.api_base and "api.openai.com" not in config.api_base):
        return
    try:
        found = litellm().validate_environment(model=config.name)
    except Exception:  # noqa: BLE001 - a model litellm cannot place: its first call says what is wrong
        return
    missing = [k for k in found.get("missing_keys") or ()
               if ("API_KEY" in k or k.endswith("_TOKEN")) and not os.environ.get(k)]
    if found.get("keys_in_environment") or not missing:
        return
    names = " or ".join(missing) + ("," if len(missing) > 1 else "")
    raise TaskError(f"no key for {config.name}: set {names} or name a variable in {field}.api_key_env", file=file)


def cacheable(model: str, msgs: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Messages as sent: the system prompt marked as a cache breakpoint where the provider needs one.

    Anthropic models (direct, Bedrock, Vertex) cache a prefix only up to a block with `cache_control`, so the
    system message goes as one text block marked ephemeral: every example of a candidate then reads the system
    prompt from the cache (litellm prices cache reads and writes from its cost map). OpenAI, vLLM, Ollama and
    llama.cpp cache prefixes on their own: their messages go unchanged, system prompt first and byte-identical.
    The cache key is computed from the plain messages, so marking never changes a key.
    """
    if not _marks_cache(model):
        return msgs
    return [{"role": "system", "content": [{"type": "text", "text": m["content"],
                                            "cache_control": {"type": "ephemeral"}}]}
            if m["role"] == "system" and m["content"] else m for m in msgs]


def _marks_cache(model: str) -> bool:
    provider, _, rest = model.lower().partition("/")
    if not rest:
        return provider.startswith("claude")
    if provider == "anthropic":
        return True
    return provider in ("bedrock", "vertex_ai") and "claude" in rest


def _reply_text(resp: Any) -> str:
    choices = getattr(resp, "choices", None) or []
    if not choices:
        raise ValueError("the model returned no choices")
    content = choices[0].message.content
    return (content or "").strip()


def _usage(resp: Any) -> tuple[int, int, int]:
    u = getattr(resp, "usage", None)
    if u is None:
        return 0, 0, 0
    details = getattr(u, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", 0) or 0 if details else 0
    cached = cached or getattr(u, "cache_read_input_tokens", 0) or 0
    return int(u.prompt_tokens or 0), int(u.completion_tokens or 0), int(cached)


_UNPRICED: set[str] = set()  # models litellm's cost map does not know: priced 0 without asking again


def _cost(lt: Any, resp: Any, model: str) -> float:
    """USD of one response. litellm has already priced it while building the response (`_hidden_params`); only
    when it has not do we ask its cost map again, and a model the map does not know is remembered as unpriced
    (looking it up again on every call cost more CPU than the rest of the call)."""
    if model.startswith("local/") or model in _UNPRICED:
        return 0.0
    hidden = getattr(resp, "_hidden_params", None) or {}
    known = hidden.get("response_cost") if isinstance(hidden, dict) else getattr(hidden, "response_cost", None)
    if known is not None:
        return float(known)
    try:
        return float(lt.completion_cost(completion_response=resp) or 0.0)
    except Exception as e:  # noqa: BLE001 - unknown price: count tokens, cost 0
        if "isn't mapped" in str(e) or "not mapped" in str(e):
            _UNPRICED.add(model)
        return 0.0


def _token_cost(model: str, prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> float:
    """USD of a call made without litellm, from litellm's cost map (0 for a model it does not price)."""
    if model in _UNPRICED:
        return 0.0
    lt = litellm()
    from litellm.types.utils import Usage as LtUsage

    u = LtUsage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                total_tokens=prompt_tokens + completion_tokens, prompt_tokens_details={"cached_tokens": cached_tokens})
    provider, _, rest = model.partition("/")
    try:
        return float(sum(lt.cost_per_token(model=rest or provider, custom_llm_provider="openai", usage_object=u)))
    except Exception:  # noqa: BLE001 - a self-hosted model has no price: count its tokens, cost 0
        _UNPRICED.add(model)
        return 0.0


def _backoff(err: Exception, attempt: int, rng: random.Random) -> float:
    """Exponential backoff with jitter; a server's Retry-After wins when it gives one."""
    retry_after = _retry_after(err)
    base = float(os.environ.get("PROMPTLEARN_BACKOFF_BASE", "0.5"))
    delay = min(30.0, base * (2 ** attempt)) * (0.5 + rng.random() / 2)
    return min(60.0, retry_after) if retry_after is not None else delay


def _retry_after(err: Exception) -> float | None:
    """Seconds a server asked us to wait. litellm keeps the real headers in `litellm_response_headers`;
    its exception's `response` is often a synthetic one without them."""
    for headers in (getattr(err, "litellm_response_headers", None),
                    getattr(getattr(err, "response", None), "headers", None), getattr(err, "headers", None)):
        if not headers:
            continue
        if isinstance(headers, dict):
            headers = {str(k).lower(): v for k, v in headers.items()}
        for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
            value = headers.get(name)
            try:
                if value is not None and float(value) >= 0:
                    return float(value) * scale
            except (TypeError, ValueError):
                continue
    return None


def _safe_message(err: BaseException, secrets: Sequence[str] = ()) -> str:
    """An error's text with anything key-like masked: keys must never reach logs or the terminal.

    `secrets`: the credentials this call sent, masked whatever they look like (a provider may echo them)."""
    import re

    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    for secret in secrets:
        if len(secret) >= 6:
            text = text.replace(secret, "***")
    text = re.sub(r"(sk-|key-|Bearer\s+)[A-Za-z0-9_\-]{6,}", r"\1***", text)
    for name, value in os.environ.items():
        if value and len(value) >= 8 and ("KEY" in name or "TOKEN" in name or "SECRET" in name):
            text = text.replace(value, "***")
    return f"{type(err).__name__}: {text[:300]}"


def _register_local(lt: Any) -> None:
    """Make `local/<name>` a litellm provider served in-process by llama-cpp-python."""
    from litellm import CustomLLM
    from litellm.types.utils import ModelResponse

    class LocalProvider(CustomLLM):
        def completion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> ModelResponse:
            from promptlearn.local import get_model

            op = dict(kwargs.get("optional_params") or {})
            extra = op.pop("extra_body", None) or {}
            op.update(extra)
            try:
                reply = get_model(model).chat(messages, max_tokens=int(op.get("max_tokens", 128)),
                                              temperature=float(op.get("temperature", 0.0)), seed=op.get("seed", 0),
                                              guidance=float(op.get("guidance", 1.0)))
            except ValueError as e:  # llama-cpp: "Requested tokens (n) exceed context window of m"
                if "context window" not in str(e):
                    raise
                # the same request can never fit: not a fault to retry (an optimizer skips such a proposal)
                raise lt.ContextWindowExceededError(message=str(e), model=f"local/{model}",
                                                    llm_provider="local") from None
            usage = lt.Usage(prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
                             total_tokens=reply.prompt_tokens + reply.completion_tokens,
                             prompt_tokens_details={"cached_tokens": reply.reused_prompt_tokens})
            resp = ModelResponse(model=f"local/{model}", choices=[{
                "index": 0, "finish_reason": reply.finish_reason,
                "message": {"role": "assistant", "content": reply.text}}], usage=usage)
            return resp

        async def acompletion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> ModelResponse:
            return await asyncio.to_thread(self.completion, model, messages, *args, **kwargs)

    handler = LocalProvider()
    lt.custom_provider_map = [p for p in lt.custom_provider_map if p.get("provider") != "local"] + [
        {"provider": "local", "custom_handler": handler}]
    from litellm.utils import custom_llm_setup

    custom_llm_setup()


def count_tokens(config: Any, text: str) -> int:
    """Tokens of a text for this model: the GGUF's tokenizer for local models, litellm's counter otherwise."""
    if config.is_local:
        from promptlearn.local import get_model

        return len(get_model(config.name.split("/", 1)[1]).tokenize(text))
    try:
        return int(litellm().token_counter(model=config.name, text=text))
    except Exception:  # noqa: BLE001 - unknown tokenizer: a rough count beats none
        return max(1, len(text) // 4)
