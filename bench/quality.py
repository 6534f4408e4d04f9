"""Quality per budget: promptlearn's optimizers vs DSPy's MIPROv2, COPRO and GEPA, same model, same call budget.

Target and proposer are the embedded model (SmolLM2-135M-Instruct, greedy; the proposer/prompt model is the same
model with max_tokens 192 for every optimizer). Every optimizer gets the same budget of calls to that model
(target and proposer calls alike), and every final prompt is scored by promptlearn's evaluator on the same
held-out test split, which no optimizer sees.

Lines:
  promptlearn   evolve, optuna, mutate: `promptlearn.optimize(task, name, budget=...)`; the search gets exactly
                the budget (optimize's own test reserve is added on top and spent on the final test scoring).
  dspy          DSPy's own API: `dspy.LM("local/smollm2")` (litellm path), DSPy's default ChatAdapter (with its
                JSON fallback), `dspy.Predict` over a signature whose instruction is the seed prompt, and
                dspy.MIPROv2 / dspy.COPRO / dspy.GEPA with our checks as the metric. The learned program's
                instruction (+ its demos as text) becomes the system prompt that is scored.
  dspy-wrapper  the same three teleprompters through promptlearn's `dspy` optimizer (operator dspy-*), whose
                adapter sends the instruction as the plain system prompt: DSPy's search without DSPy's format.

Per-example system prompts ({rules} in S-IFEval, {defense} in TensorTrust): for DSPy the per-example value is an
input field of the signature (`rules` / `defense`, next to `user`), and the instruction is the seed with the
placeholder removed (empty for these seeds, so DSPy writes its default "Given the fields ..."). The app sends one
system prompt template; the template that DSPy's program stands for is `<instruction>\\n\\n<demos>\\n\\n{rules}`
(DSPy's default instruction counts as empty, so DSPy's unchanged program is exactly the seed "{rules}").

Budgets: DSPy has no hard call budget. Its settings (breadth/depth, num_candidates/num_trials,
max_metric_calls) are chosen so its calls come close to the budget, a counter on the embedded model counts every
call that reaches it, and a cap refuses calls past the budget (recorded as `capped`). DSPy's in-memory cache is on
(as by default; disk cache off so runs are independent), so a repeated request is free for DSPy as it is for
promptlearn (whose disk cache is fresh per run).

Curves: for promptlearn's lines, the best prompt as of each call count (the run store's progress events) is
scored on test afterwards (each distinct prompt once; those calls are outside the budget). DSPy lines have one
point: the calls they used and the test score of their final prompt.

    python -m bench quality            # sifeval_rules + tensortrust_guard, 300 calls, seeds 0 1 2
    python -m bench quality --quick    # 16 + 12 examples, 30 calls, seed 0, proposer 96 tokens, no wrapper lines
    python -m bench quality --tasks pirate --budget 150 --seeds 0

Writes bench/results/quality.json (quality_quick.json) and one SVG per task (test score vs calls).
Runs land in runs/bench-quality/ (gitignored); --resume keeps runs already in the result file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TQDM_DISABLE", "1")  # DSPy draws progress bars for every evaluation

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "runs" / "bench-quality"

OURS = ("evolve", "optuna", "mutate")
NATIVE = ("dspy-mipro", "dspy-copro", "dspy-gepa")  # DSPy's own API
WRAPPED = ("pl-dspy-mipro", "pl-dspy-copro", "pl-dspy-gepa")  # DSPy's search through promptlearn's dspy optimizer
FAMILY = {**{o: "promptlearn" for o in OURS}, **{o: "dspy" for o in NATIVE}, **{o: "dspy-wrapper" for o in WRAPPED}}
PROPOSER = {"name": "local/smollm2", "temperature": 0.0, "max_tokens": 192}
QUICK_PROPOSER_TOKENS = 96

# Quick mode: fewer examples (same files, same checks) so a run of 80 calls still covers seed + a few proposals.
QUICK_OVERRIDES: dict[str, dict[str, Any]] = {
    "sifeval_rules": {"data": [{"file": "data/sys_ifeval_short.jsonl", "format": "sys_ifeval", "limit": 16}],
                      "model": {"max_tokens": 32}},
    "tensortrust_guard": {"data": [
        {"file": "data/tensortrust_hijacking_short.jsonl", "format": "tensortrust_hijacking", "limit": 6},
        {"file": "data/tensortrust_helpful_short.jsonl", "format": "tensortrust_helpful", "limit": 6}]},
    "pirate": {"data": [{"file": "data/pirate.jsonl", "limit": 16}]},
}


# ---- settings per budget ---------------------------------------------------------------------------------
def dspy_settings(name: str, budget: int, n_train: int, n_val: int, per_predict: float = 2.0) -> dict[str, Any]:
    """Teleprompter settings whose model calls come close to `budget`.

    `per_predict`: model calls per DSPy prediction. With DSPy's ChatAdapter and SmolLM2 most replies do not parse,
    and each unparsable reply costs a second call (the JSONAdapter fallback), so ~2 (measured); 1 for the
    plain-text wrapper. COPRO scores breadth x depth instructions on the trainset; MIPROv2 bootstraps demos on the
    trainset (about one pass), makes a few proposer calls (data and program summaries, one per instruction) and runs
    num_trials trials on the valset; GEPA is given more metric calls than the budget and stopped at the budget.
    """
    k = per_predict
    if name == "copro":
        cands = max(2, int(budget // max(1.0, n_train * k)))
        depth = 2 if cands >= 4 else 1
        return {"breadth": max(2, cands // depth), "depth": depth, "init_temperature": 1.4}
    if name == "mipro":
        # its trials pick one of num_candidates instructions and one demo set each, and a repeated pick is a cached
        # program that costs nothing. With 2 instructions its 10 trials were 2-4 programs and it spent 70-122 of
        # 300 calls (rule suite); with 5, 115 calls on a rule at the floor, where every bootstrapped demo set is
        # empty, so only the instruction tells programs apart. One instruction per trial (one proposer call
        # each) lets every trial be a new program and keeps its calls near the budget.
        trials = max(2, int((budget - n_train * k - 6 - 2) // max(1.0, n_val * k)))
        cands = trials
        trials = max(2, int((budget - n_train * k - 6 - cands) // max(1.0, n_val * k)))
        return {"num_candidates": cands, "num_trials": trials, "max_bootstrapped_demos": 2, "max_labeled_demos": 0}
    if name == "gepa":
        # GEPA re-runs candidates on examples it has seen and DSPy's cache makes those repeats free, so model calls
        # per metric call vary by task (0.6 on pirate). Allow twice the budget in metric calls: the call cap (or
        # the wrapper's own budget) stops it at the budget, as promptlearn's budget stops its optimizers.
        return {"max_metric_calls": max(4, 2 * budget)}
    raise ValueError(name)


def wrapper_options(name: str, budget: int, n_train: int, n_val: int) -> dict[str, Any]:
    # the wrapper gives DSPy compile_share=0.8 of the calls left after the seed's val score; one call per prediction
    s = dspy_settings(name, int((budget - n_val) * 0.8), n_train, n_val, per_predict=1.0)
    opts: dict[str, Any] = {"teleprompter": name, "compile_share": 0.8}
    if name == "copro":
        opts.update(breadth=s["breadth"], depth=s["depth"])
    elif name == "mipro":
        opts.update(num_candidates=s["num_candidates"], num_trials=s["num_trials"])
    else:
        opts.update(max_metric_calls=s["max_metric_calls"])
    return opts


# ---- tasks -----------------------------------------------------------------------------------------------
def load(name: str, quick: bool, path: Path | None = None) -> Any:
    """tasks/<name>.yaml (or `path`) with the benchmark's proposer (and, quick, its smaller data)."""
    from promptlearn.task import load_task

    over = dict(QUICK_OVERRIDES.get(name, {})) if quick else {}
    over["proposer"] = {**PROPOSER, **({"max_tokens": QUICK_PROPOSER_TOKENS} if quick else {})}
    return load_task(path or ROOT / "tasks" / f"{name}.yaml", overrides=over)


def loaded_proposer(tasks: Sequence[str], quick: bool) -> dict[str, Any]:
    return {**PROPOSER, **({"max_tokens": QUICK_PROPOSER_TOKENS} if quick else {})}


def test_reserve(task: Any) -> int:
    """What promptlearn.optimize keeps back from max_calls for its final test scoring (run.py)."""
    return 2 * sum(sum(t.given is None for t in e.turns) for e in task.examples("test"))


# ---- scoring ---------------------------------------------------------------------------------------------
class Scorer:
    """Test (or val) scores of prompts through promptlearn's evaluator, cached (calls outside every budget).
    `overrides`: a candidate's decoding options (Candidate.model_overrides, e.g. guidance), scored with it."""

    def __init__(self, task: Any, work: Path):
        from promptlearn.engine import Evaluator

        self.task = task
        self.ev = Evaluator(task, cache_path=work / f"score-cache-{task.name}.sqlite")
        self.memo: dict[tuple[str, str, str], float] = {}

    @staticmethod
    def key(prompt: str, split: str = "test", overrides: Mapping[str, Any] | None = None) -> tuple[str, str, str]:
        return split, prompt, json.dumps(dict(overrides or {}), sort_keys=True)

    def score(self, prompt: str, split: str = "test", overrides: Mapping[str, Any] | None = None) -> float:
        k = self.key(prompt, split, overrides)
        if k not in self.memo:
            ev = self.ev.evaluate(prompt, self.task.examples(split), split=split, tag=f"bench-{split}",
                                  model_overrides=overrides or None)
            self.memo[k] = ev.score
        return self.memo[k]

    def test(self, prompt: str, overrides: Mapping[str, Any] | None = None) -> float:
        return self.score(prompt, "test", overrides)

    def close(self) -> None:
        self.ev.close()


# ---- promptlearn's optimizers (and the DSPy wrapper) ----------------------------------------------------
def run_promptlearn(task: Any, line: str, budget: int, seed: int, work: Path, scorer: Scorer, memo: Any,
                    loop_options: Mapping[str, Any], *, optimizer: str | None = None,
                    options: Mapping[str, Any] | None = None, family: str | None = None) -> dict[str, Any]:
    """One run of `line` (promptlearn's optimizer of that name, or pl-dspy-*; `optimizer` + `options` name
    another optimizer setting, e.g. optuna with search_guidance) with exactly `budget` search calls."""
    from promptlearn.run import optimize
    from promptlearn.store import SQLiteRunStore
    from promptlearn.types import model_overrides

    n_train, n_val = len(task.examples("train")), len(task.examples("val"))
    if optimizer is not None:
        name, opts = optimizer, dict(options or {})
    elif line.startswith("pl-dspy-"):
        name, opts = "dspy", wrapper_options(line.rsplit("-", 1)[1], budget, n_train, n_val)
    else:
        name, opts = line, {}
    rdir = work / "runs" / f"{task.name}-{line}-s{seed}"
    shutil.rmtree(rdir, ignore_errors=True)
    memo.reset()
    t0 = time.perf_counter()
    res = optimize(task, name, budget=budget + test_reserve(task), seed=seed, run_dir=rdir,
                   cache_path=rdir / "cache.sqlite", options={**loop_options, **opts})
    wall = time.perf_counter() - t0
    counted = memo.snapshot()
    store = SQLiteRunStore(rdir, create=False)
    by_tag = store.get_meta("ledger_by_tag") or {}
    test_calls = int((by_tag.get("test") or {}).get("calls", 0))
    calls = res.ledger.calls - test_calls
    # what the budget counts: requests, cache hits included (calls above: those that reached the model)
    requests = res.ledger.requests - int((by_tag.get("test") or {}).get("requests", test_calls))
    # a candidate is its prompt plus its decoding options (guidance): each is scored with its own
    cands = {c["id"]: (c["prompt"], model_overrides(c["meta"])) for c in store.candidates()}
    known = {res.seed.id: res.seed.test, res.best.id: res.best.test}
    for pid, (prompt, over) in cands.items():
        if known.get(pid) is not None:
            scorer.memo.setdefault(scorer.key(prompt, "test", over), known[pid])
    curve: list[list[float]] = [[0, scorer.test(*cands.get(res.seed.id, (res.seed.prompt, {})))]]
    last = res.seed.id
    for e in store.events("progress"):
        if e.get("best") and e["best"] != last and e["best"] in cands:
            last = e["best"]
            curve.append([int(e["calls"]), scorer.test(*cands[last])])
    curve.append([calls, scorer.test(*cands.get(res.best.id, (res.best.prompt, {})))])
    dspy_log = [e for e in store.events("dspy")]
    store.close()
    out = {"line": line, "family": family or FAMILY[line], "optimizer": name, "options": opts, "seed": seed,
           "test": res.best.test, "val": res.best.val, "seed_test": res.seed.test, "seed_val": res.seed.val,
           "calls": calls, "requests": requests, "budget": budget, "model_calls_counted": counted["calls"],
           "test_calls": test_calls,
           "wall_s": round(wall, 2), "est_wall_s": round(wall + counted["replayed_s"], 2),
           "replayed_calls": counted["replayed"], "candidates": res.candidates, "stop_reason": res.stop_reason,
           "curve": curve, "prompt": res.best.prompt, "decoding": cands.get(res.best.id, ("", {}))[1],
           "run_dir": str(rdir.relative_to(ROOT) if rdir.is_relative_to(ROOT) else rdir)}
    if dspy_log:
        out["dspy_log"] = dspy_log[-1]
    return out


# ---- DSPy's own API ---------------------------------------------------------------------------------------
DEFAULT_INSTRUCTION = re.compile(r"^Given the fields .*, produce the fields .*\.$", re.S)


def strip_placeholders(prompt: str, names: Sequence[str]) -> str:
    for n in names:
        prompt = prompt.replace("{" + n + "}", "")
    return re.sub(r"\n{3,}", "\n\n", prompt).strip()


def template_of(task: Any, instruction: str, demos: Sequence[Any]) -> str:
    """The one system prompt template a DSPy program stands for: instruction, demos as text, then the
    per-example placeholders (where DSPy put them: after the instruction, as input fields)."""
    text = "" if DEFAULT_INSTRUCTION.match(instruction.strip()) else instruction.strip()
    shots = []
    for d in demos or ():
        d = dict(d.items()) if hasattr(d, "items") else dict(d)
        if not d.get("reply") or not d.get("user"):
            continue
        lines = [f"{k.capitalize()}: {d[k]}" for k in task.placeholders if d.get(k)]
        lines += [f"User: {d['user']}", f"Assistant: {d['reply']}"]
        shots.append(("Example:\n" + "\n".join(lines)).replace("{", "(").replace("}", ")"))
    parts = [p for p in [text, *shots] if p]
    parts += ["\n".join("{" + n + "}" for n in task.placeholders)] if task.placeholders else []
    return "\n\n".join(parts)


def run_dspy(task: Any, line: str, budget: int, seed: int, scorer: Scorer, memo: Any) -> dict[str, Any]:
    import dspy
    from dspy.utils.exceptions import AdapterParseError

    import logging

    for name in list(logging.root.manager.loggerDict):  # DSPy logs every unparsable reply and truncation in full
        if name.startswith("dspy"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    tp_name = line.rsplit("-", 1)[1]
    train, val = task.examples("train"), task.examples("val")
    by_id = {e.id: e for e in train + val}
    settings = dspy_settings(tp_name, budget, len(train), len(val))
    names = list(task.placeholders)

    for adapter in (dspy.ChatAdapter, dspy.JSONAdapter):
        if not getattr(adapter.parse, "_bench_counted", False):
            original = adapter.parse

            def counted(self: Any, *a: Any, _orig: Any = original, **k: Any) -> Any:
                try:
                    out = _orig(self, *a, **k)
                except AdapterParseError:
                    PARSE_COUNTS["failed"] += 1
                    raise
                PARSE_COUNTS["ok"] += 1
                return out

            counted._bench_counted = True  # type: ignore[attr-defined]
            adapter.parse = counted  # type: ignore[method-assign]
    PARSE_COUNTS.update(ok=0, failed=0)

    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)  # fresh memory cache per run
    m, p = task.model, task.proposer
    target = dspy.LM(m.name, temperature=m.temperature, max_tokens=m.max_tokens, num_retries=0, engine="litellm",
                     seed=seed)
    prompt_lm = dspy.LM(p.name, temperature=p.temperature, max_tokens=p.max_tokens, num_retries=0,
                        engine="litellm", seed=seed)
    fields: dict[str, Any] = {n: (str, dspy.InputField(desc=f"the app's {n} for this conversation")) for n in names}
    fields["user"] = (str, dspy.InputField(desc="the user's message"))
    fields["reply"] = (str, dspy.OutputField(desc="the assistant's reply"))
    seed_instruction = strip_placeholders(task.prompt, names)
    student = dspy.Predict(dspy.Signature(fields, seed_instruction))

    def examples(exs: Sequence[Any]) -> list[Any]:
        out = []
        for e in exs:
            if len(e.turns) != 1 or e.turns[0].given is not None:
                continue
            v = e.meta.get("vars", {})
            out.append(dspy.Example(user=e.turns[0].user, pl_id=e.id, **{n: str(v.get(n, "")) for n in names})
                       .with_inputs("user", *names))
        return out

    def metric(gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None) -> Any:
        # the engine's own scoring path (checks as the task's seed prompt would see them)
        res = scorer.ev.score_replies(task.prompt, by_id[gold.pl_id], [str(getattr(pred, "reply", "") or "")])
        if tp_name == "gepa":
            return dspy.Prediction(score=res.score, feedback=res.feedback or "Every check passed.")
        return res.passed if trace is not None else res.score

    dtrain, dval = examples(train), examples(val)
    error, program = None, None
    memo.reset(cap=budget)
    t0 = time.perf_counter()
    big = 10 ** 6  # DSPy's default max_errors=10 ends the compile at the 10th unparsable reply
    try:
        with dspy.context(lm=target, max_errors=big):
            if tp_name == "copro":
                tp = dspy.COPRO(prompt_model=prompt_lm, metric=metric, breadth=settings["breadth"],
                                depth=settings["depth"], init_temperature=settings["init_temperature"])
                program = tp.compile(student, trainset=dtrain,
                                     eval_kwargs={"num_threads": 1, "display_progress": False})
            elif tp_name == "mipro":
                tp = dspy.MIPROv2(metric, prompt_model=prompt_lm, task_model=target, auto=None,
                                  num_candidates=settings["num_candidates"], num_threads=1, max_errors=big,
                                  seed=seed, max_bootstrapped_demos=settings["max_bootstrapped_demos"],
                                  max_labeled_demos=settings["max_labeled_demos"], verbose=False)
                program = tp.compile(student, trainset=dtrain, valset=dval, num_trials=settings["num_trials"],
                                     minibatch=len(dval) > 35, minibatch_size=min(35, len(dval)))
            else:
                tp = dspy.GEPA(metric, max_metric_calls=settings["max_metric_calls"], reflection_lm=prompt_lm,
                               num_threads=1, seed=seed)
                program = tp.compile(student, trainset=dtrain, valset=dval)
    except Exception as e:  # noqa: BLE001 - recorded: the DSPy line then stands for the seed prompt
        error = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:240] if str(e).strip() else ''}"
        print(f"[quality] DSPy {tp_name} raised {error}", file=sys.stderr, flush=True)
    wall = time.perf_counter() - t0
    counted = memo.snapshot()
    memo.reset()
    if program is not None:
        pred = program.predictors()[0]
        instruction, demos = pred.signature.instructions, list(pred.demos or [])
    else:
        instruction, demos = seed_instruction, []
    prompt = template_of(task, instruction, demos)
    t1 = time.perf_counter()
    test = scorer.test(prompt)
    seed_test = scorer.test(task.prompt)
    score_s = time.perf_counter() - t1
    return {"line": line, "family": "dspy",
            "optimizer": {"copro": "dspy.COPRO", "mipro": "dspy.MIPROv2", "gepa": "dspy.GEPA"}[tp_name],
            "options": settings, "seed": seed, "test": test, "val": None, "seed_test": seed_test,
            "calls": counted["calls"],
            "budget": budget, "capped": counted["capped"] > 0, "refused_calls": counted["capped"],
            "wall_s": round(wall + score_s, 2), "est_wall_s": round(wall + score_s + counted["replayed_s"], 2),
            "replayed_calls": counted["replayed"], "error": error, "parse": dict(PARSE_COUNTS),
            "returned_program": program is not None, "instruction": instruction, "demos": len(demos),
            "prompt": prompt, "curve": [[0, seed_test], [counted["calls"], test]]}


PARSE_COUNTS = {"ok": 0, "failed": 0}


# ---- summary, goals, plots --------------------------------------------------------------------------------
def step_value(curve: Sequence[Sequence[float]], x: float) -> float:
    y = curve[0][1]
    for cx, cy in curve:
        if cx <= x:
            y = cy
    return y


def summarise(runs: list[dict[str, Any]], budget: int) -> dict[str, Any]:
    by_line: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by_line.setdefault(r["line"], []).append(r)
    summary = {}
    for line, rs in by_line.items():
        tests = [r["test"] for r in rs if r.get("test") is not None]
        summary[line] = {
            "family": rs[0]["family"], "n": len(rs), "seeds": [r["seed"] for r in rs],
            "test_mean": round(statistics.fmean(tests), 4) if tests else None,
            "test_std": round(statistics.stdev(tests), 4) if len(tests) > 1 else 0.0,
            "test_min": min(tests) if tests else None, "test_max": max(tests) if tests else None,
            "seed_test": rs[0].get("seed_test"),
            "calls_mean": round(statistics.fmean(r["calls"] for r in rs), 1),
            "calls_max": max(r["calls"] for r in rs),
            "wall_s_mean": round(statistics.fmean(r["wall_s"] for r in rs), 1),
            "est_wall_s_mean": round(statistics.fmean(r["est_wall_s"] for r in rs), 1),
            "errors": sorted({r["error"] for r in rs if r.get("error")}),
            "capped": sum(bool(r.get("capped")) for r in rs),
        }
        if rs[0]["family"] != "dspy":
            grid = list(range(0, budget + 1, max(1, budget // 60))) + [budget]
            summary[line]["mean_curve"] = [[x, round(statistics.fmean(step_value(r["curve"], x) for r in rs), 4)]
                                           for x in sorted(set(grid))]
    return summary


def goals(summary: Mapping[str, Any]) -> dict[str, Any]:
    def best(family: Sequence[str]) -> tuple[str | None, float | None]:
        rows = [(k, v["test_mean"]) for k, v in summary.items() if v["family"] in family and v["test_mean"] is not None]
        return max(rows, key=lambda kv: kv[1]) if rows else (None, None)

    ours, ours_t = best(["promptlearn"])
    out: dict[str, Any] = {"best_promptlearn": ours, "best_promptlearn_test": ours_t}
    for key, fam in (("dspy", ["dspy"]), ("dspy_any", ["dspy", "dspy-wrapper"])):
        theirs, theirs_t = best(fam)
        g: dict[str, Any] = {"best": theirs, "best_test": theirs_t}
        if ours and theirs:
            margin = ours_t - theirs_t
            g["margin"] = round(margin, 4)
            g["goal_plus_5_points"] = margin >= 0.05 - 1e-9
            target, their_calls = theirs_t, summary[theirs]["calls_mean"]
            reach = next((x for x, y in summary[ours]["mean_curve"] if y >= target - 1e-9), None)
            g["calls_to_reach"] = reach
            g["their_calls"] = their_calls
            g["goal_half_calls"] = reach is not None and reach <= 0.5 * their_calls
        out[key] = g
    return out


COLORS = {"evolve": "#2563eb", "optuna": "#16a34a", "mutate": "#9333ea", "dspy-mipro": "#dc2626",
          "dspy-copro": "#ea580c", "dspy-gepa": "#b45309", "pl-dspy-mipro": "#f87171", "pl-dspy-copro": "#fb923c",
          "pl-dspy-gepa": "#d97706"}


def svg_plot(task: str, summary: Mapping[str, Any], runs: Sequence[Mapping[str, Any]], budget: int,
             quick: bool) -> str:
    """Mean test score vs calls: step lines for promptlearn's lines (and the wrapper), one marker per DSPy run."""
    from promptlearn.report.plots import _nice_range, _ticks  # the report's own axes

    w, h, ml, mr, mt, mb = 720, 380, 56, 170, 34, 46
    pw, ph = w - ml - mr, h - mt - mb
    ys = [y for v in summary.values() for _, y in v.get("mean_curve", [])] + [r["test"] for r in runs]
    lo, hi = _nice_range(ys or [0.0, 1.0])
    x_hi = max([budget] + [r["calls"] for r in runs])

    def X(v: float) -> float:
        return ml + pw * v / x_hi

    def Y(v: float) -> float:
        return mt + ph * (1 - (v - lo) / (hi - lo))

    title = f"{task}: test score vs model calls ({'quick' if quick else 'full'}, mean over seeds)"
    s = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" '
         f'font-family="sans-serif" font-size="11">',
         f'<rect width="{w}" height="{h}" fill="white"/>',
         f'<text x="{ml}" y="20" font-size="13" fill="#111">{title}</text>']
    for t in _ticks(lo, hi):
        s.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{Y(t):.1f}" y2="{Y(t):.1f}" stroke="#eee"/>'
                 f'<text x="{ml - 6}" y="{Y(t) + 4:.1f}" text-anchor="end" fill="#555">{t:.2f}</text>')
    for t in _ticks(0, x_hi):
        s.append(f'<line x1="{X(t):.1f}" x2="{X(t):.1f}" y1="{mt + ph}" y2="{mt + ph + 4}" stroke="#999"/>'
                 f'<text x="{X(t):.1f}" y="{mt + ph + 16}" text-anchor="middle" fill="#555">{t:g}</text>')
    s.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{mt + ph}" y2="{mt + ph}" stroke="#999"/>'
             f'<line x1="{ml}" x2="{ml}" y1="{mt}" y2="{mt + ph}" stroke="#999"/>'
             f'<text x="{ml + pw / 2}" y="{h - 8}" text-anchor="middle" fill="#333">calls to the embedded model'
             f' (budget {budget})</text>'
             f'<text transform="translate(14 {mt + ph / 2}) rotate(-90)" text-anchor="middle" fill="#333">'
             f'test score</text>')
    legend_y = mt + 6
    for line, v in summary.items():
        color = COLORS.get(line, "#444")
        if v.get("mean_curve"):
            pts, prev = [], None
            for x, y in v["mean_curve"]:
                if prev is not None:
                    pts.append(f"{X(x):.1f},{Y(prev):.1f}")
                pts.append(f"{X(x):.1f},{Y(y):.1f}")
                prev = y
            dash = ' stroke-dasharray="5 3"' if v["family"] == "dspy-wrapper" else ""
            s.append(f'<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{" ".join(pts)}"/>')
        else:
            for r in runs:
                if r["line"] == line:
                    s.append(f'<rect x="{X(r["calls"]) - 4:.1f}" y="{Y(r["test"]) - 4:.1f}" width="8" height="8" '
                             f'fill="{color}" stroke="#111" stroke-width="0.5"><title>{line} seed {r["seed"]}: '
                             f'{r["test"]:.3f} at {r["calls"]} calls</title></rect>')
        mean = f'{v["test_mean"]:.3f}' if v["test_mean"] is not None else "-"
        dash = ' stroke-dasharray="5 3"' if v["family"] == "dspy-wrapper" else ""
        mark = (f'<line x1="{ml + pw + 10}" x2="{ml + pw + 28}" y1="{legend_y}" y2="{legend_y}" stroke="{color}" '
                f'stroke-width="2"{dash}/>'
                if v.get("mean_curve") else
                f'<rect x="{ml + pw + 15}" y="{legend_y - 4}" width="8" height="8" fill="{color}"/>')
        s.append(mark + f'<text x="{ml + pw + 34}" y="{legend_y + 4}" fill="#222">{line} {mean}</text>')
        legend_y += 18
    seed_t = next((v["seed_test"] for v in summary.values() if v.get("seed_test") is not None), None)
    if seed_t is not None:
        s.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{Y(seed_t):.1f}" y2="{Y(seed_t):.1f}" stroke="#888" '
                 f'stroke-dasharray="2 3"/><text x="{ml + pw - 4}" y="{Y(seed_t) - 4:.1f}" text-anchor="end" '
                 f'fill="#666">seed {seed_t:.3f}</text>')
    s.append("</svg>")
    return "\n".join(s)


# ---- main -------------------------------------------------------------------------------------------------
def measure(*, quick: bool, tasks: Sequence[str], lines: Sequence[str], seeds: Sequence[int], budget: int,
            out: Path, resume: bool, memo_path: Path | None, wrapper: str) -> dict[str, Any]:
    """Seeds outermost, so an interrupted full run still has every line of every task for the seeds it finished."""
    import logging

    from bench.memo import ModelMemo
    from promptlearn.lm import litellm
    from promptlearn.local import get_model

    os.environ.setdefault("TQDM_DISABLE", "1")
    logging.getLogger("dspy").setLevel(logging.CRITICAL)  # DSPy logs every unparsable reply in full
    WORK.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    get_model("smollm2")
    litellm()
    memo = ModelMemo(memo_path).install()
    loop_options = {"minibatch": 3} if quick else {}
    prev = json.loads(out.read_text()) if resume and out.exists() else {}
    result: dict[str, Any] = {
        "benchmark": "quality", "quick": quick, "budget": budget, "seeds": list(seeds), "lines": list(lines),
        "wrapper": wrapper, "proposer": loaded_proposer(tasks, quick), "loop_options": loop_options, "tasks": {},
        "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()], "memo": str(memo_path) if memo_path else None,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    for t, entry in prev.get("tasks", {}).items():  # tasks not run this time keep their results
        if t not in tasks:
            result["tasks"][t] = entry
    loaded = {t: load(t, quick) for t in tasks}
    scorers = {t: Scorer(loaded[t], WORK) for t in tasks}
    native_failed: dict[str, set[str]] = {t: set() for t in tasks}
    for t in tasks:
        task = loaded[t]
        kept = [r for r in prev.get("tasks", {}).get(t, {}).get("runs", [])
                if r["line"] in lines and r["seed"] in seeds]
        result["tasks"][t] = {"splits": {k: len(v) for k, v in task.splits.items()}, "runs": kept,
                              "max_tokens": task.model.max_tokens, "seed_prompt": task.prompt,
                              "seed_test": scorers[t].test(task.prompt)}
    try:
        for seed in seeds:
            for tname in tasks:
                task, scorer, entry = loaded[tname], scorers[tname], result["tasks"][tname]
                done = {(r["line"], r["seed"]): r for r in prev.get("tasks", {}).get(tname, {}).get("runs", [])}
                for line in lines:
                    if line in WRAPPED and wrapper == "auto" and \
                            "dspy-" + line.rsplit("-", 1)[1] not in native_failed[tname]:
                        continue
                    r = done.get((line, seed))
                    if r is None:
                        r = _one(task, line, budget, seed, scorer, memo, loop_options)
                        entry["runs"].append(r)
                    if line in NATIVE and (r.get("error") or r.get("parse", {}).get("failed", 0) >
                                           r.get("parse", {}).get("ok", 0)):
                        native_failed[tname].add(line)
                    _finish_task(entry, tname, budget, quick, out)
                    _write(out, result)
    finally:
        for sc in scorers.values():
            sc.close()
    result["total_s"] = round(time.perf_counter() - t_all, 1)
    result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    _write(out, result)
    return result


def _one(task: Any, line: str, budget: int, seed: int, scorer: Scorer, memo: Any,
         loop_options: Mapping[str, Any]) -> dict[str, Any]:
    def run() -> dict[str, Any]:
        if line in NATIVE:
            return run_dspy(task, line, budget, seed, scorer, memo)
        return run_promptlearn(task, line, budget, seed, WORK, scorer, memo, loop_options)

    return run_guarded("quality", task.name, line, seed, budget, FAMILY[line], run)


def run_guarded(label: str, tname: str, line: str, seed: int, budget: int, family: str,
                run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """`run()`, logged; an exception becomes a record with the error (one broken line must not lose the others)."""
    print(f"[{label}] {time.strftime('%H:%M:%S')} {tname} {line} seed {seed} budget {budget} ...",
          file=sys.stderr, flush=True)
    try:
        r = run()
    except Exception as e:  # noqa: BLE001 - recorded in the result
        traceback.print_exc(file=sys.stderr)
        r = {"line": line, "family": family, "seed": seed, "test": None, "calls": 0, "wall_s": 0.0,
             "est_wall_s": 0.0, "curve": [[0, 0.0]], "budget": budget, "error": f"{type(e).__name__}: {str(e)[:240]}"}
    print(f"[{label}] {time.strftime('%H:%M:%S')} {tname} {line} seed {seed}: test {r.get('test')} "
          f"calls {r.get('calls')} wall {r.get('wall_s')} s{' error ' + r['error'] if r.get('error') else ''}",
          file=sys.stderr, flush=True)
    return r


def _finish_task(entry: dict[str, Any], tname: str, budget: int, quick: bool, out: Path) -> None:
    runs = [x for x in entry["runs"] if x.get("test") is not None]
    entry["summary"] = summarise(runs, budget)
    entry["goals"] = goals(entry["summary"])
    svg = out.parent / f"quality_{tname}{'_quick' if quick else ''}.svg"
    svg.write_text(svg_plot(tname, entry["summary"], [r for r in runs if r["family"] == "dspy"], budget, quick))
    entry["svg"] = svg.name


def _write(path: Path, result: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
    tmp.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench quality", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="smaller data, 30 calls, seed 0, proposer max_tokens 96, no wrapper lines")
    p.add_argument("--tasks", default="sifeval_rules,tensortrust_guard", help="comma-separated task names")
    p.add_argument("--lines", default=",".join(OURS + NATIVE + WRAPPED), help="comma-separated lines to run")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2; quick 0)")
    p.add_argument("--budget", type=int, default=None, help="model calls per run (default 300; quick 30)")
    p.add_argument("--wrapper", choices=("auto", "always", "never"), default=None,
                   help="run the pl-dspy-* lines only when DSPy's own run failed to parse (auto, the default), "
                        "always or never (the default with --quick)")
    p.add_argument("--memo", default=str(WORK / "memo.sqlite"),
                   help="reply memo shared by runs (greedy replies replayed); 'none' generates every reply")
    p.add_argument("--resume", action="store_true", help="keep runs already in the result file")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    seeds = [int(s) for s in (args.seeds or ("0" if args.quick else "0,1,2")).split(",") if s != ""]
    budget = args.budget or (30 if args.quick else 300)
    lines = [x for x in args.lines.split(",") if x]
    args.wrapper = args.wrapper or ("never" if args.quick else "auto")
    if args.wrapper == "never":
        lines = [x for x in lines if x not in WRAPPED]
    unknown = [x for x in lines if x not in FAMILY]
    if unknown:
        p.error(f"unknown lines {unknown}; choose from {', '.join(FAMILY)}")
    out = args.out or RESULTS / ("quality_quick.json" if args.quick else "quality.json")
    result = measure(quick=args.quick, tasks=[t for t in args.tasks.split(",") if t], lines=lines, seeds=seeds,
                     budget=budget, out=out, resume=args.resume,
                     memo_path=None if args.memo == "none" else Path(args.memo),
                     wrapper=args.wrapper)
    for tname, entry in result["tasks"].items():
        print(f"quality {tname} (seed prompt test {entry.get('seed_test', 0):.3f}):")
        for line, v in entry.get("summary", {}).items():
            print(f"  {line:<15} test {v['test_mean']:.3f} +- {v['test_std']:.3f}  calls {v['calls_mean']:.0f}  "
                  f"wall {v['wall_s_mean']:.0f} s{'  ' + '; '.join(v['errors']) if v['errors'] else ''}")
        g = entry.get("goals", {})
        for key in ("dspy", "dspy_any"):
            gg = g.get(key) or {}
            if gg.get("best"):
                print(f"  vs {key}: {g['best_promptlearn']} {g['best_promptlearn_test']:.3f} vs {gg['best']} "
                      f"{gg['best_test']:.3f}: +5 points {gg.get('goal_plus_5_points')}, reach in "
                      f"{gg.get('calls_to_reach')} of {gg.get('their_calls')} calls: {gg.get('goal_half_calls')}")
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out} in {result['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
