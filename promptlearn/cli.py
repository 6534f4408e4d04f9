"""`promptlearn`: a thin typer shell over the library. Heavy imports happen inside commands so --help is instant."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Iterator, Optional

import typer

if TYPE_CHECKING:  # rich loads on first use: `promptlearn --help` stays fast
    from rich.console import Console
    from rich.live import Live

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Learn better system prompts: evaluate, optimize, export, gate.")


def _plain_flags() -> None:
    """Show boolean flags in --help as plain flags: typer 0.29's rich help labels them `<bool>` as if they
    took a value (`--json <bool>`), which they do not."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich

    def display_type_rich(self: Any, ctx: Any) -> Optional[str]:
        return None if self.is_flag and not self.count else shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_plain_flags()


def _print_version(value: bool) -> None:
    if value:
        from promptlearn import __version__

        print(f"promptlearn {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                       help="print the version and exit")) -> None:
    """Learn better system prompts: evaluate, optimize, export, gate."""


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr)


def _say_retries(ctx: typer.Context) -> None:
    """Commands that call models say so on stderr while a server refuses connections (one line per backoff),
    only while the command runs: the CLI may run inside a library user's process (typer's runner, a notebook)."""
    from promptlearn.lm import set_retry_notice

    set_retry_notice(lambda line: print(f"promptlearn: {line}", file=sys.stderr, flush=True))
    ctx.call_on_close(lambda: set_retry_notice(None))


def _check_min_score(value: Optional[float]) -> None:
    from promptlearn.errors import TaskError

    if value is not None and not 0 <= value <= 1:  # also refuses NaN
        raise TaskError(f"{value:g} is out of range: scores are between 0 and 1", field="--min-score",
                        fix="give e.g. --min-score 0.6")


def _read_prompt_arg(prompt: Optional[str], prompt_file: Optional[Path]) -> Optional[str]:
    from promptlearn.errors import TaskError

    if prompt is not None and prompt_file is not None:
        raise TaskError("give --prompt or --prompt-file, not both", field="--prompt", fix="drop one of them")
    if prompt_file is not None:
        if not prompt_file.exists():
            raise TaskError("file not found", file=str(prompt_file), field="--prompt-file", fix="check the path")
        return prompt_file.read_text(encoding="utf-8")
    return prompt


@app.command("eval")
def eval_cmd(
    ctx: typer.Context,
    task: Path = typer.Argument(..., help="task YAML file"),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="system prompt text (default: the task's seed)"),
    prompt_file: Optional[Path] = typer.Option(None, "--prompt-file", help="read the system prompt from a file"),
    split: str = typer.Option("val", "--split", help="train, val, test or all"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
    min_score: Optional[float] = typer.Option(None, "--min-score", help="exit 1 when the score is below this"),
    cache: Optional[str] = typer.Option(None, "--cache", help="cache file or postgresql:// URL (default: "
                                                               "~/.cache/promptlearn)"),
    no_cache: bool = typer.Option(False, "--no-cache", help="call the model even for requests seen before"),
) -> None:
    """Score a system prompt on a split of the task's conversations."""
    _check_min_score(min_score)
    _say_retries(ctx)
    from promptlearn.lm import count_tokens
    from promptlearn.metrics import summary
    from promptlearn.targets import make_evaluator
    from promptlearn.task import load_task

    t = load_task(task)
    text = _read_prompt_arg(prompt, prompt_file)
    text = t.prompt if text is None else text
    t.require(split)
    t.warn()
    examples = t.examples(split)
    start = time.perf_counter()
    ev = make_evaluator(t, cache_path=cache, use_cache=not no_cache)
    try:
        per_prompt = len(examples) * (len(t.spec.targets) or 1)
        with _progress(per_prompt * (2 if text != t.prompt else 1), quiet=as_json) as advance:
            result = ev.evaluate(text, examples, split=split, on_example=lambda *_: advance())
            seed = (ev.evaluate(t.prompt, examples, split=split, on_example=lambda *_: advance())
                    if text != t.prompt else None)
        out = summary(result, examples, seed=seed, prompt_tokens=count_tokens(t.model, text),
                      seconds=time.perf_counter() - start)
        out["calls"], out["cached_calls"] = ev.ledger.total.calls, ev.ledger.total.cached_calls
        out["tokens"], out["usd"] = ev.ledger.total.tokens, ev.ledger.total.usd
        if t.spec.targets:  # the score above is the aggregate
            out["targets"] = {k: e.score for k, e in result.by_target.items()}  # type: ignore[attr-defined]
    finally:
        ev.close()
    if as_json:
        print(json.dumps(out, default=str))
    else:
        _print_eval(t.name, split, out)
    if not result.complete:
        _console(stderr=True).print(f"[yellow]{result.stop_reason}: scores cover {len(result.results)} of "
                                    f"{len(examples)} examples[/yellow]")
    if min_score is not None and out["score"] < min_score:
        _console(stderr=True).print(f"[red]score {out['score']:.3f} is below --min-score {min_score}[/red]")
        raise typer.Exit(1)


def _progress(total: int, *, quiet: bool) -> ContextManager[Callable[[], None]]:
    """A rich progress bar on stderr; a no-op when output must stay machine-readable."""
    from contextlib import contextmanager

    @contextmanager
    def bar() -> Iterator[Callable[[], None]]:
        if quiet or not sys.stderr.isatty():
            yield lambda: None
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

        with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TimeRemainingColumn(), console=_console(stderr=True)) as p:
            tid = p.add_task("evaluating", total=total)
            yield lambda: p.advance(tid)

    return bar()


LOOSE_SCORE = ("loose score: IFEval's loose variant, a reply passes if it passes with markdown '*' removed or its "
               "first or last line dropped")


def _print_eval(name: str, split: str, out: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"{name} · {split} · {out['n_examples']} conversations")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("[bold]score[/bold]", f"[bold]{out['score']:.3f}[/bold]")
    for key, score in (out.get("targets") or {}).items():  # several targets: the score is their aggregate
        table.add_row(f"  on {key}", f"{score:.3f}")
    table.add_row("loose score", f"{out['metrics']['loose_score']:.3f}")
    for check, rate in out["checks"].items():
        table.add_row(f"  {check}", f"{rate:.3f}")
    for group in ("ifeval", "sysbench"):
        for k, v in (out["metrics"].get(group) or {}).items():
            if isinstance(v, (int, float)):
                table.add_row(f"{group} {k}", f"{v:.3f}")
            elif isinstance(v, dict):
                table.add_row(f"{group} {k}", ", ".join(f"{a}={b:.2f}" for a, b in v.items()))
    if out["metrics"].get("judge_errors"):
        table.add_row("judge errors", str(out["metrics"]["judge_errors"]))
    effects = {k: v for k, v in out["side_effects"].items() if not k.endswith("_ids")}
    if effects:  # short labels under one heading row, so no row wraps at 80 columns
        table.add_row("side effects vs seed:", "")
    for k, v in effects.items():
        table.add_row(f"  {k.replace('_', ' ')}", f"{v:.3f}" if isinstance(v, float) else str(v))
    table.add_row("calls (cached)", f"{out['calls']} ({out['cached_calls']})")
    table.add_row("tokens", str(out["tokens"]))
    table.add_row("cost USD", f"{out['usd']:.4f}")
    table.add_row("wall time s", f"{out['seconds']:.1f}")
    table.caption = LOOSE_SCORE
    _console().print(table)


@app.command("optimize")
def optimize_cmd(
    ctx: typer.Context,
    task: Path = typer.Argument(..., help="task YAML file"),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help="evolve, mutate, dspy or optuna"),
    budget_calls: Optional[int] = typer.Option(None, "--budget-calls", help="hard cap on model calls"),
    seed: int = typer.Option(0, "--seed", help="random seed: same seed + same cache = same lineage"),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="where to keep the run (default runs/<id>)"),
    resume: Optional[str] = typer.Option(None, "--resume",
                                         help="continue this run (id, unique prefix, latest or path)"),
    option: list[str] = typer.Option([], "--option", "-o", help="optimizer option KEY=VALUE (repeatable)"),
    cache: Optional[str] = typer.Option(None, "--cache", help="cache file or postgresql:// URL (default: "
                                                               "~/.cache/promptlearn; the --store database's)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
    extend_budget: bool = typer.Option(False, "--extend-budget",
                                       help="with --resume: continue the run with a larger budget"),
    mlflow: Optional[str] = typer.Option(None, "--mlflow", help="also log the run to this MLflow tracking URI "
                                                                "(default: the task's tracking.mlflow)"),
    parallel: Optional[int] = typer.Option(None, "--parallel", min=1,
                                           help="proposals in flight at once (default: 1 for the embedded "
                                                "model, else enough to keep the model's concurrency busy)"),
    migrate_from: Optional[str] = typer.Option(None, "--migrate-from",
                                               help="move the prompt from this model (a target label or model "
                                                    "name): its test score with the seed prompt is the bar"),
    migrate_to: Optional[str] = typer.Option(None, "--to", help="with --migrate-from: the model to search on"),
    store: Optional[str] = typer.Option(None, "--store", help="where runs live: a folder (default --root) or "
                                                             "postgresql://user@host/db"),
    force: bool = typer.Option(False, "--force", help="take the run's lock although a process holds it (one "
                                                      "that is gone)"),
    workers: Optional[int] = typer.Option(None, "--workers", help="run N worker processes here (PostgreSQL "
                                                                  "--store only); more join with `promptlearn "
                                                                  "worker`"),
) -> None:
    """Search for a better system prompt; score seed and best on the held-out test split."""
    _say_retries(ctx)
    from promptlearn.cli_targets import migration_task, print_run_targets
    from promptlearn.run import optimize

    options = _parse_options(option)
    live = _LiveView(quiet=as_json)
    try:
        with live:
            result = optimize(migration_task(task, migrate_from, migrate_to), optimizer, budget=budget_calls,
                              seed=seed, run_dir=run_dir, resume=resume, cache_path=cache, options=options,
                              on_progress=live.update, extend_budget=extend_budget, tracking=mlflow,
                              parallel=parallel, store=store, force=force, workers=workers)
    except KeyboardInterrupt:
        from promptlearn.store import is_db_url, mask_url

        where = (f"{live.run_id} --store {mask_url(store or '')}" if is_db_url(store) and live.run_id
                 else live.run_dir or "the run directory")
        print(f"promptlearn: interrupted; the run is saved: continue it with --resume {where}", file=sys.stderr)
        raise typer.Exit(130) from None
    if as_json:
        print(json.dumps(result.to_json(), default=str))
        return
    _print_result(result)
    print_run_targets(result)
    _console().print(f"report: {_write_report_quietly(result)}")
    if result.tracking:
        from promptlearn.mlflow_tracking import tracking_line

        print(tracking_line(result.tracking), file=sys.stderr if result.tracking.get("error") else sys.stdout)


def _parse_options(pairs: list[str]) -> dict[str, Any]:
    import yaml

    from promptlearn.errors import TaskError

    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise TaskError(f"option '{pair}' is not KEY=VALUE", field="--option", fix="write e.g. -o minibatch=8")
        k, v = pair.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


class _LiveView:
    """Best val so far, budget used, candidates tried, elapsed and ETA, redrawn as the run goes."""

    def __init__(self, quiet: bool):
        self.quiet = quiet or not sys.stderr.isatty()
        self.live: Live | None = None
        self.run_dir: Optional[str] = None
        self.run_id: Optional[str] = None
        self._last_best: Optional[str] = None

    def __enter__(self) -> "_LiveView":
        if not self.quiet:
            from rich.live import Live

            self.live = Live("starting...", console=_console(stderr=True), refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def update(self, ctx: Any) -> None:
        self.run_id = ctx.store.run_id
        self.run_dir = str(getattr(ctx.publish, "dir", "") or "") or None
        u = ctx.evaluator.ledger.snapshot()
        cap = ctx.evaluator.ledger.budget.max_calls
        best = ctx.val_evals[ctx.best_id].score
        eta = ""
        if cap and u.requests:
            eta = f" · ETA {max(0.0, u.seconds * (cap - u.requests) / u.requests):.0f}s"
        # max_calls counts requests (cache hits too); cap is the search's share of it (report.budget_text)
        line = (f"best val {best:.3f} · search calls {u.requests}{f'/{cap}' if cap else ''} (cached {u.cached_calls})"
                f" · ${u.usd:.4f} · candidates {ctx.proposals} · {u.seconds:.0f}s{eta}")
        if self.live is not None:
            self.live.update(line)
        elif ctx.best_id != self._last_best and not self.quiet:
            print(line, file=sys.stderr)
        self._last_best = ctx.best_id


def _print_result(result: Any) -> None:
    from rich.table import Table

    def fmt(x: Optional[float]) -> str:
        return "-" if x is None else f"{x:.3f}"

    table = Table(title=f"run {result.run_id}")
    for col in ("", "val (seed)", "val (best)", "test (seed)", "test (best)"):
        table.add_column(col, justify="right" if col else "left")
    s, b = result.seed, result.best
    table.add_row("[bold]score[/bold]", fmt(s.val), fmt(b.val), fmt(s.test), fmt(b.test))
    for check in sorted(set(s.val_checks) | set(b.val_checks)):
        table.add_row(f"  {check}", fmt(s.val_checks.get(check)), fmt(b.val_checks.get(check)),
                      fmt((s.test_checks or {}).get(check)), fmt((b.test_checks or {}).get(check)))
    effects = {k: v for k, v in (b.test_side_effects or {}).items() if not k.endswith("_ids")}
    if effects:  # short labels under one heading row, so no row wraps at 80 columns
        table.add_row("side effects on test:", "", "", "", "")
    for k, v in effects.items():
        table.add_row(f"  {k.replace('_', ' ')}", "", "", "", f"{v:.3f}" if isinstance(v, float) else str(v))
    out = _console()
    out.print(table)
    from promptlearn.report import budget_text

    gap = result.overfit_gap
    out.print(f"overfit gap (best val - best test): {fmt(gap)} · {result.candidates} candidates · "
              f"stopped: {result.stop_reason}")
    spent = budget_text(result.budget, result.ledger.requests) or f"{result.ledger.requests} calls used"
    out.print(f"{spent} ({result.ledger.cached_calls} from the cache) · ${result.ledger.usd:.4f} · "
              f"{result.ledger.seconds:.0f}s")
    out.print(f"best prompt: {result.run_dir / 'best_prompt.txt'}")
    out.print("[bold]best prompt:[/bold]")
    out.print(result.best.prompt, markup=False, highlight=False)


@app.command("checks")
def checks_cmd(
    name: Optional[str] = typer.Argument(None, help="one check type (default: all of them)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON list on stdout"),
) -> None:
    """List the check types a task file can use, with their parameters, types, defaults and an example."""
    import shutil

    from promptlearn.checks import CheckSpecError, check_types, describe_check
    from promptlearn.errors import TaskError

    try:
        descs = [describe_check(t) for t in ([name] if name is not None else check_types())]
    except CheckSpecError as e:
        raise TaskError(str(e), field="checks NAME") from None
    if as_json:
        print(json.dumps(descs if name is None else descs[0], default=str))
        return
    from promptlearn.views import check_lines

    width = shutil.get_terminal_size((80, 24)).columns
    for i, d in enumerate(sorted(descs, key=lambda d: (d["family"], d["type"]))):
        print(("\n" if i else "") + "\n".join(check_lines(d, width)))


@app.command("export")
def export_cmd(
    run: str = typer.Argument(..., help="run id (under --root), a unique prefix of one, latest, or a run directory"),
    to: str = typer.Option(..., "--to", help="the app's config file (created when missing), or "
                                             "mlflow://prompts/NAME for the MLflow Prompt Registry"),
    key: Optional[str] = typer.Option(None, "--key", help="dotted path of the prompt in it, e.g. "
                                                          "assistant.system_prompt (config files only)"),
    fmt: Optional[str] = typer.Option(None, "--format", help="yaml, json, toml, env, py or md (default: from --to)"),
    provenance: str = typer.Option("comment", "--provenance", metavar="[comment|key|none]",
                                   help="how to write run id, val, test and sha256: comment (default; a "
                                        "comment on the key, JSON has none so it gets the key form), key (a "
                                        "sibling KEY_provenance entry: yaml, toml, json) or none"),
    no_provenance: bool = typer.Option(False, "--no-provenance", hidden=True, help="same as --provenance none"),
    root: Path = typer.Option(Path("runs"), "--root", help="directory holding runs"),
    alias: Optional[str] = typer.Option(None, "--alias", help="with mlflow://: point this alias (e.g. "
                                                              "production) at the new version"),
    store: Optional[str] = typer.Option(None, "--store", help="where runs live: a folder (default --root) or "
                                                             "postgresql://user@host/db"),
) -> None:
    """Write a run's best prompt into the app's config file, with provenance (run id, val, test, sha256).

    Provenance is a comment on the key by default (no extra key for a strict schema); re-exporting replaces it.
    """
    from promptlearn.errors import TaskError
    from promptlearn.export.mlflow_export import export_to_registry
    from promptlearn.export.mlflow_registry import is_registry_uri
    from promptlearn.gate import export_run

    if is_registry_uri(to):
        if key is not None or fmt is not None or no_provenance or provenance != "comment":
            raise TaskError("a registry version always carries its provenance and has no key or format",
                            field="--to mlflow://", fix="drop --key, --format and --provenance")
        info: Any = export_to_registry(run, to, alias=alias, root=root, store=store)
    else:
        if key is None or alias is not None:
            raise TaskError("a config file export needs --key and takes no --alias", field="--key",
                            fix="give e.g. --key assistant.system_prompt")
        info = export_run(run, Path(to), key, fmt=fmt, provenance="none" if no_provenance else provenance,
                          root=root, store=store)

    def fmt_score(x: Optional[float]) -> str:
        return "-" if x is None else f"{x:.4f}"

    where = (f"{info.uri}" + (f" (alias {info.alias})" if info.alias else "") if is_registry_uri(to)
             else f"{info.path}:{info.key} ({info.format})")
    print(f"exported best prompt {info.candidate_id} of run {info.run_id} (val {fmt_score(info.val)}, test "
          f"{fmt_score(info.test)}) to {where}")
    if info.status != "finished":
        from rich.markup import escape

        _console(stderr=True).print(f"[yellow]run {escape(info.run_id)} is {info.status or 'unfinished'}: this is "
                                    "the best prompt so far, not a finished run's; continue it with promptlearn "
                                    f"optimize TASK --resume {escape(_resume_arg(info, store))}[/yellow]",
                                    highlight=False)
    if info.test is None:
        _console(stderr=True).print("[yellow]this prompt has no test score: the run stopped before scoring "
                                    "it on test[/yellow]")
    if info.decoding:
        opts = ", ".join(f"{k}={v}" for k, v in info.decoding.items())
        flags = " ".join(f"--{k} {v}" for k, v in info.decoding.items())
        _console(stderr=True).print(f"[yellow]the run scored this prompt with decoding options {opts}: the app "
                                    f"must decode the same way to get its scores (promptlearn check {flags})"
                                    "[/yellow]", highlight=False)


@app.command("check")
def check_cmd(
    ctx: typer.Context,
    task: Path = typer.Argument(..., help="task YAML file"),
    prompt_from: str = typer.Option(..., "--prompt-from",
                                    help="FILE:dotted.key of the prompt in the app's config, a plain-text file "
                                         "(a run's best_prompt.txt), a run (id or directory) or "
                                         "mlflow://prompts/NAME@ALIAS"),
    fmt: Optional[str] = typer.Option(None, "--format", help="config format (default: from the file name)"),
    split: str = typer.Option("test", "--split", help="train, val, test or all"),
    min_score: Optional[float] = typer.Option(None, "--min-score", help="fail when the score is below this"),
    max_broken: Optional[int] = typer.Option(None, "--max-broken",
                                             help="fail when more examples than this pass with the seed prompt "
                                                  "and fail with this one"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
    show_all: bool = typer.Option(False, "--show-all", help="list every failing example (default: the first 10)"),
    root: Path = typer.Option(Path("runs"), "--root", help="directory holding runs (for a run id)"),
    store: Optional[str] = typer.Option(None, "--store", help="where runs live: a folder (default --root) or "
                                                             "postgresql://user@host/db"),
    cache: Optional[str] = typer.Option(None, "--cache", help="cache file or postgresql:// URL (default: "
                                                               "~/.cache/promptlearn)"),
    no_cache: bool = typer.Option(False, "--no-cache", help="call the model even for requests seen before"),
    guidance: Optional[float] = typer.Option(None, "--guidance",
                                             help="classifier-free guidance g the prompt was scored with (an "
                                                  "export's provenance says so); embedded model only"),
    target_min: list[str] = typer.Option([], "--target-min",
                                         help="TARGET=SCORE: that target's own minimum (several targets; "
                                              "--min-score holds on every target)"),
) -> None:
    """Gate a build: re-evaluate the prompt the app will load; exit 1 when it scores too low or breaks examples."""
    _check_min_score(min_score)
    _say_retries(ctx)
    from promptlearn.cli_targets import parse_target_min, print_check_targets
    from promptlearn.gate import check_prompt, read_prompt_source, read_provenance_ref

    path, key, text, recorded = read_prompt_source(prompt_from, fmt=fmt, root=root, store=store)
    prov, matches = read_provenance_ref(path, key, text, fmt=fmt) if key is not None else (None, None)
    if matches is False:
        from rich.markup import escape

        _console(stderr=True).print(f"[yellow]the prompt under {escape(key or '')} in {escape(str(path))} is not the "
                                    f"one run {escape(str((prov or {}).get('run_id')))} exported (its sha256 "
                                    "differs from the provenance): it was edited after the export[/yellow]",
                                    highlight=False)
    decoding = {"guidance": guidance} if guidance is not None else (recorded or None)
    report = check_prompt(task, text, split, min_score, max_broken, cache_path=cache, use_cache=not no_cache,
                          decoding=decoding, target_min=parse_target_min(target_min))
    if as_json:
        print(json.dumps({"config": str(path), "key": key, "provenance": prov, "provenance_matches": matches,
                          **report.to_json()}, default=str))
    else:
        print_check_targets(report)
        _print_check(report, f"{path}:{key}" if key else str(path), show_all)
    if not report.passed:
        raise typer.Exit(1)


def _print_check(report: Any, source: str, show_all: bool = False) -> None:
    from rich.table import Table

    out = _console()
    table = Table(title=f"{report.task} · {report.split} · {report.n_examples} conversations · {source} "
                        f"(sha256 {report.prompt_sha256[:12]})")
    for col in ("", "prompt", "seed"):
        table.add_column(col, justify="right" if col else "left")
    table.add_row("[bold]score[/bold]", f"[bold]{report.score:.4f}[/bold]", f"{report.seed_score:.4f}")
    for check in sorted(set(report.checks) | set(report.seed_checks)):
        mine, seed = report.checks.get(check), report.seed_checks.get(check)
        table.add_row(f"  {check}", "-" if mine is None else f"{mine:.3f}", "-" if seed is None else f"{seed:.3f}")
    table.add_row("fixed / broken vs seed", f"{report.fixed} / {report.broken}", "")
    table.add_row("calls (cached)", f"{report.usage.calls} ({report.usage.cached_calls})", "")
    out.print(table)
    shown = report.failures if show_all else report.failures[:10]  # broken ones first
    for f in shown:
        tag = " [red](broken)[/red]" if f["broken"] else ""
        out.print(f"  fails {f['id']}{tag}: {f['feedback'] or 'score ' + format(f['score'], '.2f')}", highlight=False)
    if len(report.failures) > len(shown):
        out.print(f"  ... and {len(report.failures) - len(shown)} more failing examples (--show-all lists them)")
    if report.passed:
        out.print("[green]PASS[/green]")
    else:
        for reason in report.reasons:
            out.print(f"[red]FAIL: {reason}[/red]", highlight=False)


@app.command("report")
def report_cmd(
    run: str = typer.Argument(..., help="run id (under --root), a unique prefix of one, latest, or a run directory"),
    out: Optional[Path] = typer.Option(None, "--out", help="where to write the HTML (default <run>/report.html)"),
    open_: bool = typer.Option(False, "--open", help="open the report in a web browser"),
    root: Path = typer.Option(Path("runs"), "--root", help="directory holding runs"),
    store: Optional[str] = typer.Option(None, "--store", help="where runs live: a folder (default --root) or "
                                                             "postgresql://user@host/db"),
) -> None:
    """Write a run's self-contained HTML report: progress plots, lineage with diffs, checks, examples, ledger."""
    from promptlearn.report import write_report

    path = write_report(run, out, store=store, root=root)
    print(path)
    if open_:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())


@app.command("runs")
def runs_cmd(
    root: Path = typer.Option(Path("runs"), "--root", help="directory holding runs"),
    task: Optional[str] = typer.Option(None, "--task", help="only runs of this task"),
    status: Optional[str] = typer.Option(None, "--status",
                                         help="only runs with this status: finished, running, interrupted, "
                                              "failed or unreadable"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON list on stdout"),
    store: Optional[str] = typer.Option(None, "--store", help="where runs live: a folder (default --root) or "
                                                             "postgresql://user@host/db"),
) -> None:
    """List the runs under --root (or in --store): id, status, seed and best scores, calls; task, optimizer, start."""
    from promptlearn.errors import RunError
    from promptlearn.report import runs_overview
    from promptlearn.store import is_db_url, mask_url
    from promptlearn.views import runs_json, runs_table

    db = is_db_url(store)
    if store is not None and not db:
        root = Path(store)
    if not db and not root.is_dir():
        raise RunError(f"no folder '{root}' (give the folder that holds runs with --root)")
    where = mask_url(store or "") if db else str(root)
    summaries = [s for s in runs_overview(root, store=store if db else None) if (task is None or s.get("task") == task)
                 and (status is None or s.get("status") == status)]
    if as_json:
        print(json.dumps([runs_json(s) for s in summaries], default=str))
        return
    if not summaries:
        which = " ".join(f"with {k} {v}" for k, v in (("task", task), ("status", status)) if v is not None)
        _console(stderr=True).print(f"no runs {which + ' ' if which else ''}in {where}", markup=False,
                                    highlight=False)
        return
    _console().print(runs_table(summaries, title=f"runs in {where}"))


@app.command("show")
def show_cmd(
    run: str = typer.Argument(..., help="run id (under --root), a unique prefix of one, latest, or a run directory"),
    root: Path = typer.Option(Path("runs"), "--root", help="directory holding runs"),
    all_: bool = typer.Option(False, "--all", help="every candidate under its parent, not only the path to the best"),
    as_json: bool = typer.Option(False, "--json", help="print the run's data (what the report shows) as JSON"),
    store: Optional[str] = typer.Option(None, "--store", help="where runs live: a folder (default --root) or "
                                                             "postgresql://user@host/db"),
) -> None:
    """Show the path from the seed to the best prompt (operator, val, gain, diff) and the checks, seed vs best."""
    from promptlearn.report import run_summary
    from promptlearn.views import checks_table, lineage_tree, not_accepted_lines

    summary = run_summary(run, store=store, root=root)
    if as_json:
        print(json.dumps(summary, default=str))
        return
    console = _console()
    console.print(lineage_tree(summary, plain=console.no_color or not console.is_terminal, all_candidates=all_))
    for line in not_accepted_lines(summary):
        console.print(line, highlight=False)
    console.print(checks_table(summary))


def _write_report_quietly(result: Any) -> str:
    """The report of a finished run; a failure to write it is reported, never fatal to the run."""
    try:
        from promptlearn.report import write_report

        if result.store_url is not None:
            return str(write_report(result.run_id, result.run_dir / "report.html", store=result.store_url))
        return str(write_report(result.run_dir))
    except Exception as e:  # noqa: BLE001
        return f"not written ({e})"


@app.command("stop")
def stop_cmd(
    run: str = typer.Argument(..., help="run id (under --root), a unique prefix of one, latest, or a run directory"),
    root: Path = typer.Option(Path("runs"), "--root", help="directory holding runs"),
    store: Optional[str] = typer.Option(None, "--store", help="where runs live: a folder (default --root) or "
                                                             "postgresql://user@host/db"),
) -> None:
    """Ask a running run to stop (from any machine): it ends after the current step, resumable."""
    import getpass
    import socket

    from promptlearn.stoppers import STOP_REQUESTED
    from promptlearn.store.locate import locate_run

    ref = locate_run(run, store=store, root=root)
    try:
        rs = ref.open()
        rs.set_meta(STOP_REQUESTED, f"by {getpass.getuser()}@{socket.gethostname()}")
        rs.close()
    finally:
        ref.close()
    print(f"asked run {ref.run_id} to stop")


def _resume_arg(info: Any, store: Optional[str]) -> str:
    from promptlearn.store import is_db_url, mask_url

    return f"{info.run_id} --store {mask_url(store or '')}" if is_db_url(store) else str(info.run_dir)


from promptlearn import cli_targets, cli_workers  # noqa: E402 - their commands join the app after the app's own

cli_targets.register(app)
cli_workers.register(app)


def main() -> None:
    """Entry point: library errors and bad command lines become one line on stderr and exit code 2, never a
    traceback or a usage box."""
    import warnings

    from promptlearn.errors import PromptlearnError, TaskWarning

    shown = warnings.showwarning

    def show(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, TaskWarning):
            print(f"promptlearn: warning: {message}", file=sys.stderr, flush=True)
        else:
            shown(message, category, *args, **kwargs)

    warnings.showwarning = show
    warnings.simplefilter("always", TaskWarning)
    try:
        code = app(standalone_mode=False, prog_name="promptlearn")
    except PromptlearnError as e:
        print(f"promptlearn: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("promptlearn: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # click's own errors, found by name: typer vendors click
        names = {c.__name__ for c in type(e).__mro__}
        if "NoArgsIsHelpError" in names:  # `promptlearn` alone: the help was printed; click's exit code
            sys.exit(getattr(e, "exit_code", 2))
        if "Abort" in names:  # Ctrl-C, which click turns into Abort
            print("promptlearn: interrupted", file=sys.stderr)
            sys.exit(130)
        if "UsageError" not in names:
            raise
        print(f"promptlearn: error: {_usage_message(e)}", file=sys.stderr)
        sys.exit(2)
    if isinstance(code, int) and not isinstance(code, bool):  # typer.Exit(code) inside a command
        sys.exit(code)


def _usage_message(e: Exception) -> str:
    """A bad option or argument in one line: what is wrong (click names close options) and where the help is."""
    text = " ".join(e.format_message().split()).rstrip(".")  # type: ignore[attr-defined]
    ctx = getattr(e, "ctx", None)
    command = ctx.command_path if ctx is not None and ctx.command_path else "promptlearn"
    return f"{text}; see {command} --help"


if __name__ == "__main__":
    main()
