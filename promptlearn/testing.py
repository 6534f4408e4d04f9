"""Test helpers shipped with the package: a scripted fake model on the real litellm path.

`FakeLM` registers the litellm provider `fake/`, so tests exercise the same call path (cache, ledger, retries,
budget) as real models. Replies come from `enqueue()`d texts or a responder function of the messages.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

Responder = Callable[[Sequence[dict[str, str]]], str]


class FakeLM:
    """Scripted replies for model `fake/<anything>`; `.history` records every request's messages."""

    _active: "FakeLM | None" = None

    def __init__(self, responder: Responder | None = None):
        self.responder = responder
        self.queue: list[str] = []
        self.history: list[list[dict[str, str]]] = []
        self.params: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def enqueue(self, *texts: str) -> "FakeLM":
        self.queue.extend(texts)
        return self

    def reply(self, messages: Sequence[dict[str, str]], params: dict[str, Any]) -> str:
        with self._lock:
            self.history.append([dict(m) for m in messages])
            self.params.append(dict(params))
            if self.queue:
                return self.queue.pop(0)
        if self.responder is not None:
            return self.responder(messages)
        return "ok"

    @property
    def calls(self) -> int:
        return len(self.history)

    def __enter__(self) -> "FakeLM":
        install_fake_provider()
        FakeLM._active = self
        return self

    def __exit__(self, *exc: Any) -> None:
        FakeLM._active = None


def install_fake_provider() -> None:
    from promptlearn.lm import litellm

    lt = litellm()
    if any(p.get("provider") == "fake" for p in lt.custom_provider_map):
        return
    from litellm import CustomLLM
    from litellm.types.utils import ModelResponse

    class FakeProvider(CustomLLM):
        def completion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> ModelResponse:
            fake = FakeLM._active
            if fake is None:
                raise RuntimeError("fake/ model used outside a `with FakeLM():` block")
            params = dict(kwargs.get("optional_params") or {})
            text = fake.reply(messages, params)
            resp = ModelResponse(model=f"fake/{model}", choices=[{
                "index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}])
            prompt_tokens = sum(len(m["content"].split()) for m in messages)
            resp.usage = lt.Usage(prompt_tokens=prompt_tokens, completion_tokens=len(text.split()),
                                  total_tokens=prompt_tokens + len(text.split()))
            return resp

        async def acompletion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> ModelResponse:
            return self.completion(model, messages, *args, **kwargs)

    lt.custom_provider_map = list(lt.custom_provider_map) + [{"provider": "fake", "custom_handler": FakeProvider()}]
    from litellm.utils import custom_llm_setup

    custom_llm_setup()
