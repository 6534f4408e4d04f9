"""Hand-written wordings of each rule in tasks/rules/: the seed, five rewrites and a rule-less floor, on val and test.

For every task in tasks/rules/ this scores, through promptlearn's own evaluator (`promptlearn.engine.Evaluator`,
the task's model, checks and splits):

  floor       "You are a helpful assistant." (no rule): how often replies keep the rule by chance
  seed        the task's seed prompt (a plain first wording)
  wordings    the five hand-written wordings in bench/handwritten_wordings.yaml (emphasis, example, rule_first,
              quoted, terse)

and writes bench/results/handwritten.json: per task each prompt's val/test score and pass rate, the best wording
by val score (seed included; a tie keeps the earlier one, the seed first) with its test score (the suite's
"hand-written best" column), and whether the rule has headroom (see DEFINITIONS, also written into the result).

The work is done in an order that puts what the suite needs first: every prompt on val, then test for the seed
and the best wording, then test for the other wordings. Each (task, prompt, split) result is appended to
bench/results/work/handwritten_parts.jsonl as it finishes; `--resume` skips the ones already there, so a run can
be split into short pieces (`--tasks`, `--max-minutes`) that give the shared model lock back in between. Model
replies are cached in bench/results/work/handwritten_cache.sqlite (not committed).

    python -m bench handwritten --tasks start_word,end_phrase --max-minutes 12 --resume
    python -m bench handwritten --resume          # finish the rest, then write the JSON
    python -m bench handwritten --report          # only rewrite the JSON from the parts file
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Iterable

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

ROOT = Path(__file__).resolve().parents[1]
TASKS = ROOT / "tasks" / "rules"
WORDINGS = ROOT / "bench" / "handwritten_wordings.yaml"
RESULTS = ROOT / "bench" / "results"
WORK = RESULTS / "work"
PARTS = WORK / "handwritten_parts.jsonl"
CACHE = WORK / "handwritten_cache.sqlite"
OUT = RESULTS / "handwritten.json"

FLOOR_PROMPT = "You are a helpful assistant."
SPLITS = ("val", "test")
DEFINITIONS = {
    "score": "promptlearn's score of the prompt on the split: mean over examples of the mean of the task's checks "
             "(the rule, plus the answer guard where the task has one); what `promptlearn eval` and the "
             "optimizer report",
    "pass_rate": "share of the split's examples whose reply passes every check of the task",
    "rule_rate": "share of the split's replies that keep the rule (the check named 'rule'), guard ignored",
    "floor": f"the pass rate on val of the rule-less prompt {FLOOR_PROMPT!r}: how often a reply keeps the rule "
             "(and answers) by chance",
    "off_floor": "a prompt is off the floor when its val pass rate is at least floor + 2/n_val, i.e. at least two "
                 "more val replies pass than under the rule-less prompt",
    "best": "the wording with the highest val score among the seed and the hand-written wordings; a tie keeps the "
            "earlier one (the seed first)",
    "headroom": "some prompt (seed or hand-written) is off the floor and the seed's val pass rate is below 1: the "
                "model can keep the rule when asked in some way, and the seed leaves room to do better",
    "floor_true": "no prompt is off the floor: no wording measured moves the embedded model on this rule; such a "
                  "task is left out of the suite's mean",
    "ceiling": "the seed's val pass rate is 1: not at the floor, but no room above the seed; also left out of the mean",
    "mean_over_headroom_tasks": "mean of the val/test scores over the tasks with headroom (neither floor nor ceiling)",
}


def task_names() -> list[str]:
    return sorted(p.stem for p in TASKS.glob("*.yaml"))


def wordings_for(name: str, task: Any) -> list[tuple[str, str]]:
    """(wording name, prompt) in scoring order: the seed, then the hand-written ones."""
    import yaml

    table = yaml.safe_load(WORDINGS.read_text()) or {}
    if name not in table:
        raise SystemExit(f"bench handwritten: no wordings for '{name}' in {WORDINGS.relative_to(ROOT)}")
    return [("seed", task.prompt)] + [(k, str(v)) for k, v in table[name].items()]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def read_parts() -> dict[tuple[str, str, str], dict[str, Any]]:
    """Finished (task, wording, split) results; a later line for the same key wins (a re-measurement)."""
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    if PARTS.exists():
        for line in PARTS.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                out[(row["task"], row["wording"], row["split"])] = row
    return out


def append_part(row: dict[str, Any]) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    with PARTS.open("a") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def measure_one(ev: Any, task: Any, name: str, wording: str, prompt: str, split: str) -> dict[str, Any]:
    examples = task.examples(split)
    load_before, started = os.getloadavg()[0], now()
    t0, cpu0 = time.perf_counter(), time.process_time()
    res = ev.evaluate(prompt, examples, split=split, tag=wording)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    n = len(res.results)
    rule = [t.checks["rule"].score for r in res.results.values() for t in r.turns if "rule" in t.checks]
    return {
        "task": name, "wording": wording, "split": split, "prompt": prompt, "prompt_sha": sha(prompt),
        "n": n, "complete": res.complete and n == len(examples),
        "score": round(res.score, 4),
        "pass_rate": round(sum(r.passed for r in res.results.values()) / max(1, n), 4),
        "rule_rate": round(sum(s >= 1.0 for s in rule) / max(1, len(rule)), 4),
        "check_rates": {k: round(v, 4) for k, v in res.check_rates().items()},
        "replies": {k: r.turns[0].reply for k, r in res.results.items()},
        "calls": res.usage.calls, "cached_calls": res.usage.cached_calls,
        "completion_tokens": res.usage.completion_tokens, "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
        "started": started, "finished": now(), "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


def plan(names: Iterable[str], tasks: dict[str, Any], parts: dict[tuple[str, str, str], dict[str, Any]]
         ) -> Iterable[tuple[str, str, str, str]]:
    """(task, wording, prompt, split) in priority order; the best-by-val is read from `parts` as it fills."""
    names = list(names)
    for name in names:  # 1. every prompt on val, the floor first
        for wording, prompt in [("floor", FLOOR_PROMPT)] + wordings_for(name, tasks[name]):
            yield name, wording, prompt, "val"
    for name in names:  # 2. test for the floor, the seed and the best by val
        ws = dict(wordings_for(name, tasks[name]))
        best = best_by_val(name, list(ws), parts)
        for wording in dict.fromkeys(["floor", "seed", best or "seed"]):
            yield name, wording, FLOOR_PROMPT if wording == "floor" else ws[wording], "test"
    # 3. test for every other wording, the rules with headroom first (a floor rule's other wordings matter least)
    for name in sorted(names, key=lambda n: at_floor(n, [w for w, _ in wordings_for(n, tasks[n])], parts)):
        for wording, prompt in wordings_for(name, tasks[name]):
            yield name, wording, prompt, "test"


def at_floor(name: str, wordings: list[str], parts: dict[tuple[str, str, str], dict[str, Any]]) -> bool:
    """No wording is off the floor on val (see DEFINITIONS); False while val is incomplete."""
    rows = [parts.get((name, w, "val")) for w in ["floor", *wordings]]
    if any(r is None for r in rows):
        return False
    return not any(passed(r) >= passed(rows[0]) + 2 for r in rows[1:])


def passed(row: dict[str, Any]) -> int:
    """Replies that pass every check (counted, not compared as rounded rates)."""
    return round(row["pass_rate"] * row["n"])


def best_by_val(name: str, wordings: list[str], parts: dict[tuple[str, str, str], dict[str, Any]]) -> str | None:
    scored = [(parts[(name, w, "val")]["score"], -i, w) for i, w in enumerate(wordings) if (name, w, "val") in parts]
    return max(scored)[2] if len(scored) == len(wordings) else None


def run(names: list[str], *, resume: bool, max_minutes: float | None, verbose: bool = True) -> int:
    from promptlearn.engine import Evaluator
    from promptlearn.task import load_task

    tasks = {n: load_task(TASKS / f"{n}.yaml") for n in names}
    parts = read_parts()
    fresh: set[tuple[str, str, str]] = set()  # measured in this run: never twice, even without --resume
    evaluators: dict[str, Any] = {}
    deadline = time.monotonic() + 60 * max_minutes if max_minutes else None
    done = 0
    try:
        for name, wording, prompt, split in plan(names, tasks, parts):
            key = (name, wording, split)
            if key in fresh or (resume and key in parts and parts[key]["prompt_sha"] == sha(prompt)
                                and parts[key]["complete"]):
                continue
            if deadline is not None and time.monotonic() > deadline:
                print(f"bench handwritten: --max-minutes {max_minutes:g} reached after {done} results; "
                      "continue with --resume")
                return 0
            if name not in evaluators:
                evaluators[name] = Evaluator(tasks[name], cache_path=CACHE)
            row = measure_one(evaluators[name], tasks[name], name, wording, prompt, split)
            append_part(row)
            parts[key] = row
            fresh.add(key)
            done += 1
            if verbose:
                print(f"{name:>15} {wording:>10} {split:>4}: score {row['score']:.3f} pass {row['pass_rate']:.3f} "
                      f"rule {row['rule_rate']:.3f}  {row['calls']} calls ({row['cached_calls']} cached) "
                      f"{row['seconds']:.0f}s load {row['load_before']:.1f}", flush=True)
    finally:
        for ev in evaluators.values():
            ev.close()
    return 0


def summarise(parts: dict[tuple[str, str, str], dict[str, Any]]) -> dict[str, Any]:
    from promptlearn.task import load_task

    def cell(row: dict[str, Any] | None) -> dict[str, Any] | None:
        if row is None:
            return None
        return {k: row[k] for k in ("score", "pass_rate", "rule_rate", "n")}

    out_tasks: dict[str, Any] = {}
    for name in task_names():
        task = load_task(TASKS / f"{name}.yaml")
        ws = wordings_for(name, task)
        rows = {(w, s): parts.get((name, w, s)) for w, _ in [("floor", FLOOR_PROMPT)] + ws for s in SPLITS}
        if rows[("floor", "val")] is None or any(rows[(w, "val")] is None for w, _ in ws):
            out_tasks[name] = {"measured": False}
            continue
        best = best_by_val(name, [w for w, _ in ws], parts)
        off = {w: passed(rows[(w, "val")]) >= passed(rows[("floor", "val")]) + 2 for w, _ in ws}
        seed_val = rows[("seed", "val")]
        entry = {
            "measured": True, "task_file": f"tasks/rules/{name}.yaml", "rule": task.spec.description,
            "max_tokens": task.model.max_tokens,
            "floor": {"prompt": FLOOR_PROMPT, "val": cell(rows[("floor", "val")]),
                      "test": cell(rows[("floor", "test")])},
            "seed": {"prompt": task.prompt, "val": cell(seed_val), "test": cell(rows[("seed", "test")])},
            "wordings": {w: {"prompt": p, "val": cell(rows[(w, "val")]), "test": cell(rows[(w, "test")]),
                             "off_floor": off[w]} for w, p in ws[1:]},
            "best": {"wording": best, "val": cell(rows[(best, "val")]), "test": cell(rows[(best, "test")])},
            "seed_off_floor": off["seed"],
            "headroom": any(off.values()) and seed_val["pass_rate"] < 1.0,
            "floor_true": not any(off.values()),
            "ceiling": seed_val["pass_rate"] >= 1.0,
        }
        out_tasks[name] = entry
    with_room = [e for e in out_tasks.values() if e.get("measured") and e["headroom"]]

    def mean(path: tuple[str, str]) -> float | None:
        vals = [e[path[0]][path[1]]["score"] for e in with_room if e[path[0]][path[1]] is not None]
        return round(sum(vals) / len(vals), 4) if vals and len(vals) == len(with_room) else None

    rows = list(parts.values())
    model_s = sum(r["seconds"] for r in rows)
    return {
        "benchmark": "handwritten", "definitions": DEFINITIONS,
        "model": "local/smollm2 (SmolLM2-135M-Instruct, in-process), temperature 0",
        "splits": "tasks/data/rules_users.jsonl: 60 S-IFEval user turns, train/val/test 24/18/18 (seed 0)",
        "tasks": out_tasks,
        "suite": {
            "with_headroom": sorted(n for n, e in out_tasks.items() if e.get("measured") and e["headroom"]),
            "floor": sorted(n for n, e in out_tasks.items() if e.get("measured") and e["floor_true"]),
            "no_headroom_above_seed": sorted(n for n, e in out_tasks.items() if e.get("measured") and e["ceiling"]),
            "not_measured": sorted(n for n, e in out_tasks.items() if not e.get("measured")),
            "mean_over_headroom_tasks": {"seed_val": mean(("seed", "val")), "seed_test": mean(("seed", "test")),
                                         "best_val": mean(("best", "val")), "best_test": mean(("best", "test"))},
        },
        "machine": {
            "platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "first_started": min((r["started"] for r in rows), default=None),
            "last_finished": max((r["finished"] for r in rows), default=None),
            "model_seconds": round(model_s, 1), "cpu_seconds": round(sum(r["cpu_seconds"] for r in rows), 1),
            "calls": sum(r["calls"] for r in rows), "cached_calls": sum(r["cached_calls"] for r in rows),
            "load_1min": [min((r["load_before"] for r in rows), default=None),
                          max((max(r["load_before"], r["load_after"]) for r in rows), default=None)],
            "note": "each (task, prompt, split) result records its own start/finish time and the 1-minute load "
                    "average before and after it in bench/results/work/handwritten_parts.jsonl",
        },
        "generated": now(),
    }


def write_report() -> dict[str, Any]:
    result = summarise(read_parts())
    tmp = OUT.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(OUT)
    return result


def table(result: dict[str, Any]) -> str:
    """Markdown: each cell is the score with the passing replies (all checks kept) out of the split's n."""
    def f(c: Any) -> str:
        return "-" if c is None else f"{c['score']:.3f} ({round(c['pass_rate'] * c['n'])}/{c['n']})"

    lines = ["| rule | floor val | seed val | seed test | best wording | best val | best test | headroom |",
             "| --- | ---: | ---: | ---: | --- | ---: | ---: | --- |"]
    for name, e in result["tasks"].items():
        if not e.get("measured"):
            lines.append(f"| {name} | not measured | | | | | | |")
            continue
        room = "yes" if e["headroom"] else ("floor" if e["floor_true"] else "seed at 1.0")
        lines.append(f"| {name} | {f(e['floor']['val'])} | {f(e['seed']['val'])} | {f(e['seed']['test'])} | "
                     f"{e['best']['wording']} | {f(e['best']['val'])} | {f(e['best']['test'])} | {room} |")
    mean = result["suite"]["mean_over_headroom_tasks"]
    lines.append(f"\nmean over the {len(result['suite']['with_headroom'])} rules with headroom: " + ", ".join(
        f"{k} {'-' if v is None else f'{v:.3f}'}" for k, v in mean.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench handwritten", description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", help="comma-separated task names (file stems in tasks/rules/); default all")
    ap.add_argument("--resume", action="store_true", help="skip (task, prompt, split) results already measured")
    ap.add_argument("--max-minutes", type=float, help="start no new result after this many minutes")
    ap.add_argument("--report", action="store_true", help="only rewrite the JSON from the parts file")
    args = ap.parse_args(argv)
    names = task_names()
    if args.tasks:
        wanted = [t.strip() for t in args.tasks.split(",") if t.strip()]
        unknown = [t for t in wanted if t not in names]
        if unknown:
            print(f"bench handwritten: unknown task(s) {', '.join(unknown)}; known: {', '.join(names)}")
            return 2
        names = wanted
    if not args.report:
        run(names, resume=args.resume, max_minutes=args.max_minutes)
    result = write_report()
    print(table(result))
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
