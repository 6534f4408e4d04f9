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
            prompt_tokens = sum(len(m["content"].split()) for m in messages)
            usage = lt.Usage(prompt_tokens=prompt_tokens, completion_tokens=len(text.split()),
                             total_tokens=prompt_tokens + len(text.split()))
            return ModelResponse(model=f"fake/{model}", choices=[{
                "index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}], usage=usage)

        async def acompletion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> ModelResponse:
            return self.completion(model, messages, *args, **kwargs)

    lt.custom_provider_map = list(lt.custom_provider_map) + [{"provider": "fake", "custom_handler": FakeProvider()}]
    from litellm.utils import custom_llm_setup

    custom_llm_setup()


# ---- contract suite for optimizers ------------------------------------------------------------------------
# Every optimizer must pass these (tests/test_optimizer_contract.py runs them for the built-ins; a plugin can
# import and run them for its own). They use a scripted target whose behaviour depends on prompt wording.

AHOY_CUES = ("IMPORTANT", "Example", "Rules:", "Remember", "each", "Begin", "rule")


def wording_sensitive_responder(messages: Any) -> str:
    """Target replies 'Ahoy' only for some wordings; the proposer (asked to rewrite) returns an emphasised rule."""
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    last = messages[-1]["content"]
    if "<prompt>" in last or "system prompt" in last.lower() and not system:
        return "<prompt>You are a pirate. IMPORTANT: Start every reply with the word Ahoy.</prompt>"
    hits = sum(cue in system for cue in AHOY_CUES)
    user = last
    if hits and (len(user) + hits) % 3 != 0 or hits >= 2:
        return f"Ahoy! Here is my answer about {user[:20]}"
    return f"Sure, here is my answer about {user[:20]}"


def contract_task(n: int = 15, *, max_calls: int = 120, optimizer: str = "evolve") -> Any:
    from promptlearn.task import task_from_dict

    users = [f"Question number {i}: tell me about topic {i * 7 % 11}" for i in range(n)]
    return task_from_dict({
        "name": "contract", "model": {"name": "fake/target", "max_tokens": 16}, "prompt":
            "You are a pirate. Start every reply with the word Ahoy.",
        "protected": ["Ahoy"], "data": [{"examples": [{"id": f"q{i}", "user": u} for i, u in enumerate(users)]}],
        "checks": [{"type": "starts_with", "value": "Ahoy", "name": "ahoy"}],
        "splits": {"train": 0.4, "val": 0.3, "test": 0.3, "seed": 0},
        "budget": {"max_calls": max_calls}, "optimizer": {"name": optimizer},
    })


def run_contract(optimizer: str, tmp_path: Any, options: dict[str, Any] | None = None, *,
                 responder: Responder = wording_sensitive_responder, improves: bool = True,
                 parallel: int = 1) -> None:
    """Finds a better prompt; same seed -> same lineage; budget never exceeded; resume repeats no call (but
    those in flight at the interruption) and replays the lineage; protected clauses kept.

    `parallel`: proposals in flight (`optimizer.parallel`); run it with 1 and with more (the built-ins pass
    both, tests/test_optimizer_contract.py).

    `responder` scripts both the target and the proposer (default `wording_sensitive_responder`, whose proposer
    always writes the same rewrite, one that passes too few val examples to be accepted): an optimizer whose
    proposals come only from the proposer passes one that answers in its format with a rewrite that works.
    `improves=False` skips the "best beats the seed" check, for an optimizer that cannot beat it on this task
    and budget by design (e.g. one that only reorders what the seed already says); say why where you pass it.
    """
    from promptlearn.run import optimize
    from promptlearn.store import SQLiteRunStore

    budget = 120
    task = contract_task(max_calls=budget, optimizer=optimizer)
    options = {**(options or {}), "parallel": parallel}
    in_flight = 0 if parallel == 1 else task.model.max_concurrency  # calls a Ctrl-C may cut off before storing

    def lineage(run_dir: Any) -> list[tuple[str, tuple[str, ...], str]]:
        store = SQLiteRunStore(run_dir, create=False)
        return [(c["id"], tuple(c["parents"]), c["operator"]) for c in store.candidates()]

    with FakeLM(responder) as fake:
        first = optimize(task, optimizer, seed=3, run_dir=tmp_path / "a", cache_path=tmp_path / "c1.sqlite",
                         options=options)
        calls_first = fake.calls
    assert first.ledger.calls <= budget, f"{first.ledger.calls} calls > budget {budget}"
    assert calls_first <= budget
    if improves:
        assert first.best.val > first.seed.val, f"no better prompt found: best val {first.best.val}"
        best = SQLiteRunStore(tmp_path / "a", create=False).candidate(first.best.id)
        assert best is not None and best["status"] == "accepted" and best["operator"] != "seed", best

    with FakeLM(responder):
        second = optimize(task, optimizer, seed=3, run_dir=tmp_path / "b", cache_path=tmp_path / "c2.sqlite",
                          options=options)
    assert lineage(tmp_path / "a") == lineage(tmp_path / "b"), "same seed, different lineage"
    assert second.best.prompt == first.best.prompt

    # Interrupt in the middle of a model call, then resume: no completed call may be made again.
    def interrupting(messages: Any) -> str:  # Ctrl-C in the middle of a model call, halfway through the run
        if fake.calls == calls_first // 2:
            raise KeyboardInterrupt
        return responder(messages)

    with FakeLM(interrupting) as fake:
        try:
            optimize(task, optimizer, seed=3, run_dir=tmp_path / "r", cache_path=tmp_path / "c3.sqlite",
                     options=options)
        except KeyboardInterrupt:
            pass
        before = fake.calls
        fake.responder = responder
        resumed = optimize(task, resume=tmp_path / "r", cache_path=tmp_path / "c3.sqlite")
        total = fake.calls - 1  # the interrupted call never returned
    assert calls_first <= total <= calls_first + in_flight, \
        f"interrupted+resumed made {total} calls, an uninterrupted run {calls_first}"
    # Calls in flight in other threads may still return after the interrupted one: hence <=, not ==.
    assert calls_first // 2 <= before < calls_first, "the interruption should have happened mid-run"
    assert lineage(tmp_path / "r") == lineage(tmp_path / "a"), "resume changed the lineage"
    assert resumed.best.prompt == first.best.prompt

    for c in SQLiteRunStore(tmp_path / "a", create=False).candidates():
        if c["status"] != "rejected":
            assert "Ahoy" in c["prompt"], f"candidate {c['id']} lost the protected clause"
