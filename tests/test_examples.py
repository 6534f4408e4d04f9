"""examples/build_pipeline.py: optimize -> gate -> export into a copy of the app config -> re-check.

The real-model test runs the script as CI would (a subprocess, embedded SmolLM2, tiny budget). The others import
it and run main() in process on the scripted fake model, to cover the gate's failure path and --in-place.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from promptlearn.export import prompt_sha256, read_prompt, read_provenance
from promptlearn.testing import FakeLM, contract_task, wording_sensitive_responder

from conftest import requires_model

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "build_pipeline.py"
CONFIG = REPO / "examples" / "app_config.yaml"
KEY = "assistant.system_prompt"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_script():
    spec = importlib.util.spec_from_file_location("build_pipeline", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_config_holds_the_task_seed_prompt():
    from promptlearn import load_task

    text = CONFIG.read_text()
    assert text.count("#") >= 5, "the example config should show that comments survive an export"
    assert read_prompt(CONFIG, KEY) == load_task(REPO / "tasks" / "pirate.yaml").prompt


@pytest.fixture
def fake_task(tmp_path):
    spec = contract_task().spec.model_dump(mode="json", exclude_none=True)
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_pipeline_in_process_passes_and_exports_a_copy(fake_task, tmp_path, capsys):
    shipped = sha(CONFIG)
    out = tmp_path / "out"
    with FakeLM(wording_sensitive_responder):
        code = load_script().main(["--task", str(fake_task), "--budget", "120", "--limit-rows", "0", "--out",
                                   str(out), "--cache", str(tmp_path / "c.sqlite"), "--seed", "3"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert sha(CONFIG) == shipped, "the shipped config must not change without --in-place"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passed"] and summary["config"] == str(out / "app_config.yaml")
    assert summary["best"]["test"] >= summary["seed"]["test"]
    assert summary["recheck"]["score"] == summary["best"]["test"]
    exported = out / "app_config.yaml"
    assert read_prompt(exported, KEY) == summary["best"]["prompt"]
    prov = read_provenance(exported, KEY)  # a `# promptlearn:` comment above the key, not an extra key
    assert prov["run_id"] == summary["run_id"] and prov["sha256"] == prompt_sha256(summary["best"]["prompt"])
    assert summary["provenance"] == prov
    assert "system_prompt_provenance" not in exported.read_text()
    for line in CONFIG.read_text().splitlines():  # everything but the prompt itself is kept, comments included
        if "Start every reply" not in line and "system_prompt: |-" not in line:
            assert line in exported.read_text(), line
    assert "PASS: the best prompt is in" in printed and "re-check of" in printed
    assert (out / "runs" / summary["run_id"] / "store.sqlite").exists()


def test_pipeline_gate_failure_exits_1_and_exports_nothing(fake_task, tmp_path, capsys):
    out = tmp_path / "out"
    with FakeLM(wording_sensitive_responder):
        code = load_script().main(["--task", str(fake_task), "--budget", "120", "--out", str(out), "--cache",
                                   str(tmp_path / "c.sqlite"), "--seed", "3", "--tolerance", "-2", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 1 and summary["passed"] is False
    assert summary["reasons"][0].startswith("best test score") and "tolerance -2" in summary["reasons"][0]
    assert not (out / "app_config.yaml").exists() and "config" not in summary


def test_pipeline_in_place_and_errors(fake_task, tmp_path, capsys):
    config = tmp_path / "app.yaml"
    config.write_text(CONFIG.read_text())
    with FakeLM(wording_sensitive_responder):
        code = load_script().main(["--task", str(fake_task), "--budget", "120", "--out", str(tmp_path / "o"),
                                   "--config", str(config), "--in-place", "--seed", "3", "--tolerance", "1"])
    assert code == 0
    assert f"  # promptlearn: run_id={json.loads((tmp_path / 'o' / 'summary.json').read_text())['run_id']} " \
        in config.read_text()
    capsys.readouterr()
    assert load_script().main(["--task", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o2")]) == 2
    assert "build_pipeline: error:" in capsys.readouterr().err
    assert load_script().main(["--task", str(fake_task), "--config", str(tmp_path / "none.yaml"),
                               "--out", str(tmp_path / "o3")]) == 2
    assert "app config" in capsys.readouterr().err


@pytest.mark.model
@requires_model
def test_build_pipeline_script_on_the_embedded_model(tmp_path):
    """The script as CI runs it: tiny budget, 10 rows, 12 reply tokens; a lenient gate so it always exports."""
    shipped = sha(CONFIG)
    out = tmp_path / "out"
    env = {**os.environ, "PROMPTLEARN_THREADS": os.environ.get("PROMPTLEARN_THREADS", "1")}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--budget", "40", "--limit-rows", "10", "--max-tokens",
                           "12", "--out", str(out), "--cache", str(tmp_path / "cache.sqlite"), "--tolerance", "1",
                           "--max-broken", "10"], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert sha(CONFIG) == shipped
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passed"] and summary["calls"] <= 40
    assert summary["recheck"]["score"] == summary["best"]["test"]  # re-read from the config, same score
    assert read_prompt(out / "app_config.yaml", KEY) == summary["best"]["prompt"]
    prov = read_provenance(out / "app_config.yaml", KEY)
    assert prov["sha256"] == prompt_sha256(summary["best"]["prompt"]) and prov["run_id"] == summary["run_id"]
    assert "PASS" in proc.stdout and "# The system prompt. CI writes it" in (out / "app_config.yaml").read_text()
