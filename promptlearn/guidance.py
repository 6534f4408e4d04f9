"""Classifier-free guidance on the system prompt for local models (arXiv 2502.12197).

At each decoding step the next-token scores are

    logp(w) = logp(w | no system) + g * (logp(w | system) - logp(w | no system))

restricted to plausible tokens: those whose probability *with* the system prompt is at least `mask_ratio` (0.1)
times the top token's; every other token scores -inf. Decoding is greedy. g = 1 is ordinary greedy decoding,
g > 1 pushes the reply further in the direction the system prompt moves it, g = 0 ignores the system prompt
(within the plausibility mask). Guided decoding is always greedy: the request's temperature and seed are not used.

"No system" is the same conversation without its system message(s), rendered by the model's own chat template.
SmolLM2's template inserts a default system prompt ("You are a helpful AI assistant named SmolLM, trained by
Hugging Face") when the conversation has none. We keep it: that is exactly what the model sees without a system
prompt, so the difference between the two contexts is the effect of *our* system prompt relative to the model's
default behaviour, which is what guidance should amplify. (Stripping the default would amplify "having any
system prompt at all" as well, and feed the model a context it was never trained on.)

Implementation: two llama.cpp contexts over the same GGUF. The conditional one is the LocalModel's own `Llama`
(so it shares its KV cache with ordinary decoding); the unconditional one is a second `Llama` instance created on
first use (SmolLM2-135M costs ~0.3 GB more). Each context keeps the longest common token prefix of its previous
evaluation, and each step evaluates only the newly chosen token in both. Compute is roughly twice an ordinary
call; it is counted: `prompt_tokens` includes the unconditional prompt and the generated tokens that context
re-reads, and `seconds` is the wall time of both.

Call with `model.lock` held (LocalModel.chat does): llama.cpp contexts are not thread safe.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from typing import Any, Sequence

import numpy as np

from promptlearn.local_reply import LocalReply

MASK_RATIO = 0.1
_UNCOND: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()
_UNCOND_LOCK = threading.Lock()


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities (float64) from raw logits."""
    x = np.asarray(logits, dtype=np.float64)
    m = np.max(x)
    return x - (m + math.log(np.sum(np.exp(x - m))))


def plausible(logp_sys: np.ndarray, mask_ratio: float = MASK_RATIO) -> np.ndarray:
    """Tokens whose probability with the system prompt is at least mask_ratio times the top token's."""
    lp = np.asarray(logp_sys, dtype=np.float64)
    if mask_ratio <= 0:
        return np.ones(lp.shape, dtype=bool)
    return lp >= np.max(lp) + math.log(mask_ratio)


def guided_logprobs(logp_sys: np.ndarray, logp_nosys: np.ndarray, g: float,
                    mask_ratio: float = MASK_RATIO) -> np.ndarray:
    """Guided scores: logp_nosys + g * (logp_sys - logp_nosys) on plausible tokens, -inf elsewhere.

    Computed as logp_sys + (g - 1) * (logp_sys - logp_nosys), the same quantity, so that g == 1 returns
    logp_sys bit for bit (and its argmax is ordinary greedy decoding's token: the top token is never masked).
    Not normalised: the scores rank tokens, they are not a distribution.
    """
    sys_ = np.asarray(logp_sys, dtype=np.float64)
    nosys = np.asarray(logp_nosys, dtype=np.float64)
    if sys_.shape != nosys.shape:
        raise ValueError(f"logp_sys and logp_nosys differ in shape: {sys_.shape} vs {nosys.shape}")
    keep = plausible(sys_, mask_ratio)
    out = np.full(sys_.shape, -np.inf)
    s = sys_[keep]
    n = np.maximum(nosys[keep], -1e30)  # a token impossible without the system prompt: finite, huge difference
    out[keep] = s + (g - 1.0) * (s - n)
    return out


def without_system(messages: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """The same conversation with its system message(s) removed."""
    return [dict(m) for m in messages if m.get("role") != "system"]


class _Context:
    """One llama.cpp context used for greedy stepping: prefill with prefix reuse, then one token per step."""

    def __init__(self, llama: Any):
        self.llama = llama

    def prefill(self, tokens: Sequence[int]) -> int:
        """Evaluate the prompt, keeping the longest common prefix of the previous evaluation in the KV cache
        (as Llama.generate does). Returns how many prompt tokens were reused."""
        llama = self.llama
        tokens = list(tokens)
        reuse = 0
        if llama.n_tokens > 0:
            for a, b in zip(llama._input_ids.tolist(), tokens):
                if a != b:
                    break
                reuse += 1
            if reuse == len(tokens):  # nothing left to decode: replay the last token to get fresh logits
                reuse -= 1
        if reuse > 0 and llama._ctx.kv_cache_seq_rm(-1, reuse, -1):
            llama.n_tokens = reuse
        else:
            llama.reset()
            reuse = 0
        llama.eval(tokens[reuse:])
        return reuse

    def push(self, token: int) -> None:
        self.llama.eval([token])

    def logits(self) -> np.ndarray:
        ptr = self.llama._ctx.get_logits_ith(-1)
        return np.ctypeslib.as_array(ptr, shape=(self.llama.n_vocab(),)).copy()


def unconditional_llama(model: Any) -> Any:
    """The second context for `model`: a Llama on the same GGUF with the same settings, made once per model."""
    with _UNCOND_LOCK:
        llama = _UNCOND.get(model)
        if llama is None:
            from llama_cpp import Llama

            from promptlearn.llama_load import without_amx

            base = model.llama
            with without_amx():
                llama = Llama(model_path=model.path, n_ctx=base.n_ctx(), n_threads=base.n_threads,
                              n_threads_batch=base.n_threads_batch, n_batch=base.n_batch, verbose=False, seed=0)
            _UNCOND[model] = llama
        return llama


def guided_generate(model: Any, messages: Sequence[dict[str, str]], *, max_tokens: int, guidance: float,
                    start: float | None = None, mask_ratio: float = MASK_RATIO) -> LocalReply:
    """Greedy decoding with classifier-free guidance on the system prompt. See the module docstring.

    With no system message both contexts are the same conversation and guidance has nothing to amplify: one
    context is used and the result is ordinary greedy decoding.
    """
    import llama_cpp

    start = time.perf_counter() if start is None else start
    llama = model.llama
    cond_tokens = model.tokenize(model.render(messages))
    uncond_tokens = model.tokenize(model.render(without_system(messages)))
    n_ctx = llama.n_ctx()
    longest = max(len(cond_tokens), len(uncond_tokens))
    if longest >= n_ctx:
        raise ValueError(f"Requested tokens ({longest}) exceed context window of {n_ctx}")
    max_tokens = min(max_tokens, n_ctx - longest) if max_tokens and max_tokens > 0 else n_ctx - longest

    cond = _Context(llama)
    reused = cond.prefill(cond_tokens)
    prompt_tokens = len(cond_tokens)
    uncond: _Context | None = None
    if uncond_tokens != cond_tokens:
        uncond = _Context(unconditional_llama(model))
        reused += uncond.prefill(uncond_tokens)
        prompt_tokens += len(uncond_tokens)

    vocab = llama._model.vocab
    stops = [s.encode("utf-8") for s in model._stops()]
    out: list[int] = []
    text = b""
    finish = "length"
    while len(out) < max_tokens:
        lp_sys = log_softmax(cond.logits())
        lp_no = log_softmax(uncond.logits()) if uncond is not None else lp_sys
        token = int(np.argmax(guided_logprobs(lp_sys, lp_no, guidance, mask_ratio)))
        if llama_cpp.llama_vocab_is_eog(vocab, token):
            finish = "stop"
            break
        out.append(token)
        text = llama.detokenize(out, prev_tokens=cond_tokens)
        hit = [s for s in stops if s in text]
        if hit:
            text = text[: text.index(hit[0])]
            finish = "stop"
            break
        if len(out) >= max_tokens:
            break
        cond.push(token)
        if uncond is not None:
            uncond.push(token)
            prompt_tokens += 1  # the unconditional context re-reads each generated token: count that work
    return LocalReply(text.decode("utf-8", "ignore").strip(), prompt_tokens, len(out), reused,
                      time.perf_counter() - start, finish)
