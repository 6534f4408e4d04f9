"""The store protocols: what the loop, reports, export, `runs`, `show` and `check` may ask of a run store.

Two seams, modelled on optuna's BaseStorage (optuna/storages/_base.py): a `Store` holds many runs and is opened
by URL (`open_store`), a `RunStore` is one run in it. Neither names a file: the files a user reads (run.yaml,
best_prompt.txt, lineage.json, report.html) are written from any store by `promptlearn.store.files`.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping, Protocol, runtime_checkable

from promptlearn.cache import ReplyCache
from promptlearn.errors import PromptlearnError, RunError
from promptlearn.types import Candidate, CheckResult, ExampleResult, TurnResult, Usage


class StoreError(PromptlearnError):
    """A store cannot be opened or used: unreachable server, wrong database, a schema from a newer promptlearn,
    a bad URL. One line, the password masked; raised before any model call when it happens at open."""


class StoreUnavailable(StoreError):
    """The database went away while a run was using it. Everything committed before stays; resume the run once
    the database is back."""


class RunLocked(RunError):
    """Another live process holds this run (the message names it); `--force` takes a lock whose holder is gone."""


@runtime_checkable
class RunStore(Protocol):
    """One run's records: meta, candidates, per-example results, proposer generations, scores and events.

    **Thread safety.** One instance is shared by the threads of one process (the evaluator's event loop, the
    heartbeat, the CLI's live view); every method may be called from any thread.

    **Durability.** Each write is committed when the call returns (no batching, no explicit commit), so a crash
    or a database going away loses at most the calls in flight, and a resumed run replays everything returned
    before. A write that cannot be committed raises `StoreUnavailable`, never returns silently.

    **Ownership.** Candidates are immutable once added (content-hash ids; `add_candidate` of a known id changes
    nothing and returns False); only their `status` moves. A result, score, generation or meta value written again
    under the same key replaces the old one (the writer recomputed it from the same inputs). Events are
    append-only and read back in the order they were logged. Values read are copies: later writes never change
    what an earlier read returned.

    **Isolation.** A run store sees only its own run: two runs in one store share nothing but the reply cache.
    Nothing here takes a path; implementations that keep files keep that to themselves.
    """

    @property
    def run_id(self) -> str:
        """The run's id, unique in its store (what `show`, `report`, `export` and `--resume` take)."""
        ...

    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON-able value under `key` (config, seed, best, status, ledger, ...)."""
        ...

    def get_meta(self, key: str, default: Any = None) -> Any:
        ...

    def add_candidate(self, cand: Candidate, status: str = "proposed") -> bool:
        """Record a candidate once, numbered in the order of recording (`seq`); False if it was already there."""
        ...

    def set_status(self, cand_id: str, status: str) -> None:
        ...

    def candidates(self) -> list[dict[str, Any]]:
        """Every candidate as {id, seq, prompt, parents, operator, status, meta}, by seq."""
        ...

    def candidate(self, cand_id: str) -> dict[str, Any] | None:
        ...

    def put_result(self, cand_id: str, res: ExampleResult, usage: Usage) -> None:
        """The result of one (candidate, example) pair and what it cost, committed at once."""
        ...

    def get_result(self, cand_id: str, example_id: str) -> tuple[ExampleResult, Usage] | None:
        ...

    def results(self, cand_id: str) -> dict[str, ExampleResult]:
        ...

    def usage_of(self, cand_id: str) -> Usage:
        ...

    def put_generation(self, key: str, text: str, usage: Usage) -> None:
        """A proposer reply under its request key, so a resumed run replays it instead of asking again."""
        ...

    def get_generation(self, key: str) -> tuple[str, Usage] | None:
        ...

    def put_score(self, cand_id: str, split: str, score: float, n: int, complete: bool,
                  extra: Mapping[str, Any] | None = None) -> None:
        ...

    def scores(self) -> dict[str, dict[str, dict[str, Any]]]:
        """{candidate id: {split: {score, n, complete, **extra}}}."""
        ...

    def log_event(self, kind: str, data: Mapping[str, Any]) -> None:
        ...

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Events as {seq, time, kind, **data}, in the order they were logged (all kinds, or one)."""
        ...

    def lineage(self) -> dict[str, Any]:
        """{run_id, best, seed, nodes: [{id, parents, operator, status, val, test, train}]}: lineage.json."""
        ...

    def created(self) -> float:
        """When the run was created (epoch seconds): `latest` and `promptlearn runs` order by it."""
        ...

    def acquire_lock(self, holder: "LockHolder", lease: float, force: bool = False) -> None:
        """Take the run's lock for `lease` seconds, or raise RunLocked naming the live holder. A lock whose lease
        ran out, or whose holder process is known to be gone (same host, no such pid), is taken over; `force`
        takes any lock. Re-acquiring one's own lock renews it."""
        ...

    def renew_lock(self, holder: "LockHolder", lease: float) -> bool:
        """Extend the lease; False when the lock is no longer this holder's (taken over with --force)."""
        ...

    def release_lock(self, holder: "LockHolder") -> None:
        """Drop the lock if this holder has it (a clean exit); never raises for a lock already gone."""
        ...

    def close(self) -> None:
        ...


@runtime_checkable
class Store(Protocol):
    """Where runs live, opened by URL (`open_store("runs/")`, `open_store("postgresql://user@host/db")`).

    Thread-safe like RunStore. `url` is safe to print: a password in it is masked. Opening checks the server,
    the database and the schema (running the named, append-only migrations it lacks), so every such fault is a
    StoreError before any model call.
    """

    @property
    def url(self) -> str:
        """The store's URL with any password masked: what output, run.yaml, reports and errors show."""
        ...

    def create_run(self, run_id: str) -> RunStore:
        """A new, empty run; RunError if `run_id` already holds one."""
        ...

    def open_run(self, run_id: str) -> RunStore:
        """An existing run; RunError if there is none under that id."""
        ...

    def run_ids(self) -> list[str]:
        """Every run in the store, the one created first first."""
        ...

    def resolve(self, ref: str) -> str:
        """A run id, a unique prefix of one, or `latest` -> the run id; RunError saying where it looked."""
        ...

    def reply_cache(self) -> ReplyCache | None:
        """The store's shared reply cache (a team's identical requests answered once), or None when the store
        keeps no cache of its own (the SQLite layout: the cache is its own file)."""
        ...

    def close(self) -> None:
        ...


@dataclass(frozen=True)
class LockHolder:
    """Who holds a run: shown in the `run is in use` error, and checked for liveness on the same host."""

    host: str
    pid: int
    user: str

    @classmethod
    def me(cls) -> "LockHolder":
        import getpass

        try:
            user = getpass.getuser()
        except Exception:  # noqa: BLE001 - no user name in a bare container: the pid still names the holder
            user = "?"
        return cls(socket.gethostname(), os.getpid(), user)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "LockHolder":
        return cls(**json.loads(text))

    def __str__(self) -> str:
        return f"{self.user}@{self.host} pid {self.pid}"

    def is_gone(self) -> bool:
        """True when the holder is known dead: same host and no such process. Another host: unknown (False)."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


def lock_refusal(run_id: str, holder: LockHolder, seconds_left: float) -> RunLocked:
    return RunLocked(f"run {run_id} is in use by {holder} (lease renewed, {seconds_left:.0f}s left); two processes "
                     "on one run are refused: wait for it to finish, or if that process is gone, retry with --force")


def may_take(holder: LockHolder | None, me: LockHolder, seconds_left: float, force: bool) -> bool:
    """The one rule for taking a run's lock: free, mine, expired, a dead holder, or --force."""
    return holder is None or holder == me or seconds_left <= 0 or force or holder.is_gone()


# ---- shared encodings (every backend stores results the same way) ----------------------------------------------


def result_to_json(res: ExampleResult) -> str:
    return json.dumps({"example_id": res.example_id, "turns": [
        {"reply": t.reply, "error": t.error, "completion_tokens": t.completion_tokens,
         "checks": {k: asdict(v) for k, v in t.checks.items()}} for t in res.turns]}, ensure_ascii=False)


def result_from_json(text: str) -> ExampleResult:
    d = json.loads(text)
    return ExampleResult(d["example_id"], tuple(
        TurnResult(t["reply"], {k: CheckResult(**v) for k, v in t["checks"].items()}, t.get("error"),
                   t.get("completion_tokens", 0)) for t in d["turns"]))


def lineage_of(store: RunStore) -> dict[str, Any]:
    """lineage.json of any store: the one rule for it."""
    scores = store.scores()
    nodes = []
    for c in store.candidates():
        s = scores.get(c["id"], {})
        nodes.append({"id": c["id"], "parents": c["parents"], "operator": c["operator"], "status": c["status"],
                      "val": s.get("val", {}).get("score"), "test": s.get("test", {}).get("score"),
                      "train": s.get("train", {}).get("score")})
    return {"run_id": store.run_id, "best": store.get_meta("best"), "seed": store.get_meta("seed"), "nodes": nodes}


def resolve_ref(ref: str, ids: list[str], where: str) -> str:
    """The one rule for naming a run: exact id, `latest`, or a unique prefix (ids oldest first)."""
    if ref in ids:
        return ref
    if ref == "latest":
        if not ids:
            raise RunError(f"no runs in {where} to take the latest of; list runs with `promptlearn runs`")
        return ids[-1]
    matches = [i for i in ids if i.startswith(ref)] if ref and "/" not in ref else []
    if len(matches) == 1:
        return matches[0]
    if matches:
        names = ", ".join(matches[:3]) + (", ..." if len(matches) > 3 else "")
        raise RunError(f"run '{ref}' is ambiguous: {len(matches)} runs in {where} begin with it ({names}); "
                       "give more of the id")
    raise RunError(f"run '{ref}' not found in {where}; list runs with `promptlearn runs`")


def iter_parents(nodes: Iterable[Mapping[str, Any]], leaf: str) -> list[Mapping[str, Any]]:
    """The chain from the seed to `leaf`, following first parents."""
    by_id = {n["id"]: n for n in nodes}
    chain, cur = [], by_id.get(leaf)
    while cur is not None and cur not in chain:
        chain.append(cur)
        cur = by_id.get(cur["parents"][0]) if cur["parents"] else None
    return list(reversed(chain))
