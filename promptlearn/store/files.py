"""The files a user reads, written from any store: run.yaml, best_prompt.txt and lineage.json in a folder.

For the SQLite layout that folder is the run's own; for a database store it is a local folder (`runs/<id>` by
default). The store is the truth: these files are a view of it, rewritten atomically whenever the best changes
and when the run ends, and `promptlearn report` adds report.html from the store alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from promptlearn.store.base import RunStore

#: The meta key holding run.yaml's text, so reports read it from the store, wherever the files went.
RUN_YAML = "run_yaml"


def atomic_write(path: Path, text: str) -> None:
    """Write via a temp file and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk, a directory in the way, Ctrl-C: never leave the temp file behind
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_run_files(store: "RunStore", out_dir: str | Path, best_prompt: str | None = None) -> None:
    """run.yaml (once), best_prompt.txt (when given) and lineage.json of `store`'s run, into `out_dir`."""
    out = Path(out_dir)
    run_yaml = store.get_meta(RUN_YAML)
    if run_yaml is not None and not (out / "run.yaml").exists():
        atomic_write(out / "run.yaml", run_yaml)
    if best_prompt is not None:
        atomic_write(out / "best_prompt.txt", best_prompt)
    atomic_write(out / "lineage.json", json.dumps(store.lineage(), indent=2))


class RunFiles:
    """The files step bound to one run and folder: what the loop calls when the best changes."""

    def __init__(self, store: "RunStore", out_dir: str | Path):
        self.store, self.dir = store, Path(out_dir)

    def __call__(self, best_prompt: str | None = None) -> None:
        write_run_files(self.store, self.dir, best_prompt)
