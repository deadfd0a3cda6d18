"""python -m rlhf.gpu_check [--out DIR] [--only NAME,...] [--list] (make gpu-check): every GPU
path of the platform, run on a GPU host (rlhf.cluster.gpu_check)."""

import sys

from rlhf.cluster.gpu_check import main

if __name__ == "__main__":
    sys.exit(main())
