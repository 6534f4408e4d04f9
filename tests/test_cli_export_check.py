"""`promptlearn export` and `promptlearn check`: the prompt goes into the app's config and the build is gated on it.

Unit tests run the CLI in process on the scripted fake model (FakeLM) and one subprocess on the loopback server.
The `model` tests are the reproduce property on the embedded SmolLM2: optimize a tiny pirate task, export the best
prompt into a commented YAML config, and re-check it in a fresh process, from the run's cache and from an empty
cache (the model really runs again): the score equals the run's recorded test score exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from promptlearn.export import prompt_sha256, read_prompt, read_provenance
from promptlearn.testing import FakeLM, contract_task, wording_sensitive_responder
from promptlearn.testing_server import LoopbackServer

from conftest import requires_model

REPO = Path(__file__).resolve().parents[1]
PROMPTLEARN = REPO / ".venv" / "bin" / "promptlearn"

APP_CONFIG = """\
# Chat service settings. Loaded by app/settings.py at startup.
service:
  name: deck-helper
  port: 8080  # behind the load balancer

assistant:
  # The system prompt: written by `promptlearn export`, gated by `promptlearn check` in CI.
  system_prompt: "placeholder"
  temperature: 0  # greedy
"""


def cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run `promptlearn ARGS` in this process (so FakeLM answers); returns (exit code, stdout, stderr)."""
    from promptlearn import cli as cli_mod

    monkeypatch.setattr(sys, "argv", ["promptlearn", *map(str, args)])
    code = 0
    try:
        cli_mod.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out = capsys.readouterr()
    return code, out.out, out.err


def write_task(path: Path, **changes) -> Path:
    """contract_task() as a task file (fake/target model, 15 questions, starts_with Ahoy)."""
    task = contract_task()
    spec = task.spec.model_dump(mode="json", exclude_none=True)
    spec.update(changes)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def fake_run_once(tmp_path_factory):
    """One finished run of the contract task on the fake model, shared by the tests (each gets a copy)."""
    from promptlearn.run import optimize

    d = tmp_path_factory.mktemp("fake-run")
    task_file = write_task(d / "task.yaml")
    with FakeLM(wording_sensitive_responder):
        result = optimize(task_file, seed=0, run_dir=d / "runs" / "r1", cache_path=d / "c.sqlite")
    assert result.best.prompt != result.seed.prompt, "the fake run should find a better prompt"
    return d, result


@pytest.fixture
def fake_run(fake_run_once, tmp_path, monkeypatch):
    """A copy of the fake run under tmp_path/runs/r1 (cwd is tmp_path), its task file and its Result."""
    import dataclasses
    import shutil

    src, result = fake_run_once
    for name in ("task.yaml", "c.sqlite", "runs"):
        (shutil.copytree if (src / name).is_dir() else shutil.copy)(src / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path, tmp_path / "task.yaml", dataclasses.replace(result, run_dir=tmp_path / "runs" / "r1")


# ---- export --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, fmt", [("app.yaml", None), ("app.json", None), ("app.toml", None),
                                       (".env", None), ("settings.py", None), ("PROMPT.md", None),
                                       ("app.conf", "yaml")])
def test_export_every_format_with_provenance(fake_run, monkeypatch, capsys, name, fmt):
    tmp, _, result = fake_run
    key = "assistant.system_prompt" if name != "settings.py" else "SYSTEM_PROMPT"
    args = ["export", "r1", "--to", tmp / name, "--key", key] + (["--format", fmt] if fmt else [])
    code, out, err = cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert read_prompt(tmp / name, key, fmt=fmt) == result.best.prompt
    text = (tmp / name).read_text()
    assert result.run_id in text and prompt_sha256(result.best.prompt) in text
    assert f"{result.best.test:.4f}".rstrip("0") in text and f"{result.best.val:.4f}".rstrip("0") in text
    assert read_provenance(tmp / name, key, fmt=fmt) == {
        "run_id": "r1", "val": round(result.best.val, 4), "test": round(result.best.test, 4),
        "sha256": prompt_sha256(result.best.prompt)}
    # the default is a comment wherever the format has comments: no extra key for a strict schema to refuse
    assert ("_provenance" in text) == (name == "app.json")
    assert out.startswith(f"exported best prompt {result.best.id} of run r1 (val {result.best.val:.4f}, "
                          f"test {result.best.test:.4f}) to ")


def test_export_keeps_the_config_and_matches_result_export(fake_run, monkeypatch, capsys):
    tmp, _, result = fake_run
    (tmp / "a.yaml").write_text(APP_CONFIG)
    (tmp / "b.yaml").write_text(APP_CONFIG)
    code, _, err = cli(monkeypatch, capsys, "export", tmp / "runs" / "r1", "--to", tmp / "a.yaml", "--key",
                       "assistant.system_prompt", "--root", tmp / "elsewhere")
    assert code == 0, err
    result.export(tmp / "b.yaml", "assistant.system_prompt")
    text = (tmp / "a.yaml").read_text()
    assert text == (tmp / "b.yaml").read_text(), "CLI export and Result.export must write the same file"
    for line in APP_CONFIG.splitlines():
        if "placeholder" not in line:
            assert line in text
    assert set(yaml.safe_load(text)["assistant"]) == {"system_prompt", "temperature"}
    lines = text.splitlines()
    i = lines.index("  system_prompt: " + json.dumps(result.best.prompt)) if "\n" not in result.best.prompt else \
        next(n for n, ln in enumerate(lines) if ln.startswith("  system_prompt:"))
    assert lines[i - 1] == (f"  # promptlearn: run_id=r1 val={round(result.best.val, 4)} "
                            f"test={round(result.best.test, 4)} sha256={prompt_sha256(result.best.prompt)}")
    assert lines[i - 2] == "  # The system prompt: written by `promptlearn export`, gated by `promptlearn check` in CI."


@pytest.mark.parametrize("name", ["app.yaml", "app.toml", "app.json"])
def test_export_provenance_key_is_an_opt_in(fake_run, monkeypatch, capsys, name):
    tmp, _, result = fake_run
    key = "assistant.system_prompt"
    code, _, err = cli(monkeypatch, capsys, "export", "r1", "--to", tmp / name, "--key", key)
    assert code == 0, err
    code, _, err = cli(monkeypatch, capsys, "export", "r1", "--to", tmp / name, "--key", key,
                       "--provenance", "key")
    assert code == 0, err
    text = (tmp / name).read_text()
    assert "# promptlearn:" not in text and "system_prompt_provenance" in text  # switched, not both
    assert read_provenance(tmp / name, key)["sha256"] == prompt_sha256(result.best.prompt)
    before = text
    code, _, _ = cli(monkeypatch, capsys, "export", "r1", "--to", tmp / name, "--key", key, "--provenance", "key")
    assert code == 0 and (tmp / name).read_text() == before


@pytest.mark.parametrize("args, message", [
    (["--to", "x.yaml", "--provenance", "sibling"], "provenance must be one of comment, key, none"),
    (["--to", "x.env", "--provenance", "key"], "has no mappings for a sibling provenance key"),
])
def test_export_bad_provenance_form_exits_2(fake_run, monkeypatch, capsys, args, message):
    tmp, _, _ = fake_run
    code, out, err = cli(monkeypatch, capsys, "export", "r1", "--key", "a", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (out, err)
    assert not (tmp / "x.yaml").exists() and not (tmp / "x.env").exists()


def test_export_no_provenance(fake_run, monkeypatch, capsys):
    tmp, _, result = fake_run
    code, _, _ = cli(monkeypatch, capsys, "export", "r1", "--to", tmp / "c.json", "--key", "a.b",
                     "--provenance", "none")
    assert code == 0
    assert json.loads((tmp / "c.json").read_text()) == {"a": {"b": result.best.prompt}}
    code, _, _ = cli(monkeypatch, capsys, "export", "r1", "--to", tmp / "c.yaml", "--key", "a.b",
                     "--no-provenance")  # the older spelling still works
    assert code == 0 and "promptlearn" not in (tmp / "c.yaml").read_text()
    assert read_provenance(tmp / "c.yaml", "a.b") is None


@pytest.mark.parametrize("args, message", [
    (["nope", "--to", "x.yaml", "--key", "a"], "run 'nope' not found"),
    (["r1", "--to", "x.yaml", "--key", "a..b"], "empty part between dots"),
    (["r1", "--to", "x.yaml", "--key", ""], "non-empty string"),
    (["r1", "--to", "x.yaml", "--key", "a", "--format", "xml"], "unknown config format 'xml'"),
    (["r1", "--to", "x.txt", "--key", "a"], "cannot tell the config format of 'x.txt'"),
    (["r1", "--to", "holds.yaml", "--key", "assistant.temperature.x"], "holds a number, not a mapping"),
    (["r1", "--to", "broken.json", "--key", "a"], "cannot write the prompt to broken.json"),
])
def test_export_errors_are_one_line_exit_2(fake_run, monkeypatch, capsys, args, message):
    tmp, _, _ = fake_run
    (tmp / "holds.yaml").write_text(APP_CONFIG)
    (tmp / "broken.json").write_text("{not json")
    code, out, err = cli(monkeypatch, capsys, "export", *args)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("promptlearn: error:") and message in lines[0], err
    assert (tmp / "holds.yaml").read_text() == APP_CONFIG and (tmp / "broken.json").read_text() == "{not json"


def test_export_of_a_run_without_test_score_warns(tmp_path, monkeypatch, capsys):
    from promptlearn.store import SQLiteRunStore
    from promptlearn.types import Candidate

    store = SQLiteRunStore(tmp_path / "half")
    cand = Candidate("Say Ahoy.")
    store.add_candidate(cand, "seed")
    store.put_score(cand.id, "val", 0.5, 2, True)
    store.set_meta("best", cand.id)
    code, out, err = cli(monkeypatch, capsys, "export", tmp_path / "half", "--to", tmp_path / "a.yaml", "--key", "p")
    assert code == 0 and "test -)" in out and "no test score" in err
    assert read_provenance(tmp_path / "a.yaml", "p")["test"] is None
    assert "test=null" in (tmp_path / "a.yaml").read_text()
    SQLiteRunStore(tmp_path / "empty")
    code, _, err = cli(monkeypatch, capsys, "export", tmp_path / "empty", "--to", tmp_path / "a.yaml", "--key", "p")
    assert code == 2 and "has no best prompt yet" in err


def test_export_records_decoding_options_of_the_best_candidate(tmp_path, monkeypatch, capsys):
    """A candidate scored with decoding options (e.g. guidance on a local model) is not just its text."""
    from promptlearn.store import SQLiteRunStore
    from promptlearn.types import Candidate

    store = SQLiteRunStore(tmp_path / "g")
    cand = Candidate("Say Ahoy.", (), "optuna", {"guidance": 1.5, "trial": 3})
    store.add_candidate(cand, "accepted")
    store.put_score(cand.id, "val", 0.7, 3, True)
    store.put_score(cand.id, "test", 0.6, 3, True)
    store.set_meta("best", cand.id)
    code, _, err = cli(monkeypatch, capsys, "export", tmp_path / "g", "--to", tmp_path / "a.yaml", "--key", "p")
    assert code == 0 and "decoding options guidance=1.5" in err
    prov = read_provenance(tmp_path / "a.yaml", "p")
    assert prov["decoding"] == {"guidance": 1.5} and prov["test"] == 0.6


# ---- check ---------------------------------------------------------------------------------------------------


def test_check_reproduces_the_run_and_passes(fake_run, monkeypatch, capsys):
    tmp, task_file, result = fake_run
    (tmp / "app.yaml").write_text(APP_CONFIG)
    result.export(tmp / "app.yaml", "assistant.system_prompt")
    with FakeLM(wording_sensitive_responder) as fake:
        code, out, err = cli(monkeypatch, capsys, "check", task_file, "--prompt-from",
                             f"{tmp / 'app.yaml'}:assistant.system_prompt", "--json", "--cache", tmp / "c.sqlite",
                             "--min-score", result.seed.test, "--max-broken", "0")
        assert fake.calls == 0
    assert code == 0, err
    rep = json.loads(out)
    assert rep["score"] == result.best.test and rep["seed_score"] == result.seed.test
    assert rep["checks"] == dict(result.best.test_checks) and rep["passed"] is True and rep["reasons"] == []
    assert rep["broken"] == result.best.test_side_effects["broken"] == 0
    assert rep["config"] == str(tmp / "app.yaml") and rep["key"] == "assistant.system_prompt"
    assert rep["prompt_sha256"] == prompt_sha256(result.best.prompt) and rep["split"] == "test"
    # the provenance comment the export wrote is read back: the gate knows this is the run's prompt
    assert rep["provenance"]["sha256"] == rep["prompt_sha256"] and rep["provenance"]["run_id"] == "r1"
    assert rep["provenance_matches"] is True and "edited after the export" not in err


@pytest.mark.parametrize("form", ["comment", "key"])
def test_check_warns_when_the_prompt_was_edited_after_export(fake_run, monkeypatch, capsys, form):
    from promptlearn.export import export_prompt

    tmp, task_file, result = fake_run
    (tmp / "app.yaml").write_text(APP_CONFIG)
    result.export(tmp / "app.yaml", "assistant.system_prompt", provenance=form)
    export_prompt(tmp / "app.yaml", "assistant.system_prompt", "Hand-edited prompt.")  # provenance left as it was
    with FakeLM(wording_sensitive_responder):
        code, out, err = cli(monkeypatch, capsys, "check", task_file, "--prompt-from",
                             f"{tmp / 'app.yaml'}:assistant.system_prompt", "--json", "--cache", tmp / "c.sqlite")
    assert code == 0, err
    rep = json.loads(out)
    assert rep["provenance_matches"] is False and rep["provenance"]["sha256"] == prompt_sha256(result.best.prompt)
    said = " ".join(err.split())  # the warning wraps at the terminal width
    assert "is not the one run r1 exported" in said and "edited after the export" in said
    (tmp / "plain.yaml").write_text("p: Ahoy there.\n")
    with FakeLM(wording_sensitive_responder):
        code, out, err = cli(monkeypatch, capsys, "check", task_file, "--prompt-from", f"{tmp / 'plain.yaml'}:p",
                             "--json", "--cache", tmp / "c.sqlite")
    rep = json.loads(out)
    assert rep["provenance"] is None and rep["provenance_matches"] is None and "edited" not in err


@pytest.mark.parametrize("source", ["best_prompt.txt", "run id", "run dir"])
def test_check_takes_the_runs_best_prompt_file_or_the_run_itself(fake_run, monkeypatch, capsys, source):
    """`--prompt-from runs/r1/best_prompt.txt` (plain text) or a run: was 'must look like FILE:dotted.key'."""
    tmp, task_file, result = fake_run
    ref = {"best_prompt.txt": result.run_dir / "best_prompt.txt", "run id": "r1", "run dir": result.run_dir}[source]
    with FakeLM(wording_sensitive_responder) as fake:
        code, out, err = cli(monkeypatch, capsys, "check", task_file, "--prompt-from", ref, "--json",
                             "--cache", tmp / "c.sqlite")
        assert fake.calls == 0
    assert code == 0, err
    rep = json.loads(out)
    assert rep["prompt_sha256"] == prompt_sha256(result.best.prompt) and rep["score"] == result.best.test
    where = {"best_prompt.txt": ref, "run id": Path("runs") / "r1", "run dir": result.run_dir}[source]
    assert rep["key"] is None and rep["config"] == str(where)


def test_check_a_config_file_without_a_key_says_to_give_one(fake_run, monkeypatch, capsys):
    tmp, task_file, _ = fake_run
    (tmp / "app.yaml").write_text(APP_CONFIG)
    code, out, err = cli(monkeypatch, capsys, "check", task_file, "--prompt-from", tmp / "app.yaml")
    assert code == 2 and err.strip().splitlines() == [
        f"promptlearn: error: {tmp / 'app.yaml'} is a yaml config: give the prompt's key as "
        f"{tmp / 'app.yaml'}:dotted.key (e.g. assistant.system_prompt)"]


def test_check_lists_broken_examples_first_and_all_with_show_all(tmp_path, monkeypatch, capsys):
    """Failures came in example order, broken ones mixed with those the seed fails too, cut at 10."""
    task_file = write_task(tmp_path / "task.yaml")
    (tmp_path / "new.txt").write_text("Be terse. Ahoy")
    broken = {"q3", "q12"}  # pass with the seed, fail with the new prompt; every other example fails with both

    def responder(messages):
        system, user = messages[0]["content"], messages[-1]["content"]
        number = user.split(":")[0].split()[-1]
        return "Ahoy!" if f"q{number}" in broken and "terse" not in system else "Plain answer."

    with FakeLM(responder):
        code, out, err = cli(monkeypatch, capsys, "check", task_file, "--prompt-from", tmp_path / "new.txt",
                             "--split", "all")
        lines = [ln.strip() for ln in out.splitlines() if ln.strip().startswith(("fails", "..."))]
        assert code == 0, err
        assert {ln.split()[1].rstrip(":") for ln in lines[:2]} == broken, lines
        assert all("(broken)" in ln for ln in lines[:2]) and not any("(broken)" in ln for ln in lines[2:])
        assert len(lines) == 11 and lines[-1] == "... and 5 more failing examples (--show-all lists them)"
        code, out, err = cli(monkeypatch, capsys, "check", task_file, "--prompt-from", tmp_path / "new.txt",
                             "--split", "all", "--show-all")
    assert len([ln for ln in out.splitlines() if ln.strip().startswith("fails")]) == 15


def test_check_guidance_on_a_remote_model_is_a_one_line_error(fake_run, monkeypatch, capsys):
    tmp, task_file, result = fake_run
    result.export(tmp / "app.yaml", "assistant.system_prompt")
    with FakeLM(wording_sensitive_responder) as fake:
        code, out, err = cli(monkeypatch, capsys, "check", task_file, "--prompt-from",
                             f"{tmp / 'app.yaml'}:assistant.system_prompt", "--guidance", "1.5",
                             "--cache", tmp / "c.sqlite")
        assert fake.calls == 0
    assert code == 2 and len(err.strip().splitlines()) == 1 and "need the embedded model" in err


def test_check_fresh_cache_same_score(fake_run, monkeypatch, capsys):
    tmp, task_file, result = fake_run
    result.export(tmp / "app.toml", "assistant.system_prompt")
    with FakeLM(wording_sensitive_responder) as fake:
        code, out, err = cli(monkeypatch, capsys, "check", task_file, "--prompt-from",
                             f"{tmp / 'app.toml'}:assistant.system_prompt", "--json", "--no-cache")
    rep = json.loads(out)
    assert code == 0, err
    assert fake.calls == 2 * rep["n_examples"] and rep["calls"] == fake.calls and rep["cached_calls"] == 0
    assert rep["score"] == result.best.test and rep["seed_score"] == result.seed.test


def test_check_fails_below_min_score_with_reasons(fake_run, monkeypatch, capsys):
    tmp, task_file, result = fake_run
    from promptlearn.export import export_prompt

    export_prompt(tmp / "app.yaml", "assistant.system_prompt", result.seed.prompt)  # scores below the best
    assert result.seed.test < 0.99
    with FakeLM(wording_sensitive_responder):
        code, out, err = cli(monkeypatch, capsys, "check", task_file, "--prompt-from",
                             f"{tmp / 'app.yaml'}:assistant.system_prompt", "--cache", tmp / "c.sqlite",
                             "--min-score", "0.99")
    assert code == 1, err
    assert f"{result.seed.test:.4f}" in out and "seed" in out and "ahoy" in out
    assert f"FAIL: score {result.seed.test:.4f} is below the minimum 0.99" in out


def test_check_fails_when_it_breaks_seed_passes(tmp_path, monkeypatch, capsys):
    """A prompt that makes the model drop 'Ahoy' breaks every example the seed passed."""
    task_file = write_task(tmp_path / "task.yaml")
    (tmp_path / ".env").write_text("OTHER=1\nSYSTEM_PROMPT=\"Be terse. No pirate talk. Ahoy\"\n")

    def responder(messages):
        system = messages[0]["content"]
        return "Plain answer." if "No pirate" in system else "Ahoy! " + messages[-1]["content"]

    with FakeLM(responder):
        code, out, err = cli(monkeypatch, capsys, "check", task_file, "--prompt-from",
                             f"{tmp_path / '.env'}:SYSTEM_PROMPT", "--max-broken", "2", "--json")
    rep = json.loads(out)
    assert code == 1 and rep["passed"] is False
    assert rep["score"] == 0.0 and rep["seed_score"] == 1.0 and rep["broken"] == rep["n_examples"] == 5
    assert rep["reasons"] == [f"breaks 5 test example(s) the seed prompt passed (allowed 2): "
                              f"{', '.join(rep['broken_ids'])}"]
    assert all(f["broken"] and f["reply"] == "Plain answer." and "ahoy" in f["feedback"] for f in rep["failures"])


@pytest.mark.parametrize("ref, message", [
    ("app.yaml", "app.yaml is a yaml config: give the prompt's key as app.yaml:dotted.key"),
    ("nothing", "--prompt-from must look like FILE:dotted.key (e.g. app/config.yaml:assistant.system_prompt), "
                "a plain-text file or a run, got 'nothing'"),
    ("missing.yaml:a.b", "config file missing.yaml not found"),
    ("app.yaml:assistant.nope", "has no key 'assistant.nope'"),
    ("app.yaml:assistant", "holds a mapping, not a string"),
    ("app.txt:a", "cannot tell the config format"),
])
def test_check_bad_prompt_ref_exit_2(tmp_path, monkeypatch, capsys, ref, message):
    monkeypatch.chdir(tmp_path)
    task_file = write_task(tmp_path / "task.yaml")
    (tmp_path / "app.yaml").write_text(APP_CONFIG)
    (tmp_path / "app.txt").write_text("a: b\n")
    with FakeLM() as fake:
        code, _, err = cli(monkeypatch, capsys, "check", task_file, "--prompt-from", ref)
    assert code == 2 and fake.calls == 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("promptlearn: error:") and message in lines[0], err


def test_check_bad_split_and_task_exit_2(tmp_path, monkeypatch, capsys):
    task_file = write_task(tmp_path / "task.yaml")
    (tmp_path / "app.yaml").write_text(APP_CONFIG)
    ref = f"{tmp_path / 'app.yaml'}:assistant.system_prompt"
    code, _, err = cli(monkeypatch, capsys, "check", task_file, "--prompt-from", ref, "--split", "tset")
    assert code == 2 and "unknown split 'tset'" in err
    code, _, err = cli(monkeypatch, capsys, "check", tmp_path / "nope.yaml", "--prompt-from", ref)
    assert code == 2 and "file not found" in err


def test_check_subprocess_gate_failure_on_loopback(tmp_path):
    """Across a real process boundary: one JSON line on stdout, and exit 1 when the gate fails."""
    def responder(body: dict) -> str:  # no reply starts with Ahoy: the score is 0 for any prompt
        return "Arr! " + body["messages"][-1]["content"]

    with LoopbackServer(responder=responder) as srv:
        task = write_task(tmp_path / "task.yaml", model={"name": "openai/loopback", "api_base": srv.base_url})
        (tmp_path / "app.yaml").write_text(APP_CONFIG)
        env = {**os.environ, "PROMPTLEARN_CACHE_DIR": str(tmp_path / "cache")}
        proc = subprocess.run([str(PROMPTLEARN), "check", str(task), "--prompt-from",
                               "app.yaml:assistant.system_prompt", "--json", "--max-broken", "0", "--min-score",
                               "0.5"], capture_output=True, text=True, timeout=180, cwd=tmp_path, env=env)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stdout.strip().splitlines()) == 1
    rep = json.loads(proc.stdout)
    assert rep["score"] == 0.0 and rep["broken"] == 0 and rep["calls"] == 10 and rep["n_examples"] == 5
    assert rep["passed"] is False and rep["reasons"] == ["score 0.0000 is below the minimum 0.5"]


# ---- reproduce on the embedded model ---------------------------------------------------------------------------


def tiny_pirate(dirpath: Path, n: int = 10) -> Path:
    """The shipped pirate task cut to n rows and 12 reply tokens; splits 4/3/3."""
    spec = yaml.safe_load((REPO / "tasks" / "pirate.yaml").read_text())
    rows = (REPO / "tasks" / "data" / "pirate.jsonl").read_text().splitlines()[:n]
    (dirpath / "rows.jsonl").write_text("\n".join(rows) + "\n")
    spec["name"] = "pirate-tiny"
    spec["data"] = [{"file": "rows.jsonl"}]
    spec["model"]["max_tokens"] = 12
    path = dirpath / "pirate.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """optimize() on the embedded model, 40 calls; the model runs on one thread unless told otherwise (a busy
    CI box makes llama.cpp's spinning threads very slow)."""
    from promptlearn.local import get_model
    from promptlearn.run import optimize

    d = tmp_path_factory.mktemp("repro")
    task = tiny_pirate(d)
    cache = d / "cache.sqlite"
    old = os.environ.get("PROMPTLEARN_THREADS")
    os.environ.setdefault("PROMPTLEARN_THREADS", "1")
    try:
        threads = get_model("smollm2").llama.n_threads  # what this process uses (it may have loaded earlier)
        result = optimize(task, budget=40, seed=0, run_dir=d / "run", cache_path=cache)
    finally:
        if old is None:
            os.environ.pop("PROMPTLEARN_THREADS", None)
    (d / "app.yaml").write_text(APP_CONFIG)
    env = {**os.environ, "PROMPTLEARN_THREADS": str(threads), "PROMPTLEARN_CACHE_DIR": str(d / "unused-cache")}
    export = subprocess.run([str(PROMPTLEARN), "export", str(d / "run"), "--to", str(d / "app.yaml"), "--key",
                             "assistant.system_prompt"], capture_output=True, text=True, timeout=120, env=env)
    assert export.returncode == 0, export.stderr
    return d, task, cache, result, env


def run_check(d: Path, task: Path, env: dict, cache: Path) -> dict:
    proc = subprocess.run([str(PROMPTLEARN), "check", str(task), "--prompt-from",
                           f"{d / 'app.yaml'}:assistant.system_prompt", "--split", "test", "--json", "--cache",
                           str(cache)], capture_output=True, text=True, timeout=300, env=env, cwd=d)
    assert proc.returncode in (0, 1), proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stdout.strip().splitlines()) == 1, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.model
@requires_model
def test_reproduce_exported_prompt_same_cache(real_run):
    d, task, cache, result, env = real_run
    assert result.best.test is not None and result.ledger.calls <= 40
    text = (d / "app.yaml").read_text()
    assert "# The system prompt: written by `promptlearn export`" in text and "port: 8080  # behind" in text
    assert read_prompt(d / "app.yaml", "assistant.system_prompt") == result.best.prompt
    rep = run_check(d, task, env, cache)
    assert rep["score"] == result.best.test, (rep["score"], result.best.test)
    assert rep["seed_score"] == result.seed.test
    assert rep["checks"] == dict(result.best.test_checks)
    assert rep["calls"] == 0 and rep["cached_calls"] > 0  # every reply came from the run's cache


@pytest.mark.model
@requires_model
def test_exported_provenance_comment_and_toml_style_through_the_embedded_model(real_run):
    """The real run's export: provenance is a comment (no extra key), `check` reads it back and finds the sha256
    of the prompt it re-scores; into TOML the literal string style of the placeholder is kept where it can be."""
    import tomllib

    from promptlearn.export import read_provenance

    d, task, cache, result, env = real_run
    sha = prompt_sha256(result.best.prompt)
    text = (d / "app.yaml").read_text()
    assert "_provenance" not in text and set(yaml.safe_load(text)["assistant"]) == {"system_prompt", "temperature"}
    lines = text.splitlines()
    i = next(n for n, ln in enumerate(lines) if ln.startswith("  system_prompt:"))
    assert lines[i - 1].startswith(f"  # promptlearn: run_id={result.run_id} ") and lines[i - 1].endswith(sha)
    assert read_provenance(d / "app.yaml", "assistant.system_prompt")["sha256"] == sha
    rep = run_check(d, task, env, cache)
    assert rep["provenance_matches"] is True and rep["provenance"]["run_id"] == result.run_id
    assert rep["score"] == result.best.test and rep["prompt_sha256"] == sha

    toml = d / "app.toml"
    toml.write_text("[assistant]\nsystem_prompt = 'placeholder'  # literal, no escapes\ntemperature = 0\n")
    for _ in range(2):  # the second export must leave the file byte for byte as it was
        before = toml.read_text()
        proc = subprocess.run([str(PROMPTLEARN), "export", str(d / "run"), "--to", str(toml), "--key",
                               "assistant.system_prompt"], capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 0, proc.stderr
    assert toml.read_text() == before
    out = toml.read_text()
    assert tomllib.loads(out)["assistant"] == {"system_prompt": result.best.prompt, "temperature": 0}
    out_lines = out.splitlines()
    n = next(k for k, ln in enumerate(out_lines) if ln.startswith("system_prompt = "))
    prompt = result.best.prompt
    multi = "\n" in prompt
    plain = not any(ord(c) < 0x20 and c not in "\t\n" for c in prompt)
    literal_ok = plain and ("'" * 3 not in prompt and not prompt.endswith("'") if multi else "'" not in prompt)
    quote = ("'" if literal_ok else '"') * (3 if multi else 1)
    assert out_lines[n].startswith("system_prompt = " + quote), out
    assert out_lines[n - 1].startswith(f"# promptlearn: run_id={result.run_id} ")
    proc = subprocess.run([str(PROMPTLEARN), "check", str(task), "--prompt-from", f"{toml}:assistant.system_prompt",
                           "--json", "--cache", str(cache)], capture_output=True, text=True, timeout=300, env=env,
                          cwd=d)
    assert proc.returncode in (0, 1), proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["score"] == result.best.test and rep["provenance_matches"] is True
    assert rep["provenance"] == {"run_id": result.run_id, "val": round(result.best.val, 4),
                                 "test": round(result.best.test, 4), "sha256": sha}


@pytest.mark.model
@requires_model
def test_reproduce_exported_prompt_fresh_cache_reruns_the_model(real_run):
    """The real reproduce check: an empty cache, so the model answers again in a fresh process."""
    from promptlearn.store import SQLiteRunStore
    from promptlearn.task import load_task

    d, task, _, result, env = real_run
    fresh = d / "fresh-cache.sqlite"
    assert not fresh.exists()
    rep = run_check(d, task, env, fresh)
    n_prompts = 1 if result.best.prompt == result.seed.prompt else 2
    assert rep["calls"] == n_prompts * rep["n_examples"] and rep["cached_calls"] == 0
    assert rep["score"] == result.best.test, (rep["score"], result.best.test)
    assert rep["seed_score"] == result.seed.test
    assert rep["checks"] == dict(result.best.test_checks)
    # and the very same replies: every failing example's reply is the one the run stored
    stored = SQLiteRunStore(result.run_dir, create=False).results(result.best.id)
    for f in rep["failures"]:
        assert f["reply"] == stored[f["id"]].turns[-1].reply
    test_ids = {e.id for e in load_task(task).examples("test")}
    assert {f["id"] for f in rep["failures"]} == {k for k in test_ids if stored[k].score < 1 - 1e-9}


@pytest.mark.model
@requires_model
def test_reproduce_non_seed_prompt_across_processes(real_run):
    """A prompt other than the seed (so `check` scores it and the seed, one after the other): scored in this
    process, exported, then re-checked from an empty cache in a fresh process: the same score, exactly."""
    import promptlearn

    d, task, _, result, env = real_run
    other = "You are a pirate. IMPORTANT: Start every reply with the word Ahoy."
    assert other != result.seed.prompt
    here = promptlearn.evaluate(task, other, split="test", cache_path=d / "other-cache.sqlite")
    assert here.complete and here.usage.calls == len(here.results)
    promptlearn.export_prompt(d / "app.yaml", "assistant.alt_prompt", other)
    proc = subprocess.run([str(PROMPTLEARN), "check", str(task), "--prompt-from", f"{d / 'app.yaml'}:assistant."
                           "alt_prompt", "--json", "--cache", str(d / "other-fresh.sqlite")],
                          capture_output=True, text=True, timeout=300, env=env, cwd=d)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["calls"] == 2 * rep["n_examples"] and rep["cached_calls"] == 0
    assert rep["score"] == here.score and rep["checks"] == here.check_rates()
    assert rep["seed_score"] == result.seed.test


@pytest.mark.parametrize("args,expect", [
    (["optimize", "--runs-dir", "x", "task.yaml"], "No such option: --runs-dir (Possible options: --run-dir)"),
    (["eval"], "Missing argument 'task'"),
    (["optimize", "--budget-calls", "abc", "task.yaml"], "Invalid value for '--budget-calls'"),
    (["nosuch"], "No such command 'nosuch'"),
])
def test_bad_command_line_is_one_line_exit_2(monkeypatch, capsys, args, expect):
    code, out, err = cli(monkeypatch, capsys, *args)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("promptlearn: error: ") and expect in err, err
    assert "--help" in err and "╭" not in err


def test_help_and_exit_codes_of_commands_still_work(monkeypatch, capsys, tmp_path):
    code, out, _ = cli(monkeypatch, capsys, "--help")
    assert code == 0 and "optimize" in out
    code, out, err = cli(monkeypatch, capsys, "export", tmp_path / "missing-run", "--to", tmp_path / "a.yaml",
                         "--key", "p")
    assert code == 2 and err.startswith("promptlearn: error:")
