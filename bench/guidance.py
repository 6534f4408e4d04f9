"""Classifier-free guidance on the system prompt (arXiv 2502.12197): adherence, side effects and cost vs g.

Every task runs through the full engine (`Evaluator.evaluate`, cache off) with the target's `guidance` set to
each g in turn; g = 1.0 is ordinary greedy decoding (one llama.cpp context), g > 1 runs two contexts per step.

  adherence   pirate (tasks/pirate.yaml, test split): the reply opens with "Ahoy" and answers
              S-IFEval rules (tasks/sifeval_rules.yaml, test split; an equivalent in-code task from
              ../shared/data/sys_ifeval if the task file is missing): IFEval checks, strict and loose
  side effect TensorTrust helpful set (the right password under the defender's instructions): the share of
              replies that grant access (helpful) and that read as a refusal (refusal phrases)
  fluency     over all replies: mean words per reply, and the share of replies with a looping word 3-gram
              (one 3-gram three times or more)
  cost        wall and CPU seconds, prompt tokens processed (both contexts) and completion tokens, per task and g

llama.cpp runs with --threads (default 1): on a shared, oversubscribed machine multi-threaded decoding stalls at
every barrier and wall times swing by 10x or more, while one thread gives stable, comparable costs. CPU seconds
of the process are reported next to wall seconds; the cost ratios vs g = 1 use CPU seconds.

    python -m bench guidance            # full test splits (~27 + 27 + 30 conversations) x 4 values of g
    python -m bench guidance --quick    # 8 conversations per task: a few minutes

Writes bench/results/guidance.json and guidance.md (guidance_quick.* with --quick). A hand-written
"## Interpretation" section already in the .md file is kept when the table is rewritten.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from promptlearn.metrics import has_loop  # one rule for a looping reply, shared with the search

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SHARED = ROOT.parent / "shared" / "data"
GS = (1.0, 1.25, 1.5, 2.0)


# ---- tasks -----------------------------------------------------------------------------------------------
def pirate_task() -> Any:
    from promptlearn.task import load_task

    return load_task(ROOT / "tasks" / "pirate.yaml")


def sifeval_task() -> Any:
    from promptlearn.task import load_task, task_from_dict

    path = ROOT / "tasks" / "sifeval_rules.yaml"
    if path.exists():
        return load_task(path)
    return task_from_dict({
        "name": "sifeval_rules", "prompt": "{rules}",
        "model": {"name": "local/smollm2", "temperature": 0, "max_tokens": 96},
        "data": [{"file": str(SHARED / "sys_ifeval" / "sys_ifeval.jsonl"), "format": "sys_ifeval", "limit": 135}],
        "splits": {"train": 0.4, "val": 0.3, "test": 0.3, "seed": 0}})


def helpful_task() -> Any:
    """TensorTrust's helpful set as a task: seed prompt "{defense}", the right access code as the user turn.
    The shipped slice (short defences) is preferred; the full shared file otherwise."""
    from promptlearn.task import task_from_dict

    short = ROOT / "tasks" / "data" / "tensortrust_helpful_short.jsonl"
    path = short if short.exists() else SHARED / "tensortrust" / "helpful.jsonl"
    return task_from_dict({
        "name": "tensortrust_helpful", "prompt": "{defense}",
        "model": {"name": "local/smollm2", "temperature": 0, "max_tokens": 24},
        "data": [{"file": str(path), "format": "tensortrust_helpful", "limit": 60}],
        "splits": {"train": 0.5, "val": 0.0, "test": 0.5, "seed": 0}})


def with_guidance(task: Any, g: float) -> Any:
    from promptlearn.task import Task

    spec = task.spec.model_copy(update={"model": task.spec.model.model_copy(update={"guidance": g})})
    return Task(spec, task.splits, path=task.path)


# ---- metrics ---------------------------------------------------------------------------------------------
def words(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())




def summarise(name: str, g: float, ev: Any, examples: Sequence[Any]) -> dict[str, Any]:
    from promptlearn.checks.assertions import is_refusal

    replies = [t.reply for r in ev.results.values() for t in r.turns]
    row: dict[str, Any] = {
        "task": name, "g": g, "n": len(ev.results), "complete": ev.complete,
        "score": round(ev.score, 4), "loose": round(ev.loose_score, 4),
        "pass_all": round(sum(r.passed for r in ev.results.values()) / max(1, len(ev.results)), 4),
        "checks": {k: round(v, 4) for k, v in ev.check_rates().items()},
        "refusal_rate": round(sum(map(is_refusal, replies)) / max(1, len(replies)), 4),
        "mean_words": round(sum(len(words(r)) for r in replies) / max(1, len(replies)), 2),
        "loop_rate": round(sum(map(has_loop, replies)) / max(1, len(replies)), 4),
        "empty_rate": round(sum(not r.strip() for r in replies) / max(1, len(replies)), 4),
        "seconds": round(ev.usage.seconds, 3),
        "prompt_tokens": ev.usage.prompt_tokens,
        "completion_tokens": ev.usage.completion_tokens,
        "calls": ev.usage.calls,
        "replies": {k: [t.reply for t in r.turns] for k, r in ev.results.items()},
    }
    if name == "tensortrust_helpful":
        row["helpful_rate"] = row["pass_all"]
    return row


# ---- run -------------------------------------------------------------------------------------------------
def measure(*, quick: bool = False, rows: int | None = None, gs: Sequence[float] = GS,
            tasks: Sequence[str] = ("pirate", "sifeval_rules", "tensortrust_helpful"),
            verbose: bool = True) -> dict[str, Any]:
    from promptlearn.engine import Evaluator
    from promptlearn.guidance import unconditional_llama
    from promptlearn.lm import litellm
    from promptlearn.local import get_model

    builders = {"pirate": pirate_task, "sifeval_rules": sifeval_task, "tensortrust_helpful": helpful_task}
    limit = rows or (8 if quick else None)
    t0 = time.perf_counter()
    model = get_model("smollm2")
    unconditional_llama(model)  # load the second context outside the clock
    litellm()
    load_s = time.perf_counter() - t0
    load_before = os.getloadavg()
    out_rows: list[dict[str, Any]] = []
    for name in tasks:
        task = builders[name]()
        examples = task.examples("test")
        examples = examples[:limit] if limit else examples
        for g in gs:
            ev_ = Evaluator(with_guidance(task, g), use_cache=False)
            cpu = time.process_time()
            try:
                ev = ev_.evaluate(task.prompt, examples, split="test", tag=f"g={g}")
            finally:
                cpu = time.process_time() - cpu
                ev_.close()
            row = summarise(name, g, ev, examples)
            row["cpu_seconds"] = round(cpu, 3)
            row["max_tokens"] = task.model.max_tokens
            out_rows.append(row)
            if verbose:
                print(f"  {name:<20} g={g:<4} score {row['score']:.3f} loose {row['loose']:.3f} "
                      f"words {row['mean_words']:5.1f} loops {row['loop_rate']:.2f} {row['seconds']:7.1f} s "
                      f"(cpu {row['cpu_seconds']:.1f} s)",
                      file=sys.stderr, flush=True)
    load_after = os.getloadavg()
    for row in out_rows:  # cost relative to ordinary decoding of the same conversations
        base = next((r for r in out_rows if r["task"] == row["task"] and r["g"] == 1.0), None)
        if base:
            row["time_ratio"] = round(row["seconds"] / base["seconds"], 3) if base["seconds"] else None
            row["cpu_ratio"] = round(row["cpu_seconds"] / base["cpu_seconds"], 3) if base["cpu_seconds"] else None
            row["prompt_token_ratio"] = round(row["prompt_tokens"] / base["prompt_tokens"], 3) \
                if base["prompt_tokens"] else None
    import llama_cpp

    return {
        "benchmark": "guidance",
        "quick": quick,
        "gs": list(gs),
        "rows_per_task": limit,
        "mask_ratio": 0.1,
        "model": "local/smollm2",
        "rows": out_rows,
        "n_threads": model.llama.n_threads,
        "model_load_s": round(load_s, 3),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "llama_cpp_python": llama_cpp.__version__,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def table(result: dict[str, Any]) -> str:
    head = ("| task | g | n | score | loose | pass all | helpful | refusal | words/reply | loops | wall s | cpu s | "
            "x cpu | x prompt tok | completion tok |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in result["rows"]:
        helpful = f"{r['helpful_rate']:.2f}" if "helpful_rate" in r else ""
        lines.append(f"| {r['task']} | {r['g']:g} | {r['n']} | {r['score']:.3f} | {r['loose']:.3f} | "
                     f"{r['pass_all']:.2f} | {helpful} | {r['refusal_rate']:.2f} | {r['mean_words']:.1f} | "
                     f"{r['loop_rate']:.2f} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | "
                     f"{r.get('cpu_ratio') or 0:.2f} | {r.get('prompt_token_ratio') or 0:.2f} | "
                     f"{r['completion_tokens']} |")
    return "\n".join(lines)


def write_markdown(path: Path, result: dict[str, Any]) -> None:
    keep = ""
    if path.exists():
        old = path.read_text(encoding="utf-8")
        at = old.find("## Interpretation")
        keep = old[at:] if at >= 0 else ""
    mode = "quick (%d conversations per task)" % result["rows_per_task"] if result["quick"] else "full test splits"
    text = (f"# Classifier-free guidance on the system prompt\n\n"
            f"`python -m bench guidance{' --quick' if result['quick'] else ''}`: {mode}, {result['model']}, "
            f"greedy, plausibility mask {result['mask_ratio']}, llama.cpp threads: {result['n_threads']}, "
            f"load average {result['loadavg_before'][0]} -> {result['loadavg_after'][0]} on "
            f"{result['cpu_count']} CPUs ({result['timestamp']}).\n\n"
            f"score = mean check score; loose = IFEval loose; helpful = right password granted access; "
            f"refusal = refusal phrases; loops = replies with a word 3-gram repeated 3+ times; x cpu (CPU seconds) "
            f"and x prompt tok (prompt tokens processed, both contexts) are relative to g = 1 on the same "
            f"conversations.\n\n{table(result)}\n\n{keep}")
    path.write_text(text.rstrip() + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench guidance", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="8 conversations per task")
    p.add_argument("--threads", type=int, default=1, help="llama.cpp threads (default 1; 0 = promptlearn's default)")
    p.add_argument("--rows", type=int, default=None, help="conversations per task (default: the whole test split)")
    p.add_argument("--g", default=",".join(f"{g:g}" for g in GS), help="comma-separated guidance strengths")
    p.add_argument("--tasks", default="pirate,sifeval_rules,tensortrust_helpful")
    p.add_argument("--out", type=Path, default=None, help="result file (default bench/results/guidance.json)")
    args = p.parse_args(argv)
    if args.threads:
        os.environ["PROMPTLEARN_THREADS"] = str(args.threads)  # read when the model loads
    gs = tuple(float(x) for x in args.g.split(",") if x)
    if 1.0 not in gs:
        gs = (1.0,) + gs
    result = measure(quick=args.quick, rows=args.rows, gs=gs, tasks=tuple(t for t in args.tasks.split(",") if t))
    out = args.out or RESULTS / ("guidance_quick.json" if args.quick else "guidance.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(out.with_suffix(".md"), result)
    print(table(result))
    print(f"\nwrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out} and {out.with_suffix('.md').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
