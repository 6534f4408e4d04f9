"""`python -m bench all [--quick]`: every benchmark in turn (each in its own process), then BENCHMARKS.md.

Runs overhead, concurrency, cache, quality, guidance and prefix_reuse (those whose module exists), one after the
other so they never compete for the cores, keeps going when one fails, records how long each took in
bench/results/all.json (all_quick.json), and renders BENCHMARKS.md from every result present.

    python -m bench all --quick     # quick forms: under 10 minutes on an idle 2-core machine
    python -m bench all             # full forms (the quality benchmark alone runs for hours)
    python -m bench all --only concurrency,cache --quick
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SUITE = ("overhead", "concurrency", "cache", "quality", "guidance", "prefix_reuse")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench all", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="run every benchmark's quick form")
    p.add_argument("--only", default=None, help="comma-separated subset of " + ", ".join(SUITE))
    p.add_argument("--no-render", action="store_true", help="do not rewrite BENCHMARKS.md")
    args = p.parse_args(argv)
    names = [n for n in (args.only.split(",") if args.only else SUITE) if n]
    runs: list[dict[str, Any]] = []
    t_all = time.perf_counter()
    load_before = os.getloadavg()
    for name in names:
        if importlib.util.find_spec(f"bench.{name}") is None:
            print(f"[bench all] {name}: no bench/{name}.py, skipped", file=sys.stderr, flush=True)
            continue
        cmd = [sys.executable, "-m", "bench", name] + (["--quick"] if args.quick else [])
        print(f"[bench all] {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        code = subprocess.call(cmd, cwd=ROOT)
        runs.append({"name": name, "exit": code, "seconds": round(time.perf_counter() - t0, 1)})
        print(f"[bench all] {name}: exit {code} after {runs[-1]['seconds']:.0f} s", file=sys.stderr, flush=True)
    total = time.perf_counter() - t_all
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": "all", "quick": args.quick, "runs": runs, "total_s": round(total, 1),
              "loadavg_before": [round(x, 2) for x in load_before],
              "loadavg_after": [round(x, 2) for x in os.getloadavg()], "cpu_count": os.cpu_count(),
              "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if not args.only:
        (RESULTS / ("all_quick.json" if args.quick else "all.json")).write_text(json.dumps(record, indent=2) + "\n")
    if not args.no_render:
        from bench.render import main as render

        render([])
    print(f"[bench all] {len(runs)} benchmarks in {total / 60:.1f} min; "
          f"failed: {[r['name'] for r in runs if r['exit']] or 'none'}", file=sys.stderr)
    return 1 if any(r["exit"] for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
