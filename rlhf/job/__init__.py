"""One job from its run dir: the process set up for it (`process`), the job itself as named
steps (`runner`), one rank started by torchrun (`worker`), the progress line (`progress`),
SLURM's warning signals (`preemption`) and the W&B run (`wandb_run`).

Importing this package imports every side that registers part of validation (rlhf.methods,
rlhf.data, rlhf.judge), so a job validates its config.yaml exactly as the launcher did.

May import: every side up to rlhf.judge.
"""

from rlhf import data, judge, methods  # noqa: F401  (each registers its part of validation)
