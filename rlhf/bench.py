"""python -m rlhf.bench [--only SECTION ...] [--out-dir DIR] [--render | --check] (make bench):
measure the platform against plain TRL, write each section's record to benchmarks/<section>.json
and render BENCHMARKS.md from the records (rlhf.dev.bench.cli)."""

import sys

from rlhf.dev.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
