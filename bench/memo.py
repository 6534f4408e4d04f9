"""Counting (and, for the quality benchmark, replaying) every call to the embedded model.

`ModelMemo.install()` wraps `promptlearn.local.LocalModel.chat`, the one function every path to the embedded
model ends in: promptlearn's engine (litellm -> the `local` provider), DSPy's own `dspy.LM("local/smollm2")`
(litellm -> the same provider), and direct use. So one counter counts the model calls of promptlearn's
optimizers and of DSPy's teleprompters the same way: a call that reaches the model is a call, whichever cache
layer (promptlearn's disk cache, DSPy's memory cache) sat in front of it.

The memo is a benchmark device, not part of promptlearn. Greedy decoding of the same request on the same GGUF
gives the same reply, so a reply computed once (by any run) is replayed to every later identical request instead
of being generated again. Results are unchanged; the counter still counts the call, and the seconds the
generation originally took are added to `model_s`, so each run reports its wall time as if it had generated
every reply itself (`est_wall_s`). Sampled requests (temperature > 0) are keyed on their seed too.
A cap makes every call past it raise `CallCap` (used to stop DSPy, which has no hard budget of its own).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any


class CallCap(RuntimeError):
    """The benchmark's call cap was reached: this call was not made."""


class ModelMemo:
    def __init__(self, path: str | Path | None, *, replay: bool = True):
        self.replay = replay and path is not None
        self.lock = threading.Lock()
        self.db: sqlite3.Connection | None = None
        if self.replay:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=60)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, reply TEXT)")
        self.cap: int | None = None
        self.reset()
        self._installed = False

    # ---- counters ------------------------------------------------------------------------------------------
    def reset(self, cap: int | None = None) -> None:
        with self.lock:
            self.calls = 0  # calls that reached the model (replayed or generated)
            self.replayed = 0  # of which answered from the memo
            self.model_s = 0.0  # generation seconds of every call (the original seconds for replayed ones)
            self.replayed_s = 0.0  # of which saved by replaying
            self.capped = 0  # calls refused by the cap
            self.cap = cap

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"calls": self.calls, "replayed": self.replayed, "model_s": round(self.model_s, 3),
                    "replayed_s": round(self.replayed_s, 3), "capped": self.capped}

    # ---- the wrapper ---------------------------------------------------------------------------------------
    def install(self) -> "ModelMemo":
        if self._installed:
            return self
        from promptlearn import local

        original = local.LocalModel.chat
        memo = self

        def chat(model: Any, messages: Any, **kwargs: Any) -> Any:
            with memo.lock:
                if memo.cap is not None and memo.calls >= memo.cap:
                    memo.capped += 1
                    raise CallCap(f"benchmark call cap reached ({memo.cap} calls)")
                memo.calls += 1
            key = memo.key(model, messages, kwargs)
            hit = memo.get(key) if memo.replay else None
            if hit is not None:
                with memo.lock:
                    memo.replayed += 1
                    memo.model_s += hit["seconds"]
                    memo.replayed_s += hit["seconds"]
                return local.LocalReply(hit["text"], hit["prompt_tokens"], hit["completion_tokens"],
                                        hit.get("reused_prompt_tokens", 0), hit["seconds"],
                                        hit.get("finish_reason", "stop"))
            reply = original(model, messages, **kwargs)
            with memo.lock:
                memo.model_s += reply.seconds
            if memo.replay:
                memo.put(key, reply)
            return reply

        chat.__wrapped__ = original  # type: ignore[attr-defined]
        local.LocalModel.chat = chat  # type: ignore[method-assign]
        self._installed = True
        return self

    @staticmethod
    def key(model: Any, messages: Any, kwargs: dict[str, Any]) -> str:
        temperature = float(kwargs.get("temperature", 0.0) or 0.0)
        req = {"model": Path(str(getattr(model, "path", ""))).name,
               "messages": [{"role": m.get("role"), "content": m.get("content")} for m in messages],
               "max_tokens": kwargs.get("max_tokens", 128), "temperature": temperature,
               "seed": kwargs.get("seed", 0) if temperature > 0 else None,
               "guidance": float(kwargs.get("guidance", 1.0) or 1.0)}
        return hashlib.sha256(json.dumps(req, sort_keys=True, default=str).encode("utf-8")).hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        assert self.db is not None
        with self.lock:
            row = self.db.execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, reply: Any) -> None:
        assert self.db is not None
        data = {"text": reply.text, "prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
                "reused_prompt_tokens": reply.reused_prompt_tokens, "seconds": reply.seconds,
                "finish_reason": reply.finish_reason, "created": time.time()}
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO replies VALUES (?, ?)", (key, json.dumps(data)))
