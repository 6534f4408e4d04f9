"""The run lock: one process per run (SQLite or PostgreSQL), held with a lease that a heartbeat renews.

A process killed without a goodbye leaves its lock until the lease runs out (or at once, on the same host, where
its pid can be seen to be gone); `--force` takes a lock whose holder is gone on another machine. The lease lives
in the store (RunStore.acquire_lock / renew_lock / release_lock), in the server's clock for PostgreSQL.
"""

from __future__ import annotations

import os
import threading

from promptlearn.store.base import LockHolder, RunStore

#: The lease of a run lock and of a worker's claims; PROMPTLEARN_LEASE_SECONDS shortens it (tests that kill workers).
LEASE_SECONDS = float(os.environ.get("PROMPTLEARN_LEASE_SECONDS", "30"))


class RunLock:
    """Holds `store`'s run lock until `release()`; as a stopper (`lock()`), says when the lock was lost."""

    def __init__(self, store: RunStore, *, force: bool = False, lease: float = LEASE_SECONDS):
        self.store, self.lease, self.holder = store, lease, LockHolder.me()
        self.lost: str | None = None
        store.acquire_lock(self.holder, lease, force)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="promptlearn-run-lock", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._done.wait(self.lease / 3):
            try:
                if not self.store.renew_lock(self.holder, self.lease):
                    self.lost = "the run lock was taken over by another process (--force)"
                    return
            except Exception:  # noqa: BLE001 - the database is away: the run's own writes stop it; keep trying
                continue

    def __call__(self) -> str | None:
        return self.lost

    def release(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)
        if self.lost is None:
            try:
                self.store.release_lock(self.holder)
            except Exception:  # noqa: BLE001
                pass  # the database is gone: the lease runs out on its own
