"""Pay for the system prompt once: wall time of a task with a ~1,500-token system prompt vs a ~50-token one.

Four conditions, all through promptlearn's real evaluation path (Evaluator.evaluate, cache off, embedded SmolLM2):
  long/reuse    the long system prompt; llama.cpp keeps the longest common token prefix between requests, and
                the engine runs the examples of one candidate back to back, so the prompt is processed once
  short/reuse   the short system prompt, same
  long/naive    the long system prompt with the KV cache reset before every request (no prefix reuse)
  short/naive   the short system prompt, same
Each run starts from an empty KV cache (the first request pays the whole prefix in every condition).

Equal reply lengths: every condition has the same user turns and max_tokens, and the user turns ask for long
stories, so every reply runs to max_tokens; the benchmark checks that completion tokens are equal across
conditions and reports time per generated token as well, so a shorter reply could not hide as a speed-up.

Rounds interleave the conditions in a fresh seeded shuffle each round (the machine may be shared); medians over
rounds are reported, and the ratios long/short with reuse and naive.

    python -m bench prefix_reuse            # 8 examples, 32 reply tokens, 3 rounds
    python -m bench prefix_reuse --quick    # 4 examples, 16 reply tokens, 2 rounds

Writes bench/results/prefix_reuse.json and prefix_reuse.md (prefix_reuse_quick.* with --quick); text under the
"## Interpretation" heading of an existing .md is kept.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Iterator

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

SHORT = ("You are a storyteller for a children's library. Write vivid, friendly stories in plain English, "
         "with a clear beginning and no violence.")
RULES = [
    "Open with the setting: where and when the story happens, in one sentence.",
    "Name the main character in the first two sentences and give them one memorable habit.",
    "Use words a ten-year-old knows; explain any unusual word in the same sentence.",
    "Never include violence, weapons, or frightening monsters; conflicts are misunderstandings or puzzles.",
    "Every story has a small problem, two attempts to solve it, and a kind resolution.",
    "Include at least one sound word (a splash, a creak, a whoosh) and one smell.",
    "Keep paragraphs short: three sentences at most.",
    "Animals may talk, but only if the story says so in the first paragraph.",
    "Do not mention brand names, real celebrities, or current events.",
    "End with a one-sentence lesson that does not start with the word 'Moral'.",
    "If the reader asks for a sad story, make it bittersweet, never hopeless.",
    "Describe weather through what the characters feel, not with numbers.",
    "Avoid rhymes unless the reader asks for a poem.",
    "When a story involves food, describe its colour and texture.",
    "Give side characters names that start with different letters.",
    "Do not address the reader as 'you' except in the final lesson.",
    "Time passes forward only; no flashbacks.",
    "If the reader names a place, use it; otherwise invent a small town with a river.",
    "Use dialogue in every story, with each speaker on a new line.",
    "Never end a story with a question.",
]


def long_prompt(target_tokens: int, count) -> str:
    """The short prompt plus numbered house rules and style notes, repeated until about target_tokens."""
    parts = [SHORT, "House rules for every story:"]
    i = 0
    while count("\n".join(parts)) < target_tokens:
        rule = RULES[i % len(RULES)]
        parts.append(f"{i + 1}. {rule}" + (f" (Applies to chapter {i // len(RULES) + 1} style notes too.)"
                                             if i >= len(RULES) else ""))
        i += 1
    return "\n".join(parts)


TOPICS = ["a lighthouse keeper who collects lost buttons", "a bakery that opens only when it rains",
          "a turtle who wants to learn the violin", "two friends building a raft on a quiet river",
          "a library book that keeps changing its ending", "a kite that gets stuck on the town clock",
          "a girl who maps every puddle in her street", "a snail racing a very patient tortoise",
          "a grandmother who grows square tomatoes", "a lost umbrella travelling across town",
          "a boy who teaches his dog to fetch the newspaper", "a fox who opens a tiny post office"]


@contextlib.contextmanager
def kv_reset_before_each_request(model: Any) -> Iterator[None]:
    """Naive evaluation: forget the KV cache before every request, so no prefix is ever reused."""
    original = model.chat

    def chat(*args: Any, **kwargs: Any) -> Any:
        with model.lock:
            model.llama.reset()
        return original(*args, **kwargs)

    model.chat = chat
    try:
        yield
    finally:
        model.chat = original


def run_condition(task: Any, model: Any, prompt: str, examples: list, naive: bool) -> dict[str, Any]:
    from promptlearn.engine import Evaluator

    ev = Evaluator(task, use_cache=False)
    try:
        with model.lock:
            model.llama.reset()  # every run starts from an empty KV cache
        with kv_reset_before_each_request(model) if naive else contextlib.nullcontext():
            start = time.perf_counter()
            res = ev.evaluate(prompt, examples, split="bench")
            seconds = time.perf_counter() - start
    finally:
        ev.close()
    u = ev.ledger.total
    assert res.complete and u.calls == len(examples), (res.stop_reason, u)
    replies = {k: v.turns[0].reply for k, v in res.results.items()}
    return {"seconds": seconds, "prompt_tokens": u.prompt_tokens, "reused_prompt_tokens": u.cached_prompt_tokens,
            "completion_tokens": u.completion_tokens, "s_per_completion_token": seconds / max(1, u.completion_tokens),
            "replies": replies}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench prefix_reuse", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="4 examples, 16 reply tokens, 2 rounds")
    p.add_argument("--examples", type=int, default=None)
    p.add_argument("--max-tokens", type=int, default=None)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--long-tokens", type=int, default=1500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="results file stem (default prefix_reuse[_quick])")
    a = p.parse_args(argv)
    n = a.examples or (4 if a.quick else 8)
    max_tokens = a.max_tokens or (16 if a.quick else 32)
    rounds = a.rounds or (2 if a.quick else 3)

    sys.path.insert(0, str(ROOT))
    from promptlearn.local import get_model, threads
    from promptlearn.task import task_from_dict

    model = get_model("smollm2")

    def count(text: str) -> int:
        return len(model.tokenize(text))

    prompts = {"long": long_prompt(a.long_tokens, count), "short": SHORT}
    rows = [{"id": f"story{i:02d}", "user": f"Write a long story about {TOPICS[i % len(TOPICS)]}."}
            for i in range(n)]
    task = task_from_dict({"name": "prefix-reuse", "model": {"name": "local/smollm2", "max_tokens": max_tokens},
                           "prompt": SHORT, "data": [{"examples": rows, "split": "val"}],
                           "checks": [{"type": "min_words", "value": 1}]})
    examples = task.examples("val")
    system_tokens = {k: count(model.render([{"role": "system", "content": v}])) for k, v in prompts.items()}

    conditions = [(which, naive) for which in ("long", "short") for naive in (False, True)]
    rng = random.Random(a.seed)
    samples: list[dict[str, Any]] = []
    run_condition(task, model, prompts["short"], examples[:1], False)  # warm up: first-touch of the weights
    for r in range(rounds):
        order = list(conditions)
        rng.shuffle(order)
        for which, naive in order:
            x = run_condition(task, model, prompts[which], examples, naive)
            x.update(round=r, prompt=which, naive=naive, load=os.getloadavg()[0], threads=threads())
            samples.append(x)
            print(f"round {r + 1}/{rounds} {which:>5}/{'naive' if naive else 'reuse'}: {x['seconds']:7.2f} s  "
                  f"prompt {x['prompt_tokens']} (reused {x['reused_prompt_tokens']})  "
                  f"completion {x['completion_tokens']}  load {x['load']:.1f}", flush=True)

    def med(which: str, naive: bool, key: str) -> float:
        return statistics.median(s[key] for s in samples if s["prompt"] == which and s["naive"] == naive)

    summary: dict[str, Any] = {}
    for which, naive in conditions:
        name = f"{which}/{'naive' if naive else 'reuse'}"
        summary[name] = {k: med(which, naive, k) for k in
                         ("seconds", "prompt_tokens", "reused_prompt_tokens", "completion_tokens",
                          "s_per_completion_token")}
        summary[name]["seconds_all"] = [round(s["seconds"], 2) for s in samples
                                        if s["prompt"] == which and s["naive"] == naive]
    # per-round ratios (same round: the same machine load, near in time), then their median
    ratio = {}
    for naive in (False, True):
        per_round = []
        for r in range(rounds):
            lo = next(s for s in samples if s["round"] == r and s["prompt"] == "long" and s["naive"] == naive)
            sh = next(s for s in samples if s["round"] == r and s["prompt"] == "short" and s["naive"] == naive)
            per_round.append({"wall": lo["seconds"] / sh["seconds"],
                              "per_token": lo["s_per_completion_token"] / sh["s_per_completion_token"]})
        key = "naive" if naive else "reuse"
        ratio[key] = {"wall_median": statistics.median(x["wall"] for x in per_round),
                      "per_token_median": statistics.median(x["per_token"] for x in per_round),
                      "wall_per_round": [round(x["wall"], 3) for x in per_round]}
    equal_lengths = len({s["completion_tokens"] for s in samples}) == 1
    same_replies = all(
        next(s for s in samples if s["prompt"] == w and not s["naive"] and s["round"] == r)["replies"]
        == next(s for s in samples if s["prompt"] == w and s["naive"] and s["round"] == r)["replies"]
        for w in ("long", "short") for r in range(rounds))
    report = {
        "benchmark": "prefix_reuse",
        "config": {"quick": a.quick, "examples": n, "max_tokens": max_tokens, "rounds": rounds,
                   "system_tokens": system_tokens, "seed": a.seed, "cpus": os.cpu_count(),
                   "threads_env": os.environ.get("PROMPTLEARN_THREADS"),
                   "load_min": min(s["load"] for s in samples), "load_max": max(s["load"] for s in samples),
                   "when": time.strftime("%Y-%m-%dT%H:%M:%S")},
        "goal": {"max_ratio_with_reuse": 1.2, "met": ratio["reuse"]["wall_median"] <= 1.2},
        "ratio_long_over_short": ratio,
        "equal_completion_tokens": equal_lengths,
        "reuse_and_naive_replies_identical": same_replies,
        "conditions": summary,
        "samples": [{k: v for k, v in s.items() if k != "replies"} for s in samples],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = a.out or ("prefix_reuse_quick" if a.quick else "prefix_reuse")
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    write_md(RESULTS / f"{stem}.md", report)
    print(f"ratio long/short with reuse {ratio['reuse']['wall_median']:.2f}x, "
          f"naive {ratio['naive']['wall_median']:.2f}x"
          f" (goal <= 1.2x: {'met' if report['goal']['met'] else 'not met'}); wrote {RESULTS / (stem + '.json')}")
    return 0


def write_md(path: Path, report: dict[str, Any]) -> None:
    keep = ""
    if path.exists():
        old = path.read_text()
        if "## Interpretation" in old:
            keep = old[old.index("## Interpretation"):]
    c, r = report["config"], report["ratio_long_over_short"]
    lines = [
        "# Paying for the system prompt once (embedded SmolLM2-135M)",
        "",
        f"`python -m bench prefix_reuse{' --quick' if c['quick'] else ''}` — {c['examples']} single-turn examples, "
        f"max_tokens {c['max_tokens']} (every reply runs to it: equal completion tokens in all runs = "
        f"{report['equal_completion_tokens']}), system prompt {c['system_tokens']['long']} vs "
        f"{c['system_tokens']['short']} tokens as rendered by the chat template, {c['rounds']} interleaved rounds, "
        f"load average {c['load_min']:.1f}–{c['load_max']:.1f} on {c['cpus']} cores. Medians.",
        "",
        "| condition | wall s | prompt tokens | reused from KV cache | completion tokens | ms per completion token "
        "| wall s per round |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, s in report["conditions"].items():
        lines.append(f"| {name} | {s['seconds']:.2f} | {s['prompt_tokens']:.0f} | {s['reused_prompt_tokens']:.0f} | "
                     f"{s['completion_tokens']:.0f} | {1000 * s['s_per_completion_token']:.1f} | "
                     f"{', '.join(f'{v:.2f}' for v in s['seconds_all'])} |")
    lines += [
        "",
        "| ratio long / short | wall time | time per completion token | per round (wall) |",
        "| --- | ---: | ---: | --- |",
        f"| with reuse (promptlearn) | **{r['reuse']['wall_median']:.2f}x** | {r['reuse']['per_token_median']:.2f}x | "
        f"{', '.join(f'{v:.2f}' for v in r['reuse']['wall_per_round'])} |",
        f"| naive (KV cache reset per request) | {r['naive']['wall_median']:.2f}x | "
        f"{r['naive']['per_token_median']:.2f}x | "
        f"{', '.join(f'{v:.2f}' for v in r['naive']['wall_per_round'])} |",
        "",
        f"Goal: long/short with reuse <= 1.2x — **{'met' if report['goal']['met'] else 'not met'}**. "
        f"Replies with and without reuse identical: {report['reuse_and_naive_replies_identical']}.",
        "",
    ]
    path.write_text("\n".join(lines) + "\n" + (keep or "## Interpretation\n\n(to be written)\n"))


if __name__ == "__main__":
    sys.exit(main())
