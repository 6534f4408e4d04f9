"""An identical re-run is free and the same: the second run of the same optimization makes 0 model calls.

Runs `promptlearn.optimize` (evolve, seed 0) on the pirate task (embedded model) twice with the same settings and
a fresh cache file shared by both runs, each into its own new run directory (so nothing is replayed from a run
store: every reply of the second run comes from the disk cache). Both runs stop at the call budget: `max_calls`
counts requests, cache hits included, so the re-run stops where the first one did, with the same lineage, having
made no call. Reports the calls and wall time of both runs, the second's wall time relative to the first, and
whether both ended with the same lineage, prompt and scores.

    python -m bench cache            # the full pirate task, 150-call budget
    python -m bench cache --quick    # 30 pirate examples, 60-call budget

Writes bench/results/cache.json (cache_quick.json with --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def one_run(task: Any, budget: int, run_dir: Path, cache_path: Path, options: dict[str, Any]) -> dict[str, Any]:
    from promptlearn.run import optimize

    t0 = time.perf_counter()
    res = optimize(task, "evolve", budget=budget, seed=0, run_dir=run_dir, cache_path=cache_path, options=options)
    wall = time.perf_counter() - t0
    from promptlearn.store import SQLiteRunStore

    lineage = [[c["id"], c["operator"], c["status"]] for c in SQLiteRunStore(run_dir, create=False).candidates()]
    return {"seconds": round(wall, 3), "calls": res.ledger.calls, "cached_calls": res.ledger.cached_calls,
            "requests": res.ledger.requests, "lineage": lineage,
            "prompt_tokens": res.ledger.prompt_tokens, "completion_tokens": res.ledger.completion_tokens,
            "best_id": res.best.id, "best_val": res.best.val, "best_test": res.best.test, "seed_test": res.seed.test,
            "candidates": res.candidates, "stop_reason": res.stop_reason}


SAME = ("best_id", "best_val", "best_test", "seed_test", "candidates", "lineage", "requests", "stop_reason")


def pair(task: Any, budget: int, tmp: Path, name: str, options: dict[str, Any], verbose: bool) -> dict[str, Any]:
    cache_path = tmp / f"{name}-cache.sqlite"
    first = one_run(task, budget, tmp / f"{name}-1", cache_path, options)
    if verbose:
        print(f"  {name}: first run  {first['calls']} calls, {first['seconds']:.1f} s ({first['stop_reason']})",
              file=sys.stderr, flush=True)
    second = one_run(task, budget, tmp / f"{name}-2", cache_path, options)
    if verbose:
        print(f"  {name}: second run {second['calls']} calls ({second['cached_calls']} from the cache), "
              f"{second['seconds']:.2f} s", file=sys.stderr, flush=True)
    return {"options": options, "budget": budget, "first": first, "second": second,
            "wall_ratio": round(second["seconds"] / first["seconds"], 4) if first["seconds"] else None,
            "same_result": all(first[k] == second[k] for k in SAME)}


def measure(*, quick: bool, verbose: bool = True) -> dict[str, Any]:
    from promptlearn.lm import litellm
    from promptlearn.local import get_model
    from promptlearn.task import load_task

    over = {"data": [{"file": "data/pirate.jsonl", "limit": 30}]} if quick else None
    task = load_task(ROOT / "tasks" / "pirate.yaml", overrides=over)
    budget = 60 if quick else 150
    get_model("smollm2")  # load the model and litellm outside the clock
    litellm()
    tmp = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    load_before = os.getloadavg()
    try:
        fixed = pair(task, budget, tmp, "budget", {}, verbose)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "benchmark": "cache", "quick": quick, "task": "tasks/pirate.yaml" + (" (first 30 examples)" if quick else ""),
        "optimizer": "evolve", "budget_calls": budget, "splits": {k: len(v) for k, v in task.splits.items()},
        "first": fixed["first"], "second": fixed["second"], "second_calls": fixed["second"]["calls"],
        "zero_calls": fixed["second"]["calls"] == 0, "wall_ratio": fixed["wall_ratio"],
        "same_result": fixed["same_result"], "model": task.model.name,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()], "cpu_count": os.cpu_count(),
        "python": platform.python_version(), "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench cache", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="30 examples, 60-call budget")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    result = measure(quick=args.quick)
    out = args.out or RESULTS / ("cache_quick.json" if args.quick else "cache.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"cache: re-run made {result['second_calls']} model calls ({result['second']['cached_calls']} cached), "
          f"wall {result['second']['seconds']:.2f} s vs {result['first']['seconds']:.1f} s "
          f"(ratio {result['wall_ratio']:.4f}), same result: {result['same_result']}; wrote "
          f"{out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0 if result["zero_calls"] and result["same_result"] else 1


if __name__ == "__main__":
    sys.exit(main())
