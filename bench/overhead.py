"""Overhead of promptlearn's evaluation path over calling llama-cpp-python directly, on the shipped pirate task.

Both sides run exactly the same requests on the same in-process `Llama` object (promptlearn.local.get_model's,
so the settings are identical): the GGUF's chat template renders each conversation, greedy decoding, the task's
max_tokens, the same stop strings. The promptlearn side is a full `Evaluator.evaluate` with the cache disabled
(litellm call path, ledger, budget checks, scoring with the task's checks); the direct side is a plain loop of
`Llama.create_completion`. Repetitions alternate A B / B A so drift in machine load hits both sides alike;
the medians and their ratio are reported, and the replies of both sides must be identical.

    python -m bench overhead            # val + test (36 requests), 3 repetitions each
    python -m bench overhead --quick    # 8 requests, 2 repetitions: a smoke test

Writes bench/results/overhead.json (overhead_quick.json with --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
TASK = ROOT / "tasks" / "pirate.yaml"


def build_requests(task: Any, examples: Sequence[Any]) -> list[list[dict[str, str]]]:
    """The chat messages promptlearn sends for each example (single-turn conversations only)."""
    from promptlearn.task import render_prompt

    requests = []
    for ex in examples:
        if len(ex.turns) != 1 or ex.turns[0].given is not None:
            raise SystemExit(f"bench overhead: example {ex.id} is not a single generated turn")
        system = render_prompt(task.prompt, ex.meta.get("vars", {}))
        requests.append(([{"role": "system", "content": system}] if system else [])
                        + [{"role": "user", "content": ex.turns[0].user}])
    return requests


class Direct:
    """llama-cpp-python used directly: render with the GGUF's chat template, tokenize, create_completion."""

    def __init__(self, llama: Any, max_tokens: int):
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.llama, self.max_tokens = llama, max_tokens
        eos = llama.detokenize([llama.token_eos()], special=True).decode("utf-8", "ignore")
        bos = llama.detokenize([llama.token_bos()], special=True).decode("utf-8", "ignore") \
            if llama.token_bos() >= 0 else ""
        self.formatter = Jinja2ChatFormatter(template=llama.metadata["tokenizer.chat_template"], eos_token=eos,
                                             bos_token=bos, add_generation_prompt=True)
        self.stop = [s for s in {eos, "<|im_end|>"} if s]

    def run(self, requests: Sequence[list[dict[str, str]]]) -> list[tuple[str, int]]:
        out = []
        for messages in requests:
            prompt = self.formatter(messages=messages).prompt
            tokens = self.llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
            r = self.llama.create_completion(prompt=tokens, max_tokens=self.max_tokens, temperature=0.0, top_k=1,
                                             top_p=1.0, min_p=0.0, repeat_penalty=1.0, seed=0, stop=self.stop)
            out.append((r["choices"][0]["text"].strip(), r["usage"]["completion_tokens"]))
        return out


def run_promptlearn(task: Any, examples: Sequence[Any]) -> list[tuple[str, int]]:
    """One evaluation through promptlearn, cache off, as `promptlearn eval --no-cache` would run it."""
    from promptlearn.engine import Evaluator

    ev = Evaluator(task, use_cache=False)
    try:
        res = ev.evaluate(task.prompt, examples)
    finally:
        ev.close()
    if not res.complete or len(res.results) != len(examples):
        raise SystemExit(f"bench overhead: evaluation stopped early: {res.stop_reason}")
    return [(res.results[ex.id].turns[0].reply, res.results[ex.id].turns[0].completion_tokens) for ex in examples]


def stub_overhead(task: Any, examples: Sequence[Any], requests: Sequence[list[dict[str, str]]],
                  replies: Sequence[tuple[str, int]], local: Any, *, repeats: int) -> float:
    """Median wall time of the promptlearn side with llama.cpp replaced by a lookup of the direct side's replies.

    Everything else runs (litellm, the provider's thread hop, ledger, checks), so this is promptlearn's own cost;
    it barely depends on machine load, unlike the difference of two model-bound timings.
    """
    from promptlearn.local import LocalReply

    table = {tuple((m["role"], m["content"]) for m in msgs): r for msgs, r in zip(requests, replies)}

    def chat(messages: Sequence[dict[str, str]], **_: Any) -> LocalReply:
        text, n = table[tuple((m["role"], m["content"]) for m in messages)]
        return LocalReply(text, 0, n, 0, 0.0)

    local.chat = chat  # instance attribute shadows the method
    try:
        times = [timed(run_promptlearn, task, examples)[0] for _ in range(repeats)]
    finally:
        del local.chat
    return statistics.median(times)


def timed(fn: Any, *args: Any) -> tuple[float, float, Any]:
    """(wall seconds, process CPU seconds, result) of fn(*args) run in a fresh thread.

    promptlearn's provider runs llama.cpp in a fresh executor thread per evaluation (a new event loop per
    Evaluator); the direct side gets a fresh thread too, so the OS treats both sides' compute threads alike.
    On an oversubscribed machine a long-lived thread's CPU placement next to llama.cpp's spinning worker can
    otherwise make one side several times slower for reasons that have nothing to do with promptlearn.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["out"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["err"] = e

    cpu, start = time.process_time(), time.perf_counter()
    t = threading.Thread(target=target, name="bench-side")
    t.start()
    t.join()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    if "err" in box:
        raise box["err"]
    return wall, cpu, box["out"]


def measure(*, quick: bool = False, repeats: int | None = None, splits: Sequence[str] = ("val", "test"),
            limit: int | None = None, verbose: bool = True) -> dict[str, Any]:
    from promptlearn.lm import litellm
    from promptlearn.local import get_model
    from promptlearn.task import load_task

    task = load_task(TASK)
    if not task.model.is_local:
        raise SystemExit("bench overhead: the task's model must be local/<name>")
    examples = [ex for s in splits for ex in task.examples(s)]
    limit = limit or (8 if quick else None)
    examples = examples[:limit] if limit else examples
    repeats = repeats or (2 if quick else 3)
    requests = build_requests(task, examples)

    t0 = time.perf_counter()
    local = get_model(task.model.name.split("/", 1)[1])  # the Llama promptlearn's provider uses
    litellm()
    direct = Direct(local.llama, task.model.max_tokens)
    load_s = time.perf_counter() - t0
    # warm both paths (litellm's lazy imports, the first llama eval) on one request outside the clock
    t0 = time.perf_counter()
    run_promptlearn(task, examples[:1])
    direct.run(requests[:1])
    warmup_s = time.perf_counter() - t0

    times: dict[str, list[float]] = {"promptlearn": [], "direct": []}
    cpu: dict[str, list[float]] = {"promptlearn": [], "direct": []}
    outputs: dict[str, Any] = {}
    load_before = os.getloadavg()
    sides = {"promptlearn": lambda: run_promptlearn(task, examples), "direct": lambda: direct.run(requests)}
    for rep in range(repeats):
        order = ("promptlearn", "direct") if rep % 2 == 0 else ("direct", "promptlearn")
        for side in order:
            dt, dcpu, out = timed(sides[side])
            times[side].append(dt)
            cpu[side].append(dcpu)
            outputs.setdefault(side, out)
            if verbose:
                print(f"  rep {rep + 1}/{repeats} {side:<11} {dt:7.2f} s wall {dcpu:7.2f} s cpu", file=sys.stderr,
                      flush=True)
    load_after = os.getloadavg()

    stub_s = stub_overhead(task, examples, requests, outputs["direct"], local, repeats=max(3, repeats))
    pl, dr = statistics.median(times["promptlearn"]), statistics.median(times["direct"])
    identical = outputs["promptlearn"] == outputs["direct"]
    import llama_cpp

    lt = sys.modules.get("litellm")
    return {
        "benchmark": "overhead",
        "promptlearn_s": round(pl, 4),
        "direct_s": round(dr, 4),
        "ratio": round(pl / dr, 4),
        "overhead_ms_per_request": round((pl - dr) / len(requests) * 1000, 2),
        "stub_s": round(stub_s, 4),
        "stub_overhead_ms_per_request": round(stub_s / len(requests) * 1000, 2),
        "stub_ratio": round((dr + stub_s) / dr, 4),
        "n_requests": len(requests),
        "repeats": repeats,
        "quick": quick,
        "runs_s": {k: [round(x, 4) for x in v] for k, v in times.items()},
        "promptlearn_cpu_s": round(statistics.median(cpu["promptlearn"]), 4),
        "direct_cpu_s": round(statistics.median(cpu["direct"]), 4),
        "cpu_ratio": round(statistics.median(cpu["promptlearn"]) / statistics.median(cpu["direct"]), 4),
        "runs_cpu_s": {k: [round(x, 4) for x in v] for k, v in cpu.items()},
        "identical_outputs": identical,
        "completion_tokens": sum(n for _, n in outputs["direct"]),
        "task": str(TASK.relative_to(ROOT)),
        "splits": list(splits),
        "model": task.model.name,
        "max_tokens": task.model.max_tokens,
        "n_threads": local.llama.n_threads,
        "model_load_s": round(load_s, 3),
        "warmup_s": round(warmup_s, 3),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "llama_cpp_python": llama_cpp.__version__,
        "litellm": getattr(lt, "__version__", None) or _dist_version("litellm"),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench overhead", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="8 requests, 2 repetitions")
    p.add_argument("--repeats", type=int, default=None, help="repetitions of each side (default 3, quick 2)")
    p.add_argument("--splits", default="val,test", help="comma-separated splits of the pirate task (or 'all')")
    p.add_argument("--limit", type=int, default=None, help="use only the first N requests")
    p.add_argument("--threads", type=int, default=None,
                   help="llama.cpp threads for both sides (sets PROMPTLEARN_THREADS; default: promptlearn's, all CPUs)")
    p.add_argument("--out", type=Path, default=None, help="result file (default bench/results/overhead.json)")
    args = p.parse_args(argv)
    if args.threads:
        os.environ["PROMPTLEARN_THREADS"] = str(args.threads)
    splits = ("train", "val", "test") if args.splits == "all" else tuple(s for s in args.splits.split(",") if s)
    result = measure(quick=args.quick, repeats=args.repeats, splits=splits, limit=args.limit)
    out = args.out or RESULTS / ("overhead_quick.json" if args.quick else "overhead.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    flag = "" if result["identical_outputs"] else "  WARNING: replies differ between the two sides"
    print(f"overhead: promptlearn {result['promptlearn_s']:.2f} s vs direct {result['direct_s']:.2f} s "
          f"(median of {result['repeats']}, {result['n_requests']} requests) -> ratio {result['ratio']:.3f}x, "
          f"{result['overhead_ms_per_request']:+.1f} ms/request; promptlearn's own cost with the model stubbed: "
          f"{result['stub_overhead_ms_per_request']:.1f} ms/request ({result['stub_ratio']:.3f}x); "
          f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}"
          f"{flag}")
    return 0 if result["identical_outputs"] else 1


if __name__ == "__main__":
    sys.exit(main())
