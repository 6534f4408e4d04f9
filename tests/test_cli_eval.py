"""`promptlearn eval` end to end in a subprocess: JSON output, cache across processes, --min-score, side effects.

The real-model tests run a 6-row copy of the pirate task on the embedded SmolLM2; the loopback ones point the
same task at the in-process OpenAI-compatible server (`openai/loopback` + api_base).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from promptlearn.testing_server import LoopbackServer

from conftest import requires_model

REPO = Path(__file__).resolve().parents[1]
PROMPTLEARN = REPO / ".venv" / "bin" / "promptlearn"
N_ROWS = 6
KEYS = {"score", "checks", "n_examples", "calls", "cached_calls", "tokens", "usd", "seconds", "metrics",
        "side_effects"}


def small_pirate(dirpath: Path, n: int = N_ROWS, **changes) -> Path:
    """The shipped pirate task with its first n rows, all in val (plus any top-level changes)."""
    dirpath.mkdir(parents=True, exist_ok=True)
    spec = yaml.safe_load((REPO / "tasks" / "pirate.yaml").read_text())
    rows = (REPO / "tasks" / "data" / "pirate.jsonl").read_text().splitlines()[:n]
    (dirpath / "rows.jsonl").write_text("\n".join(rows) + "\n")
    spec["data"] = [{"file": "rows.jsonl"}]
    spec["splits"] = {"train": 0.0, "val": 1.0, "test": 0.0, "seed": 0}
    for key, value in changes.items():
        spec[key] = {**spec[key], **value} if isinstance(value, dict) and isinstance(spec.get(key), dict) else value
    path = dirpath / "pirate.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_eval(task: Path, *args: str, cache: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [str(PROMPTLEARN), "eval", str(task), *args]
    if cache is not None:
        cmd += ["--cache", str(cache)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=task.parent)


def one_json(proc: subprocess.CompletedProcess) -> dict:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stdout.strip().splitlines()) == 1, proc.stdout
    return json.loads(proc.stdout)


# ---- the embedded model -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pirate_run(tmp_path_factory):
    """One fresh evaluation of the small pirate task; later tests reuse its cache file."""
    d = tmp_path_factory.mktemp("pirate")
    task, cache = small_pirate(d), d / "cache.sqlite"
    proc = run_eval(task, "--json", cache=cache)
    return task, cache, proc


@pytest.mark.model
@requires_model
def test_eval_json_real_model(pirate_run):
    _, _, proc = pirate_run
    assert proc.returncode == 0, proc.stderr
    out = one_json(proc)
    assert KEYS <= set(out)
    assert out["n_examples"] == N_ROWS and out["calls"] == N_ROWS and out["cached_calls"] == 0
    assert 0.0 <= out["score"] <= 1.0 and out["complete"] is True
    assert set(out["checks"]) == {"starts_with_ahoy", "answers"}
    assert out["tokens"] > 0 and out["usd"] == 0.0 and out["seconds"] > 0
    assert out["metrics"]["score"] == out["score"]
    assert out["side_effects"]["mean_reply_tokens"] > 0 and out["side_effects"]["prompt_tokens"] > 0


@pytest.mark.model
@requires_model
def test_second_run_is_all_cached(pirate_run):
    task, cache, first = pirate_run
    out = one_json(run_eval(task, "--json", cache=cache))
    assert out["calls"] == 0 and out["cached_calls"] == N_ROWS
    assert out["score"] == one_json(first)["score"] and out["checks"] == one_json(first)["checks"]
    assert out["tokens"] == 0  # cached calls cost nothing


@pytest.mark.model
@requires_model
def test_min_score_above_the_score_exits_1(pirate_run):
    task, cache, first = pirate_run
    above = round(one_json(first)["score"] + 0.001, 3)
    assert above <= 1  # a threshold above 1 is refused (exit 2): tests/test_fuzz_inputs.py
    proc = run_eval(task, "--min-score", str(above), cache=cache)  # table output this time
    assert proc.returncode == 1
    assert f"below --min-score {above}" in proc.stderr and "Traceback" not in proc.stderr
    assert "score" in proc.stdout and "pirate" in proc.stdout


@pytest.mark.model
@requires_model
def test_other_prompt_reports_side_effects_against_seed(pirate_run):
    task, cache, _ = pirate_run
    proc = run_eval(task, "--json", "--prompt", "You are a pirate. Begin each answer with Ahoy!", cache=cache)
    assert proc.returncode == 0, proc.stderr
    out = one_json(proc)
    fx = out["side_effects"]
    assert fx["fixed"] + fx["broken"] + fx["same"] == N_ROWS
    assert len(fx["fixed_ids"]) == fx["fixed"] and len(fx["broken_ids"]) == fx["broken"]
    assert fx["verbosity"] > 0
    assert out["calls"] == N_ROWS and out["cached_calls"] == N_ROWS  # the seed's replies come from the cache


# ---- the same task on the loopback server (no model needed) ---------------------------------------------------


def ahoy_every_other(body: dict) -> str:
    user = body["messages"][-1]["content"]
    return ("Ahoy! " if len(user) % 2 else "Well, ") + user


def test_cli_remote_model_json_and_side_effects(tmp_path):
    with LoopbackServer(responder=ahoy_every_other) as srv:
        task = small_pirate(tmp_path, model={"name": "openai/loopback", "api_base": srv.base_url})
        out = one_json(run_eval(task, "--json", "--prompt", "Arr. Start with Ahoy.", cache=tmp_path / "c.sqlite"))
        systems = {r["body"]["messages"][0]["content"] for r in srv.requests}
    rows = [json.loads(r) for r in (tmp_path / "rows.jsonl").read_text().splitlines()]
    expected = sum(len(r["user"]) % 2 for r in rows) / len(rows)
    assert KEYS <= set(out)
    assert out["calls"] == 2 * N_ROWS and len(systems) == 2  # candidate and seed, one request per example each
    assert out["checks"]["starts_with_ahoy"] == pytest.approx(expected)
    fx = out["side_effects"]
    assert (fx["fixed"], fx["broken"], fx["same"]) == (0, 0, N_ROWS)  # the fake server ignores the prompt


def test_cli_budget_stop_reports_partial_result(tmp_path):
    with LoopbackServer() as srv:
        task = small_pirate(tmp_path, model={"name": "openai/loopback", "api_base": srv.base_url},
                            budget={"max_calls": 2})
        proc = run_eval(task, "--json", "--no-cache")
        assert len(srv.requests) == 2
    assert proc.returncode == 0, proc.stderr
    out = one_json(proc)
    assert out["complete"] is False and "max_calls" in out["stop_reason"]
    assert out["n_examples"] == 2 and out["calls"] == 2
    assert "scores cover 2 of 6 examples" in proc.stderr


def test_cli_persistent_server_error_exits_1_with_one_line(tmp_path):
    from promptlearn.testing_server import FaultPlan

    with LoopbackServer(faults=FaultPlan.always("500")) as srv:
        task = small_pirate(tmp_path, n=1, model={"name": "openai/loopback", "api_base": srv.base_url, "retries": 1})
        proc = run_eval(task, "--json", "--no-cache")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("promptlearn: error:") and "failed after 2 attempts" in lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_cli_rejects_prompt_and_prompt_file_together(tmp_path):
    task = small_pirate(tmp_path, n=1, model={"name": "fake/x"})
    (tmp_path / "p.txt").write_text("x")
    proc = run_eval(task, "--prompt", "a", "--prompt-file", str(tmp_path / "p.txt"))
    assert proc.returncode == 2 and proc.stderr.startswith("promptlearn: error:") and "--prompt" in proc.stderr
