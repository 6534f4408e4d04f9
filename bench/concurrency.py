"""Throughput of promptlearn's engine against a remote model that answers after a fixed latency.

A LoopbackServer (promptlearn.testing_server, an OpenAI-compatible server on 127.0.0.1) answers every chat
completion after exactly 100 ms. It runs in its own process, as a remote provider would, so the benchmark measures
the client: promptlearn's engine evaluating N distinct single-turn examples of a task whose model is
`openai/loopback` + api_base with `concurrency: C`, cache off, checks scored as usual. Such a model posts straight
to the server (transport auto = promptlearn.openai_http); one more row at the highest level sends the same
requests through litellm (`transport: litellm`), the path every other provider takes, for comparison.
With C requests in flight the ideal throughput is C / latency; the benchmark reports the measured throughput as a
fraction of it. The first (warm-up) evaluation of a few requests pays for imports and client setup outside the
clock. Levels shorter than 8 seconds run 5 times; the median run is reported, with the range.

    python -m bench concurrency            # 2,000 requests at 1, 8, 32 and 64 in flight
    python -m bench concurrency --quick    # 100 at 1, 400 at 8, 1,000 at 32, 2,000 at 64

Writes bench/results/concurrency.json (concurrency_quick.json with --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from bench.render import package_version

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
LEVELS = (1, 8, 32, 64)
GOAL = 0.9
REPEATS = 5


class Server:
    """`python -m promptlearn.testing_server --latency L` in a child process (its own interpreter and GIL)."""

    def __init__(self, latency: float):
        self.latency = latency
        self.proc: subprocess.Popen[str] | None = None
        self.base_url = ""

    def __enter__(self) -> "Server":
        self.proc = subprocess.Popen([sys.executable, "-m", "promptlearn.testing_server", "--latency",
                                      str(self.latency)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("READY "):
            self.proc.kill()
            raise SystemExit(f"bench concurrency: the loopback server did not start ({line!r})")
        self.base_url = line.split(" ", 1)[1]
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def make_task(base_url: str, concurrency: int, n: int, transport: str = "auto") -> Any:
    from promptlearn.task import task_from_dict

    return task_from_dict({
        "name": f"loopback_c{concurrency}", "prompt": "You are a terse assistant.",
        "model": {"name": "openai/loopback", "api_base": base_url, "concurrency": concurrency, "temperature": 0,
                  "max_tokens": 16, "retries": 0, "timeout": 60, "transport": transport},
        "data": [{"examples": [{"id": f"q{i:05d}", "user": f"Question number {i}: what is {i} + {i}?"}
                               for i in range(n)]}],
        "checks": [{"type": "contains", "value": "Echo"}],
        "splits": {"train": 0.0, "val": 1.0, "test": 0.0},
    })


def run_level(base_url: str, concurrency: int, n: int, transport: str = "auto") -> dict[str, Any]:
    from promptlearn.engine import Evaluator

    task = make_task(base_url, concurrency, n, transport)
    examples = task.examples("val")
    ev = Evaluator(task, use_cache=False)
    try:
        ev.evaluate(task.prompt, examples[: min(len(examples), max(4, concurrency))], tag="warmup")
        cpu0, t0 = time.process_time(), time.perf_counter()
        res = ev.evaluate(task.prompt, examples, tag="measure")
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        ev.close()
    if not res.complete or len(res.results) != n:
        raise SystemExit(f"bench concurrency: evaluation incomplete at {concurrency} in flight: {res.stop_reason}")
    return {"in_flight": concurrency, "transport": "http" if task.model.direct_http else "litellm", "requests": n,
            "seconds": round(wall, 3),
            "throughput_rps": round(n / wall, 2), "score": round(res.score, 4), "calls": res.usage.calls,
            "client_cpu_s": round(cpu, 3), "client_cpu_ms_per_request": round(cpu / n * 1000, 3)}


def measure(*, quick: bool, levels: Sequence[int] = LEVELS, requests: int | None = None, latency: float = 0.1,
            verbose: bool = True) -> dict[str, Any]:
    rows = []
    load_before = os.getloadavg()
    plan = [(c, "auto") for c in levels] + [(max(levels), "litellm")]
    with Server(latency) as srv:
        for c, transport in plan:
            n = requests or (({1: 100, 8: 400, 32: 1000}.get(c, 2000)) if quick else 2000)
            ideal = min(c, n) / latency
            # levels shorter than 8 s run REPEATS times and report the median run (one 3-second run moves by +-0.01)
            runs = sorted((run_level(srv.base_url, c, n, transport) for _ in range(REPEATS if n / ideal < 8 else 1)),
                          key=lambda x: x["throughput_rps"])
            row = runs[len(runs) // 2]
            row["ideal_rps"] = round(ideal, 2)
            row["fraction_of_ideal"] = round(row["throughput_rps"] / ideal, 4)
            row["fraction_of_ideal_runs"] = [round(x["throughput_rps"] / ideal, 4) for x in runs]
            rows.append(row)
            if verbose:
                print(f"  {c:>3} in flight ({row['transport']}): {n} requests in {row['seconds']:.2f} s = "
                      f"{row['throughput_rps']:.1f}/s ({row['fraction_of_ideal']:.3f} of {ideal:.0f}/s), client CPU "
                      f"{row['client_cpu_ms_per_request']:.2f} ms/request", file=sys.stderr, flush=True)
    top = max((r for r in rows if r["transport"] == "http"), key=lambda r: r["in_flight"])
    lt = sys.modules.get("litellm")
    return {
        "benchmark": "concurrency", "quick": quick, "latency_s": latency, "rows": rows, "goal": GOAL,
        "goal_in_flight": top["in_flight"], "goal_met": top["fraction_of_ideal"] >= GOAL,
        "model": "openai/loopback", "server": "promptlearn.testing_server (separate process)",
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()], "cpu_count": os.cpu_count(),
        "python": platform.python_version(), "litellm": getattr(lt, "__version__", None) or package_version("litellm"),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench concurrency", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer requests at low concurrency")
    p.add_argument("--levels", default=",".join(map(str, LEVELS)), help="comma-separated requests in flight")
    p.add_argument("--requests", type=int, default=None, help="requests per level (default 2000)")
    p.add_argument("--latency", type=float, default=0.1, help="server latency in seconds")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    result = measure(quick=args.quick, levels=[int(x) for x in args.levels.split(",") if x],
                     requests=args.requests, latency=args.latency)
    out = args.out or RESULTS / ("concurrency_quick.json" if args.quick else "concurrency.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    top = next(r for r in result["rows"] if r["in_flight"] == result["goal_in_flight"] and r["transport"] == "http")
    print(f"concurrency: {top['fraction_of_ideal']:.3f} of ideal at {top['in_flight']} in flight "
          f"(goal {GOAL}: {'met' if result['goal_met'] else 'NOT met'}); wrote "
          f"{out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
