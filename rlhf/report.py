"""python -m rlhf.report <sweep dir> [--metric NAME]: a sweep's tables, plot and best-setting
sentence, written again (rlhf.judge.report)."""

from rlhf.judge.report import main

if __name__ == "__main__":
    main()
