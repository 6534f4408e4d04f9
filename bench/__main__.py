"""`python -m bench <name> [options]`: run one benchmark. Each benchmark is a module in bench/ with `main(argv)`.

Adding a benchmark is one line in BENCHMARKS: its subcommand name and the module that implements it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

BENCHMARKS: dict[str, tuple[str, str]] = {
    # name: (module, one-line description)
    "overhead": ("bench.overhead", "wall time of promptlearn's evaluation path vs llama-cpp-python direct"),
    "guidance": ("bench.guidance", "classifier-free guidance on the system prompt: adherence, side effects, cost vs g"),
    "llama_tuning": ("bench.llama_tuning",
                     "prompt and generation tokens/s of the embedded model per llama.cpp setting"),
    "prefix_reuse": ("bench.prefix_reuse",
                     "wall time with a ~1,500- vs ~50-token system prompt, KV-cache reuse vs naive"),
    "quality": ("bench.quality", "test score per call budget: evolve/optuna/mutate vs DSPy MIPROv2/COPRO/GEPA"),
    "suite": ("bench.rules_suite", "rule adherence: promptlearn vs gepa and DSPy on tasks/rules/*.yaml, same budget"),
    "concurrency": ("bench.concurrency", "engine throughput vs ideal at 1-64 requests in flight (100 ms server)"),
    "parallel": ("bench.parallel", "parallel search: optimize wall time vs ideal at P=1-16 (500 ms server), "
                                   "test score P=1 vs P>1 at equal calls"),
    "workers": ("bench.workers", "1/2/4 worker processes on one PostgreSQL run: throughput (500 ms server, "
                                 "concurrency 4 each), best prompt vs one process at equal calls"),
    "cache": ("bench.cache", "an identical re-run of an optimization makes 0 model calls; its wall time"),
    "handwritten": ("bench.handwritten", "tasks/rules/: seed vs 5 hand-written wordings of each rule, val and test"),
    "transfer": ("bench.transfer", "pirate transfer matrix: one model, greedy vs guidance decoding, as two targets"),
    "operator_prior": ("bench.operator_prior", "evolve's operators on the rule suite: promotions and acceptances "
                                               "per try, per task (the table operator_prior starts from)"),
    "render": ("bench.render", "write BENCHMARKS.md from every JSON result in bench/results/"),
    "all": ("bench.suite", "run overhead, concurrency, cache, quality, guidance, prefix_reuse, then render"),
}


def usage() -> str:
    width = max(map(len, BENCHMARKS))
    rows = "\n".join(f"  {name:<{width}}  {desc}" for name, (_, desc) in BENCHMARKS.items())
    return f"usage: python -m bench <benchmark> [options]\n\nbenchmarks:\n{rows}\n\n" \
           "`python -m bench <benchmark> --help` lists a benchmark's options."


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in BENCHMARKS:
        import difflib

        close = difflib.get_close_matches(name, BENCHMARKS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        print(f"bench: unknown benchmark '{name}'{hint}\n\n{usage()}", file=sys.stderr)
        return 2
    if importlib.util.find_spec(BENCHMARKS[name][0]) is None:
        print(f"bench: {name} is not in this checkout ({BENCHMARKS[name][0].replace('.', '/')}.py missing)",
              file=sys.stderr)
        return 2
    module = importlib.import_module(BENCHMARKS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
