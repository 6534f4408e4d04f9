"""Workers on a real PostgreSQL server (the `pg_server` fixture; CI fails without one) against the loopback
OpenAI-compatible server: three worker processes, two of them killed with SIGKILL at random points, still
finish the run within its budget and without repeating a finished call; a worker run without deaths makes the
single-process run's decisions; `promptlearn worker` joins a started run; bad input is one line, exit 2."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from promptlearn.testing_postgres import PASSWORD
from promptlearn.testing_server import FaultPlan, LoopbackServer
from test_cli_export_check import cli, write_task

REPO = Path(__file__).resolve().parents[1]
PROMPTLEARN = Path(sys.executable).with_name("promptlearn")
CUES = ("IMPORTANT", "Example", "Rules:", "Remember", "each", "Begin", "rule")
CONCURRENCY = 4


def responder(body: dict) -> str:
    """The target replies 'Ahoy' for some wordings; the proposer writes a rewrite drawn from the request's hash,
    so every run of the same requests gets the same replies (and candidates differ)."""
    from promptlearn.testing import wording_sensitive_responder

    messages = body["messages"]
    if "<prompt>" in messages[-1]["content"]:
        rng = random.Random(hashlib.sha256(json.dumps(messages).encode()).hexdigest())
        cues = rng.sample(CUES, rng.randint(0, 3))
        return f"<prompt>You are a pirate. {' '.join(cues)} Start every reply with the word Ahoy.</prompt>"
    return wording_sensitive_responder(messages)


def loopback_task(path: Path, base_url: str, *, max_calls: int, n: int = 24, retries: int = 2) -> Path:
    model = {"name": "openai/loopback", "api_base": base_url, "concurrency": CONCURRENCY, "max_tokens": 16,
             "timeout": 30, "retries": retries}
    users = [f"Question number {i}: tell me about topic {i * 7 % 11}" for i in range(n)]
    path.write_text(yaml.safe_dump({
        "name": "workers", "prompt": "You are a pirate. Start every reply with the word Ahoy.",
        "protected": ["Ahoy"], "model": model, "proposer": model,
        "data": [{"examples": [{"id": f"q{i:02d}", "user": u} for i, u in enumerate(users)]}],
        "checks": [{"type": "starts_with", "value": "Ahoy", "name": "ahoy"}],
        "splits": {"train": 0.5, "val": 0.25, "test": 0.25, "seed": 0},
        "budget": {"max_calls": max_calls}, "optimizer": {"name": "evolve"}}, sort_keys=False))
    return path


def sql(url: str, query: str, *params):  # type: ignore[no-untyped-def]
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def meta(url: str, run_id: str, key: str):  # type: ignore[no-untyped-def]
    import psycopg

    try:
        rows = sql(url, "SELECT value FROM pl_meta WHERE run_id = %s AND key = %s", run_id, key)
    except psycopg.errors.UndefinedTable:  # the first process is still creating the schema
        return None
    return json.loads(rows[0][0]) if rows else None


def nodes(lineage: dict) -> list[tuple]:
    return [(n["id"], tuple(n["parents"]), n["operator"], n["status"], n["val"], n["test"]) for n in lineage["nodes"]]


def most_in_flight(url: str, run_id: str) -> dict[str, int]:
    """The most calls each process had in flight at once, from the jobs' claim and reply times."""
    rows = sql(url, "SELECT owner, claimed, finished FROM pl_jobs WHERE run_id = %s AND status = 'done'", run_id)
    out: dict[str, int] = {}
    for owner in {o for o, _, _ in rows}:
        edges = sorted([(c, 1) for o, c, _ in rows if o == owner] + [(f, -1) for o, _, f in rows if o == owner])
        level = top = 0
        for _, step in edges:
            level += step
            top = max(top, level)
        out[owner] = top
    return out


def wait_for(cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.mark.slow
def test_three_workers_two_killed_finish_the_run_within_budget(pg_url, tmp_path, monkeypatch):
    """A run started with --workers 1 and joined by two `promptlearn worker` processes, 20% of the model's
    replies faults; two of the three processes are killed with SIGKILL at random points, the deciding one first
    (then any). The survivor finishes the run: status finished, max_calls never passed (by the calls the workers
    charged nor by the replies the server gave), every request answered once but for calls in flight at a
    kill, every stored result whole, and lineage, show, report and export agreeing on the best prompt."""
    max_calls, rng = 220, random.Random(int(os.environ.get("PROMPTLEARN_KILL_SEED", "17")))
    monkeypatch.setenv("PROMPTLEARN_LEASE_SECONDS", "3")
    monkeypatch.setenv("PROMPTLEARN_STORE", pg_url)
    monkeypatch.chdir(tmp_path)
    log = tmp_path / "replies.jsonl"
    with LoopbackServer(responder, latency=0.15, faults=FaultPlan.random(0.2, seed=5),
                        response_log_path=str(log)) as srv:
        task = loopback_task(tmp_path / "task.yaml", srv.base_url, max_calls=max_calls, retries=8)
        run_id = "killrun"
        procs = [subprocess.Popen([str(PROMPTLEARN), "optimize", str(task), "--store", pg_url, "--workers", "1",
                                   "--run-dir", str(tmp_path / "runs" / run_id), "--json"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)]
        wait_for(lambda: meta(pg_url, run_id, "task_doc") is not None, 60, "the run to start")
        procs += [subprocess.Popen([str(PROMPTLEARN), "worker", run_id], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, cwd=tmp_path) for _ in range(2)]
        # every process has claimed work before the first kill, so a kill always takes calls in flight with it
        wait_for(lambda: len({o.split(":")[1] for (o,) in sql(pg_url, "SELECT DISTINCT owner FROM pl_jobs WHERE "
                                                                      "owner IS NOT NULL")}) >= 3, 60,
                 "all three workers to claim jobs")
        killed = []
        for i in range(2):
            time.sleep(rng.uniform(0.5, 3.0))
            alive = [p for p in procs if p.poll() is None]
            assert len(alive) >= 2, "the run ended before the second kill: give it more work"
            # the first kill takes the deciding process (the lock's holder), so a take-over always happens
            (holder,), = sql(pg_url, "SELECT holder FROM pl_run_locks WHERE run_id = %s", run_id)
            victim = (next(p for p in alive if p.pid == json.loads(holder)["pid"]) if i == 0
                      else rng.choice(alive))
            victim.send_signal(signal.SIGKILL)
            victim.wait()  # reaped: a zombie's pid would still look alive to the lock's same-host check
            killed.append(procs.index(victim))
        survivor = next(p for p in procs if p.poll() is None or p.returncode == 0)
        for p in procs:
            if p.returncode is None:
                try:
                    p.wait(timeout=150)
                except subprocess.TimeoutExpired:
                    p.kill()
                    tail = p.stderr.read()[-2000:]
                    raise AssertionError(f"worker {procs.index(p)} did not finish: {tail!r}") from None
        errs = {i: p.stderr.read().decode()[-1500:] for i, p in enumerate(procs) if i not in killed}
        assert all(p.returncode == 0 for i, p in enumerate(procs) if i not in killed), errs
        assert survivor.returncode == 0

    assert meta(pg_url, run_id, "status") == "finished", errs
    # the budget: the calls the workers charged, and the replies the server gave, never pass max_calls
    (calls, cap), = sql(pg_url, "SELECT calls, max_calls FROM pl_budgets WHERE run_id = %s", run_id)
    replies = [json.loads(line)["key"] for line in log.read_text().splitlines()]
    assert cap == max_calls and len(replies) <= calls <= max_calls
    # each request answered once, but for calls in flight at a kill (at most `concurrency` per killed worker)
    repeated = sum(n - 1 for n in Counter(replies).values())
    assert repeated <= CONCURRENCY * len(killed), f"{repeated} requests answered twice"
    # the work was shared: more than one process made calls
    owners = {o.split(":")[1] for (o,) in sql(pg_url, "SELECT owner FROM pl_jobs WHERE run_id = %s AND "
                                                     "status = 'done'", run_id)}
    assert len(owners) >= 2, (owners, killed)
    # integrity: every scored candidate has a whole stored result for each example its score counts
    from promptlearn.store import open_store

    store = open_store(pg_url)
    try:
        rs = store.open_run(run_id)
        scores, lineage = rs.scores(), rs.lineage()
        for cid, by_split in scores.items():
            for split, s in by_split.items():
                if split in ("val", "test") and s["complete"]:
                    results = rs.results(cid)
                    assert len(results) >= s["n"], (cid, split)
                    assert all(r.turns and r.turns[0].reply is not None for r in results.values())
        ids = {c["id"] for c in rs.candidates()}
        assert lineage["best"] in ids and all(set(n["parents"]) <= ids for n in lineage["nodes"])
        assert len({c["seq"] for c in rs.candidates()}) == len(ids)
        best_prompt = next(c["prompt"] for c in rs.candidates() if c["id"] == lineage["best"])
    finally:
        store.close()
    env = {**os.environ}
    shown = json.loads(subprocess.run([str(PROMPTLEARN), "show", run_id, "--store", pg_url, "--json"],
                                      capture_output=True, text=True, cwd=tmp_path, env=env, check=True).stdout)
    assert shown["best_id"] == lineage["best"]
    report = subprocess.run([str(PROMPTLEARN), "report", run_id, "--store", pg_url], capture_output=True,
                            text=True, cwd=tmp_path, check=True).stdout.strip()
    assert lineage["best"] in (tmp_path / report).read_text()
    app = tmp_path / "app.yaml"
    subprocess.run([str(PROMPTLEARN), "export", run_id, "--store", pg_url, "--to", str(app), "--key", "bot.prompt"],
                   capture_output=True, text=True, cwd=tmp_path, check=True)
    assert yaml.safe_load(app.read_text())["bot"]["prompt"] == best_prompt


def test_worker_run_makes_the_single_process_runs_decisions(pg_url, tmp_path, monkeypatch):
    """The same task, seed, P and replies: one process on SQLite, then two workers on PostgreSQL (this process
    deciding, one spawned worker): the same candidates, parents, statuses and scores, the same best."""
    from promptlearn.run import optimize

    monkeypatch.chdir(tmp_path)
    with LoopbackServer(responder, latency=0.1) as srv:
        task = loopback_task(tmp_path / "task.yaml", srv.base_url, max_calls=150)
        single = optimize(task, seed=2, parallel=4, store=tmp_path / "runs", cache_path=tmp_path / "c.sqlite")
        before = len(srv.requests)
        multi = optimize(task, seed=2, parallel=4, store=pg_url, workers=2, runs_root=tmp_path / "pg")
        made = len(srv.requests) - before
    assert nodes(multi.lineage) == nodes(single.lineage) and len(single.lineage["nodes"]) > 3
    assert multi.best.id == single.best.id and multi.best.test == single.best.test
    assert multi.ledger.requests == single.ledger.requests
    # every call of the worker run went through the job table (none answered from the first run's cache)
    (done,), = sql(pg_url, "SELECT COUNT(*) FROM pl_jobs WHERE run_id = %s AND status = 'done'", multi.run_id)
    assert done == made == multi.ledger.calls > 0


def test_worker_joins_a_started_run_and_bad_input_is_one_line(pg_server, pg_url, tmp_path, monkeypatch, capsys):
    """`promptlearn worker` joins a run in progress and leaves when it ends; an unknown run, a run started
    without --workers, a finished run and --workers on a SQLite store are one line, exit 2; the password in
    the URL is never printed."""
    from promptlearn.testing import FakeLM, wording_sensitive_responder

    db = pg_url.rsplit("/", 1)[1]
    url = pg_server.url(db, user="alice", password=PASSWORD)
    monkeypatch.chdir(tmp_path)
    fake_task = write_task(tmp_path / "fake.yaml")
    code, out, err = cli(monkeypatch, capsys, "optimize", fake_task, "--workers", "2")
    assert code == 2 and "--store" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    code, out, err = cli(monkeypatch, capsys, "worker", "nope", "--store", url)
    assert code == 2 and "nope" in err and len(err.strip().splitlines()) == 1 and PASSWORD not in out + err, err
    with FakeLM(wording_sensitive_responder):
        code, out, err = cli(monkeypatch, capsys, "optimize", fake_task, "--store", url, "--json")
    assert code == 0, err
    plain = json.loads(out)["run_id"]
    code, out, err = cli(monkeypatch, capsys, "worker", plain, "--store", url)
    assert code == 2 and "--workers" in err and len(err.strip().splitlines()) == 1 and PASSWORD not in err, err

    log = tmp_path / "replies.jsonl"
    with LoopbackServer(responder, latency=0.2, response_log_path=str(log)) as srv:
        task = loopback_task(tmp_path / "task.yaml", srv.base_url, max_calls=120)
        env = {**os.environ, "PROMPTLEARN_STORE": url}
        started = subprocess.Popen([str(PROMPTLEARN), "optimize", str(task), "--store", url, "--workers", "1",
                                    "--run-dir", str(tmp_path / "runs" / "joined"), "--json"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
        wait_for(lambda: meta(pg_server.url(db), "joined", "status") == "running", 60, "the run to start")
        worker = subprocess.run([str(PROMPTLEARN), "worker", "joined"], capture_output=True, text=True,
                                cwd=tmp_path, env=env, timeout=120)
        out_started, err_started = started.communicate(timeout=60)
    assert started.returncode == 0, err_started.decode()
    assert worker.returncode == 0 and "joined run joined" in worker.stderr, worker.stderr
    assert PASSWORD not in worker.stderr + worker.stdout + out_started.decode() + err_started.decode()
    owners = {o.split(":")[1] for (o,) in sql(pg_server.url(db), "SELECT owner FROM pl_jobs WHERE run_id = "
                                                                  "'joined' AND status = 'done'")}
    assert len(owners) == 2, "the joining worker made no calls"
    assert max(most_in_flight(pg_server.url(db), "joined").values()) <= CONCURRENCY, "a worker passed its cap"
    code, out, err = cli(monkeypatch, capsys, "worker", "joined", "--store", url)
    assert code == 2 and "finished" in err and len(err.strip().splitlines()) == 1 and PASSWORD not in err, err


@pytest.mark.model
@pytest.mark.slow
def test_two_workers_on_the_embedded_model(pg_url, tmp_path, monkeypatch):
    """The real model in two processes (this one deciding, one spawned worker), P=1: the run finishes within its
    40 calls with the lineage the single-process run of tests/test_real_model.py records."""
    from conftest import smollm2_available
    from promptlearn.run import optimize
    from test_real_model import LINEAGES, _tiny_pirate

    if not smollm2_available():
        pytest.skip("needs promptlearn[local]")
    monkeypatch.chdir(tmp_path)
    result = optimize(_tiny_pirate(), "evolve", budget=40, seed=0, store=pg_url, workers=2, parallel=1,
                      runs_root=tmp_path / "runs")
    assert [(n["operator"], n["status"]) for n in result.lineage["nodes"]] == LINEAGES["evolve"]
    (calls, cap), = sql(pg_url, "SELECT calls, max_calls FROM pl_budgets WHERE run_id = %s", result.run_id)
    assert cap == 40 and calls == result.ledger.calls <= 40 and result.best.test is not None
    assert meta(pg_url, result.run_id, "status") == "finished"


def test_claims_leases_and_budget_hold_under_contention(pg_url):
    """The job table itself, 8 threads at once on a real server: every job claimed by exactly one owner; a lease
    that ran out makes a job claimable again (a dead worker's), one renewed keeps it; the budget row charges
    exactly max_calls calls whatever the contention, then names the limit."""
    from concurrent.futures import ThreadPoolExecutor

    from promptlearn.store.jobs import JobTable
    from promptlearn.store.postgres import PostgresStore

    store = PostgresStore(pg_url, max_size=10)
    try:
        store.create_run("r")
        jobs = JobTable(store, "r")
        for i in range(60):
            jobs.submit(f"k{i:02d}", {"messages": [], "sample": i})
        with ThreadPoolExecutor(8) as pool:
            batches = list(pool.map(lambda w: [jobs.claim(f"w{w}", 3, 30) for _ in range(10)], range(8)))
        assert max(len(b) for w in batches for b in w) == 3, "a claim took more jobs than it asked for"
        claims = [[j.key for b in w for j in b] for w in batches]
        keys = [k for c in claims for k in c]
        assert sorted(keys) == [f"k{i:02d}" for i in range(60)], "a job was claimed twice or not at all"
        assert jobs.claim("late", 5, 30) == []
        # w0's lease runs out (it died); w1 renews its own: only w0's jobs come back
        sql(pg_url, "UPDATE pl_jobs SET expires = now() - interval '1 second' WHERE owner IN ('w0', 'w1')")
        assert jobs.renew("w1", 30) == len(claims[1])
        back = jobs.claim("heir", 100, 30)
        assert sorted(j.key for j in back) == sorted(claims[0]) and all(j.attempts == 2 for j in back)
        # a poison request: every worker that takes it dies; after max_attempts lapsed claims it fails instead
        poison = back[0].key
        for attempt in range(2, 5):
            sql(pg_url, f"UPDATE pl_jobs SET expires = now() - interval '1 second' WHERE key = '{poison}'")
            got = jobs.claim(f"doomed{attempt}", 100, 30, max_attempts=4)
            assert [j.key for j in got] == ([poison] if attempt < 4 else []), attempt
        failed = [o for o in jobs.outcomes([poison]) if not o.done]
        assert failed and "4 workers died holding this call" in failed[0].error["message"]

        jobs.set_budget(50, None)
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: jobs.charge(), range(80)))
        assert answers.count(None) == 50
        assert all(a == {"limit": "max_calls", "used": 50, "max": 50} for a in answers if a is not None)
        assert jobs.budget()["calls"] == 50
    finally:
        store.close()


def test_an_idle_executor_waits_on_notify_instead_of_polling(pg_url, monkeypatch):
    """An executor with nothing to do LISTENs: in 1.5 s idle it looks at the job table a handful of times (at
    most every POLL seconds), not every few milliseconds; a job submitted wakes it at once (claimed within a
    second although the fallback wait is 5 s), and the decider's watcher is woken by the job's `done`."""
    from promptlearn.store.jobs import JobTable, Listener
    from promptlearn.store.postgres import PostgresStore
    from promptlearn.workers import Executor

    store = PostgresStore(pg_url)
    try:
        store.create_run("quiet")
        executor = Executor(pg_url, "quiet", 2, poll=5.0)
        claims = Counter()
        real_claim = executor.jobs.claim

        def counted(*a, **k):  # type: ignore[no-untyped-def]
            claims["n"] += 1
            return real_claim(*a, **k)

        monkeypatch.setattr(executor.jobs, "claim", counted)
        executor.start()
        try:
            wait_for(lambda: claims["n"] >= 1, 30, "the executor's first claim")
            time.sleep(1.5)
            assert claims["n"] <= 3, f"{claims['n']} claims in 1.5 s idle: it polls"
            listener = Listener(store, "quiet")
            assert listener.listen()
            jobs = JobTable(store, "quiet")
            jobs.set_budget(0, None)  # so the claimed call is refused by the budget: no model is needed
            t0 = time.monotonic()
            jobs.submit("k1", {"config": {"name": "openai/gpt-4o-mini"}, "messages": [], "sample": 0})
            wait_for(lambda: sql(pg_url, "SELECT status FROM pl_jobs WHERE key = 'k1'")[0][0] != "pending", 5,
                     "the job claimed")
            assert time.monotonic() - t0 < 1.0, "the NOTIFY of the new job did not wake the executor"
            # the budget refuses the call, and the job's end wakes a listener waiting for it
            assert listener.wait("done", 10.0) and listener.woken == 1
            assert [o.done for o in jobs.outcomes(["k1"])] == [False]
            listener.close()
        finally:
            executor.stop()
    finally:
        store.close()


def test_a_job_announced_while_the_executor_was_claiming_is_claimed_at_once(pg_url):
    """The race a busy executor meets: a call of its own ends (so it stops waiting and claims), the claim finds
    nothing, and a job announced just after that claim looked must still be claimed at once, not after the
    fallback wait (5 s here), although the wait that heard the NOTIFY was left running while it claimed."""
    import asyncio

    from promptlearn.store.jobs import JobTable
    from promptlearn.store.postgres import PostgresStore
    from promptlearn.workers import Executor

    store = PostgresStore(pg_url)
    try:
        store.create_run("race")
        jobs = JobTable(store, "race")
        executor = Executor(pg_url, "race", 2, poll=5.0)
        claimed: dict[str, float] = {}

        async def fake_run(job):  # type: ignore[no-untyped-def]
            claimed[job.key] = time.monotonic()
            await asyncio.sleep(0.3)

        executor._run = fake_run  # type: ignore[method-assign]
        real, state = executor.jobs.claim, {"armed": False, "t": 0.0}

        def claim(*a, **k):  # type: ignore[no-untyped-def]
            got = real(*a, **k)
            if state["armed"] and not got:  # just after this claim looked: announce B, let the NOTIFY land
                state["armed"] = False
                jobs.submit("B", {"x": 1})
                state["t"] = time.monotonic()
                time.sleep(0.05)
            return got

        executor.jobs.claim = claim  # type: ignore[method-assign]
        executor.start()
        try:
            time.sleep(1.0)
            jobs.submit("A", {"x": 0})
            wait_for(lambda: "A" in claimed, 10, "job A claimed")
            time.sleep(0.1)
            state["armed"] = True  # the claim after A's call ends announces B just after it looked
            wait_for(lambda: "B" in claimed, 10, "job B claimed")
            assert claimed["B"] - state["t"] < 1.0, "a NOTIFY heard during a claim was lost until the fallback"
        finally:
            t0 = time.monotonic()
            executor.stop()
            assert time.monotonic() - t0 < 6.0
    finally:
        store.close()
