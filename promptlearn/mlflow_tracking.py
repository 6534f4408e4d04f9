"""MLflow tracking: one MLflow run per optimization, logged from a worker thread so a slow or dead tracker never
holds up or loses the optimization (the promptlearn run store stays the record; MLflow gets a copy).

mlflow is imported only here and in export.mlflow_registry, and only when tracking or the registry is asked for.
Credentials come from MLflow's own environment variables (MLFLOW_TRACKING_TOKEN, MLFLOW_TRACKING_USERNAME /
MLFLOW_TRACKING_PASSWORD, ...), read by MLflow itself; promptlearn never sees, logs or stores them.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol

from promptlearn.errors import ConfigError, TaskError, TaskWarning

if TYPE_CHECKING:
    from promptlearn.loop import RunContext
    from promptlearn.run import Result
    from promptlearn.store import RunStore
    from promptlearn.task import Task

#: Seconds `finish` waits for the tracker to take what is still queued before giving up on it (the run is done).
DRAIN_SECONDS = float(os.environ.get("PROMPTLEARN_MLFLOW_DRAIN_SECONDS", "120"))
_MAX_PARAM = 6000  # MLflow's limit on a param value (MAX_PARAM_VAL_LENGTH)
ARTIFACTS = ("report.html", "lineage.json", "best_prompt.txt", "run.yaml")


class TrackingWarning(TaskWarning):
    """The tracker failed or was slow; the optimization went on and is complete in its run store."""


def import_mlflow() -> Any:
    """The mlflow module, with telemetry off and run links off stdout (`--json` prints one object there)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # nothing phones home
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    try:
        import mlflow
    except ImportError:
        raise ConfigError("MLflow is not installed; install it with pip install 'promptlearn[mlflow]'") from None
    return mlflow


def check_uri(uri: str, field: str = "--mlflow") -> str:
    """The tracking URI as given, refused (TaskError) when empty or when it carries credentials."""
    if not isinstance(uri, str) or not uri.strip():
        raise TaskError("empty MLflow tracking URI", field=field, fix="give e.g. http://127.0.0.1:5000")
    from promptlearn.task import CREDENTIALS_FIX, has_credentials

    if has_credentials(uri):
        raise TaskError("the MLflow URI holds credentials", field=field, fix=CREDENTIALS_FIX)
    return uri.strip()


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300] or type(e).__name__


class Tracker(Protocol):
    """Where a run is logged besides its store. Contract: no method raises or blocks the optimization on the
    tracker's account (failures become one TrackingWarning and `error`); `start` comes once, before any
    `progress`; exactly one of `finish` / `abort` ends it; `progress` is called from the optimizing thread."""

    error: str | None

    def start(self, task: "Task", store: "RunStore", optimizer: str, seed: int, options: Mapping[str, Any],
              budget: Mapping[str, Any], run_dir: Path) -> None: ...

    def progress(self, ctx: "RunContext") -> None: ...

    def finish(self, result: "Result") -> dict[str, Any] | None: ...

    def abort(self, status: str) -> None: ...


class NoTracker:
    """No tracking asked for."""

    error: str | None = None

    def start(self, task: "Task", store: "RunStore", optimizer: str, seed: int, options: Mapping[str, Any],
              budget: Mapping[str, Any], run_dir: Path) -> None:
        return None

    def progress(self, ctx: "RunContext") -> None:
        return None

    def finish(self, result: "Result") -> dict[str, Any] | None:
        return None

    def abort(self, status: str) -> None:
        return None


def tracker_for(tracking: str | Mapping[str, Any] | None, task: "Task") -> Tracker:
    """The tracker `optimize(tracking=...)` asks for (a URI, or {mlflow: URI, experiment: NAME}), else the task's
    `tracking:` section, else none. A bad URI or missing mlflow fails here, before any call is made."""
    spec = task.spec.tracking
    uri, experiment = spec.mlflow, spec.experiment
    field = "tracking.mlflow (task file)" if tracking is None else "tracking (--mlflow)"
    if isinstance(tracking, str):
        uri = tracking
    elif isinstance(tracking, Mapping):
        unknown = sorted(set(tracking) - {"mlflow", "experiment"})
        if unknown:
            raise TaskError(f"unknown tracking keys {unknown}", field="tracking", fix="use mlflow and experiment")
        uri, experiment = tracking.get("mlflow", uri), tracking.get("experiment", experiment)
    elif tracking is not None:
        raise TaskError(f"tracking must be a URI or a mapping, got {type(tracking).__name__}", field="tracking")
    if uri is None:
        return NoTracker()
    import_mlflow()
    return MlflowTracker(check_uri(uri, field), str(experiment))


class MlflowTracker:
    """Logs one MLflow run: params and tags at `start`, metrics at each `progress` (step = proposals), final scores
    and the run's files at `finish`. A worker thread makes every MLflow call; the first failure is warned about
    once and everything after it is dropped (MLflow's own retries, MLFLOW_HTTP_REQUEST_MAX_RETRIES, come first)."""

    def __init__(self, uri: str, experiment: str, *, drain_seconds: float | None = None,
                 notice: Callable[[str], None] | None = None):
        self.uri, self.experiment = uri, experiment
        self.drain_seconds = DRAIN_SECONDS if drain_seconds is None else drain_seconds
        self.notice = notice or (lambda msg: warnings.warn(msg, TrackingWarning, stacklevel=2))
        self.error: str | None = None
        self.mlflow_run_id: str | None = None
        self.experiment_id: str | None = None
        self._queue: queue.Queue[tuple[str, Any] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._store: RunStore | None = None
        self._linked: str | None = None
        self._warned = False
        self._run_id = ""
        self._last_ms = 0  # timestamp of the last metrics point queued
        self._step = 0  # the last progress step: final values go there, not back to step 0

    # ---- the optimizing thread -----------------------------------------------------------------------------
    def start(self, task: "Task", store: "RunStore", optimizer: str, seed: int, options: Mapping[str, Any],
              budget: Mapping[str, Any], run_dir: Path) -> None:
        self._store, self._run_id = store, store.run_id
        previous = store.get_meta("mlflow") or {}
        resume = previous.get("run_id") if previous.get("uri") == self.uri else None  # a resumed run goes on
        self._thread = threading.Thread(target=self._work, name="promptlearn-mlflow", daemon=True)
        self._thread.start()
        self._queue.put(("start", {"params": run_params(task, optimizer, seed, options, budget),
                                   "tags": {"promptlearn.run_id": store.run_id, "promptlearn.run_dir":
                                            str(Path(run_dir).resolve()), "promptlearn.task": task.name},
                                   "resume": resume}))

    def progress(self, ctx: "RunContext") -> None:
        u = ctx.evaluator.ledger.snapshot()
        metrics = {"best_val": ctx.val_evals[ctx.best_id].score, "candidates": len(ctx.candidates),
                   "calls": u.calls, "cached_calls": u.cached_calls, "requests": u.requests, "tokens": u.tokens,
                   "usd": u.usd, "seconds": u.seconds}
        self._step = ctx.proposals
        # Several progress events can share a step (a parallel batch) and a millisecond; MLflow keeps one point per
        # (key, value, step, timestamp), so each event gets its own strictly later timestamp.
        self._last_ms = max(_now_ms(), self._last_ms + 1)
        self._queue.put(("metrics", (metrics, ctx.proposals, self._last_ms)))
        self._link()

    def finish(self, result: "Result") -> dict[str, Any] | None:
        final: dict[str, float] = {"seed_val": result.seed.val, "best_val": result.best.val,
                                   "candidates": result.candidates, "calls": result.ledger.calls,
                                   "requests": result.ledger.requests, "tokens": result.ledger.tokens,
                                   "usd": result.ledger.usd, "seconds": result.ledger.seconds}
        for key, value in (("seed_test", result.seed.test), ("best_test", result.best.test),
                           ("overfit_gap", result.overfit_gap)):
            if value is not None:
                final[key] = value
        for key, value in (result.best.test_side_effects or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                final[f"test_{key}"] = value
        for check, rate in (result.best.test_checks or {}).items():
            final[f"test_check.{check}"] = rate
        _write_report(result)
        files = [str(result.run_dir / name) for name in ARTIFACTS if (result.run_dir / name).is_file()]
        tags = {"promptlearn.best_id": result.best.id, "promptlearn.stop_reason": (result.stop_reason or "")[:500],
                "promptlearn.status": "finished"}
        self._queue.put(("final", (final, files, tags, self._step)))
        return self._end("FINISHED")

    def abort(self, status: str) -> None:
        self._queue.put(("tags", {"promptlearn.status": status}))
        self._end("KILLED" if status == "interrupted" else "FAILED", wait=min(self.drain_seconds, 10.0))

    def _end(self, status: str, wait: float | None = None) -> dict[str, Any]:
        """Queue the end and wait (at most `wait`, default drain_seconds) for the worker to send everything."""
        wait = self.drain_seconds if wait is None else wait
        self._queue.put(("end", status))
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(wait)
            if self._thread.is_alive() and self.error is None:
                self._fail(f"MLflow at {self.uri} did not take the run's last records within {wait:g} s")
        self._link(force=True)
        return self.info()

    def info(self) -> dict[str, Any]:
        """The link both ways, as the run store keeps it under meta `mlflow` (and Result.tracking holds it)."""
        return {"uri": self.uri, "experiment": self.experiment, "experiment_id": self.experiment_id,
                "run_id": self.mlflow_run_id, "error": self.error}

    def _link(self, force: bool = False) -> None:
        """The MLflow run id into the run store, written from this thread (the store is not shared with the
        worker) as soon as the worker knows it."""
        state = json.dumps(self.info(), sort_keys=True)
        if self._store is not None and (self.mlflow_run_id or force) and state != self._linked:
            self._store.set_meta("mlflow", self.info())
            self._linked = state

    # ---- the worker thread ---------------------------------------------------------------------------------
    def _fail(self, message: str) -> None:
        self.error = message
        if not self._warned:
            self._warned = True
            self.notice(f"MLflow tracking stopped: {message}; the optimization goes on and its run store "
                        f"({self._run_id}) keeps everything")

    def _work(self) -> None:
        from mlflow import MlflowClient

        client: Any = None
        try:
            client = MlflowClient(tracking_uri=self.uri)
        except Exception as e:  # noqa: BLE001 (e.g. a URI scheme MLflow has no store for)
            self._fail(f"no MLflow client for {self.uri}: {one_line(e)}")
        held: tuple[str, Any] | None = None  # an item taken while gathering metrics, handled next
        while True:
            item = held if held is not None else self._queue.get()
            held = None
            if item is None or item[0] == "stop":
                return
            if self.error is not None:
                continue  # the tracker failed once: the rest is dropped, not retried item by item
            kind, payload = item
            if kind == "metrics":  # every metric already queued goes in one request
                payload = [payload]
                while True:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is not None and nxt[0] == "metrics":
                        payload.append(nxt[1])
                        continue
                    held = nxt if nxt is not None else ("stop", None)
                    break
            try:
                self._handle(client, kind, payload)
            except Exception as e:  # noqa: BLE001 (any failure of the tracker must leave the run alone)
                self._fail(f"{kind} failed at {self.uri}: {one_line(e)}")

    def _handle(self, client: Any, kind: str, payload: Any) -> None:
        from mlflow.entities import Metric, Param, RunTag

        if kind == "start":
            if payload["resume"]:
                client.update_run(payload["resume"], status="RUNNING")
                self.mlflow_run_id = payload["resume"]
                self.experiment_id = client.get_run(self.mlflow_run_id).info.experiment_id
                return
            exp = client.get_experiment_by_name(self.experiment)
            self.experiment_id = exp.experiment_id if exp else client.create_experiment(self.experiment)
            run = client.create_run(self.experiment_id, tags=payload["tags"], run_name=self._run_id)
            params = [Param(k, v) for k, v in payload["params"].items()]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
                client.log_batch(run.info.run_id, params=params[i:i + 100])
            self.mlflow_run_id = run.info.run_id
        elif self.mlflow_run_id is None:
            return
        elif kind == "metrics":
            metrics = [Metric(k, float(v), ts, step) for values, step, ts in payload for k, v in values.items()]
            for i in range(0, len(metrics), 1000):
                client.log_batch(self.mlflow_run_id, metrics=metrics[i:i + 1000])
        elif kind == "final":
            final, files, tags, step = payload
            ts = max(_now_ms(), self._last_ms + 1)
            client.log_batch(self.mlflow_run_id, metrics=[Metric(k, float(v), ts, step) for k, v in final.items()],
                             tags=[RunTag(k, v) for k, v in tags.items()])
            for path in files:
                client.log_artifact(self.mlflow_run_id, path)
        elif kind == "tags":
            client.log_batch(self.mlflow_run_id, tags=[RunTag(k, v) for k, v in payload.items()])
        elif kind == "end":
            client.set_terminated(self.mlflow_run_id, status=payload)


def run_params(task: "Task", optimizer: str, seed: int, options: Mapping[str, Any],
               budget: Mapping[str, Any]) -> dict[str, str]:
    """What a run was asked to do, as MLflow params: model names only (never an api_base or key), options whose
    names look like credentials left out by the task schema's own rule."""
    from promptlearn import __version__
    from promptlearn.task import _secret_like

    params: dict[str, Any] = {"task": task.name, "task_fingerprint": task.fingerprint(), "optimizer": optimizer,
                              "seed": seed, "target_model": task.model.name, "proposer_model": task.proposer.name,
                              "judge_model": task.judge.name, "promptlearn_version": __version__}
    for k, v in budget.items():
        params[f"budget.{k}"] = v
    for k, v in sorted(options.items()):
        if not _secret_like(str(k)):
            params[f"option.{k}"] = v if isinstance(v, str) else json.dumps(v, default=str)
    return {k: str(v)[:_MAX_PARAM] for k, v in params.items()}


def _write_report(result: "Result") -> None:
    """report.html for the artifacts (from the run's store, a database one too, into its folder of files); a
    report that cannot be written only leaves it out."""
    try:
        from promptlearn.report import write_report

        if result.store_url is not None:
            write_report(result.run_id, result.run_dir, store=result.store_url)
        else:
            write_report(result.run_dir)
    except Exception:  # noqa: BLE001 (the report is a courtesy copy here; the CLI says why it failed)
        pass


def _now_ms() -> int:
    return int(time.time() * 1000)


def tracking_line(info: Mapping[str, Any]) -> str:
    """The line the CLI ends an optimization with: where the MLflow run is, or that tracking failed."""
    if info.get("error"):
        return (f"promptlearn: warning: MLflow tracking failed ({info['error']}); the optimization finished and "
                "is complete in its run store" + (f" (MLflow run {info['run_id']} is partial)"
                                                 if info.get("run_id") else ""))
    return f"mlflow: run {info['run_id']} in experiment {info['experiment']} at {info['uri']}"
