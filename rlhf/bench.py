"""python -m rlhf.bench [--only SECTION ...] (make bench): measure the platform against plain TRL
and write BENCHMARKS.md (rlhf.dev.bench.suite)."""

from rlhf.dev.bench.suite import main

if __name__ == "__main__":
    main()
