"""Benchmarks for promptlearn. Run them with `python -m bench <name> [options]`; results go to bench/results/."""
