"""Prompt-processing and generation throughput of the embedded model (SmolLM2-135M, Q4_1) per llama.cpp setting.

Each setting is a set of `Llama(...)` arguments (threads, batch sizes, flash attention, KV-cache type) applied on
top of BASE, the settings promptlearn.local used before this benchmark. Builds of llama-cpp-python other than the
installed one (e.g. an OpenBLAS build in a throwaway venv) are measured by running this file with that venv's
python: `--build blas=/tmp/venv-blas/bin/python`.

One measurement, llama-bench style, on a freshly loaded model (load time not counted):
  pp  prompt processing: evaluate --prompt-tokens tokens of an English system prompt from an empty KV cache;
  tg  generation: then --gen-tokens single-token decode steps on top of that context (no sampling cost).
Rounds interleave everything: each round runs every (build, setting) once in a fresh seeded shuffle, so drift in
machine load hits all settings alike; medians over rounds are reported, with the load average seen.

    python -m bench llama_tuning                 # all settings, 5 rounds
    python -m bench llama_tuning --quick         # 2 rounds, shorter prompt
    python -m bench llama_tuning --build blas=/tmp/venv-blas/bin/python

Writes bench/results/llama_tuning.json and llama_tuning.md (llama_tuning_quick.* with --quick). Text under the
"## Interpretation" heading of an existing .md is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CPUS = os.cpu_count() or 1

# promptlearn.local's settings before tuning: all cores for both phases, llama-cpp-python's default batches.
BASE: dict[str, Any] = {"n_threads": CPUS, "n_threads_batch": CPUS, "n_batch": 512, "n_ubatch": 512,
                        "flash_attn": False, "type_k": None, "type_v": None}
GGML_TYPE_Q8_0, GGML_TYPE_Q4_0 = 8, 2

T1 = {"n_threads": 1, "n_threads_batch": 1}
PASSIVE = {"env": {"OMP_WAIT_POLICY": "PASSIVE"}}  # read by libgomp when it loads: a separate worker process
SETTINGS: dict[str, dict[str, Any]] = {
    "base": {},                                   # threads 2/2 (all cores), batch 512, ubatch 512, f16 KV
    "t1": T1,                                     # one thread for generation and prompt
    "t1-pp2": {"n_threads": 1, "n_threads_batch": 2},
    "t2-pp1": {"n_threads": 2, "n_threads_batch": 1},
    "t1-ub128": {**T1, "n_ubatch": 128},
    "t1-ub256": {**T1, "n_ubatch": 256},
    "t1-b2048": {**T1, "n_batch": 2048, "n_ubatch": 2048},
    "t1-fa": {**T1, "flash_attn": True},
    "t1-fa-kvq8": {**T1, "flash_attn": True, "type_k": GGML_TYPE_Q8_0, "type_v": GGML_TYPE_Q8_0},
    "base-passive": PASSIVE,
    "t1-pp2-passive": {"n_threads": 1, "n_threads_batch": 2, **PASSIVE},
    # promptlearn.local.threads(): before each phase, the cores that no other process is running on
    "auto": {"auto_threads": True},
}
QUICK = ["base", "t1", "auto"]
# Left out by default: with 2 spinning generation threads on busy cores one measurement takes minutes.
DEFAULT = [n for n in SETTINGS if n not in ("t2-pp1", "t1-pp2")]

TEXT = ("You are the support assistant of a shipping company. Answer the customer's question in plain words, "
        "cite the tracking number when one is given, never promise a delivery date, and when the parcel is "
        "lost, apologise once and open a claim. Keep every reply under five sentences. ")


def measure(model: str, settings: dict[str, dict[str, Any]], order: list[str], prompt_tokens: int,
            gen_tokens: int) -> list[dict[str, Any]]:
    """Worker side: one measurement per setting, in the given order, in this process's llama-cpp-python."""
    import llama_cpp
    from llama_cpp import Llama

    sys.path.insert(0, str(ROOT))
    from promptlearn.llama_load import without_amx
    from promptlearn.local import threads  # the same choice promptlearn makes (no llama_cpp import there)

    out = []
    for name in order:
        params = {**BASE, **settings[name]}
        kw = {k: v for k, v in params.items() if v is not None and k not in ("env", "auto_threads")}
        with without_amx():
            llama = Llama(model_path=model, n_ctx=max(2048, prompt_tokens + gen_tokens + 16), seed=0, verbose=False,
                          **kw)
        tokens = llama.tokenize((TEXT * (prompt_tokens // 40 + 2)).encode(), add_bos=False)[:prompt_tokens]
        llama.eval(tokens[:32])  # warm up: first-touch of weights and buffers
        llama.reset()
        load = os.getloadavg()[0]
        used = []

        def auto(llama: Any, params: dict[str, Any], used: list[int]) -> None:
            if params.get("auto_threads"):
                n = threads()
                llama_cpp.llama_set_n_threads(llama._ctx.ctx, n, n)
                used.append(n)

        auto(llama, params, used)
        t0 = time.perf_counter()
        llama.eval(tokens)
        pp_end = time.perf_counter()
        auto(llama, params, used)
        t1 = time.perf_counter()  # the /proc look-up is not generation time
        for i in range(gen_tokens):
            llama.eval([tokens[i]])
        t2 = time.perf_counter()
        pp_s = pp_end - t0
        out.append({"setting": name, "params": params, "pp_tps": prompt_tokens / pp_s,
                    "tg_tps": gen_tokens / (t2 - t1), "pp_s": pp_s, "tg_s": t2 - t1, "load": load,
                    "auto_threads_used": used,
                    "system_info": llama_cpp.llama_print_system_info().decode().strip()})
        llama.close() if hasattr(llama, "close") else None
        del llama
    return out


def run_worker(python: str, model: str, order: list[str], prompt_tokens: int, gen_tokens: int,
               on_result: Any = None) -> list[dict]:
    """Measure `order` in worker processes of `python`: one per run of settings with the same environment
    (variables such as OMP_WAIT_POLICY are read when the library loads)."""
    out: list[dict] = []
    i = 0
    while i < len(order):
        env = SETTINGS[order[i]].get("env", {})
        j = i
        while j < len(order) and SETTINGS[order[j]].get("env", {}) == env:
            j += 1
        cmd = [python, str(Path(__file__).resolve()), "--worker", "--model", model, "--order",
               json.dumps(order[i:j]), "--prompt-tokens", str(prompt_tokens), "--gen-tokens", str(gen_tokens)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, **env})
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("{"):
                x = json.loads(line)
                out.append(x)
                if on_result:
                    on_result(x)
        if proc.wait() != 0:
            raise SystemExit(f"bench llama_tuning: worker {python} failed:\n{proc.stderr.read()[-2000:]}")
        i = j
    return out


def llama_version(python: str) -> str:
    code = "import llama_cpp; print(llama_cpp.__version__)"
    return subprocess.run([python, "-c", code], capture_output=True, text=True).stdout.strip()


def summarize(samples: list[dict], builds: dict[str, str], names: list[str]) -> list[dict]:
    rows = []
    for build in builds:
        for name in names:
            s = [x for x in samples if x["build"] == build and x["setting"] == name]
            if not s:
                continue
            rows.append({"build": build, "setting": name, "params": s[0]["params"], "n": len(s),
                         "pp_tps_median": statistics.median(x["pp_tps"] for x in s),
                         "tg_tps_median": statistics.median(x["tg_tps"] for x in s),
                         "pp_tps_all": [round(x["pp_tps"], 1) for x in s],
                         "tg_tps_all": [round(x["tg_tps"], 1) for x in s],
                         "load_median": statistics.median(x["load"] for x in s),
                         "system_info": s[0]["system_info"]})
    base = {r["build"]: r for r in rows if r["setting"] == names[0]}
    ref = base.get("default") or next(iter(base.values()), None)
    for r in rows:
        if ref:
            r["pp_vs_base"] = r["pp_tps_median"] / ref["pp_tps_median"]
            r["tg_vs_base"] = r["tg_tps_median"] / ref["tg_tps_median"]
    return rows


def write_md(path: Path, report: dict) -> None:
    keep = ""
    if path.exists():
        old = path.read_text()
        if "## Interpretation" in old:
            keep = old[old.index("## Interpretation"):]
    c = report["config"]
    lines = [
        "# llama.cpp settings for the embedded model (SmolLM2-135M-Instruct Q4_1)",
        "",
        f"`python -m bench llama_tuning{' --quick' if c['quick'] else ''}` — {c['rounds']} interleaved rounds, "
        f"prompt {c['prompt_tokens']} tokens, generation {c['gen_tokens']} tokens, {c['cpus']} cores "
        f"({c['cpu']}), load average during the run {c['load_min']:.1f}–{c['load_max']:.1f} "
        "(a shared machine: other test runs were competing for the cores). Medians over rounds; "
        "x base = ratio to the first row of the default build.",
        "",
        "| build | setting | prompt tok/s | x base | gen tok/s | x base | prompt tok/s per round "
        "| gen tok/s per round |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in report["results"]:
        lines.append(f"| {r['build']} | {r['setting']} | {r['pp_tps_median']:.0f} | {r.get('pp_vs_base', 1):.2f} | "
                     f"{r['tg_tps_median']:.1f} | {r.get('tg_vs_base', 1):.2f} | "
                     f"{', '.join(f'{v:.0f}' for v in r['pp_tps_all'])} | "
                     f"{', '.join(f'{v:.0f}' for v in r['tg_tps_all'])} |")
    lines += ["", "Builds:", ""]
    for b, info in report["builds"].items():
        lines.append(f"- **{b}**: llama-cpp-python {info['version']} ({info['python']}); "
                     f"`{info['system_info']}`{'; CMAKE_ARGS ' + info['cmake_args'] if info.get('cmake_args') else ''}")
    lines.append("")
    path.write_text("\n".join(lines) + "\n" + (keep or "## Interpretation\n\n(to be written)\n"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench llama_tuning", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="2 rounds, 256-token prompt, 3 settings")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--prompt-tokens", type=int, default=None)
    p.add_argument("--gen-tokens", type=int, default=None)
    p.add_argument("--only", default=None, help="comma-separated setting names (default: all)")
    p.add_argument("--build", action="append", default=[],
                   help="NAME=PYTHON[:CMAKE_ARGS]: also measure the llama-cpp-python installed for PYTHON")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", default=None, help=argparse.SUPPRESS)
    p.add_argument("--order", default=None, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="results file stem (default llama_tuning[_quick])")
    a = p.parse_args(argv)
    prompt_tokens = a.prompt_tokens or (256 if a.quick else 1024)
    gen_tokens = a.gen_tokens or (16 if a.quick else 64)
    if a.worker:
        for name in json.loads(a.order):  # one JSON line per measurement, as soon as it is done
            print(json.dumps(measure(a.model, SETTINGS, [name], prompt_tokens, gen_tokens)[0]), flush=True)
        return 0

    sys.path.insert(0, str(ROOT))
    from promptlearn.local import resolve_gguf

    model = str(resolve_gguf("smollm2"))
    names = [n.strip() for n in a.only.split(",")] if a.only else (QUICK if a.quick else DEFAULT)
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        raise SystemExit(f"bench llama_tuning: unknown settings {unknown}; known: {list(SETTINGS)}")
    builds = {"default": sys.executable}
    cmake: dict[str, str] = {}
    for spec in a.build:
        name, _, rest = spec.partition("=")
        python, _, args = rest.partition(":")
        builds[name], cmake[name] = python, args
    rounds = a.rounds or (2 if a.quick else 5)
    rng = random.Random(a.seed)
    samples: list[dict] = []
    for r in range(rounds):
        build_order = list(builds)
        rng.shuffle(build_order)
        for build in build_order:
            order = list(names)
            rng.shuffle(order)

            def show(x: dict, build: str = build, r: int = r) -> None:
                samples.append({**x, "build": build, "round": r})
                print(f"round {r + 1}/{rounds} {build:>8} | {x['setting']:<16} pp {x['pp_tps']:7.1f} tok/s  "
                      f"tg {x['tg_tps']:6.1f} tok/s  (load {x['load']:.1f})", flush=True)

            run_worker(builds[build], model, order, prompt_tokens, gen_tokens, show)
        write(samples, builds, cmake, names, model, rounds, prompt_tokens, gen_tokens, a, r + 1)
    return 0


def write(samples: list[dict], builds: dict[str, str], cmake: dict[str, str], names: list[str], model: str,
          rounds: int, prompt_tokens: int, gen_tokens: int, a: Any, done: int) -> None:
    """Write the results so far (after every round: a long run stopped early still leaves its data)."""
    results = summarize(samples, builds, names)
    loads = [s["load"] for s in samples]
    report = {
        "benchmark": "llama_tuning",
        "config": {"quick": a.quick, "rounds": done, "rounds_planned": rounds, "prompt_tokens": prompt_tokens,
                   "gen_tokens": gen_tokens,
                   "cpus": CPUS, "cpu": platform.processor() or platform.machine(), "model": Path(model).name,
                   "base": BASE, "load_min": min(loads), "load_max": max(loads), "seed": a.seed,
                   "when": time.strftime("%Y-%m-%dT%H:%M:%S")},
        "builds": {b: {"python": py, "version": llama_version(py), "cmake_args": cmake.get(b, ""),
                       "system_info": next(s["system_info"] for s in samples if s["build"] == b)}
                   for b, py in builds.items()},
        "results": results,
        "samples": samples,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = a.out or ("llama_tuning_quick" if a.quick else "llama_tuning")
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    write_md(RESULTS / f"{stem}.md", report)
    print(f"wrote {RESULTS / (stem + '.json')} and {RESULTS / (stem + '.md')} ({done}/{rounds} rounds)")


if __name__ == "__main__":
    sys.exit(main())
