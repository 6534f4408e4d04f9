"""The store contract suite: every backend of `promptlearn.store.base.Store` passes the same tests.

In the style of optuna/testing/storages.py: a test module parametrizes a fixture over store URLs (a folder for
the SQLite layout, a postgresql:// URL of a real server) and calls each `check_*` function here with it. A new
backend passes by adding its URL to that list.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from promptlearn.types import Candidate, CheckResult, ExampleResult, TurnResult, Usage


def _result(example_id: str, passed: bool, reply: str = "Ahoy there") -> ExampleResult:
    check = CheckResult(1.0 if passed else 0.0, "" if passed else "does not start with Ahoy")
    return ExampleResult(example_id, (TurnResult(reply, {"ahoy": check}, None, 3),))


def check_runs(open_store: Callable[[], Any]) -> None:
    """create / open / list / resolve: ids, prefixes, `latest`, and the one-line errors."""
    import pytest

    from promptlearn.errors import RunError

    store = open_store()
    try:
        assert store.run_ids() == []
        a = store.create_run("pirate-20250101-000000-s0-001")
        b = store.create_run("pirate-20250102-000000-s0-002")
        store.create_run("helpdesk-20250103-000000-s1-003")
        assert store.run_ids() == ["pirate-20250101-000000-s0-001", "pirate-20250102-000000-s0-002",
                                   "helpdesk-20250103-000000-s1-003"]
        assert a.run_id == "pirate-20250101-000000-s0-001" and a.created() <= b.created()
        assert store.resolve("latest") == "helpdesk-20250103-000000-s1-003"
        assert store.resolve("help") == "helpdesk-20250103-000000-s1-003"
        assert store.resolve("pirate-20250102-000000-s0-002") == "pirate-20250102-000000-s0-002"
        with pytest.raises(RunError, match="ambiguous"):
            store.resolve("pirate")
        with pytest.raises(RunError, match="not found"):
            store.resolve("nope")
        with pytest.raises(RunError, match="already"):
            store.create_run("pirate-20250101-000000-s0-001")
        with pytest.raises(RunError):
            store.open_run("missing")
        assert store.open_run("pirate-20250101-000000-s0-001").run_id == a.run_id
        for r in (a, b):
            r.close()
    finally:
        store.close()


def check_records(open_store: Callable[[], Any]) -> None:
    """Meta, candidates, results, generations, scores, events and lineage round-trip; runs are isolated."""
    store = open_store()
    try:
        run, other = store.create_run("r1"), store.create_run("r2")
        assert run.get_meta("best", "none") == "none"
        run.set_meta("config", {"seed": 3, "options": {"minibatch": 8}})
        run.set_meta("best", "x")
        run.set_meta("best", "y")
        assert run.get_meta("config") == {"seed": 3, "options": {"minibatch": 8}} and run.get_meta("best") == "y"
        seed = Candidate("You are a pirate.", (), "seed")
        child = Candidate("You are a pirate. Say Ahoy.", (seed.id,), "mutate", {"guidance": 1.5})
        assert run.add_candidate(seed, "seed") and run.add_candidate(child)
        assert not run.add_candidate(child, "accepted")  # immutable: the second add changes nothing
        run.set_status(child.id, "accepted")
        cands = run.candidates()
        assert [(c["id"], c["seq"], c["status"]) for c in cands] == [(seed.id, 0, "seed"), (child.id, 1, "accepted")]
        assert cands[1]["parents"] == [seed.id] and cands[1]["meta"] == {"guidance": 1.5}
        assert run.candidate(child.id) == cands[1] and run.candidate("nope") is None
        cands[1]["status"] = "changed by the reader"
        assert run.candidate(child.id)["status"] == "accepted"  # reads are copies

        u1, u2 = Usage(calls=1, prompt_tokens=5, completion_tokens=3), Usage(calls=2, usd=0.5)
        run.put_result(child.id, _result("q1", True), u1)
        run.put_result(child.id, _result("q2", False, "Hello"), u2)
        hit = run.get_result(child.id, "q2")
        assert hit is not None and hit[0].turns[0].reply == "Hello" and hit[0].score == 0.0 and hit[1] == u2
        assert set(run.results(child.id)) == {"q1", "q2"} and run.get_result(child.id, "q3") is None
        assert run.usage_of(child.id) == u1 + u2
        run.put_result(child.id, _result("q2", True), u2)  # recomputed: replaces
        assert run.results(child.id)["q2"].score == 1.0

        run.put_generation("k", "a rewrite", u1)
        assert run.get_generation("k") == ("a rewrite", u1) and run.get_generation("other") is None

        run.put_score(child.id, "val", 0.5, 2, False, {"checks": {"ahoy": 0.5}})
        run.put_score(child.id, "val", 0.75, 4, True, {"checks": {"ahoy": 0.75}})
        run.put_score(seed.id, "test", 0.25, 4, True)
        assert run.scores() == {child.id: {"val": {"score": 0.75, "n": 4, "complete": True,
                                                   "checks": {"ahoy": 0.75}}},
                                seed.id: {"test": {"score": 0.25, "n": 4, "complete": True}}}

        for i in range(5):
            run.log_event("progress" if i % 2 == 0 else "screen", {"i": i})
        events = run.events()
        assert [e["i"] for e in events] == [0, 1, 2, 3, 4] and [e["i"] for e in run.events("screen")] == [1, 3]
        assert all(e["kind"] in ("progress", "screen") and e["time"] > 0 for e in events)

        run.set_meta("seed", seed.id)
        run.set_meta("best", child.id)
        lin = run.lineage()
        assert lin["run_id"] == "r1" and lin["best"] == child.id and lin["seed"] == seed.id
        assert [(n["id"], n["val"], n["test"]) for n in lin["nodes"]] == [(seed.id, None, 0.25), (child.id, 0.75, None)]

        # isolation: the other run sees none of it
        assert other.candidates() == [] and other.scores() == {} and other.events() == []
        assert other.get_meta("best") is None and other.get_result(child.id, "q1") is None
        assert other.get_generation("k") is None
        assert other.add_candidate(seed, "seed")  # the same prompt is a new candidate in another run
        assert other.candidates()[0]["seq"] == 0
        run.close()
        other.close()
    finally:
        store.close()


def check_durable_across_instances(open_store: Callable[[], Any]) -> None:
    """What one store instance committed, another (a resumed process) reads: nothing waits for close()."""
    first = open_store()
    try:
        run = first.create_run("r")
        cand = Candidate("p", (), "seed")
        run.add_candidate(cand, "seed")
        run.put_result(cand.id, _result("q1", True), Usage(calls=1))
        run.set_meta("status", "running")
        second = open_store()  # before the first closes
        try:
            again = second.open_run("r")
            assert again.get_meta("status") == "running" and again.get_result(cand.id, "q1") is not None
            again.close()
        finally:
            second.close()
        run.close()
    finally:
        first.close()


def check_threads(open_store: Callable[[], Any], threads: int = 8, each: int = 10) -> None:
    """Many threads on one run store: every candidate recorded once with its own seq, every result kept."""
    store = open_store()
    try:
        run = store.create_run("threads")
        errors: list[BaseException] = []

        def work(t: int) -> None:
            try:
                for i in range(each):
                    cand = Candidate(f"prompt {i}", (), "seed") if i % 2 else Candidate(f"t{t} prompt {i}", (), "x")
                    run.add_candidate(cand)
                    run.put_result(cand.id, _result(f"t{t}-q{i}", True), Usage(calls=1))
                    run.log_event("progress", {"t": t, "i": i})
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert not errors, errors
        cands = run.candidates()
        shared = each // 2
        assert len(cands) == threads * (each - shared) + shared
        assert sorted(c["seq"] for c in cands) == list(range(len(cands)))
        assert sum(len(run.results(c["id"])) for c in cands) == threads * each
        assert len(run.events("progress")) == threads * each
        run.close()
    finally:
        store.close()


def check_lock(open_store: Callable[[], Any]) -> None:
    """One holder at a time, named in the refusal; renew, release, expiry, a dead holder, --force."""
    import os
    import socket
    import subprocess
    import sys
    import time

    import pytest

    from promptlearn.store.base import LockHolder, RunLocked

    store = open_store()
    try:
        run = store.create_run("locked")
        me = LockHolder.me()
        elsewhere = LockHolder("another-machine", 4242, "bob")
        run.acquire_lock(elsewhere, 30)
        with pytest.raises(RunLocked, match=r"in use by bob@another-machine pid 4242.*--force"):
            run.acquire_lock(me, 30)
        assert not run.renew_lock(me, 30) and run.renew_lock(elsewhere, 30)
        run.release_lock(me)  # not mine: changes nothing
        with pytest.raises(RunLocked):
            run.acquire_lock(me, 30)
        run.acquire_lock(me, 30, force=True)  # its holder is gone, the user says so
        assert run.renew_lock(me, 30) and not run.renew_lock(elsewhere, 30)
        run.acquire_lock(me, 30)  # re-acquiring one's own lock renews it
        run.release_lock(me)
        run.acquire_lock(elsewhere, 0.5)
        time.sleep(0.8)
        run.acquire_lock(me, 30)  # the lease ran out
        run.release_lock(me)
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        run.acquire_lock(LockHolder(socket.gethostname(), dead.pid, "me"), 30)
        run.acquire_lock(me, 30)  # same host, that pid is gone: taken at once
        assert me.pid == os.getpid()
        run.release_lock(me)
        run.close()
    finally:
        store.close()


def check_reply_cache(open_store: Callable[[], Any], open_cache: Callable[[], Any]) -> None:
    """The reply cache one store user fills answers another: get/put/len; replaced, never half-written."""
    a, b = open_cache(), open_cache()
    try:
        assert a.get("k1") is None and len(a) == 0
        a.put("k1", "fake/target", {"text": "Ahoy!", "prompt_tokens": 3, "completion_tokens": 1})
        assert b.get("k1") == {"text": "Ahoy!", "prompt_tokens": 3, "completion_tokens": 1} and len(b) == 1
        b.put("k1", "fake/target", {"text": "Ahoy!", "prompt_tokens": 3, "completion_tokens": 1})
        assert len(a) == 1
    finally:
        a.close()
        b.close()
