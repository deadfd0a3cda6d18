"""For the people who build the platform: the README's generated tables (`docs`) and the
benchmarks against plain TRL (`bench`).

May import: every side.
"""
