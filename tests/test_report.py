"""The run report without a model: a store built by hand -> run_summary, the HTML sections, escaping, the CLI."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from promptlearn.report import render_report, run_summary, word_diff, write_report
from promptlearn.store import SQLiteRunStore
from promptlearn.types import Candidate, CheckResult, ExampleResult, TurnResult, Usage

REPO = Path(__file__).resolve().parents[1]
HOSTILE = '<script>window.__pwned=1</script></pre><img src=x onerror="window.__pwned=2">'

SEED = "You are a pirate. Start every reply with the word Ahoy."
CHILD = "You are a pirate. Always start each reply with the word Ahoy."
BEST = "You are a pirate. IMPORTANT: always start each reply with the word Ahoy. " + HOSTILE
REJECTED = "You are a pirate."
SCREENED = "Rules:\n- You are a pirate.\n- Start every reply with the word Ahoy."


def _res(ex_id: str, reply: str, ok: bool) -> ExampleResult:
    checks = {"ahoy": CheckResult(1.0 if ok else 0.0, "" if ok else "reply does not start with 'Ahoy'"),
              "answers": CheckResult(1.0)}
    return ExampleResult(ex_id, (TurnResult(reply, checks, completion_tokens=len(reply.split())),))


def build_store(run_dir: Path, *, finished: bool = True) -> Path:
    """A small finished run: seed -> reword (promoted) -> emphasize (accepted, best), one rejected, one screened
    out; test examples t1 fixed, t2 broken, t3 same. The best prompt and one reply carry HTML that must not run."""
    store = SQLiteRunStore(run_dir)
    seed, child = Candidate(SEED), Candidate(CHILD, (Candidate(SEED).id,), "reword")
    best = Candidate(BEST, (child.id,), "emphasize")
    rejected = Candidate(REJECTED, (seed.id,), "drop_sentence")
    screened = Candidate(SCREENED, (child.id, seed.id), "crossover")
    store.set_meta("config", {"optimizer": "evolve", "seed": 0, "options": {}, "fingerprint": "x"})
    store.set_meta("status", "running")
    statuses = {seed.id: "seed", child.id: "promoted", best.id: "accepted", rejected.id: "rejected",
                screened.id: "screened_out"}
    for c in (seed, child, best, rejected, screened):
        store.add_candidate(c, statuses[c.id])
    val = {seed.id: 0.5, child.id: 0.75, best.id: 1.0}
    for cid, score in val.items():
        store.put_score(cid, "val", score, 2, True, {"checks": {"ahoy": score, "answers": 1.0}})
        for i, ex in enumerate(("v1", "v2")):
            store.put_result(cid, _res(ex, f"Ahoy {ex}" if score > 0.5 * (i + 1) else f"Sure {ex}",
                                       score > 0.5 * (i + 1)), Usage(calls=1))
    store.put_score(seed.id, "test", 2 / 3, 3, True, {"checks": {"ahoy": 2 / 3, "answers": 1.0}})
    store.put_score(best.id, "test", 2 / 3 + 0.01, 3, True, {"checks": {"ahoy": 2 / 3, "answers": 1.0}})
    for ex, s_ok, b_ok in (("t1", False, True), ("t2", True, False), ("t3", True, True)):
        store.put_result(seed.id, _res(ex, f"{'Ahoy' if s_ok else 'Well'}, seed answer to {ex}", s_ok), Usage())
        reply = f"{'Ahoy' if b_ok else 'Hm'}, best answer to {ex}" + (" " + HOSTILE if ex == "t2" else "")
        store.put_result(best.id, _res(ex, reply, b_ok), Usage())
    progress = [("seed", seed.id, 4, seed.id, 0.5), ("promoted", child.id, 12, seed.id, 0.5),
                ("accepted", best.id, 20, best.id, 1.0), ("rejected", rejected.id, 20, best.id, 1.0),
                ("screened_out", screened.id, 26, best.id, 1.0)]
    for i, (event, cid, calls, best_id, best_val) in enumerate(progress):
        if event in ("promoted", "accepted"):
            store.log_event("promote", {"id": cid, "val": val[cid], "best": best_val, "confidence": 0.9,
                                        "violations": []})
        if event == "screened_out":
            store.log_event("screen", {"id": cid, "score": 0.5, "parent": 0.75})
        store.log_event("progress", {"event": event, "id": cid, "calls": calls, "usd": calls * 0.001,
                                     "best_val": best_val, "best": best_id, "proposals": i, "seconds": calls / 2})
    store.set_meta("seed", seed.id)
    store.set_meta("best", best.id)
    if finished:
        store.set_meta("status", "finished")
        store.set_meta("stop_reason", "optimizer finished")
        store.set_meta("ledger", {**Usage(calls=32, cached_calls=3, prompt_tokens=900, completion_tokens=100,
                                          usd=0.032, seconds=16.0).to_dict()})
        store.set_meta("ledger_by_tag", {
            "seed": Usage(calls=4, prompt_tokens=100, usd=0.004, seconds=2.0).to_dict(),
            "reword": Usage(calls=8, cached_calls=3, prompt_tokens=300, usd=0.008, seconds=4.0).to_dict(),
            "test": Usage(calls=6, prompt_tokens=200, usd=0.006, seconds=3.0).to_dict()})
        store.set_meta("test_metrics", {
            "seed": {"score": 2 / 3, "loose_score": 2 / 3, "checks": {}, "judge_errors": 0,
                     "sysbench": {"csr": 0.5, "isr": 0.4, "ssr": 0.3, "csr_by_type": {"format": 0.5}},
                     "ifeval": {"prompt_strict": 0.25, "prompt_loose": 0.5, "instruction_strict": 0.4,
                                "instruction_loose": 0.6}},
            "best": {"score": 0.68, "loose_score": 0.7, "checks": {}, "judge_errors": 0,
                     "sysbench": {"csr": 0.75, "isr": 0.6, "ssr": 0.5, "csr_by_type": {"format": 1.0}},
                     "ifeval": {"prompt_strict": 0.5, "prompt_loose": 0.5, "instruction_strict": 0.6,
                                "instruction_loose": 0.7}}})
    store.write_files(BEST)
    (run_dir / "run.yaml").write_text(yaml.safe_dump({
        "seed": 0, "task_file": None, "task": {"name": "pirate", "description": "Ahoy <b>always</b>",
                                               "model": {"name": "fake/target"}},
        "splits": {"train": ["r1"], "val": ["v1", "v2"], "test": ["t1", "t2", "t3"]}}))
    store.close()
    return run_dir


@pytest.fixture
def run_dir(tmp_path):
    return build_store(tmp_path / "runs" / "pirate-1")


def test_run_summary(run_dir):
    s = run_summary(run_dir)
    assert s["task"] == "pirate" and s["optimizer"] == "evolve" and s["status"] == "finished"
    ids = {c["prompt"]: c["id"] for c in s["candidates"]}
    assert s["path"] == [ids[SEED], ids[CHILD], ids[BEST]]
    assert s["seed"]["val"] == 0.5 and s["best"]["val"] == 1.0 and s["gain_val"] == 0.5
    assert s["gain_test"] == pytest.approx(0.01) and s["overfit_gap"] == pytest.approx(1.0 - 2 / 3 - 0.01)
    by = {c["id"]: c for c in s["candidates"]}
    assert by[ids[CHILD]]["gain"] == 0.25 and by[ids[BEST]]["gain"] == 0.25 and by[ids[SEED]]["gain"] is None
    assert by[ids[SCREENED]]["screen"] == {"score": 0.5, "parent": 0.75} and by[ids[SCREENED]]["val"] is None
    assert [(p["id"], p["calls"]) for p in s["points"]] == [(ids[SEED], 4), (ids[CHILD], 12), (ids[BEST], 20)]
    assert [p["best_val"] for p in s["best_line"]] == [0.5, 0.5, 1.0, 1.0, 1.0]
    ex = s["examples"]
    assert ex["split"] == "test" and ex["counts"] == {"fixed": 1, "broken": 1, "same": 1}
    assert [r["status"] for r in ex["rows"]] == ["fixed", "broken", "same"]
    assert ex["rows"][1]["seed"]["turns"][0]["failed"] == []
    assert ex["rows"][1]["best"]["turns"][0]["failed"][0]["check"] == "ahoy"
    assert s["ledger"]["calls"] == 32 and set(s["ledger_by_tag"]) == {"seed", "reword", "test"}
    json.dumps(s)  # plain data, ready for --json style output
    assert "examples" not in run_summary(run_dir, examples=False)


def test_report_sections_and_escaping(run_dir):
    page = render_report(run_dir)
    for section in ("best", "progress", "lineage", "checks", "examples", "ledger"):
        assert f'<section id="{section}">' in page
    # nothing from the run reaches the page unescaped
    assert "window.__pwned" in page and "<script>window" not in page and "<img" not in page
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in page
    assert "Ahoy &lt;b&gt;always&lt;/b&gt;" in page
    assert page.count("<script") == 2 and page.count("</script>") == 2
    # self-contained: no URL, no external resource of any kind, and a CSP that forbids loading any
    assert "://" not in page and "<link" not in page and not re.search(r"<[^>]+\s(src|href)=\"?[^#\"]", page)
    assert "default-src 'none'" in page
    # plots: one per x axis, a point per promoted candidate, the best-so-far line, test markers of seed and best
    assert len(re.findall(r'<svg class="plot" data-plot="(calls|usd)"', page)) == 2
    assert len(re.findall(r'<circle class="pt [a-z]+" r="[\d.]+" cx="[\d.]+" cy="[\d.]+" data-id=', page)) == 6
    assert page.count('class="bestline" d="M') == 2 and page.count("data-test=") == 4
    # lineage: five nodes, the path to the best highlighted, word diffs against the parent
    assert len(re.findall(r'<div class="node [^"]*" id="c-', page)) == 5
    assert len(re.findall(r'<div class="node [^"]*on-path[^"]*"', page)) == 3
    assert len(re.findall(r'<div class="node [^"]*is-best[^"]*"', page)) == 1
    assert "<del>Always</del><ins>IMPORTANT: always</ins>" in page and "<del>every</del><ins>start each</ins>" in page
    assert "screen 0.50 vs parent 0.75" in page and "also from" in page
    # checks, metrics, examples, ledger
    assert "<th>ahoy</th>" in page and "SysBench CSR" in page and "IFEval prompt_strict" in page
    assert len(re.findall(r'<tr class="ex (fixed|broken|same)">', page)) == 3
    assert "seed answer to t1" in page and "best answer to t1" in page
    assert re.search(r"<th>reword</th><td>8</td><td>3</td>", page) and 'class="total"' in page


def test_write_report_default_and_out(run_dir, tmp_path):
    path = write_report(run_dir)
    assert path == run_dir / "report.html" and path.read_text().startswith("<!DOCTYPE html>")
    other = write_report(run_dir, tmp_path / "elsewhere" / "r.html")
    assert other.read_text() == path.read_text()


def test_report_out_a_directory_writes_report_html_in_it(run_dir, tmp_path):
    """`--out DIR` ended in IsADirectoryError and left a temp file in DIR."""
    folder = tmp_path / "reports"
    folder.mkdir()
    path = write_report(run_dir, folder)
    assert path == folder / "report.html" and path.read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in folder.iterdir()) == ["report.html"]


def test_a_write_that_fails_leaves_no_temp_file(tmp_path):
    from promptlearn.errors import PromptlearnError
    from promptlearn.store import atomic_write

    (tmp_path / "taken").mkdir()
    with pytest.raises(IsADirectoryError):
        atomic_write(tmp_path / "taken", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(PromptlearnError, match="cannot write the report to"):
        write_report(build_store(tmp_path / "run"), blocker / "r.html")


def test_report_of_unfinished_run(tmp_path):
    """A run still going (no ledger, no test scores yet) still renders, with totals from the last progress."""
    run = build_store(tmp_path / "live", finished=False)
    s = run_summary(run)
    assert s["status"] == "running" and s["ledger"]["calls"] == 26 and s["test_metrics"] == {}
    page = render_report(run)
    assert '<section id="ledger">' in page and "Test-split metrics" not in page


def test_report_seed_only_and_zero_cost(tmp_path):
    store = SQLiteRunStore(tmp_path / "r")
    seed = Candidate(SEED)
    store.add_candidate(seed, "seed")
    store.put_score(seed.id, "val", 0.5, 1, True, {"checks": {"ahoy": 0.5}})
    store.put_result(seed.id, _res("v1", "Ahoy", True), Usage())
    store.log_event("progress", {"event": "seed", "id": seed.id, "calls": 0, "usd": 0.0, "best_val": 0.5,
                                 "best": seed.id, "proposals": 0, "seconds": 0.1})
    store.set_meta("seed", seed.id)
    store.close()
    page = render_report(tmp_path / "r")
    assert "every call cost $0" in page and "the best prompt is the seed" in page
    assert run_summary(tmp_path / "r")["examples"]["split"] == "all"


@pytest.mark.parametrize("a,b", [("", "x"), ("a b c", "a c d"), ("Start every reply.", "Start each reply!\n- x"),
                                 (SEED, BEST), ("same", "same")])
def test_word_diff_rebuilds_both_sides(a, b):
    d = word_diff(a, b)
    assert "".join(t for op, t in d if op != "insert") == a
    assert "".join(t for op, t in d if op != "delete") == b


# ---- CLI ----------------------------------------------------------------------------------------------------


def test_cli_runs_show_report(run_dir, tmp_path):
    from promptlearn.cli import app

    runner = CliRunner()
    root = run_dir.parent
    out = runner.invoke(app, ["runs", "--root", str(root)], env={"COLUMNS": "140"})
    assert out.exit_code == 0, out.output
    assert "pirate-1" in out.output and "evolve" in out.output and "finished" in out.output
    assert "0.500/0.667" in out.output and "1.000/0.677" in out.output and "32" in out.output

    out = runner.invoke(app, ["show", "pirate-1", "--root", str(root)], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    text = out.output
    assert text.index("seed ·") < text.index("reword ·") < text.index("emphasize ·")
    assert "[-Start-]{+Always+} [-every-]{+start each+}" in text  # wdiff markers when output has no colors
    assert "(+0.250)" in text and "IMPORTANT" in text and "ahoy" in text and "SysBench CSR" in text
    assert "drop_sentence" not in text  # only the path to the best is shown
    assert "1 fixed, 1 broken, 1 same" in text

    target = tmp_path / "out.html"
    out = runner.invoke(app, ["report", str(run_dir), "--out", str(target)])
    assert out.exit_code == 0, out.output
    assert out.output.strip() == str(target) and target.read_text().startswith("<!DOCTYPE html>")
    out = runner.invoke(app, ["report", "pirate-1", "--root", str(root)])
    assert out.exit_code == 0 and (run_dir / "report.html").exists()
    out = runner.invoke(app, ["report", "pirate-1", "--root", str(root), "--out", str(tmp_path)])
    assert out.exit_code == 0 and out.output.strip() == str(tmp_path / "report.html"), out.output


def test_cli_runs_empty_and_missing_run(tmp_path):
    exe = REPO / ".venv" / "bin" / "promptlearn"
    proc = subprocess.run([str(exe), "runs", "--root", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "no runs in" in proc.stderr
    proc = subprocess.run([str(exe), "show", "nope", "--root", str(tmp_path)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "run 'nope' not found" in proc.stderr and "Traceback" not in proc.stderr


def write_contract_task(tmp_path: Path) -> Path:
    """The contract task as a task file with its data file, for the CLI."""
    rows = [{"id": f"q{i}", "user": f"Question number {i}: tell me about topic {i}"} for i in range(10)]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "task.yaml").write_text(yaml.safe_dump({
        "name": "contract", "model": {"name": "fake/target", "max_tokens": 16},
        "prompt": "You are a pirate. Start every reply with the word Ahoy.", "protected": ["Ahoy"],
        "data": [{"file": "rows.jsonl"}], "checks": [{"type": "starts_with", "value": "Ahoy", "name": "ahoy"}],
        "splits": {"train": 0.4, "val": 0.3, "test": 0.3, "seed": 0}, "optimizer": {"name": "evolve"}}))
    return tmp_path / "task.yaml"


def test_cli_optimize_prints_report_path(tmp_path):
    from promptlearn.cli import app
    from promptlearn.testing import FakeLM, wording_sensitive_responder

    write_contract_task(tmp_path)
    with FakeLM(wording_sensitive_responder):
        out = CliRunner().invoke(app, ["optimize", str(tmp_path / "task.yaml"), "--budget-calls", "40",
                                       "--run-dir", str(tmp_path / "run"), "--cache", str(tmp_path / "c.sqlite")])
    assert out.exit_code == 0, out.output
    report = tmp_path / "run" / "report.html"
    assert report.exists() and f"report: {report}" in out.output.replace("\n", "")


# ---- the budget stated one way, per-tag seconds, the cost plot -------------------------------------------------


def test_budget_is_stated_one_way_in_the_terminal_and_the_report(tmp_path):
    from promptlearn.report import budget_text
    from promptlearn.testing import FakeLM, contract_task, wording_sensitive_responder

    task = contract_task(max_calls=30)
    n_test = len(task.examples("test"))
    with FakeLM(wording_sensitive_responder):
        from promptlearn.run import optimize

        result = optimize(task, run_dir=tmp_path / "run", cache_path=tmp_path / "c.sqlite")
    assert result.budget == {"max_calls": 30, "search": 30 - 2 * n_test, "test_reserve": 2 * n_test}
    line = budget_text(result.budget, result.ledger.requests)
    assert line == (f"budget 30 calls: {30 - 2 * n_test} for the search, {2 * n_test} held back for test; "
                    f"{result.ledger.requests} used")
    assert result.stop_reason == "budget stop: max_calls (the search's share) used up"
    assert "used of" not in result.stop_reason  # the numbers live in the budget line only
    page = render_report(result.run_dir)
    assert f'<p class="budget">{line}</p>' in page
    assert run_summary(result.run_dir)["budget"] == result.budget
    by_tag = run_summary(result.run_dir)["ledger_by_tag"]
    assert sum(v["seconds"] for v in by_tag.values()) > 0 and all(v["seconds"] > 0 for v in by_tag.values()
                                                                 if v["calls"])


def test_budget_line_in_the_terminal(tmp_path):
    from promptlearn.cli import app
    from promptlearn.testing import FakeLM, wording_sensitive_responder

    write_contract_task(tmp_path)
    with FakeLM(wording_sensitive_responder):
        out = CliRunner().invoke(app, ["optimize", str(tmp_path / "task.yaml"), "--budget-calls", "30",
                                       "--run-dir", str(tmp_path / "run"), "--cache", str(tmp_path / "c.sqlite")],
                                 env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    summary = run_summary(tmp_path / "run")
    used = summary["ledger"]["requests"]
    assert f"budget 30 calls: 24 for the search, 6 held back for test; {used} used" in out.output
    assert "used of" not in out.output


def test_no_cost_plot_for_a_free_model(tmp_path, run_dir):
    assert len(re.findall(r'<svg class="plot" data-plot="(calls|usd)"', render_report(run_dir))) == 2
    store = SQLiteRunStore(tmp_path / "free")
    seed = Candidate(SEED)
    store.add_candidate(seed, "seed")
    store.put_score(seed.id, "val", 0.5, 1, True, {"checks": {"ahoy": 0.5}})
    store.log_event("progress", {"event": "seed", "id": seed.id, "calls": 3, "usd": 0.0, "best_val": 0.5,
                                 "best": seed.id, "proposals": 0, "seconds": 0.1})
    store.set_meta("seed", seed.id)
    store.set_meta("ledger", Usage(calls=3, seconds=1.0).to_dict())
    store.close()
    page = render_report(tmp_path / "free")
    assert re.findall(r'<svg class="plot" data-plot="(calls|usd)"', page) == ["calls"]
    assert "every call cost $0" in page
