"""Benchmarks: `make bench` runs `python -m rlhf.bench` (cli), which measures each section
(suite), writes its record to benchmarks/<section>.json (record) and renders BENCHMARKS.md from
the records alone (document). The plain TRL baselines are plain_trl and plain_trl_data; what each
side ran with is read back by settings."""
