"""Stoppers: the STOP file and the store's stop flag (`promptlearn stop`) end a run cleanly, resumable, on any
store; a stop asked of an earlier session does not stop the resumed one."""

from __future__ import annotations

import pytest

from promptlearn.run import optimize
from promptlearn.store import open_store
from promptlearn.testing import FakeLM, contract_task, wording_sensitive_responder


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    return str(tmp_path / "runs") if request.param == "sqlite" else request.getfixturevalue("pg_url")


@pytest.mark.parametrize("how", ["stop file", "stop command"])
def test_stop_ends_the_run_cleanly_and_resume_finishes_it(store_url, tmp_path, monkeypatch, capsys, how):
    from test_cli_export_check import cli

    task = contract_task(max_calls=120)
    asked = []

    def stop_after_seed(ctx):
        if asked:
            return
        asked.append(ctx.store.run_id)
        if how == "stop file":
            (ctx.publish.dir / "STOP").write_text("")
        else:
            code, out, err = cli(monkeypatch, capsys, "stop", ctx.store.run_id, "--store", store_url)
            assert code == 0 and f"asked run {ctx.store.run_id} to stop" in out, err

    with FakeLM(wording_sensitive_responder):
        first = optimize(task, seed=3, store=store_url, runs_root=tmp_path / "files", on_progress=stop_after_seed)
        assert first.stop_reason.startswith(how.replace(" command", " requested")), first.stop_reason
        assert first.candidates == 1 and first.best.test is not None  # stopped before any proposal
        if how == "stop file":
            (first.run_dir / "STOP").unlink()
        full = optimize(task, resume=first.run_id if "://" in store_url else first.run_dir, store=store_url,
                        runs_root=tmp_path / "files")
    assert full.stop_reason != first.stop_reason and full.candidates > 1
    store = open_store(store_url)
    assert store.open_run(first.run_id).get_meta("status") == "finished"
    store.close()
