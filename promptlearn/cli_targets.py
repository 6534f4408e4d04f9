"""The command-line side of several targets: `promptlearn transfer`, `optimize --migrate-from/--to`, and the
per-target tables `optimize` and `check` print. Heavy imports happen inside functions (see cli.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import typer

if TYPE_CHECKING:
    from promptlearn.task import Task


def register(app: typer.Typer) -> None:
    app.command("transfer")(transfer_cmd)


def transfer_cmd(
    task: Path = typer.Argument(..., help="task YAML file with two or more `targets:`"),
    budget_calls: Optional[int] = typer.Option(None, "--budget-calls",
                                               help="calls per single-target search (the search over all targets "
                                                    "gets this times the number of targets)"),
    seed: int = typer.Option(0, "--seed", help="random seed of every search"),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help="evolve, mutate or optuna"),
    out: Optional[Path] = typer.Option(None, "--out", help="where the runs and the report go "
                                                          "(default runs/transfer-<task>); re-run to resume"),
    cache: Optional[Path] = typer.Option(None, "--cache", help="cache file (default: ~/.cache/promptlearn)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
) -> None:
    """Does a prompt tuned for one model hurt another? Search on each target alone and on all of them, then score
    the seed and every best prompt on every target's test split: a matrix (terminal, HTML with a plot, JSON)."""
    import sys

    from promptlearn.task import load_task
    from promptlearn.transfer import transfer_report

    t = load_task(task)
    where = out or Path("runs") / f"transfer-{t.name}"
    report = transfer_report(t, budget=budget_calls, seed=seed, optimizer=optimizer, out_dir=where, cache_path=cache,
                      on_run=None if as_json else lambda name: print(f"search {name} ...", file=sys.stderr))
    if as_json:
        print(json.dumps(report.to_json(), default=str))
        return
    print_matrix(report.targets, report.rows, title=f"{report.task}: test score of each prompt on each target")
    print(f"{report.calls} model requests in all · report: {where / 'transfer.html'} · JSON: "
          f"{where / 'transfer.json'}")


def print_matrix(targets: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]], *, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    keys = [t["key"] for t in targets]
    table = Table(title=title)
    table.add_column("prompt", justify="left")
    for k in keys:
        table.add_column(k, justify="right")
    for r in rows:
        table.add_row(str(r["label"]), *("-" if r["test"].get(k) is None else f"{r['test'][k]:.3f}" for k in keys))
    Console(highlight=False).print(table)


def print_run_targets(result: Any) -> None:
    """After `optimize`: the seed and the best prompt on every target's test split, the ledger per target, and a
    migration's verdict."""
    from rich.console import Console

    out = Console(highlight=False)
    info = result.targets
    if info:
        cands = info["candidates"]
        rows = [{"label": label, "test": (cands.get(cid) or {}).get("test") or {}}
                for label, cid in (("seed", result.seed.id), ("best", result.best.id))]
        print_matrix(info["targets"], rows, title=f"test score per target (objective: {info['aggregate']})")
        out.print("calls per target: " + ", ".join(f"{t['key']} {t['calls']} ({t['cached_calls']} cached)"
                                                   for t in info["targets"]))
    mig = result.migration
    if mig:
        def f(x: Any) -> str:
            return "-" if x is None else f"{x:.3f}"

        verdict = {True: "[green]reaches[/green]", False: "[red]does not reach[/red]", None: "cannot be compared "
                   "with (no test score)"}[mig["reaches_bar"]]
        out.print(f"migration {mig['from']} -> {mig['to']}: the new prompt on {mig['to']} scores "
                  f"{f(mig['best_on_to'])} on test and {verdict} the bar {f(mig['bar'])} (the old prompt on "
                  f"{mig['from']}); the old prompt on {mig['to']}: {f(mig['seed_on_to'])}")
        if mig.get("fixed") is not None:
            broken = f": {', '.join(mig['broken_ids'])}" if mig.get("broken_ids") else ""
            out.print(f"  vs {mig['from']} with the old prompt: {mig['fixed']} fixed, {mig['broken']} broken{broken}")


def print_check_targets(report: Any) -> None:
    """After `check` on a task with several targets: each target's score, minimum and fixed / broken."""
    if not report.targets:
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="per target")
    for col in ("target", "prompt", "seed", "minimum", "fixed / broken"):
        table.add_column(col, justify="left" if col == "target" else "right")
    for key, t in report.targets.items():
        table.add_row(key, f"{t['score']:.4f}", f"{t['seed_score']:.4f}",
                      "-" if t["min_score"] is None else f"{t['min_score']:g}", f"{t['fixed']} / {t['broken']}")
    Console(highlight=False).print(table)


def parse_target_min(pairs: Sequence[str]) -> dict[str, float]:
    """`--target-min KEY=SCORE` (repeatable) -> {key: score}; a bad pair is a ConfigError naming it."""
    from promptlearn.errors import ConfigError

    out: dict[str, float] = {}
    for pair in pairs:
        key, sep, value = pair.rpartition("=")
        try:
            score = float(value)
        except ValueError:
            score = -1.0
        if not sep or not key or not 0 <= score <= 1:
            raise ConfigError(f"--target-min must look like TARGET=SCORE with a score in [0, 1], got {pair!r}")
        out[key] = score
    return out


def migration_task(task: Path, source: Optional[str], to: Optional[str]) -> "Task | Path":
    """The task for `optimize --migrate-from SOURCE --to TO` (both or neither), else the path as given."""
    if source is None and to is None:
        return task
    from promptlearn.errors import ConfigError
    from promptlearn.migrate import migrate_overrides
    from promptlearn.task import load_task

    if source is None or to is None:
        raise ConfigError("give --migrate-from MODEL_A and --to MODEL_B together")
    return load_task(task, overrides=migrate_overrides(load_task(task), source, to))
