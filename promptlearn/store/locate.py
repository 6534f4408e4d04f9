"""From what a user types (a run id, prefix, `latest` or folder; `--store`, `--root`) to a run in a store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from promptlearn.store.base import RunStore, Store
from promptlearn.store.open import open_store
from promptlearn.store.url import is_db_url


@dataclass
class RunRef:
    """A run found in its store, and the folder of its user-facing files (run.yaml, report.html, ...)."""

    store: Store
    run_id: str
    files_dir: Path
    url: str | None = None  #: the database URL as given (None: the SQLite layout)

    def open(self) -> RunStore:
        return self.store.open_run(self.run_id)

    def close(self) -> None:
        self.store.close()


def locate_run(run: str | Path, *, store: str | Path | None = None, root: str | Path = "runs") -> RunRef:
    """`run` in the store at `store` (a postgresql:// URL; a folder means the SQLite layout rooted there), or, by
    default, a run folder / id / prefix / `latest` under `root`. A database run's files go under `root/<id>`."""
    if is_db_url(store):
        backend = open_store(str(store))
        try:
            run_id = backend.resolve(str(run))
        except BaseException:
            backend.close()
            raise
        return RunRef(backend, run_id, Path(root) / run_id, str(store))
    from promptlearn.store.sqlite import SQLiteStore, resolve_run

    rdir = resolve_run(run, store if store is not None else root)
    return RunRef(SQLiteStore(rdir.parent), rdir.name, rdir)
