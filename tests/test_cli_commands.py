"""The commands a new user reaches for: --version, --help, `checks`, `runs`, `show` and run ids (prefix, latest).

Runs are stores built by hand (tests/test_report.py's build_store); the CLI runs in this process.
"""

from __future__ import annotations

import json

import pytest

from test_cli_export_check import cli as run_cli
from test_report import build_store


def cli(monkeypatch, capsys, *args: str, columns: int = 80) -> tuple[int, str, str]:
    """Run `promptlearn ARGS` in this process at COLUMNS wide; returns (exit code, stdout, stderr)."""
    monkeypatch.setenv("COLUMNS", str(columns))
    return run_cli(monkeypatch, capsys, *args)


# ---- --version, --help ----------------------------------------------------------------------------------------


def test_version(monkeypatch, capsys):
    import promptlearn

    code, out, _ = cli(monkeypatch, capsys, "--version")
    assert code == 0 and out.strip() == f"promptlearn {promptlearn.__version__}"


def test_help_shows_boolean_flags_as_plain_flags(monkeypatch, capsys):
    for command in ("eval", "optimize", "check", "export"):
        code, out, _ = cli(monkeypatch, capsys, command, "--help")
        assert code == 0 and "--json" in out or "--provenance" in out, out
        assert "<bool>" not in out, out
        assert "<path>" in out  # options that take a value still say what kind


# ---- run ids: a unique prefix and `latest` wherever a run is named ---------------------------------------------


@pytest.fixture
def two_runs(tmp_path):
    import os

    root = tmp_path / "runs"
    old = build_store(root / "pirate-20250612-101530-s0-123")
    new = build_store(root / "helpdesk-20250613-091500-s1-007")
    os.utime(old / "run.yaml", (1_000_000, 1_000_000))  # `latest` is the run that began last, not the last written
    (old / "lineage.json").write_text((old / "lineage.json").read_text())
    return root, old, new


def test_resolve_run_prefix_latest_and_ambiguous(two_runs):
    from promptlearn.errors import RunError
    from promptlearn.store import resolve_run

    root, old, new = two_runs
    assert resolve_run("pirate-2025", root) == old
    assert resolve_run("help", root) == new
    assert resolve_run("latest", root) == new
    assert resolve_run(old, root) == old and resolve_run(old.name, root) == old
    build_store(root / "pirate-20250614-000000-s0-001")
    with pytest.raises(RunError, match="'pirate-2025' is ambiguous: 2 runs"):
        resolve_run("pirate-2025", root)
    with pytest.raises(RunError, match="run 'nope' not found"):
        resolve_run("nope", root)
    with pytest.raises(RunError, match="no runs in"):
        resolve_run("latest", root / "empty")


def test_show_report_export_take_a_prefix_and_latest(two_runs, monkeypatch, capsys, tmp_path):
    root, old, new = two_runs
    code, out, err = cli(monkeypatch, capsys, "show", "pirate", "--root", root)
    assert code == 0 and old.name in out, err
    code, out, err = cli(monkeypatch, capsys, "report", "latest", "--root", root, "--out", tmp_path / "r.html")
    assert code == 0 and (tmp_path / "r.html").exists(), err
    code, out, err = cli(monkeypatch, capsys, "export", "help", "--root", root, "--to", tmp_path / "app.yaml",
                         "--key", "assistant.system_prompt")
    assert code == 0 and f"of run {new.name}" in out, err


def test_resume_takes_latest(tmp_path):
    from promptlearn import optimize
    from promptlearn.testing import FakeLM, contract_task, wording_sensitive_responder

    task = contract_task()
    with FakeLM(wording_sensitive_responder):
        first = optimize(task, budget=40, runs_root=tmp_path / "runs")
        again = optimize(task, budget=40, runs_root=tmp_path / "runs", resume="latest")
    assert again.run_dir == first.run_dir and again.best.id == first.best.id


# ---- runs -------------------------------------------------------------------------------------------------------


def test_runs_fits_80_columns_with_year_and_whole_ids(two_runs, monkeypatch, capsys):
    root, old, new = two_runs
    (root / "broken-run").mkdir()
    (root / "broken-run" / "run.yaml").write_text("seed: 0\n")
    code, out, err = cli(monkeypatch, capsys, "runs", "--root", root)
    assert code == 0, err
    assert max(len(line) for line in out.splitlines()) <= 80, out
    for run in (old, new):
        line = next(ln for ln in out.splitlines() if run.name in ln)
        assert "finished" in line and "0.500/0.667" in line and "1.000/0.677" in line and "32" in line
    assert "UTC" in out and any(ln.strip().startswith("pirate · evolve · started 2") for ln in out.splitlines())
    assert "broken-run" in out and "unreadable" in out and "no store.sqlite" in out


def test_runs_json_and_filters(two_runs, monkeypatch, capsys):
    root, old, new = two_runs
    (root / "broken-run").mkdir()
    (root / "broken-run" / "store.sqlite").write_text("not a database")
    code, out, _ = cli(monkeypatch, capsys, "runs", "--root", root, "--json")
    rows = json.loads(out)
    assert code == 0 and [r["run_id"] for r in rows][-1] == "broken-run" and len(rows) == 3
    ok = next(r for r in rows if r["run_id"] == old.name)
    assert ok["status"] == "finished" and ok["best"] == {"val": 1.0, "test": pytest.approx(2 / 3 + 0.01)}
    assert ok["ledger"]["calls"] == 32 and ok["created"][:2] == "20"
    assert rows[-1]["status"] == "unreadable" and rows[-1]["error"]
    code, out, _ = cli(monkeypatch, capsys, "runs", "--root", root, "--json", "--status", "unreadable")
    assert [r["run_id"] for r in json.loads(out)] == ["broken-run"]
    code, out, _ = cli(monkeypatch, capsys, "runs", "--root", root, "--json", "--task", "pirate")
    assert {r["run_id"] for r in json.loads(out)} == {old.name, new.name}
    code, out, err = cli(monkeypatch, capsys, "runs", "--root", root, "--task", "nosuch")
    assert code == 0 and "no runs with task nosuch" in err


def test_runs_of_a_missing_root_exits_2(tmp_path, monkeypatch, capsys):
    code, out, err = cli(monkeypatch, capsys, "runs", "--root", tmp_path / "nope")
    assert code == 2 and err.startswith("promptlearn: error: no folder") and out == ""


# ---- show -------------------------------------------------------------------------------------------------------


def passed_over_store(tmp_path):
    """build_store's run, with the best set back to the 0.75 candidate: the 1.0 candidate and a violating one
    have higher val scores but were not accepted (low confidence, a violated constraint)."""
    from promptlearn.store import SQLiteRunStore
    from promptlearn.types import Candidate
    from test_report import BEST, CHILD, SEED

    run = build_store(tmp_path / "runs" / "pirate-1")
    store = SQLiteRunStore(run, create=False)
    child, best = Candidate(CHILD, (Candidate(SEED).id,)), Candidate(BEST)
    bad = Candidate("You are a pirate. Ahoy! Refuse everything.", (child.id,), "reflect")
    store.add_candidate(bad, "promoted")
    store.put_score(bad.id, "val", 0.9, 2, True, {"checks": {}})
    store.log_event("promote", {"id": best.id, "val": 1.0, "best": 0.75, "confidence": 0.62, "violations": []})
    store.log_event("promote", {"id": bad.id, "val": 0.9, "best": 0.75, "confidence": 0.95,
                                "violations": ["over_refusal 0.500 > 0.1"]})
    store.set_meta("best", child.id)
    store.close()
    return run, best.id, bad.id


def test_show_says_why_a_higher_val_candidate_was_not_accepted(tmp_path, monkeypatch, capsys):
    from promptlearn.loop import Options
    from promptlearn.report import render_report
    from promptlearn.report.summary import DEFAULT_CONFIDENCE

    assert DEFAULT_CONFIDENCE == Options().confidence
    run, best_id, bad_id = passed_over_store(tmp_path)
    code, out, err = cli(monkeypatch, capsys, "show", run, columns=200)
    assert code == 0, err
    assert "higher val than the best (0.750) but not accepted" in out
    assert f"{best_id} emphasize · val 1.000: confidence 0.62 that it beats the best of the time (val 0.750) " \
           "is below 0.80" in out
    assert f"{bad_id} reflect · val 0.900: violates over_refusal 0.500 > 0.1" in out
    page = render_report(run)
    assert 'id="not-accepted"' in page and "violates over_refusal 0.500 &gt; 0.1" in page
    assert "confidence 0.62 that it beats" in page


def test_show_all_and_json(tmp_path, monkeypatch, capsys):
    run = build_store(tmp_path / "runs" / "pirate-1")
    code, out, _ = cli(monkeypatch, capsys, "show", run, columns=200)
    assert code == 0 and "drop_sentence" not in out
    code, out, _ = cli(monkeypatch, capsys, "show", run, "--all", columns=200)
    assert code == 0 and "drop_sentence rejected" in out and "crossover screened_out" in out
    code, out, _ = cli(monkeypatch, capsys, "show", run, "--json")
    data = json.loads(out)
    assert code == 0 and data["run_id"] == "pirate-1" and len(data["candidates"]) == 5
    assert data["best"]["val"] == 1.0 and data["examples"]["counts"] == {"fixed": 1, "broken": 1, "same": 1}


# ---- checks -----------------------------------------------------------------------------------------------------


def test_checks_lists_parameters_types_defaults_and_an_example(monkeypatch, capsys):
    from promptlearn.checks import check_types

    code, out, _ = cli(monkeypatch, capsys, "checks")
    assert code == 0
    assert max(len(line) for line in out.splitlines()) <= 80
    blocks = [" ".join(b.split()) for b in out.strip().split("\n\n")]  # one line each, for the asserts
    assert len(blocks) == len(check_types())
    starts = next(b for b in blocks if b.startswith("starts_with (assertions)"))
    assert "ignore_case (bool, default false)" in starts and "e.g. {type: starts_with, value: Ahoy}" in starts
    words = next(b for b in blocks if b.startswith("length_constraints:number_words (ifeval)"))
    assert "num_words (int, required)" in words and "relation (str, required)" in words
    assert "num_words: 50, relation: at least}" in words


def test_checks_one_name_json_and_unknown(monkeypatch, capsys):
    code, out, _ = cli(monkeypatch, capsys, "checks", "regex")
    assert code == 0 and out.startswith("regex  (assertions)") and out.count("e.g.") == 1
    code, out, _ = cli(monkeypatch, capsys, "checks", "regex", "--json")
    d = json.loads(out)
    assert code == 0 and d["type"] == "regex" and d["family"] == "assertions"
    assert {"name": "match", "type": "str", "required": False, "default": "search"} in d["params"]
    code, out, _ = cli(monkeypatch, capsys, "checks", "--json")
    assert code == 0 and len(json.loads(out)) > 40
    code, out, err = cli(monkeypatch, capsys, "checks", "starts_witt")
    assert code == 2 and "did you mean 'starts_with'?" in err and "Traceback" not in err


def test_every_check_example_builds():
    import yaml

    from promptlearn.checks import build_check, check_types, describe_check

    for kind in check_types():
        d = describe_check(kind)
        spec = yaml.safe_load(d["example"])
        assert spec["type"] == kind, d
        assert d["summary"], kind
        if kind not in ("python", "python_callable"):  # these name a file or a callable of the user's
            build_check(spec)


# ---- runs/ in a fresh clone -------------------------------------------------------------------------------------


def test_runs_folder_ships_its_readme_and_ignores_the_rest():
    import shutil
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    text = (repo / "runs" / "README.md").read_text()
    for name in ("store.sqlite", "run.yaml", "lineage.json", "best_prompt.txt", "report.html", "commit"):
        assert name in text, name
    if shutil.which("git") and (repo / ".git").exists():
        def ignored(path: str) -> bool:
            return subprocess.run(["git", "check-ignore", "-q", path], cwd=repo).returncode == 0

        assert ignored("runs/pirate-1/store.sqlite") and ignored("runs/notes.txt")
        assert not ignored("runs/README.md")


# ---- 80 columns -------------------------------------------------------------------------------------------------


def test_eval_and_optimize_fit_80_columns(tmp_path, monkeypatch, capsys):
    from promptlearn.testing import FakeLM, wording_sensitive_responder
    from test_cli_export_check import write_task

    task = write_task(tmp_path / "task.yaml")
    with FakeLM(wording_sensitive_responder):
        code, out, err = cli(monkeypatch, capsys, "eval", task, "--prompt", "You are a pirate. Say Ahoy.")
        assert code == 0, err
        assert max(len(line) for line in out.splitlines()) <= 80, out
        assert out.count("loose score:") == 1 and "side effects vs seed:" in out
        assert not any(line.strip().startswith("effect") for line in out.splitlines()), out  # no wrapped labels
        code, out, err = cli(monkeypatch, capsys, "optimize", task, "--run-dir", tmp_path / "run",
                             "--budget-calls", "40", "--cache", tmp_path / "c.sqlite")
    assert code == 0, err
    table = out.split("best prompt:")[0]
    assert max(len(line) for line in table.splitlines()) <= 80, out
    assert "side effects on test:" in table and "budget 40 calls:" in table
