"""python -m rlhf.docs [--check]: the README's generated sections, from the code itself
(rlhf.dev.docs)."""

from rlhf.dev.docs import main

if __name__ == "__main__":
    main()
