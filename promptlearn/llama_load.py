"""How a llama.cpp model is loaded on this machine: the workarounds its CPU needs, in one place for every Llama()."""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

_PATCH_LOCK = threading.Lock()  # one load at a time swaps the default params (and puts them back)


def has_amx() -> bool:
    """Whether this llama.cpp build uses Intel AMX (compiled in by GGML_NATIVE on a CPU that has it)."""
    import llama_cpp

    return b"AMX_INT8 = 1" in llama_cpp.llama_print_system_info()


@contextlib.contextmanager
def without_amx() -> Iterator[None]:
    """Load the model without llama.cpp's AMX weight buffers where the build has them: its AMX matmul segfaults on
    the first decode of SmolLM2's Q4_1 weights (seen on an Intel Xeon VM with AMX, llama-cpp-python 0.3.36;
    ggml-org/llama.cpp#20824, and dspy dropped the AMX variant from its CI for the same crash). Llama() takes no
    flag for it, so its default model params are wrapped for the one call; elsewhere nothing changes."""
    import llama_cpp.llama as llama_module

    if not has_amx():
        yield
        return
    with _PATCH_LOCK:
        default = llama_module.llama_cpp.llama_model_default_params

        def params() -> Any:
            p = default()
            p.use_extra_bufts = False  # the extra buffer types are where AMX (and the CPU repack) live
            return p

        llama_module.llama_cpp.llama_model_default_params = params
        try:
            yield
        finally:
            llama_module.llama_cpp.llama_model_default_params = default
