"""Run stores: the `Store` / `RunStore` protocols, the SQLite layout (default) and PostgreSQL, opened by URL.

Everything the loop, reports, export, `runs`, `show` and `check` need from a run goes through `RunStore`
(promptlearn/store/base.py, where the contract is written); the files a user reads come from
`promptlearn.store.files`, which works from any store.
"""

from __future__ import annotations

from promptlearn.store.base import (LockHolder, ReplyCache, RunLocked, RunStore, Store, StoreError, StoreUnavailable,
                                    iter_parents, result_from_json, result_to_json)
from promptlearn.store.files import RunFiles, atomic_write, write_run_files
from promptlearn.store.sqlite import MIGRATIONS, SQLiteRunStore, SQLiteStore, list_runs, resolve_run, run_started
from promptlearn.store.open import open_cache, open_store
from promptlearn.store.url import is_db_url, mask_secret, mask_url

__all__ = [
    "MIGRATIONS",
    "LockHolder",
    "ReplyCache",
    "RunFiles",
    "RunLocked",
    "RunStore",
    "SQLiteRunStore",
    "SQLiteStore",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "atomic_write",
    "is_db_url",
    "iter_parents",
    "list_runs",
    "mask_secret",
    "mask_url",
    "open_cache",
    "open_store",
    "resolve_run",
    "result_from_json",
    "result_to_json",
    "run_started",
    "write_run_files",
]
