"""Every store backend passes the same contract (promptlearn.testing_stores): the SQLite layout and a real
PostgreSQL server started on 127.0.0.1 by the `pg_server` fixture (tests/conftest.py; it fails in CI without
one, never skips). Then what is particular to each backend: its named migrations and a newer schema."""

from __future__ import annotations

import pytest

from promptlearn import testing_stores as contract
from promptlearn.store import StoreError, open_store

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "runs")
    return request.getfixturevalue("pg_url")


@pytest.mark.parametrize("check", [contract.check_runs, contract.check_records, contract.check_durable_across_instances,
                                   contract.check_threads, contract.check_lock], ids=lambda f: f.__name__)
def test_store_contract(store_url, check):
    check(lambda: open_store(store_url))


def test_reply_cache_contract(store_url, tmp_path):
    from promptlearn.store.open import open_cache

    where = str(tmp_path / "cache.sqlite") if not store_url.startswith("postgresql") else store_url
    contract.check_reply_cache(lambda: open_store(store_url), lambda: open_cache(where))


def test_sqlite_migrations_are_named_and_a_newer_schema_is_refused(tmp_path):
    import sqlite3

    from promptlearn.store.sqlite import MIGRATIONS, SQLiteRunStore

    names = [n for n, _ in MIGRATIONS]
    assert names == sorted(names) and len(set(names)) == len(names)
    run = SQLiteRunStore(tmp_path / "r")
    run.close()
    db = sqlite3.connect(tmp_path / "r" / "store.sqlite")
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer promptlearn"):
        open_store(tmp_path).open_run("r")


def test_sqlite_store_made_before_the_lock_migration_is_upgraded(tmp_path):
    import sqlite3

    from promptlearn.store.sqlite import MIGRATIONS

    (tmp_path / "old").mkdir()
    db = sqlite3.connect(tmp_path / "old" / "store.sqlite")
    db.executescript(MIGRATIONS[0][1] + MIGRATIONS[1][1] + "PRAGMA user_version = 2;")
    db.execute("INSERT INTO meta VALUES ('status', '\"finished\"')")
    db.commit()
    db.close()
    run = open_store(tmp_path).open_run("old")
    assert run.get_meta("status") == "finished"
    from promptlearn.store.base import LockHolder

    run.acquire_lock(LockHolder.me(), 30)
    run.close()


def test_postgres_migrations_are_recorded_by_name_and_a_newer_schema_is_refused(pg_url):
    import psycopg

    from promptlearn.store.postgres import MIGRATIONS

    open_store(pg_url).close()
    open_store(pg_url).close()  # a second open runs nothing again
    with psycopg.connect(pg_url, autocommit=True) as conn:
        done = [r[0] for r in conn.execute("SELECT name FROM pl_migrations ORDER BY name")]
        assert done == [n for n, _ in MIGRATIONS]
        conn.execute("INSERT INTO pl_migrations (name) VALUES ('9999_from_the_future')")
    with pytest.raises(StoreError, match=r"newer promptlearn \(schema 9999_from_the_future"):
        open_store(pg_url)


def test_unknown_scheme_and_a_file_as_store_are_one_line_errors(tmp_path):
    with pytest.raises(StoreError, match="unknown scheme"):
        open_store("mysql://bob:hunter2@db/x")
    try:
        open_store("mysql://bob:hunter2@db/x")
    except StoreError as e:
        assert "hunter2" not in str(e)
    (tmp_path / "f").write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        open_store(tmp_path / "f")
