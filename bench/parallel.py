"""Parallel search: whole-run wall time against the ideal, and test quality at equal calls, P=1 vs P>1.

1. Throughput. `promptlearn optimize` (the CLI, in its own process) with model and proposer on a loopback
   OpenAI-compatible server (promptlearn.testing_server, its own process) that answers every request after a
   fixed 500 ms; `concurrency: 16`, `max_calls: 400`, cache off (a fresh cache file per run). The target's
   replies depend on the system prompt's wording (promptlearn.testing.wording_sensitive_responder) and the
   proposer writes a different rewrite for every request, so runs screen, promote and accept as real ones do.
   Ideal wall time: calls x latency / concurrency. The run's wall time is the ledger's (from the evaluator's
   start to the end of test scoring: the process's imports are reported apart). P = 1, 4, 8, 16.
2. Quality at equal calls. The embedded model (flock /tmp/model.lock per run), tasks/pirate.yaml and
   tasks/rules/keyword.yaml (`--quality-tasks`; tensortrust_guard, the earlier second task, sits at the model's
   floor for every line, so it cannot show a cost), evolve, the same max_calls: test score of P=1 and of
   P=`--quality-p` per seed. Each run records the commit it ran at; `--fresh-quality` drops earlier runs (after
   the optimizer changed) instead of resuming them.
   Every finished run is written to the JSON at once, so the benchmark resumes where it stopped
   (`--max-minutes` ends it between runs).

    python -m bench parallel                      # both parts
    python -m bench parallel --part throughput
    python -m bench parallel --part quality --seeds 0,1,2 --max-minutes 14

Writes bench/results/parallel.json and parallel.md (BENCHMARKS.md shows the .md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
OUT = RESULTS / "parallel.json"
LATENCY, CONCURRENCY, CALLS = 0.5, 16, 400
PS = (1, 4, 8, 16)
GOAL = 0.8
CUES = ("IMPORTANT", "Example", "Rules:", "Remember", "each", "Begin", "rule")
QUALITY_TASKS = ("pirate", "rules/keyword")


def responder(body: dict) -> str:
    """Target: wording_sensitive_responder. Proposer: a rewrite with cue words drawn from the request's hash."""
    from promptlearn.testing import wording_sensitive_responder

    messages = body["messages"]
    last = messages[-1]["content"]
    if "<prompt>" in last:
        rng = random.Random(hashlib.sha256(json.dumps(messages).encode()).hexdigest())
        cues = rng.sample(CUES, rng.randint(0, 3))
        return f"<prompt>You are a pirate. {' '.join(cues)} Start every reply with the word Ahoy.</prompt>"
    return wording_sensitive_responder(messages)


def serve(latency: float, log: str) -> None:
    """The server process: prints READY <url>, serves until stdin closes; logs the time of every reply."""
    from promptlearn.testing_server import LoopbackServer

    with LoopbackServer(responder, latency=latency, response_log_path=log) as srv:
        print(f"READY {srv.base_url}", flush=True)
        sys.stdin.read()


def task_yaml(base_url: str, optimizer: str) -> str:
    import yaml

    users = [f"Question number {i}: tell me about topic {i * 7 % 11}" for i in range(64)]
    model = {"name": "openai/loopback", "api_base": base_url, "concurrency": CONCURRENCY, "max_tokens": 16,
             "timeout": 30, "retries": 2}
    return yaml.safe_dump({
        "name": "parallel_bench", "prompt": "You are a pirate. Start every reply with the word Ahoy.",
        "protected": ["Ahoy"], "model": model, "proposer": model,
        "data": [{"examples": [{"id": f"q{i:02d}", "user": u} for i, u in enumerate(users)]}],
        "checks": [{"type": "starts_with", "value": "Ahoy", "name": "ahoy"}],
        "splits": {"train": 0.5, "val": 0.25, "test": 0.25, "seed": 0},
        "budget": {"max_calls": CALLS}, "optimizer": {"name": optimizer}}, sort_keys=False)


@contextmanager
def serving(latency: float, work: Path) -> Iterator[str]:
    """The loopback server (`--serve`) in its own process for the block, its replies logged to
    work/replies.jsonl; yields its base URL."""
    log = work / "replies.jsonl"
    server = subprocess.Popen([sys.executable, "-m", "bench.parallel", "--serve", str(latency), "--log", str(log)],
                              cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline().strip()
        if not line.startswith("READY "):
            raise SystemExit(f"bench: the loopback server did not start ({line!r})")
        yield line.split(" ", 1)[1]
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=10)


def throughput(work: Path, optimizers: Sequence[str], ps: Sequence[int]) -> list[dict[str, Any]]:
    rows = []
    work.mkdir(parents=True, exist_ok=True)
    log = work / "replies.jsonl"
    with serving(LATENCY, work) as base_url:
        exe = Path(sys.executable).with_name("promptlearn")
        for optimizer in optimizers:
            for p in ps:
                d = work / f"{optimizer}-p{p}"
                d.mkdir(parents=True, exist_ok=True)
                (d / "task.yaml").write_text(task_yaml(base_url, optimizer))
                load = os.getloadavg()[0]
                seen = len(log.read_text().splitlines()) if log.exists() else 0
                t0 = time.perf_counter()
                proc = subprocess.run([str(exe), "optimize", str(d / "task.yaml"), "--seed", "0", "--parallel",
                                       str(p), "--run-dir", str(d / "run"), "--cache", str(d / "cache.sqlite"),
                                       "--json"], capture_output=True, text=True, cwd=d)
                wall = time.perf_counter() - t0
                if proc.returncode != 0:
                    raise SystemExit(f"bench parallel: optimize failed at P={p}: {proc.stderr[-800:]}")
                out = json.loads(proc.stdout)
                times = [json.loads(x)["time"] for x in log.read_text().splitlines()[seen:]]
                # From the first request (its reply's time less the latency) to the last reply: the run's work,
                # without the client's start-up and imports (the ledger's seconds include the litellm import).
                calls, run_s = out["calls"], max(times) - min(times) + LATENCY
                ideal = calls * LATENCY / CONCURRENCY
                row = {"optimizer": optimizer, "parallel": p, "calls": calls, "requests": out["requests"],
                       "replies": len(times), "run_s": round(run_s, 2), "ledger_s": round(out["seconds"], 2),
                       "process_s": round(wall, 2), "ideal_s": round(ideal, 2),
                       "fraction_of_ideal": round(ideal / run_s, 3), "candidates": out["candidates"],
                       "seed_test": out["seed"]["test"], "best_test": out["best"]["test"],
                       "stop_reason": out["stop_reason"], "loadavg": round(load, 2)}
                rows.append(row)
                print(f"  {optimizer} P={p:>2}: {calls} calls in {run_s:.1f} s (ideal {ideal:.1f} s: "
                      f"{row['fraction_of_ideal']:.2f}); {out['candidates']} candidates, test "
                      f"{out['seed']['test']:.3f} -> {out['best']['test']:.3f}", file=sys.stderr, flush=True)
    return rows


def _commit() -> str:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return proc.stdout.strip() or "unknown"


def quality(result: dict[str, Any], work: Path, seeds: Sequence[int], p_big: int, budget: int,
            max_minutes: float, tasks: Sequence[str] = QUALITY_TASKS) -> None:
    """P=1 vs P=p_big on the embedded model; each finished run is saved at once (resumable)."""
    runs: list[dict[str, Any]] = result.setdefault("quality", {}).setdefault("runs", [])
    # a later call for fewer tasks or other seeds adds to the runs kept, so the summary keeps every task and seed
    known = result["quality"].get("tasks") or []
    ran = result["quality"].get("seeds") or []
    result["quality"].update({"budget": budget, "p": [1, p_big], "optimizer": "evolve",
                              "tasks": known + [t for t in tasks if t not in known],
                              "seeds": sorted(set(ran) | set(seeds))})
    commit = _commit()
    done = {(r["task"], r["parallel"], r["seed"]) for r in runs}
    start = time.monotonic()
    for seed in seeds:  # seed by seed, so a benchmark cut short has both tasks at both P
        for task in tasks:
            for p in (1, p_big):
                if (task, p, seed) in done:
                    continue
                if (time.monotonic() - start) / 60 > max_minutes:
                    print("  quality: --max-minutes reached; run again to continue", file=sys.stderr)
                    return
                d = work / f"q-{task.replace('/', '_')}-p{p}-s{seed}"
                cmd = ["flock", "/tmp/model.lock", str(Path(sys.executable).with_name("promptlearn")), "optimize",
                       str(ROOT / "tasks" / f"{task}.yaml"), "--optimizer", "evolve", "--seed", str(seed),
                       "--budget-calls", str(budget), "--parallel", str(p), "--run-dir", str(d / "run"),
                       "--cache", str(d / "cache.sqlite"), "--json"]
                if (d / "run" / "store.sqlite").exists():  # a run cut short: continue it
                    cmd = cmd[:5] + ["--resume", str(d / "run"), "--cache", str(d / "cache.sqlite"), "--json"]
                d.mkdir(parents=True, exist_ok=True)
                load = os.getloadavg()[0]
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
                if proc.returncode != 0:
                    raise SystemExit(f"bench parallel: {task} P={p} seed {seed} failed: {proc.stderr[-800:]}")
                out = json.loads(proc.stdout)
                runs.append({"task": task, "parallel": p, "seed": seed, "seed_test": out["seed"]["test"],
                             "best_test": out["best"]["test"], "best_val": out["best"]["val"],
                             "calls": out["calls"], "requests": out["requests"], "candidates": out["candidates"],
                             "seconds": round(out["seconds"], 1), "loadavg": round(load, 2), "commit": commit})
                save(result)
                print(f"  quality {task} P={p} seed {seed}: test {out['seed']['test']:.3f} -> "
                      f"{out['best']['test']:.3f} ({out['requests']} requests)", file=sys.stderr, flush=True)


def summarize(result: dict[str, Any]) -> None:
    rows = result.get("throughput") or []
    if rows:  # the goal is judged on the first optimizer measured (evolve, the default)
        first = [r for r in rows if r["optimizer"] == rows[0]["optimizer"]]
        best = max(first, key=lambda r: r["fraction_of_ideal"])
        result["goal_optimizer"] = best["optimizer"]
        result["best_p"], result["best_fraction"] = best["parallel"], best["fraction_of_ideal"]
        result["goal_met"] = best["fraction_of_ideal"] >= GOAL
    q = result.get("quality") or {}
    summary = {}
    for task in q.get("tasks", []):
        for p in q.get("p", []):
            xs = [r["best_test"] for r in q.get("runs", []) if r["task"] == task and r["parallel"] == p]
            if xs:
                summary[f"{task}/P={p}"] = {"mean": round(statistics.fmean(xs), 4), "n": len(xs), "min": min(xs),
                                            "max": max(xs), "sd": round(statistics.pstdev(xs), 4)}
    if summary:
        q["summary"] = summary


def markdown(result: dict[str, Any]) -> str:
    out = ["# Parallel search: wall time and quality", ""]
    rows = result.get("throughput") or []
    if rows:
        out += [f"`python -m bench parallel --part throughput` ({result.get('throughput_at', '?')}): "
                f"`promptlearn optimize` (default optimizer unless named), model and proposer on a loopback server "
                f"answering after {LATENCY * 1000:.0f} ms, `concurrency: {CONCURRENCY}`, `max_calls: {CALLS}` "
                "(test scoring included), fresh cache. Ideal = calls x latency / concurrency; run s = from the run's "
                "first request to its last reply, as the server saw them (ledger s adds the client's litellm "
                "import, ~4 s on this machine; process s adds Python start-up).", "",
                "| optimizer | P | calls | run s | ideal s | fraction of ideal | ledger s | process s | candidates | "
                "test seed -> best | load |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        out += [f"| {r['optimizer']} | {r['parallel']} | {r['calls']} | {r['run_s']} | {r['ideal_s']} | "
                f"**{r['fraction_of_ideal']}** | {r['ledger_s']} | {r['process_s']} | {r['candidates']} | "
                f"{r['seed_test']:.3f} -> {r['best_test']:.3f} | {r['loadavg']} |" for r in rows]
        out += ["", f"Goal: >= {GOAL} of ideal at the best P — {result.get('goal_optimizer')} (the default "
                f"optimizer): best {result.get('best_fraction')} at P={result.get('best_p')}: "
                f"**{'met' if result.get('goal_met') else 'not met'}**.", ""]
    q = result.get("quality") or {}
    if q.get("summary"):
        n_seeds = len({r["seed"] for r in q.get("runs", [])})
        out += [f"Quality at equal calls (`python -m bench parallel --part quality`): embedded model, evolve, "
                f"max_calls {q.get('budget')} per run, test score of the best prompt; "
                f"{n_seeds} seed(s) measured of {len(q.get('seeds', []))} planned.", "",
                "| task / P | test mean | sd | min-max | runs |", "|---|---|---|---|---|"]
        out += [f"| {k} | **{v['mean']:.3f}** | {v['sd']:.3f} | {v['min']:.3f}-{v['max']:.3f} | {v['n']} |"
                for k, v in q["summary"].items()]
        out += ["", "| task | P | seed | seed test | best test | requests | candidates | s |",
                "|---|---|---|---|---|---|---|---|"]
        out += [f"| {r['task']} | {r['parallel']} | {r['seed']} | {r['seed_test']:.3f} | {r['best_test']:.3f} | "
                f"{r['requests']} | {r['candidates']} | {r['seconds']} |" for r in q.get("runs", [])]
    return "\n".join(out).rstrip() + "\n"


def save(result: dict[str, Any]) -> None:
    summarize(result)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    OUT.with_suffix(".md").write_text(markdown(result))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench parallel", description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=("throughput", "quality", "both"), default="both")
    p.add_argument("--optimizers", default="evolve,mutate")
    p.add_argument("--ps", default=",".join(map(str, PS)))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--quality-p", type=int, default=None, help="the P>1 of the quality part (default: best P)")
    p.add_argument("--quality-budget", type=int, default=300)
    p.add_argument("--quality-tasks", default=",".join(QUALITY_TASKS), help="tasks/<name>.yaml, comma-separated")
    p.add_argument("--fresh-quality", action="store_true", help="drop earlier quality runs instead of resuming")
    p.add_argument("--max-minutes", type=float, default=14.0)
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-parallel")
    p.add_argument("--serve", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--log", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve is not None:
        serve(args.serve, args.log)
        return 0
    result: dict[str, Any] = json.loads(OUT.read_text()) if OUT.exists() else {"benchmark": "parallel"}
    result.update({"latency_s": LATENCY, "concurrency": CONCURRENCY, "max_calls": CALLS, "goal": GOAL})
    if args.part in ("throughput", "both"):
        import shutil

        shutil.rmtree(args.work / "throughput", ignore_errors=True)
        result["throughput"] = throughput(args.work / "throughput", args.optimizers.split(","),
                                          [int(x) for x in args.ps.split(",")])
        result["throughput_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        save(result)
    if args.part in ("quality", "both"):
        p_big = args.quality_p or result.get("best_p") or 8
        if args.fresh_quality:
            import shutil

            result.pop("quality", None)
            shutil.rmtree(args.work / "quality", ignore_errors=True)
        quality(result, args.work / "quality", [int(x) for x in args.seeds.split(",")], p_big, args.quality_budget,
                args.max_minutes, [x for x in args.quality_tasks.split(",") if x])
        save(result)
    print(f"parallel: wrote {OUT.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
