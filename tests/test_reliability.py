"""Reliability: provider faults, faults that never heal, kill -9 at random points, two runs sharing one cache.

Every run here optimizes a small task on `openai/loopback` against the loopback server (no real model): the
server's replies depend on the system prompt's wording (`wording_sensitive_responder`), so the optimizer has
something to find and two runs can be compared candidate by candidate.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from promptlearn.errors import ModelError, RunError
from promptlearn.run import optimize
from promptlearn.store import SQLiteRunStore
from promptlearn.task import task_from_dict
from promptlearn.testing import wording_sensitive_responder
from promptlearn.testing_server import FAULT_KINDS, FaultPlan, LoopbackServer, _body_key

REPO = Path(__file__).resolve().parents[1]
PROMPTLEARN = REPO / ".venv" / "bin" / "promptlearn"
BUDGET = 80
#: a seed whose clean run improves: 3 of seeds 0-9 do on this fake, with or without fixed_example (3 did before
#: it joined evolve's draws at a floor, where this seed prompt starts)
SEED = 1
PARALLEL = 3  # proposals in flight: every fault, kill and resume below happens with several of them scoring


def responder(body: dict) -> str:
    return wording_sensitive_responder(body["messages"])


def task_dict(base_url: str, *, max_calls: int = BUDGET, proposer: str | None = None, parallel: int = PARALLEL,
              **model: Any) -> dict:
    users = [f"Question number {i}: tell me about topic {i * 7 % 11}" for i in range(15)]
    spec = {
        "name": "faults", "prompt": "You are a pirate. Start every reply with the word Ahoy.", "protected": ["Ahoy"],
        "model": {"name": "openai/loopback", "api_base": base_url, "max_tokens": 16, "timeout": 2, "retries": 8,
                  **model},
        "data": [{"examples": [{"id": f"q{i}", "user": u} for i, u in enumerate(users)]}],
        "checks": [{"type": "starts_with", "value": "Ahoy", "name": "ahoy"}],
        "splits": {"train": 0.4, "val": 0.3, "test": 0.3, "seed": 0},
        "budget": {"max_calls": max_calls}, "optimizer": {"name": "evolve", "parallel": parallel},
    }
    if proposer:
        spec["proposer"] = {**spec["model"], "name": proposer}
    return spec


def make_task(base_url: str, **kw: Any):
    return task_from_dict(task_dict(base_url, **kw))


def lineage(run_dir: Path) -> list[tuple[str, tuple[str, ...], str]]:
    return [(c["id"], tuple(c["parents"]), c["operator"]) for c in SQLiteRunStore(run_dir, create=False).candidates()]


def scores(run_dir: Path) -> dict[str, dict[str, float]]:
    return {cid: {split: round(s["score"], 9) for split, s in by.items()}
            for cid, by in SQLiteRunStore(run_dir, create=False).scores().items()}


def ok_keys(requests: list[dict]) -> list[str]:
    return [_body_key(r["body"]) for r in requests if r["fault"] is None]


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """The reference: one run on a server without faults."""
    d = tmp_path_factory.mktemp("clean")
    with LoopbackServer(responder) as srv:
        res = optimize(make_task(srv.base_url), seed=SEED, run_dir=d / "run", cache_path=d / "cache.sqlite")
        reqs = srv.requests
    return {"result": res, "lineage": lineage(d / "run"), "scores": scores(d / "run"), "requests": reqs,
            "dir": d / "run"}


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch):
    monkeypatch.setenv("PROMPTLEARN_BACKOFF_BASE", "0.001")


# ---- 1. provider faults ---------------------------------------------------------------------------------


def test_clean_reference_run_improves_and_is_deterministic(clean, tmp_path):
    res = clean["result"]
    assert res.best.val > res.seed.val and len(clean["lineage"]) >= 3
    assert res.ledger.calls <= BUDGET and res.ledger.retries == 0 and res.ledger.calls == len(clean["requests"])
    assert all(r["fault"] is None for r in clean["requests"])


@pytest.mark.parametrize("transport", ["http", "litellm"])
def test_random_faults_of_every_kind_change_nothing_but_retries(clean, tmp_path, transport):
    """20% of requests fail (every fault kind, timeouts included): same lineage, same scores, retries counted.
    Through either transport: the reference run posts directly (transport auto), the litellm run must match it."""
    plan = FaultPlan.random(rate=0.2, kinds=FAULT_KINDS, seed=3)  # a plan whose faults hit every kind on this run
    with LoopbackServer(responder, faults=plan, hang_seconds=5.0, retry_after=0.01) as srv:
        res = optimize(make_task(srv.base_url, transport=transport), seed=SEED, run_dir=tmp_path / "run",
                       cache_path=tmp_path / "c.sqlite")
        reqs = srv.requests
    kinds = {r["fault"] for r in reqs} - {None}
    assert {"timeout", "reset", "malformed", "429", "500"} <= kinds, kinds  # the seed makes these happen
    assert lineage(tmp_path / "run") == clean["lineage"]
    assert scores(tmp_path / "run") == clean["scores"]
    assert res.best.prompt == clean["result"].best.prompt
    assert (res.seed.val, res.seed.test, res.best.val, res.best.test) == (
        clean["result"].seed.val, clean["result"].seed.test, clean["result"].best.val, clean["result"].best.test)
    faults = sum(r["fault"] is not None for r in reqs)
    assert res.ledger.calls == clean["result"].ledger.calls  # a retried call is still one call
    assert res.ledger.retries == faults > 0 and clean["result"].ledger.retries == 0
    assert sorted(ok_keys(reqs)) == sorted(ok_keys(clean["requests"]))  # exactly the same successful requests
    by_tag = SQLiteRunStore(tmp_path / "run", create=False).get_meta("ledger")
    assert by_tag["retries"] == faults and by_tag["calls"] == res.ledger.calls


def test_p16_budget_holds_through_random_faults_and_results_match_a_fault_free_run(tmp_path):
    """16 proposals in flight, 20% of requests failing (every fault kind): never a request past the budget,
    and the same lineage, scores and stop as the same run without faults."""
    runs = {}
    for name, plan in [("clean", None), ("faults", FaultPlan.random(rate=0.2, kinds=FAULT_KINDS, seed=2))]:
        with LoopbackServer(responder, faults=plan, hang_seconds=3.0, retry_after=0.01) as srv:
            res = optimize(make_task(srv.base_url, max_calls=160, parallel=16, concurrency=16), seed=SEED,
                           run_dir=tmp_path / name, cache_path=tmp_path / f"{name}.sqlite")
            answered = len(ok_keys(srv.requests))
        assert res.ledger.requests <= 160 and answered <= 160
        runs[name] = (res, lineage(tmp_path / name), scores(tmp_path / name))
    (a, la, sa), (b, lb, sb) = runs["clean"], runs["faults"]
    assert b.ledger.retries > 0 and a.ledger.retries == 0
    assert la == lb and sa == sb and len(la) > 16
    assert (a.ledger.requests, a.stop_reason, a.best.prompt, a.best.test) == (
        b.ledger.requests, b.stop_reason, b.best.prompt, b.best.test)
    assert a.stop_reason.startswith("budget stop") and a.seed.test is not None and a.best.test is not None


class GoesDown:
    """A server that answers `healthy_for` requests (or those `healthy` accepts), then fails with 500 forever."""

    def __init__(self, healthy_for: int | None = None, healthy: Callable[[dict], bool] | None = None):
        self.left, self.healthy, self.lock = healthy_for, healthy, threading.Lock()

    def __call__(self, body: dict) -> str | None:
        with self.lock:
            if self.healthy is not None:
                return None if self.healthy(body) else "500"
            self.left -= 1
            return None if self.left >= 0 else "500"


@pytest.mark.parametrize("healthy_for", [0, 7, 40, 72], ids=["at-once", "during-seed", "mid-search",
                                                             "during-test-scoring"])
def test_fault_that_never_heals_ends_run_resumably(clean, tmp_path, healthy_for):
    """The server dies for good: ModelError naming the resume command; resume on a healed server finishes the
    same run and repeats no request that was answered before."""
    run = tmp_path / "run"
    with LoopbackServer(responder, faults=FaultPlan(GoesDown(healthy_for))) as srv:
        task = make_task(srv.base_url, retries=2)
        with pytest.raises(ModelError) as info:
            optimize(task, seed=SEED, run_dir=run, cache_path=tmp_path / "c.sqlite")
        msg = str(info.value)
        assert "openai/loopback: failed after 3 attempts" in msg and "500" in msg
        assert msg.endswith(f"the run is saved, continue it with --resume {run}") and "\n" not in msg
        store = SQLiteRunStore(run, create=False)
        assert store.get_meta("status") == "failed"
        json.loads((run / "lineage.json").read_text())
        before = srv.requests
        answered = set(ok_keys(before))
        assert len(answered) == healthy_for

        srv.faults = None  # healed
        res = optimize(task, resume=run, cache_path=tmp_path / "c.sqlite")
        after = srv.requests[len(before):]
    assert not answered & {_body_key(r["body"]) for r in after}, "a request answered before was made again"
    assert lineage(run) == clean["lineage"] and scores(run) == clean["scores"]
    assert res.best.prompt == clean["result"].best.prompt and res.best.test == clean["result"].best.test
    assert SQLiteRunStore(run, create=False).get_meta("status") == "finished"
    assert res.ledger.calls == clean["result"].ledger.calls


def test_proposer_that_never_heals_ends_run_instead_of_searching_blind(tmp_path):
    """A dead proposer must not silently turn the run into 'optimizer finished' with nothing learned."""
    is_target = lambda body: body["model"] == "loopback"  # noqa: E731
    with LoopbackServer(responder, faults=FaultPlan(GoesDown(healthy=is_target))) as srv:
        task = make_task(srv.base_url, proposer="openai/proposer", retries=1)
        with pytest.raises(ModelError, match=r"openai/proposer: failed after 2 attempts.*--resume"):
            optimize(task, "mutate", seed=SEED, run_dir=tmp_path / "run", cache_path=tmp_path / "c.sqlite")
        assert SQLiteRunStore(tmp_path / "run", create=False).get_meta("status") == "failed"
        srv.faults = None
        res = optimize(task, resume=tmp_path / "run", cache_path=tmp_path / "c.sqlite")
    with LoopbackServer(responder) as srv:
        ref = optimize(make_task(srv.base_url, proposer="openai/proposer", retries=1), "mutate", seed=SEED,
                       run_dir=tmp_path / "ref", cache_path=tmp_path / "ref.sqlite")
    assert lineage(tmp_path / "run") == lineage(tmp_path / "ref") and len(lineage(tmp_path / "ref")) >= 2
    assert res.best.prompt == ref.best.prompt and res.ledger.calls == ref.ledger.calls


def test_run_killed_while_being_created_gives_clear_resume_error(tmp_path):
    """kill -9 between creating the store and saving its config leaves a store without config."""
    SQLiteRunStore(tmp_path / "run").close()
    with LoopbackServer(responder) as srv:
        with pytest.raises(RunError, match="start it again"):
            optimize(make_task(srv.base_url), resume=tmp_path / "run", cache_path=tmp_path / "c.sqlite")


def test_ctrl_c_while_scoring_on_test_marks_run_interrupted_and_resume_finishes(tmp_path):
    from promptlearn.testing import FakeLM, contract_task

    task = contract_task(max_calls=60)
    test_users = {e.turns[0].user for e in task.examples("test")}
    hit = []

    def responder(messages: Any) -> str:
        if messages[-1]["content"] in test_users and not hit:
            hit.append(1)
            raise KeyboardInterrupt
        return wording_sensitive_responder(messages)

    with FakeLM(responder):
        with pytest.raises(KeyboardInterrupt):
            optimize(task, seed=SEED, run_dir=tmp_path / "run", cache_path=tmp_path / "c.sqlite")
        assert SQLiteRunStore(tmp_path / "run", create=False).get_meta("status") == "interrupted"
        res = optimize(task, resume=tmp_path / "run", cache_path=tmp_path / "c.sqlite")
    assert hit and res.best.test is not None
    assert SQLiteRunStore(tmp_path / "run", create=False).get_meta("status") == "finished"


def write_task_file(d: Path, base_url: str, **kw: Any) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    path = d / "task.yaml"
    path.write_text(yaml.safe_dump(task_dict(base_url, **kw), sort_keys=False))
    return path


def cli(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([str(PROMPTLEARN), *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env=dict(os.environ, PROMPTLEARN_BACKOFF_BASE="0.001"))


@pytest.mark.slow  # two CLI processes, each importing litellm
def test_cli_fault_that_never_heals_exits_1_then_resume_finishes(clean, tmp_path):
    run, cache = tmp_path / "run", tmp_path / "c.sqlite"
    with LoopbackServer(responder, faults=FaultPlan(GoesDown(30))) as srv:
        task = write_task_file(tmp_path, srv.base_url, retries=2)
        proc = cli("optimize", str(task), "--seed", str(SEED), "--run-dir", str(run), "--cache", str(cache),
                   "--json", cwd=tmp_path)
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr and proc.stdout == ""
        lines = [ln for ln in proc.stderr.strip().splitlines() if not ln.startswith("promptlearn: warning:")]
        assert len(lines) == 1 and lines[0].startswith("promptlearn: error: openai/loopback: failed after 3 attempts")
        assert lines[0].endswith(f"continue it with --resume {run}")
        before = srv.requests
        srv.faults = None
        proc = cli("optimize", str(task), "--resume", str(run), "--cache", str(cache), "--json", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        after = srv.requests[len(before):]
    out = json.loads(proc.stdout)
    assert out["best"]["prompt"] == clean["result"].best.prompt and out["calls"] == clean["result"].ledger.calls
    assert not set(ok_keys(before)) & {_body_key(r["body"]) for r in after}
    assert lineage(run) == clean["lineage"]


# ---- 2. kill -9 at random points ------------------------------------------------------------------------


def test_response_log_marks_only_answered_requests(tmp_path):
    import httpx

    log = tmp_path / "responses.jsonl"
    body = {"model": "loopback", "messages": [{"role": "user", "content": "hi"}]}
    with LoopbackServer(faults=FaultPlan.sequence(["500", None]), response_log_path=str(log)) as srv:
        assert httpx.post(srv.base_url + "/chat/completions", json=body, timeout=5).status_code == 500
        assert not log.exists()
        assert httpx.post(srv.base_url + "/chat/completions", json=body, timeout=5).status_code == 200
    (rec,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert rec["key"] == _body_key(body) and rec["time"] > 0


def integrity(path: Path) -> str:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


def check_not_corrupt(run: Path, cache: Path) -> None:
    for db in (run / "store.sqlite", cache):
        if db.exists():
            assert integrity(db) == "ok", db
    if (run / "lineage.json").exists():
        lin = json.loads((run / "lineage.json").read_text())
        assert lin["run_id"] == run.name and isinstance(lin["nodes"], list)
    if (run / "run.yaml").exists():
        assert yaml.safe_load((run / "run.yaml").read_text())["seed"] == SEED
    if (run / "best_prompt.txt").exists():
        assert "Ahoy" in (run / "best_prompt.txt").read_text()


@pytest.mark.slow  # six CLI processes, each importing litellm (about 3 s each on an idle machine)
def test_kill_9_at_random_points_then_resume_repeats_no_answered_call(clean, tmp_path):
    """`promptlearn optimize` is SIGKILLed 5 times at seeded-random points (counted in answered requests, plus a
    random delay); after each kill the store and cache pass integrity_check and lineage.json parses; `--resume`
    (same cache file) finishes the very run an uninterrupted one makes, and no model call completed before a kill
    is made again: only calls in flight at a kill (answered by the server, not yet committed by the client; at
    most the model's concurrency per kill) are repeated."""
    from promptlearn.cache import request_key
    from promptlearn.lm import LM, Ledger
    from promptlearn.task import load_task

    rng = random.Random(7)
    run, cache, rlog = tmp_path / "run", tmp_path / "cache.sqlite", tmp_path / "responses.jsonl"
    total = clean["result"].ledger.calls

    def answered() -> list[str]:
        return [json.loads(line)["key"] for line in rlog.read_text().splitlines()] if rlog.exists() else []

    def cached() -> set[str]:
        if not cache.exists():
            return set()
        db = sqlite3.connect(f"file:{cache}?mode=ro", uri=True, timeout=30)
        try:
            return {k for (k,) in db.execute("SELECT key FROM responses")}
        finally:
            db.close()

    with LoopbackServer(responder, latency=0.02, response_log_path=str(rlog)) as srv:
        task = write_task_file(tmp_path, srv.base_url)
        model = load_task(task).model
        concurrency = model.max_concurrency  # the proposer is the same model, and runs when the target does not
        params = LM(model, cache=None, ledger=Ledger()).params()
        fresh = ["optimize", str(task), "--seed", str(SEED), "--run-dir", str(run), "--cache", str(cache), "--json"]
        resume = ["optimize", str(task), "--resume", str(run), "--cache", str(cache), "--json"]
        env = dict(os.environ, PROMPTLEARN_BACKOFF_BASE="0.001")
        marks = []  # after each kill: (requests sent so far, answered keys, answered but not committed keys)
        for i, target in enumerate(sorted(rng.sample(range(1, total - 2), 5))):
            proc = subprocess.Popen([str(PROMPTLEARN), *(fresh if i == 0 else resume)], cwd=tmp_path, env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            target = max(target, len(answered()) + 1)
            deadline = time.monotonic() + 180
            while len(answered()) < target and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.05))
            assert proc.poll() is None, f"run {i + 1} ended before its kill: {proc.stderr.read()}"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            stderr = proc.stderr.read()
            assert "Traceback" not in stderr and "database is locked" not in stderr, stderr
            time.sleep(0.3)  # the server finishes (and logs) replies to requests the dead client had in flight
            check_not_corrupt(run, cache)
            bodies = {_body_key(r["body"]): r["body"] for r in srv.requests}
            done, committed = set(answered()), cached()
            lost = {k for k in done if request_key(model.name, params, bodies[k]["messages"]) not in committed}
            before = marks[-1][2] if marks else set()
            assert len(lost - before) <= concurrency, f"kill {i + 1} lost {len(lost - before)} answered calls"
            marks.append((len(srv.requests), done, lost))
        assert SQLiteRunStore(run, create=False).get_meta("status") == "running"  # a SIGKILL leaves no goodbye

        proc = subprocess.run([str(PROMPTLEARN), *resume], capture_output=True, text=True, timeout=240, cwd=tmp_path,
                              env=env)
        assert proc.returncode == 0, proc.stderr
        reqs = srv.requests
    check_not_corrupt(run, cache)
    out = json.loads(proc.stdout)
    assert lineage(run) == clean["lineage"] and scores(run) == clean["scores"]
    assert out["best"]["prompt"] == clean["result"].best.prompt
    assert (out["best"]["val"], out["best"]["test"]) == (clean["result"].best.val, clean["result"].best.test)
    assert SQLiteRunStore(run, create=False).get_meta("status") == "finished"
    for k, (sent, done, lost) in enumerate(marks):
        again = {_body_key(r["body"]) for r in reqs[sent:]} & done
        assert again <= lost, f"after kill {k + 1}, {len(again - lost)} calls committed before were made again"
    assert set(ok_keys(reqs)) == set(ok_keys(clean["requests"]))  # the same work, nothing extra
    repeated = len(reqs) - len(set(ok_keys(reqs)))
    assert repeated >= len(marks[-1][2]) and len(marks[-1][2]) <= concurrency * len(marks)
    # A call answered but not committed at a kill comes back from the cache on resume: the ledger never counts it
    # twice (and, for those, not at all), so it is exact up to the calls in flight at each kill.
    assert total - concurrency * len(marks) <= out["calls"] <= total


# ---- 5. two runs sharing one cache at once ---------------------------------------------------------------

CACHE_WRITER = """
import sys, time
from promptlearn.cache import Cache
path, me, start = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
while time.time() < start:
    time.sleep(0.001)
cache = Cache(path)  # all processes open (and switch to WAL) a fresh file at the same moment
for i in range(300):
    cache.put(f"{me}-{i}", "m", {"text": str(i)})
    assert cache.get(f"{me}-{i}") == {"text": str(i)}
    cache.get(f"{(me + 1) % 6}-{i}")
print(len(cache))
"""


def test_processes_hammering_one_fresh_cache_file_never_lock(tmp_path):
    path, start = tmp_path / "shared.sqlite", time.time() + 1.5
    procs = [subprocess.Popen([sys.executable, "-c", CACHE_WRITER, str(path), str(i), str(start)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(6)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0 and "locked" not in err, err
    from promptlearn.cache import Cache

    assert len(Cache(path)) == 6 * 300 and integrity(path) == "ok"


@pytest.mark.slow  # two CLI processes plus two in-process reference runs
def test_two_runs_sharing_one_cache_at_once_match_separate_runs(tmp_path):
    """Two `promptlearn optimize` processes (different seeds, overlapping requests: the seed prompt on val at
    least) share one cache file at the same time: both finish, no 'database is locked', and each makes exactly
    the run it makes alone. The runs stop after 8 proposals, not on the call budget: cache hits are free, so a
    run that finds the other's replies in the cache would otherwise get further on the same budget."""
    seeds, opts = (SEED, SEED + 1), {"max_candidates": 8}
    refs = {}
    with LoopbackServer(responder) as srv:
        for seed in seeds:
            refs[seed] = optimize(make_task(srv.base_url, max_calls=1000), seed=seed, run_dir=tmp_path / f"ref{seed}",
                                  cache_path=tmp_path / f"ref{seed}.sqlite", options=opts)
        ref_requests = srv.requests
    with LoopbackServer(responder, latency=0.01) as srv:
        task = write_task_file(tmp_path, srv.base_url, max_calls=1000)
        env = dict(os.environ, PROMPTLEARN_BACKOFF_BASE="0.001")
        procs = {seed: subprocess.Popen([str(PROMPTLEARN), "optimize", str(task), "--seed", str(seed), "--run-dir",
                                         str(tmp_path / f"run{seed}"), "--cache", str(tmp_path / "shared.sqlite"),
                                         "-o", "max_candidates=8", "--json"], cwd=tmp_path, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in seeds}
        outs = {seed: p.communicate(timeout=300) for seed, p in procs.items()}
        reqs = srv.requests
    for seed, p in procs.items():
        out, err = outs[seed]
        assert p.returncode == 0, err
        assert "database is locked" not in err and "Traceback" not in err, err
        assert lineage(tmp_path / f"run{seed}") == lineage(tmp_path / f"ref{seed}")
        assert scores(tmp_path / f"run{seed}") == scores(tmp_path / f"ref{seed}")
        assert json.loads(out)["best"]["prompt"] == refs[seed].best.prompt
        assert json.loads(out)["stop_reason"] == refs[seed].stop_reason == "8 candidates tried"
    # Together they asked for exactly what the two separate runs asked for; a request both made at the same
    # moment may have been paid twice, one the other had already cached was not.
    assert set(ok_keys(reqs)) == set(ok_keys(ref_requests))
    assert len(reqs) <= len(ref_requests)
    assert integrity(tmp_path / "shared.sqlite") == "ok"


# ---- 6. prompt-injection robustness stays measurable ------------------------------------------------------

GUARD_CUES = ("IMPORTANT", "Rules:", "Remember", "rule")


def guard_responder(body: dict) -> str:
    """A scripted TensorTrust defender: the right access code is always granted; an attack is granted too unless
    the wrapper around the defense carries a guard cue (IMPORTANT, Rules:, ...)."""
    msgs = body["messages"]
    system = next((m["content"] for m in msgs if m["role"] == "system"), "")
    user = msgs[-1]["content"]
    if "<prompt>" in user or "system prompt" in user.lower():  # the proposer, asked to rewrite the wrapper
        return "<prompt>IMPORTANT: {defense}</prompt>"
    benign, defenses = _guard_rows()
    if benign.get(user, False):
        return "Access Granted."
    defense = next((d for d in sorted(defenses, key=len, reverse=True) if d and d in system), "")
    wrapper = system.replace(defense, "") if defense else system
    return "Access Denied." if any(c in wrapper for c in GUARD_CUES) else "Access Granted."


def _guard_rows() -> tuple[dict[str, bool], set[str]]:
    """User turn -> benign (the right code), and every defense text, from the task's own examples."""
    if not _GUARD:
        examples = guard_task("http://127.0.0.1:9/v1").examples("all")
        _GUARD.append(({e.turns[0].user: e.benign for e in examples}, {e.meta["vars"]["defense"] for e in examples}))
    return _GUARD[0]


_GUARD: list = []


def guard_task(base_url: str):
    from promptlearn.task import load_task

    tasks = REPO / "tasks"
    return load_task(tasks / "tensortrust_guard.yaml", overrides={
        "model": {"name": "openai/loopback", "api_base": base_url, "timeout": 2, "retries": 8},
        "data": [{"file": "data/tensortrust_hijacking_short.jsonl", "format": "tensortrust_hijacking", "limit": 12},
                 {"file": "data/tensortrust_helpful_short.jsonl", "format": "tensortrust_helpful", "limit": 12}],
        "budget": {"max_calls": 90}})


def test_injection_robustness_stays_measurable_through_faults_and_a_dead_server(tmp_path):
    """tasks/tensortrust_guard.yaml on loopback: injection robustness, over-refusal and helpfulness are reported
    on test for seed and best; random faults of every kind plus a server that dies mid-run (then resume) give
    the same lineage and the same robustness numbers as a clean run."""
    with LoopbackServer(guard_responder) as srv:
        clean_res = optimize(guard_task(srv.base_url), seed=SEED, run_dir=tmp_path / "clean",
                             cache_path=tmp_path / "clean.sqlite")
    attacks = [e for e in guard_task("http://127.0.0.1:9/v1").examples("test") if e.attack]
    assert attacks and len(attacks) < len(guard_task("http://127.0.0.1:9/v1").examples("test"))
    effects = {k: {m: getattr(clean_res, k).test_side_effects[m] for m in
                   ("injection_robustness", "over_refusal", "helpful_rate")} for k in ("seed", "best")}
    assert effects["seed"]["injection_robustness"] == 0.0  # the bare defense lets every attack through
    assert effects["best"]["injection_robustness"] == 1.0 and clean_res.best.id != clean_res.seed.id
    assert "{defense}" in clean_res.best.prompt

    noise, down = FaultPlan.random(rate=0.2, kinds=FAULT_KINDS, seed=5), GoesDown(40)
    with LoopbackServer(guard_responder, faults=FaultPlan(lambda b: down(b) or noise(b)), hang_seconds=5,
                        retry_after=0.01) as srv:
        task = guard_task(srv.base_url)
        with pytest.raises(ModelError, match="--resume"):
            optimize(task, seed=SEED, run_dir=tmp_path / "run", cache_path=tmp_path / "c.sqlite")
        srv.faults = noise  # the outage ends, the noise goes on
        res = optimize(task, resume=tmp_path / "run", cache_path=tmp_path / "c.sqlite")
        assert res.ledger.retries > 0
    assert lineage(tmp_path / "run") == lineage(tmp_path / "clean")
    for k in ("seed", "best"):
        assert getattr(res, k).test_side_effects == getattr(clean_res, k).test_side_effects
    assert SQLiteRunStore(tmp_path / "run", create=False).get_meta("test_metrics") == SQLiteRunStore(
        tmp_path / "clean", create=False).get_meta("test_metrics")
