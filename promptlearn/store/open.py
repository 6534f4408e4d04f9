"""`open_store(url)` and `open_cache(where)`: a folder is the SQLite layout (the default `runs/`), a
`postgresql://` URL a database (psycopg, the [postgres] extra)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from promptlearn.store.base import StoreError
from promptlearn.store.url import is_db_url, mask_url

if TYPE_CHECKING:
    from promptlearn.cache import ReplyCache
    from promptlearn.store.base import Store


def open_store(url: str | Path = "runs") -> "Store":
    """The store at `url`: `postgresql://user@host[:port]/db` (psycopg, the [postgres] extra), or a folder of
    runs (the SQLite layout). Raises StoreError in one line (password masked) when it cannot be used."""
    if is_db_url(url):
        from promptlearn.store.postgres import PostgresStore

        return PostgresStore(str(url))
    text = str(url)
    if re.match(r"^[a-z][a-z0-9+.-]*://", text, re.I):
        raise StoreError(f"store URL {mask_url(text)!r}: unknown scheme; give a folder of runs (e.g. runs/) or "
                         "postgresql://user@host/db")
    from promptlearn.store.sqlite import SQLiteStore

    return SQLiteStore(text)


def open_cache(where: str | Path | None = None) -> "ReplyCache":
    """The reply cache at `where`: a postgresql:// URL (the team's shared table) or a SQLite file (default
    ~/.cache/promptlearn/cache.sqlite)."""
    if is_db_url(where):
        from promptlearn.store.postgres import PostgresCache, PostgresStore

        return PostgresCache(PostgresStore(str(where), max_size=4), owns=True)
    from promptlearn.cache import Cache

    return Cache(where)
