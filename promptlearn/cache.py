"""The reply cache: a repeated request makes no model call, across runs, processes and (PostgreSQL) machines.

A SQLite file (WAL) by default; `open_cache("postgresql://...")` or a PostgreSQL run store gives a team's shared one.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

SECRET_KEYS = ("api_key", "authorization", "x-api-key", "api-key", "extra_headers", "headers")


class ReplyCache(Protocol):
    """Model replies by request key (`cache.request_key`): a repeated request makes no model call.

    Shared by processes and machines (SQLite file with WAL, or a PostgreSQL table): `put` of a key already there
    replaces it with an equivalent reply, and `get` never returns a half-written one. Keys never hold secrets.
    """

    def get(self, key: str) -> dict[str, Any] | None:
        ...

    def put(self, key: str, model: str, response: Mapping[str, Any]) -> None:
        ...

    def __len__(self) -> int:
        ...

    def close(self) -> None:
        ...


def default_cache_path() -> Path:
    root = os.environ.get("PROMPTLEARN_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "promptlearn")
    return Path(root) / "cache.sqlite"


def request_key(model: str, params: Mapping[str, Any], messages: Sequence[Mapping[str, str]], sample: int = 0) -> str:
    """Content hash of one request. Secrets never enter the key (nor the cache)."""
    clean = {k: v for k, v in sorted(params.items()) if k.lower() not in SECRET_KEYS}
    blob = json.dumps({"model": model, "params": clean, "messages": messages, "sample": sample},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def connect_wal(path: str | Path, timeout: float = 60.0, **kwargs: Any) -> sqlite3.Connection:
    """An autocommit connection in WAL mode. Switching a new file to WAL takes an exclusive lock and SQLite
    answers "database is locked" at once (no busy wait) when another process holds one, as happens when several
    processes open a fresh file together: retry until the timeout."""
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, **kwargs)
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                conn.close()
                raise
            time.sleep(0.005 + 0.02 * random.random())
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


class Cache:
    """SQLite key -> response JSON. Safe for several processes sharing one file (WAL + busy timeout)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else default_cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._conn() as db:
            db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, model TEXT, response TEXT, "
                       "created REAL)")

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect_wal(self.path)
            self._local.conn = conn
        return conn

    def get(self, key: str) -> dict[str, Any] | None:
        row = self._conn().execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, model: str, response: Mapping[str, Any]) -> None:
        self._conn().execute("INSERT OR REPLACE INTO responses (key, model, response, created) VALUES (?, ?, ?, ?)",
                             (key, model, json.dumps(response, ensure_ascii=False), time.time()))

    def __len__(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
