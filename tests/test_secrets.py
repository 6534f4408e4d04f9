"""Secrets: an API key reaches the provider (Authorization header) and nothing else.

Not the run directory (store.sqlite, run.yaml, lineage.json, best_prompt.txt, the HTML report, an exported
config), not the cache, not stdout/stderr, not the message of an error, even when the provider echoes the key.
A key written into the task file's `model.params` is refused before any call.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from promptlearn.engine import Evaluator
from promptlearn.errors import ModelError, TaskError
from promptlearn.run import optimize
from promptlearn.task import task_from_dict
from promptlearn.testing import wording_sensitive_responder
from promptlearn.testing_server import LoopbackServer

REPO = Path(__file__).resolve().parents[1]
PROMPTLEARN = REPO / ".venv" / "bin" / "promptlearn"
KEY = "sk-test-SECRET1234567890abcdef"
PLAIN_KEY = "pl-live-SECRET0987654321zyxwvu"  # no sk- prefix, held in an env var whose name says nothing
MARKS = ("SECRET1234567890", "SECRET0987654321")  # any fragment of either key counts as a leak


def responder(body: dict) -> str:
    return wording_sensitive_responder(body["messages"])


def task_dict(base_url: str, **model: Any) -> dict:
    users = [f"Question number {i}: tell me about topic {i * 7 % 11}" for i in range(10)]
    return {
        "name": "secrets", "prompt": "You are a pirate. Start every reply with the word Ahoy.", "protected": ["Ahoy"],
        "model": {"name": "openai/loopback", "api_base": base_url, "max_tokens": 16, "retries": 1, **model},
        "data": [{"examples": [{"id": f"q{i}", "user": u} for i, u in enumerate(users)]}],
        "checks": [{"type": "starts_with", "value": "Ahoy", "name": "ahoy"}],
        "splits": {"train": 0.4, "val": 0.3, "test": 0.3, "seed": 0}, "budget": {"max_calls": 40},
    }


def leaks(*paths: Path) -> list[str]:
    """Every file under the paths (sqlite WAL and SHM files too) whose bytes hold a piece of a key."""
    found = []
    for root in paths:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for f in files:
            data = f.read_bytes()
            if any(m.encode() in data for m in MARKS):
                found.append(str(f))
    return found


def assert_clean_text(text: str) -> None:
    assert not any(m in text for m in MARKS), f"key leaked: {text[:500]}"


def auth_headers(srv: LoopbackServer) -> set[str]:
    return {r["headers"].get("authorization") for r in srv.requests}


@pytest.mark.parametrize("how", ["api_key_env", "OPENAI_API_KEY", "plain_key_env"])
def test_key_reaches_server_and_no_file(tmp_path, monkeypatch, how):
    key = PLAIN_KEY if how == "plain_key_env" else KEY
    model: dict[str, Any] = {}
    if how == "OPENAI_API_KEY":
        monkeypatch.setenv("OPENAI_API_KEY", key)
    else:
        env = "PROMPTLEARN_TEST_PROVIDER_KEY" if how == "api_key_env" else "MY_LLM_CRED"
        monkeypatch.setenv(env, key)
        model["api_key_env"] = env
    cache = tmp_path / "cache"
    with LoopbackServer(responder) as srv:
        task = task_from_dict(task_dict(srv.base_url, **model))
        res = optimize(task, seed=1, run_dir=tmp_path / "run", cache_path=cache / "c.sqlite")
        ev = Evaluator(task, cache_path=cache / "c.sqlite")  # eval, cache hits and misses alike
        try:
            ev.evaluate("Be a pirate. Say Ahoy first.", task.examples("val"))
        finally:
            ev.close()
        assert auth_headers(srv) == {f"Bearer {key}"}
    from promptlearn.report import write_report

    report = write_report(tmp_path / "run", tmp_path / "out" / "report.html")
    (tmp_path / "out" / "app.yaml").write_text("assistant:\n  system_prompt: old\n")
    res.export(tmp_path / "out" / "app.yaml", "assistant.system_prompt")
    assert report.exists() and (tmp_path / "run" / "run.yaml").exists() and (tmp_path / "run" / "lineage.json").exists()
    assert (tmp_path / "run" / "best_prompt.txt").exists() and list(cache.glob("c.sqlite*"))
    assert leaks(tmp_path / "run", cache, tmp_path / "out") == []
    assert_clean_text(json.dumps(res.to_json()))


class EchoKeyServer(LoopbackServer):
    """A provider that refuses the key and echoes it back in the error body (some proxies do)."""

    def __init__(self, status: int, **kw: Any):
        super().__init__(**kw)
        self.status = status

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = json.loads(await request.read())
        self._record(body, request, str(self.status))
        auth = request.headers.get("Authorization", "")
        msg = f"Incorrect API key provided: {auth.removeprefix('Bearer ')}. Your header was '{auth}'."
        return self._error(self.status, msg, "invalid_request_error")


@pytest.mark.parametrize("transport", ["http", "litellm"])
@pytest.mark.parametrize("status", [401, 403, 400, 500, 429])
@pytest.mark.parametrize("key,env", [(KEY, "PROMPTLEARN_TEST_PROVIDER_KEY"), (PLAIN_KEY, "MY_LLM_CRED")])
def test_error_echoing_the_key_is_masked(tmp_path, monkeypatch, status, key, env, transport):
    monkeypatch.setenv(env, key)
    with EchoKeyServer(status, retry_after=0.01) as srv:
        task = task_from_dict(task_dict(srv.base_url, api_key_env=env, transport=transport))
        ev = Evaluator(task, cache_path=tmp_path / "c.sqlite")
        try:
            with pytest.raises(ModelError) as info:
                ev.evaluate(task.prompt, task.examples("val")[:1])
        finally:
            ev.close()
        assert auth_headers(srv) == {f"Bearer {key}"}
    msg = str(info.value)
    assert "Incorrect API key provided" in msg, msg  # the provider's reason survives, the key does not
    assert_clean_text(msg)
    assert_clean_text(repr(info.value))
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no chained traceback shows it


@pytest.mark.parametrize("name", ["api_key", "API_KEY", "apiKey", "x-api-key", "access_token", "auth_token",
                                  "secret", "client_secret", "password", "authorization", "Authorization",
                                  "extra_headers", "headers", "aws_secret_access_key", "credentials", "bearer"])
def test_secret_like_params_are_refused(tmp_path, name):
    spec = task_dict("http://127.0.0.1:9/v1")
    spec["model"]["params"] = {name: {"Authorization": f"Bearer {KEY}"} if "header" in name else KEY}
    with pytest.raises(TaskError) as info:
        task_from_dict(spec)
    msg = str(info.value)
    assert "model.params" in msg and "api_key_env" in msg and "secret" in msg
    assert_clean_text(msg)


def test_secret_nested_in_params_is_refused():
    spec = task_dict("http://127.0.0.1:9/v1")
    spec["model"]["params"] = {"extra_body": {"provider": {"api_key": KEY}}}
    with pytest.raises(TaskError, match="model.params"):
        task_from_dict(spec)


@pytest.mark.parametrize("name", ["max_tokens", "max_completion_tokens", "top_p", "stop", "logit_bias",
                                  "response_format", "presence_penalty", "prompt_cache_key", "top_k"])
def test_ordinary_params_are_accepted(name):
    spec = task_dict("http://127.0.0.1:9/v1")
    spec["model"]["params"] = {name: 1}
    assert task_from_dict(spec).model.params == {name: 1}


def write_task(d: Path, base_url: str, **model: Any) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    path = d / "task.yaml"
    path.write_text(yaml.safe_dump(task_dict(base_url, **model), sort_keys=False))
    return path


def cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(PROMPTLEARN), *args], capture_output=True, text=True, timeout=240, cwd=cwd,
                          env={**os.environ, "PROMPTLEARN_BACKOFF_BASE": "0.001", **env})


@pytest.mark.slow  # three CLI processes, each importing litellm
def test_cli_output_never_shows_the_key(tmp_path):
    env = {"PROMPTLEARN_TEST_PROVIDER_KEY": KEY, "MY_LLM_CRED": PLAIN_KEY, "OPENAI_API_KEY": KEY}
    with LoopbackServer(responder) as srv:
        task = write_task(tmp_path / "ok", srv.base_url, api_key_env="PROMPTLEARN_TEST_PROVIDER_KEY")
        opt = cli(["optimize", str(task), "--run-dir", str(tmp_path / "ok" / "run"), "--cache",
                   str(tmp_path / "ok" / "c.sqlite")], tmp_path / "ok", env)
        ev = cli(["eval", str(task), "--json", "--cache", str(tmp_path / "ok" / "c.sqlite")], tmp_path / "ok", env)
        assert auth_headers(srv) == {f"Bearer {KEY}"}
    assert opt.returncode == 0 and ev.returncode == 0, opt.stderr + ev.stderr
    with EchoKeyServer(401) as srv:
        task = write_task(tmp_path / "bad", srv.base_url, api_key_env="MY_LLM_CRED")
        bad = cli(["optimize", str(task), "--run-dir", str(tmp_path / "bad" / "run"), "--cache",
                   str(tmp_path / "bad" / "c.sqlite")], tmp_path / "bad", env)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    (line,) = [ln for ln in bad.stderr.strip().splitlines() if not ln.startswith("promptlearn: warning:")]
    assert line.startswith("promptlearn: error: openai/loopback: AuthenticationError") and "--resume" in line
    for proc in (opt, ev, bad):
        assert_clean_text(proc.stdout + proc.stderr)
    assert leaks(tmp_path) == []


# ---- MLflow: credentials only in MLflow's own environment variables --------------------------------------------

class _RecordingTracker:
    """An HTTP server in MLflow's place that records each request's Authorization header and refuses it (401)."""

    def __init__(self) -> None:
        import http.server
        import threading

        seen = self.headers = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def _refuse(self) -> None:
                seen.append(self.headers.get("Authorization"))
                body = json.dumps({"error_code": "UNAUTHENTICATED", "message": "bad credentials"}).encode()
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _refuse

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "_RecordingTracker":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_mlflow_token_reaches_the_tracker_and_nothing_else(tmp_path, monkeypatch, capsys):
    import warnings

    from promptlearn.testing import FakeLM, contract_task

    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", KEY)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with _RecordingTracker() as tracker, FakeLM(wording_sensitive_responder), warnings.catch_warnings(record=True) \
            as caught:
        warnings.simplefilter("always")
        res = optimize(contract_task(), seed=0, run_dir=tmp_path / "run", cache_path=tmp_path / "c.sqlite",
                       tracking={"mlflow": tracker.uri, "experiment": "secrets"})
    assert tracker.headers and set(tracker.headers) == {f"Bearer {KEY}"}  # MLflow read its own variable
    assert res.tracking["error"] and "bad credentials" in res.tracking["error"]  # the refusal, said once
    assert [str(w.message) for w in caught if "MLflow" in str(w.message)] != []
    for text in [json.dumps(res.to_json()), *(str(w.message) for w in caught), *capsys.readouterr()]:
        assert_clean_text(text)
    assert leaks(tmp_path) == []


@pytest.mark.parametrize("where", ["argument", "task file"])
def test_an_mlflow_uri_with_credentials_is_refused(tmp_path, where):
    from promptlearn.testing import contract_task

    uri = f"https://ci:{KEY}@mlflow.example.invalid"
    with pytest.raises(TaskError) as info:
        if where == "argument":
            optimize(contract_task(), run_dir=tmp_path / "run", tracking=uri)
        else:
            spec = task_dict("http://127.0.0.1:9/v1")
            spec["tracking"] = {"mlflow": uri}
            task_from_dict(spec)
    assert "MLFLOW_TRACKING_PASSWORD" in str(info.value) and "tracking" in str(info.value)
    assert_clean_text(str(info.value))
    assert not (tmp_path / "run").exists()


def test_registry_uri_with_credentials_in_mlflows_variable_is_refused(monkeypatch):
    from promptlearn.errors import ConfigError
    from promptlearn.export import read_prompt

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"https://ci:{KEY}@mlflow.example.invalid")
    with pytest.raises(ConfigError) as info:
        read_prompt("mlflow://prompts/app@production")
    assert "MLFLOW_TRACKING_URI" in str(info.value)
    assert_clean_text(str(info.value))


# ---- a database password (postgresql://user:PASSWORD@host/db) ---------------------------------------------------


@pytest.mark.slow  # six CLI processes, each importing litellm
def test_database_password_is_masked_everywhere(pg_server, pg_url, tmp_path):
    """The password of a --store / cache URL reaches the server and nothing else: not stdout/stderr of any
    command, run.yaml, lineage.json, best_prompt.txt, report.html, an exported config, nor any row of the
    database itself; a wrong password's error masks it too."""
    import psycopg

    from promptlearn.testing_postgres import PASSWORD

    db = pg_url.rsplit("/", 1)[1]
    url = pg_server.url(db, user="alice", password=PASSWORD)
    outputs: list[str] = []

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(PROMPTLEARN), *args], capture_output=True, text=True, timeout=240, cwd=tmp_path,
                              env=dict(os.environ, PROMPTLEARN_BACKOFF_BASE="0.001"))
        outputs.append(proc.stdout + proc.stderr)
        assert (proc.returncode == 0) == ok, proc.stderr
        return proc

    with LoopbackServer(responder) as srv:
        spec = task_dict(srv.base_url)
        spec["cache"] = url  # the team's cache named in the task file: run.yaml keeps the task, never the password
        (tmp_path / "task.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        res = json.loads(run("optimize", "task.yaml", "--store", url, "--json", "--seed", "1").stdout)
        run_id = res["run_id"]
        run("runs", "--store", url)
        run("show", run_id, "--store", url)
        run("report", run_id, "--store", url)
        run("export", run_id, "--store", url, "--to", "app.yaml", "--key", "bot.prompt")
        run("check", "task.yaml", "--prompt-from", run_id, "--store", url)
        bad = run("runs", "--store", url.replace(PASSWORD, PASSWORD + "-wrong"), ok=False)
        assert "password authentication failed" in bad.stderr and "***" in bad.stderr
    files = [p for p in (tmp_path / "runs" / run_id).iterdir()] + [tmp_path / "app.yaml"]
    assert {p.name for p in files} >= {"run.yaml", "lineage.json", "best_prompt.txt", "report.html", "app.yaml"}
    assert yaml.safe_load((tmp_path / "runs" / run_id / "run.yaml").read_text())["task"]["cache"] == \
        url.replace(PASSWORD, "***")
    for text in outputs + [p.read_text() for p in files]:
        assert PASSWORD not in text and "Pa55word" not in text
    with psycopg.connect(pg_url, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'pl_%'")]
        for t in tables:
            for row in conn.execute(f"SELECT * FROM {t}"):
                assert "Pa55word" not in repr(row), (t, row)
