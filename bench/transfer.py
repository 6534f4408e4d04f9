"""Transfer matrix on tasks/pirate.yaml with two targets: does a prompt tuned for one target hurt the other?

The two targets are ONE underlying model, SmolLM2-135M-Instruct in-process (local/smollm2), decoded two ways:
`greedy` (plain greedy decoding) and `cfg` (greedy with classifier-free guidance on the system prompt, g = 1.5,
promptlearn/guidance.py). They really behave differently (bench/results/guidance.md: the seed prompt scores 0.667
vs 0.852 on test), which is what a transfer matrix needs; no second model or provider is reachable on this
machine. The same report across two providers is the same task file with two `targets:` entries (see README).

Runs `promptlearn.transfer.transfer`: one evolve search per target alone (`--budget` calls each, test reserve
included) and one over both targets (objective min, 2 x `--budget`), then the seed and the three best prompts
scored on both targets' test split. Every run is an ordinary resumable run under runs/bench-transfer/ with its
own cache file there, so the benchmark runs in pieces: `--max-minutes` interrupts it (the run in progress is
saved) and the next invocation resumes where it stopped.

    flock /tmp/model.lock python -m bench transfer --max-minutes 12   # repeat until it prints the matrix
    python -m bench transfer --budget 60 --limit 30 --quick            # a small version (transfer_quick.*)

Writes bench/results/transfer.json and transfer.md (transfer_quick.* with --quick); a hand-written
"## Interpretation" section already in the .md file is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
GUIDANCE = 1.5


def pirate_two_targets(limit: int | None = None) -> Any:
    """tasks/pirate.yaml with `targets:` greedy and cfg (g = 1.5) of the same local model instead of `model:`."""
    from promptlearn.task import load_task

    base = load_task(ROOT / "tasks" / "pirate.yaml").model.model_dump(mode="json")
    overrides: dict[str, Any] = {"model": None, "targets": [
        {"label": "greedy", "model": base},
        {"label": "cfg", "model": {**base, "guidance": GUIDANCE}}]}
    if limit:
        overrides["data"] = [{"file": "data/pirate.jsonl", "limit": limit}]
    return load_task(ROOT / "tasks" / "pirate.yaml", overrides=overrides)


def _interpretation(md: Path) -> str:
    if not md.exists():
        return ""
    text = md.read_text(encoding="utf-8")
    i = text.find("## Interpretation")
    return text[i:].strip() if i >= 0 else ""


def render_md(data: dict[str, Any], old: str) -> str:
    keys = [t["key"] for t in data["targets"]]
    lines = ["# Transfer matrix: pirate, greedy vs classifier-free guidance", "",
             f"`{data['command']}` ({data['when']}, load average {data['load'][0]} -> {data['load'][1]}): "
             f"{data['note']}", "",
             f"Budget: {data['budget']} calls per single-target search, {data['budget'] * len(keys)} for the "
             f"search over both (objective {data['aggregate']}); test split {data['n_test']} conversations; "
             f"{data['calls']} model requests in all (cache hits included), {data['seconds']:.0f} s of model time.",
             "", "| prompt | " + " | ".join(f"test on {k}" for k in keys) + " | min | search: requests, candidates |",
             "|---|" + "---|" * (len(keys) + 2)]
    for r in data["rows"]:
        cells = " | ".join(f"{r['test'][k]:.3f}" for k in keys)
        search = f"{r['requests']}, {r['candidates']}" if r.get("requests") is not None else "-"
        lines.append(f"| {r['label']} | {cells} | {min(r['test'].values()):.3f} | {search} |")
    if data.get("promoted"):
        lines += ["", "Candidates a search promoted to val but did not accept, on every target's test split "
                  "(val score in their own run in brackets):", "",
                  "| candidate | " + " | ".join(f"test on {k}" for k in keys) + " | min |",
                  "|---|" + "---|" * (len(keys) + 1)]
        for r in data["promoted"]:
            cells = " | ".join(f"{r['test'][k]:.3f}" for k in keys)
            val = "-" if r.get("val_in_run") is None else f"{r['val_in_run']:.3f}"
            lines.append(f"| {r['label']} [{val}] | {cells} | {min(r['test'].values()):.3f} |")
    lines += ["", "Prompts:", ""]
    lines += [f"- {r['label']}: `{' '.join(r['prompt'].split())[:300]}`"
              for r in data["rows"] + data.get("promoted", [])]
    return "\n".join(lines) + "\n" + (f"\n{old}\n" if old else "")


def promoted_rows(task: Any, work: Path, cache: Path) -> list[dict[str, Any]]:
    """Candidates the searches promoted to val but did not accept, scored on every target's test split: the
    off-diagonal evidence when no search accepted a new best (their val scores are in each run's store)."""
    from promptlearn.store import SQLiteRunStore
    from promptlearn.targets import MultiEvaluation, make_evaluator

    seen: dict[str, dict[str, Any]] = {}
    for run in sorted(p for p in work.iterdir() if (p / "store.sqlite").exists()):
        store = SQLiteRunStore(run, create=False)
        try:
            for c in store.candidates():
                if c["status"] == "promoted" and c["id"] not in seen:
                    val = store.scores().get(c["id"], {}).get("val", {}).get("score")
                    seen[c["id"]] = {"label": f"{c['operator']} ({run.name}, not accepted)", "id": c["id"],
                                     "prompt": c["prompt"], "run": run.name, "val_in_run": val}
        finally:
            store.close()
    ev = make_evaluator(task, cache_path=cache)
    try:
        for row in seen.values():
            scored = ev.evaluate(row["prompt"], task.examples("test"), split="test", tag="promoted")
            assert isinstance(scored, MultiEvaluation)
            row["test"] = scored.target_scores()
        requests = ev.ledger.total.requests
    finally:
        ev.close()
    for row in seen.values():
        row["matrix_requests"] = requests
    return list(seen.values())


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench transfer", description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=int, default=200, help="calls per single-target search (test reserve included)")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N conversations of pirate.jsonl")
    ap.add_argument("--quick", action="store_true", help="write transfer_quick.* (with --budget/--limit small)")
    ap.add_argument("--max-minutes", type=float, default=None, help="stop (resumably) after this long")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--promoted", action="store_true",
                    help="also score the candidates the searches promoted but did not accept on every target")
    args = ap.parse_args(list(argv) if argv is not None else None)

    from promptlearn.transfer import transfer_report

    stem = "transfer_quick" if args.quick else "transfer"
    work = ROOT / "runs" / f"bench-{stem}"
    if args.max_minutes:
        def stop(*_: Any) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGALRM, stop)
        signal.alarm(int(args.max_minutes * 60))
    task = pirate_two_targets(args.limit)
    load0 = os.getloadavg()[0]
    start = time.perf_counter()
    try:
        report = transfer_report(task, budget=args.budget, seed=args.seed, out_dir=work,
                                 cache_path=work / "cache.sqlite",
                                 on_run=lambda name: print(f"bench transfer: run {name}", file=sys.stderr, flush=True))
    except KeyboardInterrupt:
        print(f"bench transfer: --max-minutes {args.max_minutes:g} reached; the run in progress is saved under "
              f"{work}: run the same command again to continue", file=sys.stderr)
        return 3
    finally:
        signal.alarm(0)
    data = report.to_json()
    if args.promoted:
        data["promoted"] = promoted_rows(task, work, work / "cache.sqlite")
    seconds = time.perf_counter() - start
    cmd = "python -m bench transfer" + (f" --budget {args.budget}" if args.budget != 200 else "") + \
        (f" --limit {args.limit}" if args.limit else "") + (" --quick" if args.quick else "") + \
        (" --promoted" if args.promoted else "")
    data.update({
        "benchmark": "transfer", "command": cmd, "budget": args.budget, "seed": args.seed,
        "n_test": len(task.examples("test")), "seconds": seconds,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "load": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "note": "both targets are ONE model, SmolLM2-135M-Instruct in-process; `greedy` decodes it greedily, "
                f"`cfg` with classifier-free guidance g = {GUIDANCE} on the system prompt. seconds counts only "
                "the last invocation (the benchmark runs in resumable pieces).",
        "out_dir": str(Path(data["out_dir"]).relative_to(ROOT)),
    })
    for r in data["rows"]:
        r["run"] = r["run"] and str(Path(r["run"]).relative_to(ROOT))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    md = RESULTS / f"{stem}.md"
    md.write_text(render_md(data, _interpretation(md)), encoding="utf-8")
    print(md.read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
