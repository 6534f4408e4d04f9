#!/usr/bin/env python3
"""A build step for CI: optimize the system prompt, gate it, write it into the app's config, check it again.

    python examples/build_pipeline.py --budget 150 --out build/prompt

1. optimize   `promptlearn.optimize` on the task (default tasks/pirate.yaml, embedded SmolLM2, no API key) with a
              small call budget; the run store goes to OUT/runs.
2. gate       fail (exit 1) when the best prompt's test score is below the seed's minus --tolerance, or when it
              breaks more than --max-broken test examples the seed passed.
3. export     write the best prompt with provenance (run id, val, test, sha256; a `# promptlearn:` comment above
              the key) into a copy of the app config (OUT/app_config.yaml; the shipped examples/app_config.yaml
              is only changed with --in-place).
4. re-check   read the prompt and its provenance back from that config, as the app will: the provenance's
              sha256 must be the prompt's and its run id this run's; re-evaluate the prompt with
              `promptlearn.check_prompt` on the test split: the same gate, and the score must equal the run's.

Prints a summary (and writes OUT/summary.json). Exit codes: 0 passed, 1 the gate failed, 2 a usage or task error.
Repeated builds are cheap: model replies are cached (--cache, default ~/.cache/promptlearn), so an unchanged task
replays its calls. On a busy machine, PROMPTLEARN_THREADS=1 keeps the embedded model from fighting for cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", type=Path, default=REPO / "tasks" / "pirate.yaml", help="task file")
    p.add_argument("--config", type=Path, default=HERE / "app_config.yaml", help="the app's config file")
    p.add_argument("--key", default="assistant.system_prompt", help="dotted key of the prompt in the config")
    p.add_argument("--out", type=Path, default=None, help="output directory (default: a new temp directory)")
    p.add_argument("--in-place", action="store_true", help="write the prompt into --config itself")
    p.add_argument("--budget", type=int, default=150, help="max model calls for the whole run")
    p.add_argument("--limit-rows", type=int, default=30, help="use the first N rows of each dataset (0: all)")
    p.add_argument("--max-tokens", type=int, default=None, help="override the target model's max_tokens")
    p.add_argument("--optimizer", default=None, help="evolve, mutate, optuna, dspy (default: the task's)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the search")
    p.add_argument("--tolerance", type=float, default=0.0, help="allowed test score drop below the seed")
    p.add_argument("--max-broken", type=int, default=2, help="allowed test examples broken vs the seed")
    p.add_argument("--cache", type=Path, default=None, help="model reply cache (default ~/.cache/promptlearn)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    return p.parse_args(argv)


def load_build_task(args: argparse.Namespace) -> Any:
    """The task file, cut to --limit-rows rows per dataset and with --max-tokens, for a fast build."""
    import yaml

    from promptlearn import load_task

    overrides: dict[str, Any] = {}
    if args.limit_rows:
        raw = yaml.safe_load(args.task.read_text(encoding="utf-8")) if args.task.exists() else {}
        data = raw.get("data") if isinstance(raw, dict) else None
        if isinstance(data, list):
            overrides["data"] = [{**d, "limit": args.limit_rows} if isinstance(d, dict) else d for d in data]
    if args.max_tokens:
        overrides["model"] = {"max_tokens": args.max_tokens}
    return load_task(args.task, overrides=overrides)


def gate_reasons(result: Any, tolerance: float, max_broken: int) -> list[str]:
    """Why the run's best prompt must not ship (empty: it may)."""
    best, seed = result.best, result.seed
    if best.test is None or seed.test is None:
        return [f"the run stopped before scoring on test ({result.stop_reason}); raise --budget"]
    reasons = []
    if best.test < seed.test - tolerance:
        reasons.append(f"best test score {best.test:.4f} is below the seed's {seed.test:.4f} - tolerance "
                       f"{tolerance:g}")
    broken = int((best.test_side_effects or {}).get("broken", 0))
    if broken > max_broken:
        reasons.append(f"breaks {broken} test examples the seed passed (allowed {max_broken})")
    return reasons


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import promptlearn
    from promptlearn import PromptlearnError

    out = args.out or Path(tempfile.mkdtemp(prefix="promptlearn-build-"))
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    summary: dict[str, Any] = {"out": str(out), "passed": False}
    try:
        task = load_build_task(args)
        if not args.config.exists():
            raise promptlearn.ConfigError(f"app config {args.config} not found")
        # 1. optimize
        result = promptlearn.optimize(task, args.optimizer, budget=args.budget, seed=args.seed,
                                      runs_root=out / "runs", cache_path=args.cache)
        summary.update(run_id=result.run_id, run_dir=str(result.run_dir), calls=result.ledger.calls,
                       cached_calls=result.ledger.cached_calls, candidates=result.candidates,
                       stop_reason=result.stop_reason,
                       seed={"val": result.seed.val, "test": result.seed.test},
                       best={"val": result.best.val, "test": result.best.test, "id": result.best.id,
                             "broken": (result.best.test_side_effects or {}).get("broken"),
                             "fixed": (result.best.test_side_effects or {}).get("fixed"),
                             "prompt": result.best.prompt})
        # 2. gate on what the run measured
        reasons = gate_reasons(result, args.tolerance, args.max_broken)
        if not reasons:
            # 3. export into the app's config (a copy unless --in-place)
            target = args.config if args.in_place else out / args.config.name
            if not args.in_place:
                shutil.copyfile(args.config, target)
            result.export(target, args.key)
            summary["config"] = str(target)
            # 4. re-check the prompt the app will load, in this process, against the same gate
            prompt = promptlearn.read_prompt(target, args.key)
            prov = promptlearn.read_provenance(target, args.key) or {}
            summary["provenance"] = prov
            if prov.get("sha256") != promptlearn.prompt_sha256(prompt) or prov.get("run_id") != result.run_id:
                reasons.append(f"the provenance in {target} ({prov or 'none'}) does not name this run's prompt")
            floor = max(0.0, result.seed.test - args.tolerance)  # thresholds are scores: within 0-1
            report = promptlearn.check_prompt(task, prompt, "test", min_score=floor, max_broken=args.max_broken,
                                              cache_path=args.cache)
            summary["recheck"] = {"score": report.score, "seed_score": report.seed_score,
                                  "broken": report.broken, "passed": report.passed}
            reasons += list(report.reasons)
            if report.score != result.best.test:
                reasons.append(f"the exported prompt scores {report.score!r} on test, the run recorded "
                               f"{result.best.test!r}: it does not reproduce")
        summary["reasons"] = reasons
        summary["passed"] = not reasons
    except PromptlearnError as e:
        print(f"build_pipeline: error: {e}", file=sys.stderr)
        return 2
    summary["seconds"] = round(time.perf_counter() - start, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(summary, default=str))
    else:
        print_summary(summary)
    return 0 if summary["passed"] else 1


def print_summary(s: dict[str, Any]) -> None:
    def f(x: Any) -> str:
        return "-" if x is None else f"{x:.3f}"

    print(f"run {s['run_id']}: {s['calls']} calls ({s['cached_calls']} cached), {s['candidates']} candidates, "
          f"{s['seconds']}s; stopped: {s['stop_reason']}")
    print(f"  seed  val {f(s['seed']['val'])}  test {f(s['seed']['test'])}")
    print(f"  best  val {f(s['best']['val'])}  test {f(s['best']['test'])}  "
          f"(fixed {s['best']['fixed']}, broken {s['best']['broken']} on test)")
    if "recheck" in s:
        r = s["recheck"]
        print(f"  re-check of {s['config']}: test {f(r['score'])} (seed {f(r['seed_score'])}, broken {r['broken']})")
    if s["passed"]:
        print(f"PASS: the best prompt is in {s['config']}")
    else:
        for reason in s["reasons"]:
            print(f"FAIL: {reason}")
    print(f"summary: {Path(s['out']) / 'summary.json'}")


if __name__ == "__main__":
    sys.exit(main())
