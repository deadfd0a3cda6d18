"""Benchmarks: `make bench` runs `python -m rlhf.bench` and writes BENCHMARKS.md."""
