"""Runs on a real PostgreSQL server (started on 127.0.0.1 by the `pg_server` fixture; CI fails without one):
optimize, then `runs`, `show`, `report`, `export` and `check` on the run; a team's shared reply cache; the bad
URLs and faults that must be one line, exit 2, before any model call; the run lock across processes; and the
database going away in the middle of a run, which stops it resumable."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from promptlearn.testing import FakeLM, wording_sensitive_responder
from promptlearn.testing_postgres import PASSWORD
from test_cli_export_check import cli, write_task

REPO = Path(__file__).resolve().parents[1]
PROMPTLEARN = REPO / ".venv" / "bin" / "promptlearn"


def alice(pg_server, db: str) -> str:
    """The URL of `db` for alice, who logs in with a password (scram)."""
    return pg_server.url(db, user="alice", password=PASSWORD)


@pytest.fixture
def pg_db(pg_url) -> str:
    return pg_url.rsplit("/", 1)[1]


def test_optimize_then_every_command_on_a_postgres_run(pg_server, pg_db, tmp_path, monkeypatch, capsys):
    url = alice(pg_server, pg_db)
    monkeypatch.chdir(tmp_path)
    task = write_task(tmp_path / "task.yaml")
    with FakeLM(wording_sensitive_responder) as fake:
        code, out, err = cli(monkeypatch, capsys, "optimize", task, "--store", url, "--seed", "0", "--json")
        assert code == 0, err
        res = json.loads(out)
        calls = fake.calls
        assert calls > 0 and res["best"]["val"] > res["seed"]["val"]
        run_id = res["run_id"]
        assert res["store"] == url.replace(PASSWORD, "***") and PASSWORD not in out + err
        # the files a user reads, written from the database to runs/<id>
        files = tmp_path / "runs" / run_id
        assert (files / "best_prompt.txt").read_text() == res["best"]["prompt"]
        assert json.loads((files / "lineage.json").read_text())["best"] == res["best"]["id"]
        assert yaml.safe_load((files / "run.yaml").read_text())["store"] == res["store"]
        assert not (files / "store.sqlite").exists()

        code, out, err = cli(monkeypatch, capsys, "runs", "--store", url, "--json")
        assert code == 0, err
        listed = json.loads(out)
        assert [r["run_id"] for r in listed] == [run_id] and listed[0]["status"] == "finished"
        assert listed[0]["best"]["val"] == res["best"]["val"]

        code, out, err = cli(monkeypatch, capsys, "show", "latest", "--store", url, "--json")
        assert code == 0, err
        shown = json.loads(out)
        assert shown["best_id"] == res["best"]["id"] and shown["examples"]["rows"], shown.keys()

        code, out, err = cli(monkeypatch, capsys, "report", run_id[:12], "--store", url)
        assert code == 0, err
        report = Path(out.strip())
        assert report == Path("runs") / run_id / "report.html" and res["best"]["id"] in report.read_text()

        app = tmp_path / "app.yaml"
        code, out, err = cli(monkeypatch, capsys, "export", run_id, "--store", url, "--to", app, "--key", "bot.prompt")
        assert code == 0, err
        assert yaml.safe_load(app.read_text())["bot"]["prompt"] == res["best"]["prompt"]

        code, out, err = cli(monkeypatch, capsys, "check", task, "--prompt-from", run_id, "--store", url, "--json",
                             "--cache", url)
        assert code == 0, err
        assert json.loads(out)["score"] == pytest.approx(res["best"]["test"])
        assert fake.calls == calls, "check on the shared cache asked the model again"
        for path in files.iterdir():
            assert PASSWORD not in path.read_text(), path


def test_two_users_share_cached_replies(pg_server, pg_db, tmp_path):
    """alice runs the task; postgres (another user) runs it too: every repeated request comes from the database."""
    from promptlearn.run import optimize

    task = write_task(tmp_path / "task.yaml")
    with FakeLM(wording_sensitive_responder) as fake:
        first = optimize(task, seed=3, store=alice(pg_server, pg_db), runs_root=tmp_path / "a")
        made = fake.calls
        second = optimize(task, seed=3, store=pg_server.url(pg_db), runs_root=tmp_path / "b")
        assert fake.calls == made, f"the second user's run made {fake.calls - made} model calls"
    assert made > 0 and first.ledger.calls == made and second.ledger.calls == 0
    assert second.ledger.cached_calls == first.ledger.calls + first.ledger.cached_calls
    assert second.best.prompt == first.best.prompt and second.run_id != first.run_id


@pytest.mark.parametrize("fault", ["unreachable", "wrong database", "wrong password", "newer schema"])
def test_bad_store_is_one_line_exit_2_before_any_model_call(pg_server, pg_db, tmp_path, monkeypatch, capsys, fault):
    import psycopg

    url = {"unreachable": f"postgresql://alice:{PASSWORD}@127.0.0.1:1/{pg_db}",
           "wrong database": alice(pg_server, "no_such_db"),
           "wrong password": pg_server.url(pg_db, user="alice", password=PASSWORD + "x"),
           "newer schema": alice(pg_server, pg_db)}[fault]
    if fault == "newer schema":
        from promptlearn.store import open_store

        open_store(url).close()
        with psycopg.connect(pg_server.url(pg_db), autocommit=True) as conn:
            conn.execute("INSERT INTO pl_migrations (name) VALUES ('9000_later')")
    task = write_task(tmp_path / "task.yaml")
    expect = {"unreachable": "Connection refused", "wrong database": "does not exist",
              "wrong password": "password authentication failed", "newer schema": "newer promptlearn"}[fault]
    with FakeLM(wording_sensitive_responder) as fake:
        for args in (["optimize", task, "--store", url], ["runs", "--store", url], ["show", "x", "--store", url]):
            code, out, err = cli(monkeypatch, capsys, *args)
            lines = [ln for ln in err.strip().splitlines() if not ln.startswith("promptlearn: warning:")]
            assert code == 2 and len(lines) == 1 and lines[0].startswith("promptlearn: error: "), (args, err)
            assert expect in lines[0] and PASSWORD not in err + out and "***" in lines[0], lines[0]
        assert fake.calls == 0
    assert not (tmp_path / "runs").exists()


def test_a_run_held_by_another_machine_is_refused_then_taken_with_force(pg_server, pg_url, tmp_path, monkeypatch,
                                                                        capsys):
    from promptlearn.store import LockHolder, open_store

    task = write_task(tmp_path / "task.yaml")
    monkeypatch.chdir(tmp_path)
    with FakeLM(wording_sensitive_responder):
        code, out, err = cli(monkeypatch, capsys, "optimize", task, "--store", pg_url, "--seed", "3", "--json",
                             "--budget-calls", "30")
        assert code == 0, err
        run_id = json.loads(out)["run_id"]
        store = open_store(pg_url)
        store.open_run(run_id).acquire_lock(LockHolder("build-box-7", 31337, "bob"), 60)
        store.close()
        code, out, err = cli(monkeypatch, capsys, "optimize", task, "--store", pg_url, "--resume", run_id)
        lines = [ln for ln in err.strip().splitlines() if not ln.startswith("promptlearn: warning:")]
        assert code == 2 and len(lines) == 1, err
        assert f"run {run_id} is in use by bob@build-box-7 pid 31337" in lines[0] and "--force" in lines[0]
        code, out, err = cli(monkeypatch, capsys, "optimize", task, "--store", pg_url, "--resume", run_id, "--force",
                             "--json")
        assert code == 0, err


def _env() -> dict[str, str]:
    return dict(os.environ, PROMPTLEARN_BACKOFF_BASE="0.001")


CONCURRENCY = 4


def _task_file(d: Path, base_url: str, max_calls: int = 60) -> Path:
    from test_reliability import task_dict

    d.mkdir(parents=True, exist_ok=True)
    path = d / "task.yaml"
    path.write_text(yaml.safe_dump(task_dict(base_url, max_calls=max_calls, concurrency=CONCURRENCY),
                                   sort_keys=False))
    return path


def _wait_for(cond, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _results(url: str) -> int:
    import psycopg

    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=2) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM pl_results").fetchone()[0])
    except psycopg.Error:
        return 0


@pytest.mark.slow  # CLI processes, each importing litellm
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_second_process_on_a_running_run_is_refused(pg_url, tmp_path, backend):
    """Two real processes: while one optimizes, another --resume of the same run is refused naming it."""
    from promptlearn.testing_server import LoopbackServer
    from test_reliability import responder

    with LoopbackServer(responder, latency=0.3) as srv:
        task = _task_file(tmp_path, srv.base_url)
        pg = backend == "postgresql"
        first = subprocess.Popen([str(PROMPTLEARN), "optimize", str(task), "--json", "--run-dir",
                                  str(tmp_path / "runs" / "r"), *(["--store", pg_url] if pg else [])],
                                 cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _wait_for(lambda: len(srv.requests) >= 2)
            resume = ["--resume", "r", "--store", pg_url] if pg else ["--resume", str(tmp_path / "runs" / "r")]
            second = subprocess.run([str(PROMPTLEARN), "optimize", str(task), *resume], cwd=tmp_path, env=_env(),
                                    capture_output=True, text=True, timeout=120)
            lines = [ln for ln in second.stderr.strip().splitlines() if "warning:" not in ln]
            assert second.returncode == 2 and len(lines) == 1, second.stderr
            assert f"pid {first.pid}" in lines[0] and "in use by" in lines[0], lines[0]
        finally:
            first.kill()
            first.wait()


@pytest.mark.slow  # a CLI process and a server stopped and started again
def test_database_going_away_mid_run_stops_it_resumable(tmp_path):
    """Stop the server in the middle of a run: one line, exit 2, nothing committed lost; start it again and
    --resume finishes the run without asking the model again for any result stored before."""
    from promptlearn.testing_postgres import PostgresServer
    from promptlearn.testing_server import LoopbackServer, _body_key
    from test_reliability import responder

    with PostgresServer() as pg, LoopbackServer(responder, latency=0.05) as srv:
        url = pg.url()
        task = _task_file(tmp_path, srv.base_url)
        run = subprocess.Popen([str(PROMPTLEARN), "optimize", str(task), "--store", url, "--run-dir",
                                str(tmp_path / "runs" / "r"), "--json"], cwd=tmp_path, env=_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_for(lambda: _results(url) >= 8)
        pg.stop()
        out, err = run.communicate(timeout=120)
        lines = [ln for ln in err.strip().splitlines() if "warning:" not in ln]
        assert run.returncode == 2 and len(lines) == 1 and "went away" in lines[0], err
        assert lines[0].endswith(f"continue it with --resume r --store {url}"), lines[0]
        before = srv.requests
        pg.start()
        stored = _results(url)
        assert stored >= 8
        done = subprocess.run([str(PROMPTLEARN), "optimize", str(task), "--store", url, "--resume", "r", "--json"],
                              cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        after = srv.requests[len(before):]
    res = json.loads(done.stdout)
    assert res["best"]["test"] is not None
    answered_before = {_body_key(r["body"]) for r in before if r["fault"] is None}
    repeated = answered_before & {_body_key(r["body"]) for r in after}
    # only calls in flight when the server went (answered by the model, never committed) may be asked again
    assert len(repeated) <= CONCURRENCY, f"{len(repeated)} answered requests were made again after resume"


@pytest.mark.model
@pytest.mark.slow
def test_embedded_model_run_on_postgres_makes_the_same_decisions_as_on_sqlite(pg_url, tmp_path):
    """The real model, one run on PostgreSQL (runs and reply cache): the same lineage, scores and best as the
    SQLite run of tests/test_real_model.py records; the store changes where results live, never a decision."""
    from conftest import smollm2_available
    from promptlearn.run import optimize
    from promptlearn.store import open_store
    from test_real_model import LINEAGES, _tiny_pirate

    if not smollm2_available():
        pytest.skip("needs promptlearn[local]")
    result = optimize(_tiny_pirate(), "evolve", budget=40, seed=0, store=pg_url, runs_root=tmp_path / "runs")
    assert [(n["operator"], n["status"]) for n in result.lineage["nodes"]] == LINEAGES["evolve"]
    assert result.ledger.calls <= 40 and result.best.test is not None
    store = open_store(pg_url)
    run = store.open_run(result.run_id)
    assert run.get_meta("status") == "finished" and len(store.reply_cache()) == result.ledger.calls
    assert run.scores()[result.best.id]["test"]["score"] == result.best.test
    store.close()
