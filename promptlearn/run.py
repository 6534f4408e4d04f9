"""`optimize()`: one run from seed to a tested best prompt, kept in a run store that can be resumed."""

from __future__ import annotations

import dataclasses
import inspect
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from promptlearn.engine import Evaluation
from promptlearn.errors import BudgetExceeded, ModelError, RunError, TaskError
from promptlearn.loop import Options, RunContext, StopRun, pareto_front
from promptlearn.metrics import adherence, side_effects
from promptlearn.migrate import migration_bar, migration_report
from promptlearn.targets import make_evaluator, record_target_scores, target_summary, test_reserve_calls
from promptlearn.stoppers import STOP_REQUESTED, StopFile, StoreStopFlag
from promptlearn.store import RunStore, SQLiteStore, StoreUnavailable, is_db_url, mask_url, open_store
from promptlearn.store.locate import locate_run
from promptlearn.store.lock import RunLock
from promptlearn.store.files import RUN_YAML, RunFiles
from promptlearn.task import Task, load_task
from promptlearn.types import Usage

if TYPE_CHECKING:
    from promptlearn.mlflow_tracking import Tracker

LOOP_OPTIONS = {f.name for f in dataclasses.fields(Options)}


@dataclass(frozen=True)
class PromptScores:
    """A prompt with its val and test scores (test is None when it was not measured)."""

    id: str  #: content hash of the prompt (`types.prompt_id`), its id in the run store
    prompt: str  #: the system prompt text, exactly as scored
    val: float  #: mean example score on the val split (what selection saw)
    test: float | None  #: mean example score on the held-out test split, scored once at the end
    val_checks: Mapping[str, float]  #: pass rate of each check on val
    test_checks: Mapping[str, float] | None = None  #: pass rate of each check on test
    test_side_effects: Mapping[str, Any] | None = None  #: fixed/broken/verbosity... vs the seed on test


@dataclass(frozen=True)
class Result:
    """The outcome of a run: seed and best with val and test scores, the lineage and the ledger."""

    run_id: str  #: the run's id in its store; `promptlearn export RUN` takes it
    run_dir: Path  #: the folder of run.yaml, best_prompt.txt and lineage.json (and, SQLite layout, the store)
    seed: PromptScores  #: the task's own prompt
    best: PromptScores  #: the accepted prompt with the best val score (the seed when nothing beat it)
    front: tuple[PromptScores, ...]  #: other Pareto-front candidates that were scored on test
    lineage: Mapping[str, Any]  #: every candidate with its parents, operator, status and scores
    ledger: Usage  #: calls, cached calls, tokens, USD and seconds the run spent
    stop_reason: str | None  #: why the search ended (optimizer finished, budget stop, patience, ...)
    candidates: int  #: how many distinct prompts were recorded
    budget: Mapping[str, Any] | None = None  #: max_calls asked, the search's share and the test reserve
    tracking: Mapping[str, Any] | None = None  #: the MLflow run it was logged to (uri, run_id, error), if any
    targets: Mapping[str, Any] | None = None  #: several targets: per-target val/test scores and ledger
    migration: Mapping[str, Any] | None = None  #: `migrate:` the bar on the old model and whether it is reached
    store_url: str | None = field(default=None, repr=False)  #: a database store's URL (None: the SQLite layout)

    @property
    def overfit_gap(self) -> float | None:
        """val minus test for the best prompt: how much selection flattered it."""
        return None if self.best.test is None else self.best.val - self.best.test

    def export(self, path: str | Path, key: str, *, fmt: str | None = None,
               provenance: str | bool = "comment") -> Any:
        """Write the best prompt into an app config file, keeping everything else in it.

        Provenance (run id, val, test, sha256 and the decoding options the prompt was scored with) goes with the
        prompt: `provenance="comment"` (default) as a comment attached to the key (JSON: the sibling key, it has no
        comments), "key" as the sibling key `<leaf>_provenance`, "none" (or False) not at all; read it back with
        `promptlearn.read_provenance`. Raises ConfigError when the file or key cannot take it. The same code path
        as `promptlearn export RUN` (gate.export_run, reading this run's store); returns its ExportInfo.
        """
        from promptlearn.gate import export_run

        if self.store_url is not None:
            return export_run(self.run_id, path, key, fmt=fmt, provenance=provenance, store=self.store_url)
        return export_run(self.run_dir, path, key, fmt=fmt, provenance=provenance)

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "run_dir": str(self.run_dir),
                "store": mask_url(self.store_url) if self.store_url else None,
                "seed": {"val": self.seed.val, "test": self.seed.test},
                "best": {"val": self.best.val, "test": self.best.test, "prompt": self.best.prompt, "id": self.best.id},
                "overfit_gap": self.overfit_gap, "calls": self.ledger.calls, "cached_calls": self.ledger.cached_calls,
                "requests": self.ledger.requests,
                "usd": self.ledger.usd, "seconds": self.ledger.seconds, "candidates": self.candidates,
                "stop_reason": self.stop_reason, "budget": dict(self.budget) if self.budget else None,
                "front": [{"id": p.id, "val": p.val, "test": p.test} for p in self.front],
                "tracking": dict(self.tracking) if self.tracking else None,
                **({"targets": dict(self.targets)} if self.targets else {}),
                **({"migration": dict(self.migration)} if self.migration else {})}


def optimize(task: Task | str | Path, optimizer: str | None = None, *, budget: int | Mapping[str, Any] | None = None,
             seed: int = 0, run_dir: str | Path | None = None, resume: str | Path | None = None,
             runs_root: str | Path = "runs", cache_path: str | Path | None = None,
             options: Mapping[str, Any] | None = None,
             on_progress: Callable[[RunContext], None] | None = None, extend_budget: bool = False,
             tracking: str | Mapping[str, Any] | None = None,
             parallel: int | None = None,
             store: str | Path | None = None, force: bool = False, workers: int | None = None) -> Result:
    """Optimize the task's system prompt: search on train/val, then score seed and best once on test.

    Args:
        task: a Task (`make_task`, `load_task`) or the path of a task YAML file.
        optimizer: evolve, mutate, dspy, optuna or a plugin's name (default: the task's `optimizer.name`).
        budget: the most model calls (int), or a mapping of max_calls / max_tokens / max_usd / max_seconds;
            replaces the task's `budget`. Calls for scoring seed and best on test are held back from the search.
        seed: random seed: the same seed and cache give the same lineage.
        run_dir: where to keep the run (default `runs_root/<task>-<time>-s<seed>-<ms>`).
        resume: continue this run (its id, a unique prefix of it, `latest`, or its directory) with its own
            seed and options; the task must be the same.
        runs_root: the folder that holds runs (for the default `run_dir` and for finding `resume`).
        cache_path: the model-reply cache file (default ~/.cache/promptlearn, or $PROMPTLEARN_CACHE_DIR).
        options: optimizer and loop options (what `-o KEY=VALUE` sets on the command line).
        on_progress: called with the RunContext after each scored candidate (e.g. to draw progress).
        extend_budget: with `resume`, accept a budget above the run's own (no limit may go down) and search
            further; without it, another budget than the run's is refused.
        tracking: an MLflow tracking URI, or {mlflow: URI, experiment: NAME}: log the run there as well (default:
            the task's `tracking:`). A tracker that fails is warned about once and the run goes on
            (`Result.tracking["error"]` says what failed).
        parallel: proposals in flight at once (`optimizer.parallel`; default `default_parallel`). Decisions are
            applied in proposal order, so a P gives the same lineage whatever the timing; P=1 is the serial
            search. A resumed run keeps its own P.
        store: where runs live: a folder (the SQLite layout; default `runs_root`) or `postgresql://user@host/db`
            (then the files a user reads go to `run_dir`, default `runs_root/<id>`, and the reply cache is the
            database's, shared by everyone using it, unless `cache_path` says otherwise).
        force: take the run's lock even though another process seems to hold it (its holder is gone).
        workers: run the search on this many worker processes here (this one deciding, promptlearn.workers), and
            let `promptlearn worker --store URL RUN_ID` join from other machines; needs a postgresql:// store.
            With `resume`, adds workers-1 processes to a worker run. Default parallel: workers x concurrency.

    Returns the Result (seed, best, lineage, ledger); the run folder holds the store, run.yaml, lineage.json
    and best_prompt.txt. Raises TaskError for a bad task or option before any call is made, RunError for a
    run that cannot be resumed, ModelError when a model fault never heals (the run is saved and resumable).
    `resume` continues a run with its own budget: another one (from `budget` or the task file) is refused
    unless `extend_budget`, which only raises limits. A finished run stays finished whatever happens later.
    """
    from promptlearn.mlflow_tracking import tracker_for

    file_task = task if isinstance(task, Task) else load_task(task)
    tracker = tracker_for(tracking, file_task)
    try:
        result = _optimize(file_task, optimizer, budget, seed, run_dir, resume, runs_root, cache_path, options,
                           on_progress, extend_budget, tracker, parallel, store, force, workers)
    except BaseException as e:
        tracker.abort("interrupted" if isinstance(e, KeyboardInterrupt) else "failed")
        raise
    info = tracker.finish(result)
    return dataclasses.replace(result, tracking=info) if info else result


def _optimize(file_task: Task, optimizer: str | None, budget: int | Mapping[str, Any] | None, seed: int,
              run_dir: str | Path | None, resume: str | Path | None, runs_root: str | Path,
              cache_path: str | Path | None, options: Mapping[str, Any] | None,
              on_progress: Callable[[RunContext], None] | None, extend_budget: bool, tracker: Tracker,
              parallel: int | None, store: str | Path | None, force: bool, workers: int | None = None) -> Result:
    """`optimize` once the task is loaded and the tracker chosen."""
    task = _with_budget(file_task, budget)
    task.require("train", "val", "test", proposer=True)  # before a run exists or a call is made
    url = str(store) if store is not None else None
    db = is_db_url(url)
    if workers is not None:
        from promptlearn.workers import require_db

        require_db(url, workers)
    if resume is None:  # a bad optimizer name or option: no run created yet
        name = optimizer or task.spec.optimizer.name
        opt_options = {**(task.spec.optimizer.model_extra or {}), **(options or {})}
        opt, loop_opts = _build_optimizer(name, opt_options)
        loop_opts.parallel = _parallel(task, loop_opts, parallel, workers or 1)
    if resume is not None:
        ref = locate_run(resume, store=url, root=runs_root)
        backend, run_id, files_dir = ref.store, ref.run_id, Path(run_dir) if run_dir and db else ref.files_dir
        rs = backend.open_run(run_id)
    else:
        task.warn(search=True)
        if db:
            backend = open_store(url or "")
            run_id = Path(run_dir).name if run_dir else _run_id(task.name, seed)
            files_dir = Path(run_dir) if run_dir else Path(runs_root) / run_id
        else:
            files_dir = Path(run_dir) if run_dir else Path(url or runs_root) / _run_id(task.name, seed)
            backend, run_id = SQLiteStore(files_dir.parent), files_dir.name
        rs = backend.create_run(run_id)
    hint = f"--resume {files_dir}" if not db else f"--resume {run_id} --store {backend.url}"
    crew: Any = None  # a worker run's promptlearn.workers.Crew
    try:
        lock = RunLock(rs, force=force)
    except BaseException:
        backend.close()
        raise
    try:
        if resume is not None:
            saved = rs.get_meta("config")
            if saved is None:  # stopped (killed) between creating the store and saving the run's config
                raise RunError(f"run {run_id} never got past its creation; delete it and start it again")
            if saved["fingerprint"] != task.fingerprint():
                raise RunError(f"run {run_id} was made with a different task (data, checks or prompt changed); "
                               "start a new run instead of --resume")
            if workers is not None and not saved.get("workers"):
                raise RunError(f"run {run_id} was started without --workers and runs in one process; resume it "
                               "without --workers")
            name, seed, opt_options = saved["optimizer"], saved["seed"], saved["options"]
            opt, loop_opts = _build_optimizer(name, opt_options)
            loop_opts.parallel = saved.get("parallel", 1)  # a run made before parallel search was serial
            if parallel is not None and parallel != loop_opts.parallel:
                raise RunError(f"run {run_id} searches with parallel {loop_opts.parallel}; --resume replays it "
                               f"with the same (asked: {parallel}): resume without --parallel")
            task = _resume_budget(rs, saved, file_task, budget, extend_budget)
        else:
            rs.set_meta("config", {"optimizer": name, "seed": seed, "options": opt_options,
                                   "parallel": loop_opts.parallel, "fingerprint": task.fingerprint(),
                                   "budget": _limits(task),
                                   "task_budget": _limits(file_task), **({"workers": workers} if workers else {})})
            rs.set_meta(RUN_YAML, _run_yaml(task, name, seed, opt_options, backend.url if db else None))
        rs.set_meta(STOP_REQUESTED, None)  # a stop asked of an earlier session of this run is spent
        files = RunFiles(rs, files_dir)
        files()  # run.yaml (once) and lineage.json, before any call
        if (rs.get_meta("config") or {}).get("workers"):
            from promptlearn.workers import Crew

            crew = Crew(backend, url or "", run_id, file_task, task, workers)
        if crew is not None:  # the workers write replies to the database's cache: the decider reads that one
            cache_path = None
        cache = backend.reply_cache() if cache_path is None else None  # a database store: the team's cache
        tracker.start(task, rs, name, seed, opt_options, _limits(task), files_dir)
        evaluator = make_evaluator(task, store=rs, cache=cache, cache_path=cache_path)
        if crew is not None:
            crew.start(rs, evaluator.ledger, new=resume is None)
        ctx = RunContext(task, evaluator, rs, seed=seed, options=loop_opts,
                         on_progress=_both(tracker.progress, on_progress))
        ctx.stoppers += [StopFile(files_dir / "STOP"), StoreStopFlag(rs), lock]
        ctx.publish = files
        result = _drive(task, ctx, opt, hint)
        return dataclasses.replace(result, run_dir=files_dir, store_url=url if db else None)
    except StoreUnavailable as e:  # nothing can be recorded: the store is the one that went away
        raise StoreUnavailable(f"{e}; continue it with {hint}") from None
    finally:
        if crew is not None:
            crew.close()
        lock.release()
        rs.close()
        backend.close()


def _drive(task: Task, ctx: RunContext, opt: Any, hint: str) -> Result:
    """The search, then the test scores: every way it can end recorded in the store, resumable."""
    store, evaluator = ctx.store, ctx.evaluator
    full_calls = evaluator.ledger.budget.max_calls
    test_reserve = test_reserve_calls(task)
    if full_calls is not None:
        evaluator.ledger.budget.max_calls = max(0, full_calls - test_reserve)
    search_calls = evaluator.ledger.budget.max_calls
    budget = {"max_calls": full_calls, "search": search_calls, "test_reserve":
              None if full_calls is None or search_calls is None else full_calls - search_calls}
    store.set_meta("budget", budget)
    if store.get_meta("status") != "finished":  # a finished run extended stays finished until it finishes again
        store.set_meta("status", "running")
    stop_reason, bar = None, None
    try:
        bar = migration_bar(ctx)  # `migrate:`: the old model's score is the bar, known before the search
        ctx.start()
        opt.run(ctx)
        stop_reason = "optimizer finished"
    except BudgetExceeded as e:  # the numbers are in the budget line (report.budget_text), stated once
        stop_reason = ("budget stop: max_calls (the search's share) used up" if e.limit == "max_calls"
                       else str(e))
    except StopRun as e:
        stop_reason = str(e)
    except KeyboardInterrupt:
        _close(store, ctx, "interrupted")
        evaluator.close()
        raise
    except ModelError as e:
        _close(store, ctx, "failed", str(e))
        evaluator.close()
        raise ModelError(f"{e}; the run is saved, continue it with {hint}") from None
    except BaseException:
        evaluator.close()
        raise
    finally:
        evaluator.ledger.budget.max_calls = full_calls
    if not ctx.val_evals:
        _close(store, ctx, "failed")
        evaluator.close()
        raise RunError(f"the budget does not cover scoring the seed prompt on val ({stop_reason}); raise it")
    try:
        result = _finish(task, ctx, stop_reason, budget, bar)
    except ModelError as e:  # a fault that never healed while scoring on test: as resumable as one before
        _close(store, ctx, "failed", str(e))
        raise ModelError(f"{e}; the run is saved, continue it with {hint}") from None
    except KeyboardInterrupt:
        _close(store, ctx, "interrupted")
        raise
    finally:
        evaluator.close()
    return result


def _both(first: Callable[[RunContext], None], then: Callable[[RunContext], None] | None
          ) -> Callable[[RunContext], None]:
    def hook(ctx: RunContext) -> None:
        first(ctx)
        if then is not None:
            then(ctx)

    return hook


def optimizer_options(name: str) -> list[str] | None:
    """The options an optimizer takes (its constructor's keywords plus the loop's); None when it takes any."""
    from promptlearn.optimizers import get_optimizer

    cls = get_optimizer(name)
    if cls.__init__ is object.__init__:
        own: set[str] = set()
    else:
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]  # without self
        if any(p.kind is p.VAR_KEYWORD for p in params):
            return None
        own = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return sorted(own | LOOP_OPTIONS)


def _build_optimizer(name: str, options: Mapping[str, Any]) -> tuple[Any, Options]:
    """The optimizer and the loop options, or a TaskError naming the option that does not exist."""
    from promptlearn.optimizers import get_optimizer

    cls, known = get_optimizer(name), optimizer_options(name)
    unknown = [k for k in options if known is not None and k not in known]
    if unknown:
        raise TaskError(f"optimizer '{name}' has no option {', '.join(repr(k) for k in unknown)}",
                        field="optimizer", fix="use one of " + ", ".join(known or ()))
    try:
        # an optimizer may name the loop options it was measured with (Optimizer.loop_defaults); the task's own win
        chosen = {**(getattr(cls, "loop_defaults", None) or {}), **options}
        loop_opts = Options(**{k: v for k, v in chosen.items() if k in LOOP_OPTIONS})
        if isinstance(loop_opts.confirm, bool) or not isinstance(loop_opts.confirm, int) or loop_opts.confirm < 0:
            raise TaskError(f"optimizer.confirm must be a whole number >= 0, not {loop_opts.confirm!r}",
                            field="optimizer.confirm", fix="e.g. confirm: 16 (0 turns it off)")
        for flag in ("race", "screen_race", "race_halves"):
            if not isinstance(getattr(loop_opts, flag), bool):
                raise TaskError(f"optimizer.{flag} must be true or false, not {getattr(loop_opts, flag)!r}",
                                field=f"optimizer.{flag}", fix=f"{flag}: true or {flag}: false")
        return cls(**{k: v for k, v in options.items() if k not in LOOP_OPTIONS}), loop_opts
    except TypeError as e:  # a plugin's constructor refusing what its signature seemed to take
        raise TaskError(f"optimizer '{name}': {e}", field="optimizer", fix="check its options") from None


def default_parallel(task: Task) -> int:
    """Proposals in flight by default: 1 for a concurrency-1 model (the embedded one is compute-bound in one
    process), else one per request the model takes at once, at most 16: fewer leave it idle while a batch's
    slowest proposals finish (bench parallel: at concurrency 16, P=4 reaches 0.67 of the ideal wall time,
    P=16 0.85)."""
    conc = task.model.max_concurrency
    return 1 if conc <= 1 else min(16, conc)


def _parallel(task: Task, opts: Options, asked: int | None, workers: int = 1) -> int:
    value = asked if asked is not None else opts.parallel
    if value is None and workers > 1:
        from promptlearn.workers import default_parallel as workers_parallel

        return workers_parallel(task.model.max_concurrency, workers)
    if value is None:
        return default_parallel(task)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TaskError(f"optimizer.parallel must be a whole number >= 1, not {value!r}", field="optimizer.parallel",
                        fix="e.g. parallel: 4 (1 for a serial search)")
    return value


def _finish(task: Task, ctx: RunContext, stop_reason: str | None, budget: Mapping[str, Any],
            bar: Evaluation | None = None) -> Result:
    """Score seed, best (and, budget allowing, the Pareto front) on test; write the run's files."""
    store, test = ctx.store, task.examples("test")
    seed_id, best_id = ctx.seed_candidate.id, ctx.best_id
    ids = [seed_id] + ([best_id] if best_id != seed_id else [])
    extra = [c for c in pareto_front(ctx) if c not in ids][: ctx.options.test_front]
    tests: dict[str, Evaluation] = {}
    for cid, ev in zip(ids + extra, _test_evaluations(ctx, [ctx.candidates[c] for c in ids + extra], test)):
        if not ev.complete:
            break
        tests[cid] = ev
        store.put_score(cid, "test", ev.score, len(ev.results), True, {"checks": ev.check_rates()})
        record_target_scores(store, cid, ev, "test")

    def scores(cid: str) -> PromptScores:
        val, t = ctx.val_evals[cid], tests.get(cid)
        return PromptScores(cid, ctx.candidates[cid].prompt, val.score, t.score if t else None, val.check_rates(),
                            t.check_rates() if t else None,
                            side_effects(t, tests.get(seed_id), test) if t else None)

    targets = target_summary(ctx, tests, list(tests))
    migration = migration_report(ctx, bar, tests.get(seed_id), tests.get(best_id))
    _close(store, ctx, "finished")
    for key, value in (("targets", targets), ("migration", migration)):
        if value is not None:
            store.set_meta(key, value)
    store.set_meta("stop_reason", stop_reason)
    store.set_meta("ledger", ctx.evaluator.ledger.snapshot().to_dict())
    store.set_meta("ledger_by_tag", {k: v.to_dict() for k, v in ctx.evaluator.ledger.by_tag.items()})
    if tests.get(best_id):
        store.set_meta("test_metrics", {"seed": adherence(tests[seed_id], test) if seed_id in tests else None,
                                        "best": adherence(tests[best_id], test)})
    return Result(store.run_id, Path(), scores(seed_id), scores(best_id),
                  tuple(scores(c) for c in extra if c in tests), store.lineage(), ctx.evaluator.ledger.snapshot(),
                  stop_reason, len(ctx.candidates), budget, targets=targets, migration=migration)


def _test_evaluations(ctx: RunContext, cands: list[Any], test: list[Any]) -> list[Evaluation]:
    """Each candidate scored on test, in order. A model that takes concurrent requests scores them all at once,
    each within an in-order grant (promptlearn.inflight), so the candidates a budget leaves unscored are the
    ones scoring them one by one would leave; a concurrency-1 model scores them one by one (KV-cache reuse)."""
    from promptlearn.inflight import InOrderGrants, gather_or_cancel

    ev = ctx.evaluator
    if ctx.task.model.max_concurrency <= 1 or len(cands) == 1:
        return [ev.evaluate(c.prompt, test, split="test", tag="test", model_overrides=c.model_overrides)
                for c in cands]
    grants = InOrderGrants(ev.ledger)
    stages = [grants.add(ev.max_requests(test)) for _ in cands]

    async def one(c: Any, stage: Any) -> Evaluation:
        async with grants.stage(stage):
            return await ev.aevaluate(c.prompt, test, split="test", tag="test", model_overrides=c.model_overrides)

    return list(ev.run(gather_or_cancel([one(c, s) for c, s in zip(cands, stages)])))


def _close(store: RunStore, ctx: RunContext, status: str, error: str | None = None) -> None:
    """Record how the run ended. A finished run is never downgraded: a later fault (while extending it) is kept
    as a `fault` event, and its status, best prompt and files stay those of the finished run."""
    if status != "finished" and store.get_meta("status") == "finished":
        store.log_event("fault", {"status": status, "error": error})
        return
    store.set_meta("status", status)
    store.set_meta("best", ctx.best_id)
    ctx.publish(ctx.candidates[ctx.best_id].prompt if ctx.best_id in ctx.candidates else None)


def _with_budget(task: Task, budget: int | Mapping[str, Any] | None) -> Task:
    if budget is None:
        return task
    extra = {"max_calls": budget} if isinstance(budget, int) else dict(budget)
    try:
        spec = task.spec.model_copy(update={"budget": task.spec.budget.model_copy(update=extra)})
    except Exception as e:  # noqa: BLE001
        raise TaskError(f"bad budget {budget!r}: {e}", field="budget", fix="give max_calls as an integer") from None
    new = Task(spec, task.splits, path=task.path)
    return new


def _limits(task: Task) -> dict[str, Any]:
    return {k: v for k, v in task.budget.model_dump().items() if v is not None}


def _show_limits(limits: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in limits.items()) or "no limits"


def _resume_budget(store: RunStore, saved: Mapping[str, Any], file_task: Task,
                   budget: int | Mapping[str, Any] | None, extend: bool) -> Task:
    """The task with the run's own budget. Asked for another one (the `budget` argument, or a task file whose
    budget changed since the run was made): a RunError, unless `extend` and every limit only goes up."""
    had = saved.get("budget")
    if had is None:  # a run made before budgets were saved: as asked
        return _with_budget(file_task, budget)
    file_limits = _limits(file_task)
    base = had if file_limits == saved.get("task_budget") else file_limits
    asked = {} if budget is None else {"max_calls": budget} if isinstance(budget, int) else dict(budget)
    wanted = {k: v for k, v in {**base, **asked}.items() if v is not None}
    if wanted != had:
        name = store.run_id
        if not extend:
            raise RunError(f"run {name} has the budget {_show_limits(had)}; --resume continues it with the same "
                           f"budget (asked: {_show_limits(wanted)}): resume without a new budget, or add "
                           f"--extend-budget to continue it with {_show_limits(wanted)}")
        lowered = [f"{k} {had.get(k, 'unlimited')} -> {wanted.get(k, 'unlimited')}" for k in sorted({*had, *wanted})
                   if k not in had or (k in wanted and wanted[k] < had[k])]
        if lowered:
            raise RunError(f"--extend-budget only raises limits: {', '.join(lowered)}")
        store.set_meta("config", {**saved, "budget": wanted, "task_budget": file_limits})
        store.log_event("budget", {"from": had, "to": wanted})
    return _with_budget(file_task, {k: wanted.get(k) for k in file_task.budget.model_dump()})


def _run_id(name: str, seed: int) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{name}-{stamp}-s{seed}-{int(time.time() * 1000) % 1000:03d}"


def _run_yaml(task: Task, optimizer: str, seed: int, options: Mapping[str, Any], store: str | None = None) -> str:
    import yaml

    spec = task.spec.model_dump(mode="json")
    spec["optimizer"] = {"name": optimizer, **options}
    if spec.get("cache"):  # a postgresql:// cache named in the task file: never its password
        spec["cache"] = mask_url(spec["cache"])
    doc = {"promptlearn_version": __import__("promptlearn").__version__, "seed": seed, **({"store": mask_url(store)}
                                                                                          if store else {}),
           "task_file": str(task.path) if task.path else None, "fingerprint": task.fingerprint(),
           "task": spec, "splits": {k: [e.id for e in v] for k, v in task.splits.items()}}
    return yaml.safe_dump(json.loads(json.dumps(doc)), sort_keys=False, allow_unicode=True)
