"""Workers: throughput of 1, 2 and 4 worker processes on one run, and the best prompt vs a single process.

1. Throughput. `promptlearn optimize --store postgresql://... --workers N` (the CLI, its own process, spawning
   N-1 workers) on a throwaway PostgreSQL server (promptlearn.testing_postgres), model and proposer on a loopback
   OpenAI-compatible server in its own process answering after 500 ms (bench.parallel's wording-sensitive target
   and hash-drawn proposer), every worker capped at `concurrency: 4`, the default P (workers x concurrency, at
   most 16), a fresh database per run (no cached reply). Two figures per N, from the job table's server-clock
   times: whole run = calls / (first claim .. last reply), start-up of the spawned processes included; steady =
   calls finished per second while every worker was working (from the last worker's first claim to the first
   worker's last reply). Goal: N=4 >= 0.9 x 4 x N=1.
2. Best prompt at equal calls. tasks/pirate.yaml's data and checks with its model replaced by the loopback
   server (identical replies for identical requests), evolve, the same max_calls and P: one process on SQLite
   vs 2 workers on PostgreSQL, several seeds. With identical replies this compares lineages: the same
   candidates, decisions and best test score are expected, and any difference is a bug.

    python -m bench workers                       # both parts
    python -m bench workers --part throughput --calls 800
    python -m bench workers --part quality --seeds 0,1,2

Writes bench/results/workers.json and workers.md (BENCHMARKS.md shows the .md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from bench.parallel import serving

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
OUT = RESULTS / "workers.json"
LATENCY, CONCURRENCY, CALLS = 0.5, 4, 800
NS = (1, 2, 4)
GOAL = 0.9


def _jobs(url: str, run_id: str) -> list[tuple[str, float, float]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT owner, claimed, finished FROM pl_jobs WHERE run_id = %s AND status = 'done'",
                            (run_id,)).fetchall()
    return [(o.split(":")[1], float(c), float(f)) for o, c, f in rows]


def throughput(work: Path, ns: Sequence[int], calls: int) -> list[dict[str, Any]]:
    from bench.parallel import task_yaml
    from promptlearn.testing_postgres import PostgresServer

    work.mkdir(parents=True, exist_ok=True)
    rows = []
    exe = Path(sys.executable).with_name("promptlearn")
    with serving(LATENCY, work) as base_url, PostgresServer() as pg:
        for n in ns:
            d = work / f"n{n}"
            d.mkdir(parents=True, exist_ok=True)
            text = task_yaml(base_url, "evolve").replace("concurrency: 16", f"concurrency: {CONCURRENCY}")
            (d / "task.yaml").write_text(text.replace("max_calls: 400", f"max_calls: {calls}"))
            url = pg.fresh_db(f"workers_n{n}_{int(time.time())}")
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            proc = subprocess.run([str(exe), "optimize", str(d / "task.yaml"), "--store", url, "--workers",
                                   str(n), "--run-dir", str(d / "run"), "--seed", "0", "--json"],
                                  capture_output=True, text=True, cwd=d)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                raise SystemExit(f"bench workers: optimize failed at N={n}: {proc.stderr[-800:]}")
            out = json.loads(proc.stdout)
            jobs = _jobs(url, "run")
            first = min(c for _, c, _ in jobs)
            last = max(f for _, _, f in jobs)
            owners = sorted({o for o, _, _ in jobs})
            start = max(min(c for o, c, _ in jobs if o == w) for w in owners)  # the last worker's first claim
            end = min(max(f for o, _, f in jobs if o == w) for w in owners)  # the first worker's last reply
            steady = [f for _, _, f in jobs if start <= f <= end]
            row = {"workers": n, "parallel": min(16, n * CONCURRENCY), "calls": out["calls"],
                   "jobs_done": len(jobs), "processes_with_calls": len(owners),
                   "run_s": round(last - first, 2), "calls_per_s": round(len(jobs) / (last - first), 2),
                   "steady_s": round(end - start, 2),
                   "steady_calls_per_s": round(len(steady) / (end - start), 2) if end > start else None,
                   "ideal_calls_per_s": n * CONCURRENCY / LATENCY, "process_s": round(wall, 2),
                   "candidates": out["candidates"], "best_test": out["best"]["test"],
                   "loadavg_before": load, "loadavg_after": os.getloadavg()[0]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def quality(work: Path, seeds: Sequence[int], calls: int, workers: int) -> list[dict[str, Any]]:
    """tasks/pirate.yaml on the loopback model: single process vs `workers` workers, same seed, P and calls."""
    import yaml

    from promptlearn.run import optimize
    from promptlearn.task import load_task
    from promptlearn.testing_postgres import PostgresServer

    work.mkdir(parents=True, exist_ok=True)
    rows = []
    with serving(0.02, work) as base_url, PostgresServer() as pg:
        spec = yaml.safe_load((ROOT / "tasks" / "pirate.yaml").read_text())
        spec["model"] = {"name": "openai/loopback", "api_base": base_url, "concurrency": CONCURRENCY,
                         "max_tokens": 16, "timeout": 30, "retries": 2}
        spec["data"] = [{"file": str(ROOT / "tasks" / "data" / "pirate.jsonl")}]
        spec["budget"] = {"max_calls": calls}
        task_path = work / "pirate_loopback.yaml"
        task_path.write_text(yaml.safe_dump(spec, sort_keys=False))
        task = load_task(task_path)
        p = min(16, workers * CONCURRENCY)
        for seed in seeds:
            one = optimize(task, seed=seed, parallel=p, store=work / f"single-s{seed}",
                           cache_path=work / f"single-s{seed}.sqlite")
            url = pg.fresh_db(f"quality_s{seed}_{int(time.time())}")
            many = optimize(task, seed=seed, parallel=p, store=url, workers=workers,
                            runs_root=work / f"workers-s{seed}")

            def lineage(r: Any) -> list[tuple[Any, ...]]:
                return [(n["id"], tuple(n["parents"]), n["status"], n["val"]) for n in r.lineage["nodes"]]

            row = {"seed": seed, "parallel": p, "workers": workers, "max_calls": calls,
                   "single_best_test": one.best.test, "workers_best_test": many.best.test,
                   "single_requests": one.ledger.requests, "workers_requests": many.ledger.requests,
                   "candidates": len(one.lineage["nodes"]), "same_lineage": lineage(one) == lineage(many),
                   "same_best": one.best.id == many.best.id}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def markdown(r: dict[str, Any]) -> str:
    out = ["# Workers: throughput and the best prompt vs one process", ""]
    tp = r.get("throughput") or []
    if tp:
        out += [f"`python -m bench workers --part throughput --calls {r.get('calls')}` ({r.get('timestamp')}): "
                f"`promptlearn optimize --store postgresql://... --workers N` on a throwaway PostgreSQL server, model "
                f"and proposer on a loopback server answering after {int(LATENCY * 1000)} ms, each worker capped at "
                f"`concurrency: {CONCURRENCY}`, default P, fresh database. Whole run: calls / (first claim .. last "
                "reply), so a spawned worker's start-up after the first claim counts. Steady: calls finished per "
                "second while every worker was working. Times are the database server's. Process s: from the "
                "command's start to its exit.", "",
                "| workers | P | calls | processes with calls | run s | calls/s whole run | steady s | calls/s "
                "steady | ideal calls/s | process s | calls/s incl. start-up | candidates | load |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for x in tp:
            out.append(f"| {x['workers']} | {x['parallel']} | {x['jobs_done']} | {x['processes_with_calls']} | "
                       f"{x['run_s']} | **{x['calls_per_s']}** | {x['steady_s']} | **{x['steady_calls_per_s']}** | "
                       f"{x['ideal_calls_per_s']:g} | {x['process_s']} | {x['jobs_done'] / x['process_s']:.2f} | "
                       f"{x['candidates']} | {x['loadavg_before']:.2f} |")
        g = r.get("goal") or {}
        out += ["", f"Goal: 4 workers >= {GOAL} x 4 = {GOAL * 4:.1f} x one worker's throughput. Measured: whole run "
                f"**{g.get('whole_ratio')}x**, steady **{g.get('steady_ratio')}x**: "
                f"**{'met' if g.get('met') else 'not met'}** (judged on the whole run, from the first claim). "
                f"Counting from the command's start (process s: Python start-up, schema, and every spawned worker "
                f"importing litellm at once on 2 shared cores before its first claim) it is "
                f"{g.get('process_ratio')}x: start-up is a fixed cost of seconds, so it matters only for short runs.",
                ""]
    q = r.get("quality") or []
    if q:
        out += ["Best prompt at equal calls (`python -m bench workers --part quality`): tasks/pirate.yaml's data and "
                "checks on the loopback model (identical replies for identical requests, so this compares "
                "lineages), evolve, one process on SQLite vs the workers on PostgreSQL at the same seed, P and "
                "max_calls.", "",
                "| seed | P | workers | max_calls | requests one / workers | candidates | best test one | best test "
                "workers | same lineage | same best |", "|---|---|---|---|---|---|---|---|---|---|"]
        for x in q:
            out.append(f"| {x['seed']} | {x['parallel']} | {x['workers']} | {x['max_calls']} | "
                       f"{x['single_requests']} / {x['workers_requests']} | {x['candidates']} | "
                       f"{x['single_best_test']:.3f} | {x['workers_best_test']:.3f} | {x['same_lineage']} | "
                       f"{x['same_best']} |")
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench workers", description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=("throughput", "quality", "both"), default="both")
    ap.add_argument("--calls", type=int, default=CALLS, help="max_calls of each throughput run")
    ap.add_argument("--workers", default=",".join(map(str, NS)), help="worker counts for throughput")
    ap.add_argument("--seeds", default="0,1,2", help="seeds for the quality part")
    ap.add_argument("--quality-calls", type=int, default=300)
    ap.add_argument("--work", default="/tmp/promptlearn-bench-workers")
    args = ap.parse_args(argv)
    previous = json.loads(OUT.read_text()) if OUT.exists() else {}
    result: dict[str, Any] = {**previous, "benchmark": "workers",
                              "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    work = Path(args.work)
    if args.part in ("throughput", "both"):
        rows = throughput(work / "throughput", [int(x) for x in args.workers.split(",")], args.calls)
        by = {x["workers"]: x for x in rows}
        result["throughput"], result["calls"] = rows, args.calls
        if 1 in by and 4 in by:
            whole = by[4]["calls_per_s"] / by[1]["calls_per_s"]
            steady = ((by[4]["steady_calls_per_s"] or 0) / by[1]["steady_calls_per_s"]
                      if by[1]["steady_calls_per_s"] else None)
            process = (by[4]["jobs_done"] / by[4]["process_s"]) / (by[1]["jobs_done"] / by[1]["process_s"])
            result["goal"] = {"target_ratio": GOAL * 4, "whole_ratio": round(whole, 2),
                              "process_ratio": round(process, 2),
                              "steady_ratio": round(steady, 2) if steady else None, "met": whole >= GOAL * 4}
    if args.part in ("quality", "both"):
        result["quality"] = quality(work / "quality", [int(s) for s in args.seeds.split(",")], args.quality_calls, 2)
    RESULTS.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    OUT.with_suffix(".md").write_text(markdown(result))
    print(f"wrote {OUT} and {OUT.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
