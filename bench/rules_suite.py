"""Rule-adherence suite: promptlearn's optimizers vs the gepa package and DSPy on single-rule tasks, same budget.

Every task is one tasks/rules/<rule>.yaml (one app rule, real S-IFEval user requests, the embedded model, IFEval
or assertion checks). Every line gets the same budget of search calls to the embedded model (target and proposer
or reflection calls alike), and every final prompt is scored on the task's held-out test split (and on val) by
promptlearn's evaluator (`promptlearn.engine.Evaluator`, through bench.quality.Scorer), outside the budget.

Lines:
  evolve, mutate, optuna   `promptlearn.optimize(task, name, budget=...)` (bench.quality.run_promptlearn): the
                           search gets exactly the budget; the test reserve is added on top for the final scoring.
  optuna-guided            optuna with `search_guidance: true` (a trial also samples a decoding guidance strength
                           for the local model): reported apart, its prompts are scored with their guidance.
  gepa                     the gepa package: `gepa.optimize` with its DefaultAdapter, the system prompt as the one
                           component (`{"system_prompt": seed}`), data as {"input", "additional_context",
                           "answer"} dicts, promptlearn's checks as the evaluator (score + feedback), task_lm and
                           reflection_lm = the embedded model through litellm (`local/` provider). A meter counts
                           every target and reflection call and refuses the call past the budget; gepa stops at
                           max_metric_calls = budget or when the meter reaches the budget.
  pl-dspy-mipro/-gepa      DSPy's MIPROv2 / GEPA through promptlearn's `dspy` optimizer (plain-text adapter). DSPy's
                           own API could not parse SmolLM2's replies in any earlier run (BENCHMARKS.md, quality), so
                           these wrapper lines are the DSPy lines here.
  handwritten              the best hand-written wording, read from bench/results/handwritten.json (`python -m
                           bench handwritten`), not re-run. A task that file marks as having no headroom is left
                           out of the suite means and listed apart.

Per task: seed val/test; per line the test mean and spread over seeds, mean val, overfit gap (val - test of the
final prompt) and the search calls at which the best-so-far prompt first scores seed + 10 points on test (the
curve as in bench quality: the run's progress events, each best-so-far prompt scored on test). Over the suite:
per line the mean test gain over the seed, tasks improved / unchanged / made worse (UNCHANGED below) and the mean
overfit gap, and the issue's goals (GOALS) as met / not met.

Results are written after every (task, line, seed) run to bench/results/suite.json (suite_quick.json; on a CPU
without AVX-512 suite_<cpu>.json, e.g. suite_avx2.json); --resume
keeps what is there (runs that ended in an error are run again) and runs only what is missing. Work files (run
stores, caches, the reply memo) go to bench/results/work/suite/<cpu>/ (gitignored): llama.cpp's replies differ
between CPUs with and without AVX-512, so a memo or score cache made on one kind is never replayed on the other, and
--resume refuses a result file whose runs were made on another kind.

    python -m bench suite                      # every tasks/rules/*.yaml, 300 search calls, seeds 0 1 2
    python -m bench suite --resume             # continue a stopped full run where it stopped
    while flock /tmp/model.lock python -m bench suite --resume --max-minutes 12; [ $? -eq 75 ]; do :; done
    python -m bench suite --quick              # 3 tasks, seed 0, 60 calls, evolve/optuna/gepa/pl-dspy-gepa
    python -m bench suite --tasks no_comma,/tmp/t.yaml --lines evolve,gepa --seeds 0 --budget 100
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from bench import quality as q
from promptlearn.optimizers.operators import MUTATIONS

ROOT, RESULTS = q.ROOT, q.RESULTS
RULES = ROOT / "tasks" / "rules"
WORK = RESULTS / "work" / "suite"  # one subfolder per CPU kind (work_dir)
HANDWRITTEN = RESULTS / "handwritten.json"

LINES: dict[str, dict[str, Any]] = {  # line -> family and how it is run
    "evolve": {"family": "promptlearn", "optimizer": "evolve"},
    "mutate": {"family": "promptlearn", "optimizer": "mutate"},
    "optuna": {"family": "promptlearn", "optimizer": "optuna"},
    "optuna-guided": {"family": "promptlearn+guidance", "optimizer": "optuna", "options": {"search_guidance": True}},
    "gepa": {"family": "gepa"},
    "pl-dspy-mipro": {"family": "dspy-wrapper"},
    "pl-dspy-gepa": {"family": "dspy-wrapper"},
    "handwritten": {"family": "hand-written"},
    # issue 15's search changes one at a time (run only when named with --lines): evolve with one change undone,
    # evolve with guidance among its candidates' options, evolve with a larger screening batch on ties
    "evolve-guided": {"family": "promptlearn+guidance", "optimizer": "evolve", "options": {"search_guidance": True},
                      "ablation": True},
    "evolve-no-opening": {"family": "promptlearn", "optimizer": "evolve", "options": {"opening": []},
                          "ablation": True},
    "evolve-no-harvest": {"family": "promptlearn", "optimizer": "evolve", "options": {"harvest": 0},
                          "ablation": True},
    "evolve-strict-screen": {"family": "promptlearn", "optimizer": "evolve", "options": {"screen_loose": False},
                             "ablation": True},
    # evolve with `confirm`: a near miss on val is judged again with the train examples it was not screened on
    "evolve-confirm": {"family": "promptlearn", "optimizer": "evolve", "options": {"confirm": 16}, "ablation": True},
    # evolve's defaults undone one at a time: the operator prior (on a local model the suite's table; here each
    # task gets the other tasks' table, see run_one) and racing on val
    "evolve-no-prior": {"family": "promptlearn", "optimizer": "evolve", "options": {"operator_prior": False},
                        "ablation": True},
    "evolve-no-race": {"family": "promptlearn", "optimizer": "evolve", "options": {"race": False}, "ablation": True},
    # evolve without worked examples made from repaired replies (the rest as today, demos that keep their lines)
    "evolve-no-fixed": {"family": "promptlearn", "optimizer": "evolve", "ablation": True,
                        "options": {"operators": [op for op in MUTATIONS if op != "fixed_example"]}},
    # evolve with the screen raced too (Options.screen_race): a proposal that gains nothing where its parent fails
    # on the minibatch stops there, so the budget buys more proposals
    "evolve-screen-race": {"family": "promptlearn", "optimizer": "evolve", "options": {"screen_race": True},
                           "ablation": True},
    # evolve with the val race's first step a random half of the examples the best misses, where it misses 8 or
    # more (Options.race_halves): near a floor the exact bounds stop nothing, so every loser costs the whole split
    "evolve-race-halves": {"family": "promptlearn", "optimizer": "evolve", "options": {"race_halves": True},
                           "ablation": True},
    # the three together, with a screening minibatch of 4: on rules/forbidden_word 17 of evolve's 19 proposals
    # passed the 8-example screen and were then raced out on the 4 val examples the best missed, so the screen's
    # 8 calls bought little there; near a floor (address_friend) the screen stops most and the race costs 17
    "evolve-lean": {"family": "promptlearn", "optimizer": "evolve", "ablation": True,
                    "options": {"screen_race": True, "race_halves": True, "minibatch": 4}},
    # evolve with fixed_example in its book and its draws on every task, not only at a floor (main at
    # 78209f0-994a803; its runs were made as line "evolve"): recorded runs
    "evolve-994a803": {"family": "promptlearn", "ablation": True, "recorded": True},
    # evolve before fixed_example joined it (main at 52c2f22-5096d26: race, the prior, demos on one line; its runs
    # were made as line "evolve"): recorded runs
    "evolve-52c2f22": {"family": "promptlearn", "ablation": True, "recorded": True},
    # evolve before the prior and the race became its defaults (main at ed8e206; its runs were made as line evolve,
    # seed 0 at 87a5057 as line evolve-hint): recorded runs
    "evolve-ed8e206": {"family": "promptlearn", "ablation": True, "recorded": True},
    # mutate before its one-line fix (main at 42b4bee: whole rewrites and paraphrases, raced): recorded runs
    "mutate-42b4bee": {"family": "promptlearn", "ablation": True, "recorded": True},
    # optuna before its demo pool took repaired replies at a floor (main at ad22d21-5096d26; its runs were made as
    # line "optuna"): recorded runs
    "optuna-ad22d21": {"family": "promptlearn", "ablation": True, "recorded": True},
    # optuna with its first opening book and the race (main at 50bc5d6-11573df; no check hint, no appended lines):
    # recorded runs
    "optuna-50bc5d6": {"family": "promptlearn", "ablation": True, "recorded": True},
    # optuna before it opened with one-change trials and raced on val (main at 1de250c; its runs were made as lines
    # "optuna" and "optuna-guided"): recorded runs
    "optuna-1de250c": {"family": "promptlearn", "ablation": True, "recorded": True},
    "optuna-guided-1de250c": {"family": "promptlearn+guidance", "ablation": True, "recorded": True},
    # the DSPy lines before the wrapper read a prose proposer reply as the one field asked for (main at 1de250c:
    # every MIPROv2 compile stopped at its first proposer call; GEPA proposed through DSPy's JSONAdapter)
    "pl-dspy-mipro-1de250c": {"family": "dspy-wrapper", "ablation": True, "recorded": True},
    "pl-dspy-gepa-1de250c": {"family": "dspy-wrapper", "ablation": True, "recorded": True},
    # MIPROv2 with 2 instruction candidates (bench.quality.dspy_settings before 2026-12-02; main at 37265f9-5096d26):
    # its trials repeated cached programs and it spent 70-122 of its 300 calls. Recorded runs
    "pl-dspy-mipro-2cands": {"family": "dspy-wrapper", "ablation": True, "recorded": True},
    # evolve before state_check led its opening book (main at 87a5057; its runs were made as line "evolve"):
    # recorded runs, like evolve-b10a787 below
    "evolve-87a5057": {"family": "promptlearn", "ablation": True, "recorded": True},
    # evolve as it was before those changes (main at b10a787), run from that commit's tree into the same file:
    # recorded runs, never run by this code (that would run today's evolve under an old name)
    "evolve-b10a787": {"family": "promptlearn", "ablation": True, "recorded": True},
}
SEARCH = tuple(x for x in LINES if x != "handwritten" and not LINES[x].get("recorded"))
STANDARD = tuple(x for x in LINES if not LINES[x].get("ablation"))  # the full run's lines
DEFAULTS = ("evolve", "mutate", "optuna")  # promptlearn's optimizers at their default settings
GOAL_LINE = "evolve"  # promptlearn's default optimizer: the subject of the gain and no-harm goals
RIVALS = ("gepa", "pl-dspy-mipro", "pl-dspy-gepa")
QUICK = {"tasks": 3, "budget": 60, "seeds": [0], "lines": ("evolve", "optuna", "gepa", "pl-dspy-gepa"),
         "splits": {"train": 12, "val": 10, "test": 15}}  # first n of each split: seed + a few proposals fit
GOAL_GAIN, GOAL_BUDGET, REACH = 0.15, 300, 0.10
UNCHANGED = 0.01
UNCHANGED_TEXT = ("a task is unchanged by a line when |mean test - seed test| < 0.01 (under one point; one test "
                  "reply of ~20 is 5 points, so unchanged means no net change), improved when the gain is >= 0.01, "
                  "made worse when it is <= -0.01")


# ---- tasks and the hand-written best ---------------------------------------------------------------------------
def discover(spec: str | None, rules: Path = RULES) -> list[Path]:
    """The task files: every tasks/rules/*.yaml, or the --tasks list (names in tasks/rules, or YAML paths)."""
    if not spec:
        return sorted(rules.glob("*.yaml"))
    out = []
    for item in (x.strip() for x in spec.split(",") if x.strip()):
        path = Path(item).expanduser() if item.endswith((".yaml", ".yml")) else rules / f"{item}.yaml"
        if not path.exists():
            raise SystemExit(f"bench suite: no task file {path} (names are looked up in {rules})")
        out.append(path.resolve())
    return out


def read_handwritten(path: Path = HANDWRITTEN) -> dict[str, dict[str, Any]]:
    """task -> {seed_val, seed_test, val, test, prompt, headroom} from `python -m bench handwritten`'s file
    (scores as numbers or as {"score": ...}; a task not yet measured has headroom None)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    tasks = data.get("tasks", data) if isinstance(data, dict) else {}

    def score(x: Any) -> float | None:
        return x.get("score") if isinstance(x, dict) else x

    out = {}
    for name, t in tasks.items() if isinstance(tasks, dict) else ():
        if not isinstance(t, dict):
            continue
        seed, best = t.get("seed") or {}, t.get("best") or {}
        wording = (t.get("wordings") or {}).get(best.get("wording")) or {}
        prompt = best.get("prompt") or wording.get("prompt") or t.get("best_prompt")
        if best.get("wording") == "seed":
            prompt = prompt or seed.get("prompt")
        out[name] = {"seed_val": score(seed.get("val", t.get("seed_val"))),
                     "seed_test": score(seed.get("test", t.get("seed_test"))),
                     "val": score(best.get("val", t.get("best_val"))),
                     "test": score(best.get("test", t.get("best_test"))),
                     "prompt": prompt, "wording": best.get("wording"),
                     "headroom": None if t.get("measured") is False else t.get("headroom")}
    return out


def load(path: Path, quick: bool) -> Any:
    """The task with the benchmark's proposer; quick: the first QUICK['splits'] examples of each split."""
    from promptlearn.task import Task

    task = q.load(path.stem, quick, path)
    if not quick:
        return task
    cut = {k: v[: QUICK["splits"].get(k, len(v))] for k, v in task.splits.items()}
    return Task(task.spec, cut, path=task.path)


def pick_quick(paths: Sequence[Path], hw: Mapping[str, Any]) -> list[Path]:
    """The first QUICK['tasks'] task files whose task the hand-written file does not mark as without headroom."""
    ok = [p for p in paths if (hw.get(p.stem) or {}).get("headroom") is not False]
    return ok[: QUICK["tasks"]]


# ---- the gepa line --------------------------------------------------------------------------------------------
class Meter:
    """Counts every model call of a gepa run against one budget; the call past it is refused (CallCap)."""

    def __init__(self, budget: int):
        self.budget, self.calls, self.refused = budget, 0, 0
        self.by_role: dict[str, int] = {}

    def take(self, role: str) -> None:
        from bench.memo import CallCap

        if self.calls >= self.budget:
            self.refused += 1
            raise CallCap(f"benchmark call budget reached ({self.budget} calls)")
        self.calls += 1
        self.by_role[role] = self.by_role.get(role, 0) + 1


class Metered:
    """gepa.lm.LM (litellm) behind the meter: gepa's ChatCompletionCallable and LanguageModel in one."""

    def __init__(self, config: Any, meter: Meter, role: str):
        from gepa.lm import LM

        self.lm = LM(config.name, temperature=config.temperature, max_tokens=config.max_tokens, num_retries=0)
        self.meter, self.role = meter, role

    def __call__(self, prompt: Any) -> str:
        self.meter.take(self.role)
        return self.lm(prompt) or ""


def run_gepa(task: Any, budget: int, seed: int, scorer: Any, memo: Any) -> dict[str, Any]:
    """gepa.optimize (DefaultAdapter) on the task's train/val within `budget` target + reflection calls."""
    import logging

    import gepa
    from gepa.adapters.default_adapter.default_adapter import EvaluationResult

    logging.getLogger("gepa.lm").setLevel(logging.ERROR)  # warns on every reply cut at max_tokens (most of them)

    train, val = task.examples("train"), task.examples("val")
    bad = [e.id for e in train + val if len(e.turns) != 1 or e.turns[0].given is not None]
    if task.placeholders or bad:
        raise ValueError(f"gepa's DefaultAdapter sends one system prompt and one user message; task {task.name} has "
                         f"{'placeholders ' + str(list(task.placeholders)) if task.placeholders else ''}"
                         f"{' multi-turn examples ' + str(bad[:3]) if bad else ''}")
    by_id = {e.id: e for e in train + val}

    def data(exs: Sequence[Any]) -> list[dict[str, Any]]:
        return [{"input": e.turns[0].user, "additional_context": {"example_id": e.id}, "answer": ""} for e in exs]

    def evaluator(inst: Mapping[str, Any], response: str) -> Any:
        # promptlearn's one scoring path; checks see the task's seed prompt, as in bench quality's DSPy metric
        res = scorer.ev.score_replies(task.prompt, by_id[inst["additional_context"]["example_id"]], [response or ""])
        return EvaluationResult(score=res.score, feedback=res.feedback or "Every check passed.")

    meter, log, best_seen = Meter(budget), [], []

    class Progress:  # gepa callback: the best-on-val prompt as of each call count (the curve)
        def on_valset_evaluated(self, event: Mapping[str, Any]) -> None:
            if event.get("is_best_program"):
                best_seen.append((meter.calls, event["candidate"]["system_prompt"], event.get("average_score")))

    class Log:
        def log(self, message: str) -> None:
            log.append(str(message)[:300])

    memo.reset()
    t0 = time.perf_counter()
    res = gepa.optimize(
        seed_candidate={"system_prompt": task.prompt}, trainset=data(train), valset=data(val),
        task_lm=Metered(task.model, meter, "target"), evaluator=evaluator,
        reflection_lm=Metered(task.proposer, meter, "reflection"), max_metric_calls=budget,
        # the meter refuses the call past the budget (that iteration is dropped); iterations bound a run that errs
        stop_callbacks=[lambda state: meter.calls >= budget or state.i >= budget],
        raise_on_exception=False, seed=seed, logger=Log(), callbacks=[Progress()], display_progress_bar=False)
    wall = time.perf_counter() - t0
    counted = memo.snapshot()
    best = res.best_candidate["system_prompt"] if isinstance(res.best_candidate, dict) else str(res.best_candidate)
    seed_test = scorer.test(task.prompt)
    curve: list[list[float]] = [[0, seed_test]]
    for calls, prompt, _ in best_seen:
        if prompt != task.prompt:
            curve.append([calls, scorer.test(prompt)])
    test = scorer.test(best)
    curve.append([meter.calls, test])
    stop = ("call budget" if meter.calls >= budget else "max_metric_calls" if (res.total_metric_calls or 0) >= budget
            else "gepa finished")
    return {"line": "gepa", "family": "gepa", "optimizer": f"gepa.optimize (gepa {_version('gepa')}, DefaultAdapter)",
            "options": {"max_metric_calls": budget, "reflection_minibatch_size": 3}, "seed": seed, "test": test,
            "val": scorer.score(best, "val"), "gepa_val": res.val_aggregate_scores[res.best_idx],
            "seed_test": seed_test, "seed_val": scorer.score(task.prompt, "val"), "calls": meter.calls,
            "target_calls": meter.by_role.get("target", 0), "reflection_calls": meter.by_role.get("reflection", 0),
            "metric_calls": res.total_metric_calls, "refused_calls": meter.refused, "capped": meter.refused > 0,
            "budget": budget, "model_calls_counted": counted["calls"], "replayed_calls": counted["replayed"],
            "wall_s": round(wall, 2), "est_wall_s": round(wall + counted["replayed_s"], 2),
            "candidates": len(res.candidates), "stop_reason": stop, "curve": curve, "prompt": best,
            "errors_logged": [m for m in log if "Exception" in m][-3:]}


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


# ---- one run --------------------------------------------------------------------------------------------------
def run_one(task: Any, line: str, seed: int, budget: int, scorer: Any, memo: Any,
            loop_options: Mapping[str, Any]) -> dict[str, Any]:
    """One (task, line, seed) run as a record; an error becomes a record with `error`."""
    spec = LINES[line]

    def run() -> dict[str, Any]:
        if line == "gepa":
            return run_gepa(task, budget, seed, scorer, memo)
        options = dict(spec.get("options") or {})
        if spec.get("optimizer") == "evolve" and "operator_prior" not in options:
            # evolve's default prior on a local model is the table learned on this suite: scored here, each task
            # gets the table of the other tasks only (leave one task out), never its own runs
            from bench.operator_prior import read, table

            options["operator_prior"] = table(read(), leave_out=task.name)
        rec = q.run_promptlearn(task, line, budget, seed, work_dir(), scorer, memo, loop_options,
                                optimizer=spec.get("optimizer"), options=options, family=spec["family"])
        add_unguided(rec, scorer)
        return rec

    return {**q.run_guarded("suite", task.name, line, seed, budget, spec["family"], run), "commit": _commit(),
            "cpu": cpu_simd()}


def add_unguided(rec: dict[str, Any], scorer: Any) -> bool:
    """A prompt found with decoding guidance is also scored on test without it (`test_unguided`): what the
    prompt alone is worth in an app that decodes normally. False when the run has no decoding options."""
    if not rec.get("decoding") or rec.get("test") is None or "test_unguided" in rec:
        return False
    rec["test_unguided"] = scorer.test(rec["prompt"])
    return True


def cpu_simd() -> str:
    """The widest x86 vector extension this CPU has (llama.cpp's kernels, so the embedded model's replies, differ
    between them: on a CPU with AVX2 but no AVX-512 the seed prompts of rules/address_friend and rules/keyword score
    0.500 and 0.556 on val, against 0.528 and 0.611 with AVX-512). Runs are compared only within one kind of CPU."""
    try:
        flags = next((line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags")),
                     [])
    except OSError:
        return "unknown"
    return next((f for f in ("avx512f", "avx2", "avx") if f in flags), "none" if flags else "unknown")


def work_dir() -> Path:
    """Work files of this CPU kind (memo and score caches hold the model's replies, which differ between kinds)."""
    return WORK / cpu_simd()


def default_out(quick: bool) -> Path:
    """suite.json holds the AVX-512 runs every earlier reading was made on; another CPU kind gets its own file."""
    name = "suite_quick" if quick else "suite"
    return RESULTS / (f"{name}.json" if cpu_simd() == "avx512f" else f"{name}_{cpu_simd()}.json")


def other_cpus(result: Mapping[str, Any]) -> set[str]:
    """The CPU kinds a result file's runs were made on (records from before `cpu` was recorded say nothing)."""
    return {r["cpu"] for t in result.get("tasks", {}).values() for r in t.get("runs", [])
            if isinstance(r, dict) and r.get("cpu")}


def _commit() -> str:
    """The commit the code ran at (a line's meaning moves with the code; each run says which code it was)."""
    import subprocess

    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    dirty = subprocess.run(["git", "diff", "--quiet", "--", "promptlearn", "optimizers"], cwd=ROOT).returncode
    return (proc.stdout.strip() or "unknown") + ("+dirty" if dirty else "")


# ---- summary maths --------------------------------------------------------------------------------------------
def calls_to_reach(curve: Sequence[Sequence[float]], target: float) -> int | None:
    """Search calls at which the best-so-far prompt first scores >= target on test; None if it never does."""
    return next((int(x) for x, y in curve if y >= target - 1e-9), None)


def verdict(gain: float | None) -> str | None:
    if gain is None:
        return None
    return "improved" if gain >= UNCHANGED - 1e-9 else "worse" if gain <= -UNCHANGED + 1e-9 else "unchanged"


def _mean(xs: Iterable[float | None]) -> float | None:
    xs = [x for x in xs if x is not None]
    return round(statistics.fmean(xs), 4) if xs else None


def line_summary(runs: Sequence[Mapping[str, Any]], seed_test: float) -> dict[str, Any]:
    """One line on one task over its seeds (runs without a test score are left out and counted as errors)."""
    ok = [r for r in runs if r.get("test") is not None]
    tests = [r["test"] for r in ok]
    reach = [calls_to_reach(r["curve"], seed_test + REACH) if r.get("curve") else None for r in ok]
    mean = _mean(tests)
    gain = None if mean is None else round(mean - seed_test, 4)
    calls = [r["calls"] for r in ok if r.get("calls") is not None]
    return {"family": runs[0].get("family") if runs else None, "n": len(ok), "seeds": [r.get("seed") for r in ok],
            "errors": sorted({r["error"] for r in runs if r.get("error")}),
            "test_mean": mean,
            "test_std": round(statistics.stdev(tests), 4) if len(tests) > 1 else 0.0 if tests else None,
            "test_min": min(tests) if tests else None, "test_max": max(tests) if tests else None,
            "val_mean": _mean(r.get("val") for r in ok),
            "gap_mean": _mean(r["val"] - r["test"] for r in ok if r.get("val") is not None),
            "gain": gain, "verdict": verdict(gain), "reach_calls": reach,
            "reached": sum(x is not None for x in reach),
            "reach_mean": _mean(x for x in reach if x is not None),
            "calls_mean": _mean(calls), "calls_max": max(calls) if calls else None,
            "wall_s_mean": _mean(r.get("wall_s") for r in ok), "capped": sum(bool(r.get("capped")) for r in ok)}


def task_summary(entry: Mapping[str, Any], lines: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    seed_test = entry["seed_test"]
    for line in lines:
        if line == "handwritten":
            hw = entry.get("handwritten") or {}
            if hw.get("test") is not None:  # its gain is over the seed as that file scored it (the same split)
                base = hw["seed_test"] if hw.get("seed_test") is not None else seed_test
                out[line] = line_summary([{**hw, "family": "hand-written", "seed": None, "curve": None,
                                           "calls": None}], base)
            continue
        runs = [r for r in entry.get("runs", []) if r.get("line") == line]
        if runs:
            out[line] = line_summary(runs, seed_test)
    return out


def suite_summary(tasks: Mapping[str, Mapping[str, Any]], lines: Sequence[str]) -> dict[str, Any]:
    """Per line over the tasks with headroom: mean gain, improved/unchanged/worse, mean overfit gap."""
    included = [t for t, e in tasks.items() if e.get("headroom") is not False]
    per_line = {}
    for line in lines:
        rows = [(t, tasks[t].get("summary", {}).get(line)) for t in included]
        have = [(t, s) for t, s in rows if s and s.get("test_mean") is not None]
        verdicts = [s["verdict"] for _, s in have]
        gone = [t for t, s in rows if not (s and s.get("test_mean") is not None)]
        per_line[line] = {"tasks": len(have), "missing_tasks": gone,
                          "gain_mean": _mean(s["gain"] for _, s in have),
                          "test_mean": _mean(s["test_mean"] for _, s in have),
                          "improved": verdicts.count("improved"), "unchanged": verdicts.count("unchanged"),
                          "worse": verdicts.count("worse"),
                          "worse_tasks": [t for t, s in have if s["verdict"] == "worse"],
                          "gap_mean": _mean(s["gap_mean"] for _, s in have),
                          "reached": sum(1 for _, s in have if s.get("reached"))}
    return {"included": included, "excluded_no_headroom": [t for t in tasks if t not in included], "lines": per_line}


def goals(tasks: Mapping[str, Mapping[str, Any]], suite: Mapping[str, Any], budget: int,
          complete: bool) -> list[dict[str, Any]]:
    """The issue's three goals: met (True), not met (False) or not measured (None); `binding` only at the goal's
    budget with every (task, line, seed) run present."""
    lines = suite["lines"]
    binding = budget == GOAL_BUDGET and complete
    g = lines.get(GOAL_LINE) or {}
    out = []
    gain = g.get("gain_mean")
    out.append({"goal": f"{GOAL_LINE} (promptlearn's default): mean test gain over the seed >= +{GOAL_GAIN * 100:.0f} "
                        f"points at {GOAL_BUDGET} search calls",
                "measured": None if gain is None else
                f"{gain * 100:+.1f} points over {g['tasks']} task(s) at {budget} calls",
                "met": None if gain is None else gain >= GOAL_GAIN - 1e-9, "binding": binding})
    out.append({"goal": f"{GOAL_LINE}: no task made worse on test",
                "measured": None if not g.get("tasks") else
                f"{g['worse']} worse ({', '.join(g['worse_tasks']) or 'none'}), {g['unchanged']} unchanged, "
                f"{g['improved']} improved of {g['tasks']}",
                "met": None if not g.get("tasks") else g["worse"] == 0, "binding": binding})
    included = suite["included"]
    pairs, missing = [], [x for x in DEFAULTS + RIVALS if not (lines.get(x) or {}).get("tasks")]
    for d in DEFAULTS:
        for r in RIVALS:
            if d in missing or r in missing:
                continue
            common = [t for t in included if all((tasks[t].get("summary", {}).get(x) or {}).get("test_mean")
                                                 is not None for x in (d, r))]
            a = _mean(tasks[t]["summary"][d]["test_mean"] for t in common)
            b = _mean(tasks[t]["summary"][r]["test_mean"] for t in common)
            pairs.append({"ours": d, "theirs": r, "tasks": len(common), "ours_test": a, "theirs_test": b,
                          "ahead": a is not None and b is not None and a > b + 1e-9})
    out.append({"goal": "every promptlearn default (" + ", ".join(DEFAULTS) + ") ahead of gepa and every DSPy line "
                        "on the suite mean test score",
                "measured": "; ".join(f"{p['ours']} {p['ours_test']:.3f} vs {p['theirs']} {p['theirs_test']:.3f}"
                                      for p in pairs if p["ours_test"] is not None) +
                            (f"; not run: {', '.join(missing)}" if missing else ""),
                # not met once a pair run is behind; met only when every default and every rival was run (a default
                # not run cannot be ahead of anything); binding only with every run present
                "met": False if any(not p["ahead"] for p in pairs) else None if missing or not pairs else True,
                "pairs": pairs,
                "binding": binding and not missing})
    return out


def missing_runs(tasks: Mapping[str, Mapping[str, Any]], lines: Sequence[str], seeds: Sequence[int]) -> list[list[Any]]:
    """(task, line, seed) with no finished run (an error counts as missing: --resume runs it again)."""
    out = []
    for t, e in tasks.items():
        done = {(r["line"], r["seed"]) for r in e.get("runs", []) if r.get("test") is not None}
        out += [[t, line, s] for line in lines if line in SEARCH for s in seeds if (line, s) not in done]
    return out


def finish(result: dict[str, Any]) -> dict[str, Any]:
    """Recompute every summary, goal and the list of missing runs from the runs recorded so far."""
    lines, tasks = result["lines"], result["tasks"]
    for entry in tasks.values():
        entry["summary"] = task_summary(entry, lines)
    result["missing"] = missing_runs(tasks, lines, result["seeds"])
    result["complete"] = not result["missing"]
    result["suite"] = suite_summary(tasks, lines)
    result["goals"] = goals(tasks, result["suite"], result["budget"], result["complete"])
    return result


# ---- main -----------------------------------------------------------------------------------------------------
def measure(*, quick: bool, paths: Sequence[Path], lines: Sequence[str], seeds: Sequence[int], budget: int,
            out: Path, resume: bool, memo_path: Path | None, hw_path: Path = HANDWRITTEN,
            run: Callable[..., dict[str, Any]] | None = None, max_minutes: float | None = None) -> dict[str, Any]:
    """Seeds outermost, so a stopped full run has every line of every task for the seeds it finished.
    `max_minutes`: start no run that the longest run so far would carry past it (jobs that share the model's lock
    stay short; --resume continues)."""
    from bench.memo import ModelMemo

    run = run or run_one
    work = work_dir()
    work.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    prev = json.loads(out.read_text()) if resume and out.exists() else {}
    other = sorted(other_cpus(prev) - {cpu_simd()})
    if other:
        raise SystemExit(f"bench suite: {out} holds runs made on a CPU with {', '.join(other)}, this one has "
                         f"{cpu_simd()} (the model's replies differ); use another --out")
    if prev and prev.get("budget") != budget:
        raise SystemExit(f"bench suite: {out} holds runs at {prev.get('budget')} calls, not {budget}; "
                         "use --budget to match or another --out")
    hw = read_handwritten(hw_path)
    memo = ModelMemo(memo_path).install()  # counts at the embedded model; replays when memo_path is set
    result: dict[str, Any] = {
        "benchmark": "suite", "quick": quick, "budget": budget,
        "seeds": sorted(set(prev.get("seeds", [])) | set(seeds)),
        "lines": [x for x in LINES if x in set(prev.get("lines", [])) | set(lines)],
        "proposer": dict(q.loaded_proposer((), quick)), "loop_options": {"minibatch": 3} if quick else {},
        "quick_splits": QUICK["splits"] if quick else None, "unchanged_definition": UNCHANGED_TEXT,
        "reach_points": REACH, "handwritten_file": str(hw_path.name) if hw else None,
        "sessions": prev.get("sessions", []), "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "gepa_version": _version("gepa"), "dspy_version": _version("dspy"),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()], "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "tasks": dict(prev.get("tasks", {})),  # tasks not run this time keep their runs
    }
    loaded, scorers = {}, {}
    made, longest = 0, 0.0
    result.pop("stopped", None)
    try:
        for path in paths:
            task = load(path, quick)
            loaded[task.name] = task
            scorers[task.name] = q.Scorer(task, work)
            old = result["tasks"].get(task.name, {})
            h = hw.get(path.stem, hw.get(task.name))  # bench handwritten keys by file name (tasks/rules/<rule>.yaml)
            result["tasks"][task.name] = {
                "file": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path),
                "splits": {k: len(v) for k, v in task.splits.items()}, "max_tokens": task.model.max_tokens,
                "seed_prompt": task.prompt, "seed_val": scorers[task.name].score(task.prompt, "val"),
                "seed_test": scorers[task.name].test(task.prompt), "handwritten": h,
                "headroom": None if h is None else h.get("headroom"),
                "runs": [r for r in old.get("runs", []) if r.get("test") is not None]}
        for name in loaded:  # runs made before test_unguided was recorded get it now (scored once, cached)
            for r in result["tasks"][name]["runs"]:
                add_unguided(r, scorers[name])
        _write(out, result)
        for seed in seeds:
            for name, task in loaded.items():
                entry = result["tasks"][name]
                for line in (x for x in lines if x in SEARCH):
                    if any(r["line"] == line and r["seed"] == seed for r in entry["runs"]):
                        continue
                    if max_minutes is not None and time.perf_counter() - t_all + longest > max_minutes * 60:
                        result["stopped"] = f"--max-minutes {max_minutes:g}: runs left for --resume"
                        raise _TimeUp
                    t_run = time.perf_counter()
                    r = run(task, line, seed, budget, scorers[name], memo, result["loop_options"])
                    entry["runs"].append(r)
                    made += 1
                    longest = max(longest, time.perf_counter() - t_run)
                    _write(out, result)
    except _TimeUp:
        pass
    finally:
        for sc in scorers.values():
            sc.close()
        result["sessions"].append({"started": result["timestamp"], "runs_made": made,
                                   "seconds": round(time.perf_counter() - t_all, 1)})
        result["total_s"] = round(sum(s["seconds"] for s in result["sessions"]), 1)
        result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
        _write(out, result)
    return result


class _TimeUp(Exception):
    """--max-minutes reached before the next run."""


def _write(out: Path, result: dict[str, Any]) -> None:
    q._write(out, finish(result))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench suite", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK['tasks']} tasks, seed 0, {QUICK['budget']} calls, lines {','.join(QUICK['lines'])}, "
                        f"splits cut to {QUICK['splits']}")
    p.add_argument("--tasks", default=None, help="comma-separated task names in tasks/rules or YAML paths "
                                                 "(default: every tasks/rules/*.yaml)")
    p.add_argument("--lines", default=None, help=f"comma-separated lines (default: {','.join(STANDARD)}; also "
                                                 f"{','.join(x for x in LINES if x not in STANDARD)})")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2; quick 0)")
    p.add_argument("--budget", type=int, default=None, help=f"search calls per run (default {GOAL_BUDGET}; quick "
                                                           f"{QUICK['budget']})")
    p.add_argument("--memo", default=None,
                   help="reply memo shared by runs (greedy replies replayed, still counted; default "
                        "bench/results/work/suite/<cpu>/memo.sqlite); 'none' generates all")
    p.add_argument("--resume", action="store_true", help="keep finished runs in the result file, run the rest")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="start no run that would end past this many minutes; exits 75 while runs are left")
    p.add_argument("--out", type=Path, default=None, help="result file (default bench/results/suite.json, "
                                                          "suite_quick.json with --quick; suite_<cpu>.json on a "
                                                          "CPU without AVX-512)")
    args = p.parse_args(argv)
    lines = [x for x in (args.lines.split(",") if args.lines else QUICK["lines"] if args.quick else STANDARD) if x]
    unknown = [x for x in lines if x not in LINES]
    if unknown:
        p.error(f"unknown lines {unknown}; choose from {', '.join(LINES)}")
    if any(LINES[x].get("recorded") for x in lines):
        p.error(f"{[x for x in lines if LINES[x].get('recorded')]}: recorded runs of older code, not runnable here")
    seeds = [int(s) for s in (args.seeds or ("0" if args.quick else "0,1,2")).split(",") if s != ""]
    budget = args.budget or (QUICK["budget"] if args.quick else GOAL_BUDGET)
    paths = discover(args.tasks)
    if args.quick and not args.tasks:
        paths = pick_quick(paths, read_handwritten())
    if not paths:
        p.error(f"no tasks: {RULES} has no *.yaml yet; name task files with --tasks")
    out = args.out or default_out(args.quick)
    from promptlearn.lm import litellm

    litellm()  # registers local/ for litellm, which gepa calls directly
    result = measure(quick=args.quick, paths=paths, lines=lines, seeds=seeds, budget=budget, out=out,
                     resume=args.resume,
                     memo_path=None if args.memo == "none" else Path(args.memo or work_dir() / "memo.sqlite"),
                     max_minutes=args.max_minutes)
    report(result, out)
    return 75 if result.get("stopped") else 0  # EX_TEMPFAIL: run it again with --resume


def report(result: Mapping[str, Any], out: Path) -> None:
    for name, e in result["tasks"].items():
        print(f"suite {name}: seed val {e['seed_val']:.3f} test {e['seed_test']:.3f}"
              f"{'  (no headroom: left out of the suite mean)' if e.get('headroom') is False else ''}")
        for line, s in e.get("summary", {}).items():
            if s["test_mean"] is not None:
                print(f"  {line:<14} test {s['test_mean']:.3f} ({s['test_min']:.3f}-{s['test_max']:.3f}) gain "
                      f"{s['gain'] * 100:+.1f} gap {s['gap_mean'] if s['gap_mean'] is not None else '-'} reach "
                      f"{s['reach_calls']}")
    for line, s in result["suite"]["lines"].items():
        if s["tasks"]:
            print(f"suite {line:<14} gain {s['gain_mean'] * 100:+.1f} points  improved/unchanged/worse "
                  f"{s['improved']}/{s['unchanged']}/{s['worse']}  gap {s['gap_mean']}")
    for g in result["goals"]:
        state = {True: "met", False: "not met", None: "not measured"}[g["met"]]
        print(f"goal: {g['goal']}: {state} ({g['measured']}){'' if g['binding'] else ' [indicative]'}")
    if result["missing"]:
        print(f"missing {len(result['missing'])} (task, line, seed) runs: continue with --resume")
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out} ({result['total_s']:.0f} s in all)")


if __name__ == "__main__":
    sys.exit(main())
