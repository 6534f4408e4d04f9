"""`python -m bench operator_prior`: how often each evolve operator's children were promoted and accepted, per
rule task, read from the suite's run stores; the table evolve's `operator_prior` starts its track record from.

On the rule suite most of evolve's tries went to operators that never move this model (emphasize 0 promotions in
37 tries, move_rule 1 in 40, paraphrase 0 in 18) while add_example's children were promoted 25 times in 32. A
search that starts each task from what worked on the others spends fewer of its 300 calls finding that out again.
evolve starts from the shipped table (promptlearn.optimizers.prior, every task's) by default on a local model, so
the suite, to measure it honestly, gives each task the table of the *other* tasks only (leave one task out,
`table(stats, leave_out=task)`, in every evolve line that does not set its own prior): scoring the shipped table
on the suite would be scoring it on its own training data.

Counting: every candidate an operator made is a try; a promotion (scored on val) is 1 win and an acceptance
(new best) 2, as evolve's own track record counts them. Reads bench/results/work/suite/runs/<task>-<run>/store.sqlite
(gitignored work files); writes bench/results/operator_stats.json, which is committed, so the prior and the
leave-one-out tables can be rebuilt without the stores.

    python -m bench operator_prior                   # from evolve's seed-0 runs (dirs *-evolve-hint-s0, *-evolve-s0)
    python -m bench operator_prior --runs evolve-hint-s0,evolve-s1
    python -m bench operator_prior --print           # the table for promptlearn/optimizers/prior.py
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
STATS = RESULTS / "operator_stats.json"
RUNS = RESULTS / "work" / "suite" / "runs"
# evolve's seed-0 runs on the suite: the default's (made as line evolve-hint at 87a5057, which is what evolve's
# defaults became) and the earlier default's (line evolve-87a5057, made as evolve: the same operators, another book)
DEFAULT_RUNS = ("evolve-hint-s0", "evolve-s0")


def run_stats(store: Path) -> dict[str, list[int]]:
    """{operator: [wins, tries]} of one run store (the seed is not a try)."""
    out: dict[str, list[int]] = {}
    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        for op, status in con.execute("SELECT operator, status FROM candidates"):
            if op == "seed":
                continue
            row = out.setdefault(op, [0, 0])
            row[1] += 1
            row[0] += (status in ("promoted", "accepted")) + (status == "accepted")
    finally:
        con.close()
    return out


def collect(runs: Sequence[str], root: Path = RUNS) -> dict[str, Any]:
    """Per task, the summed stats of its runs named <task>-<run> for each run suffix given."""
    tasks: dict[str, dict[str, list[int]]] = {}
    used = []
    for suffix in runs:
        for store in sorted(root.glob(f"*-{suffix}/store.sqlite")):
            task = store.parent.name[: -len(suffix) - 1]
            used.append(store.parent.name)
            for op, (w, t) in run_stats(store).items():
                row = tasks.setdefault(task, {}).setdefault(op, [0, 0])
                row[0] += w
                row[1] += t
    return {"benchmark": "operator_prior", "runs": used, "tasks": tasks,
            "counting": "try = a candidate the operator made; win = 1 per promotion to val, 2 per acceptance",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def table(stats: Mapping[str, Any], leave_out: str | None = None) -> dict[str, list[int]]:
    """{operator: [wins, tries]} summed over the tasks in `stats`, without `leave_out` (a task name: one the stats
    do not hold is an error, since a misspelt name would leave the task's own runs in)."""
    if leave_out is not None and leave_out not in stats["tasks"]:
        raise ValueError(f"bench operator_prior: no task {leave_out!r} in the stats (tasks: "
                         f"{', '.join(sorted(stats['tasks']))})")
    out: dict[str, list[int]] = {}
    for task, ops in stats["tasks"].items():
        if task == leave_out:
            continue
        for op, (w, t) in ops.items():
            row = out.setdefault(op, [0, 0])
            row[0] += w
            row[1] += t
    return dict(sorted(out.items()))


def read(path: Path = STATS) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SystemExit(f"bench operator_prior: cannot read {path} ({e}); "
                         "run `python -m bench operator_prior`") from None


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench operator_prior", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default=",".join(DEFAULT_RUNS), help="run-dir suffixes to read, comma-separated")
    p.add_argument("--print", action="store_true", help="print the table from the committed stats file and exit")
    args = p.parse_args(argv)
    if args.print:
        print(json.dumps(table(read()), separators=(", ", ": ")))
        return 0
    stats = collect([x for x in args.runs.split(",") if x])
    if not stats["tasks"]:
        print(f"bench operator_prior: no run stores *-{args.runs}/store.sqlite under {RUNS}", file=sys.stderr)
        return 2
    STATS.write_text(json.dumps(stats, indent=1) + "\n", encoding="utf-8")
    total = table(stats)
    for op, (w, t) in sorted(total.items(), key=lambda kv: -kv[1][0] / kv[1][1]):
        print(f"{op:16} wins {w:3} tries {t:3} ({w / t:.2f})")
    print(f"{len(stats['runs'])} runs, {len(stats['tasks'])} tasks -> {STATS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
