"""A real `mlflow server` for the tests: SQLite backend store and a local artifact root in a temp dir, on
127.0.0.1 and a free port, telemetry off; stopped with its whole process group (uvicorn and the job runner)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MlflowServer:
    def __init__(self, root: Path, startup_seconds: float = 180.0):
        self.root, self.port = root, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.startup_seconds = startup_seconds
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "server.log"

    def start(self) -> "MlflowServer":
        """Start it and wait for /health; a server that cannot start fails in CI (env CI=true), skips elsewhere."""
        try:
            import mlflow  # noqa: F401
        except ImportError:
            self._unavailable("mlflow is not installed (pip install -e '.[mlflow]')")
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                 f"sqlite:///{self.root / 'db.sqlite'}", "--artifacts-destination", str(self.root / "artifacts"),
                 "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
                cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.startup_seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        tail = self.log.read_text(errors="replace")[-2000:]
        self.stop()
        self._unavailable(f"mlflow server did not start within {self.startup_seconds:g} s: {tail}")
        return self

    def _unavailable(self, why: str) -> None:
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)

    def stop(self) -> None:
        """Kill the server's whole process group (SIGKILL after 10 s of SIGTERM); a dead server is fine."""
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # children that outlived the leader (the group has the leader's pid)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """Die at once, as a crashed tracker does."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
