"""The run-dir contract: every file a job leaves in its run dir, by name (`files`), the run dir's
records (`rundir`: config.yaml, env.json, metrics.json, SUCCESS last, FAILED, checkpoints), and
how run dirs are named after their overrides (`naming`).

Every rank reads only `config.yaml` of its run dir; rank 0 alone writes there.

May import: rlhf.core, rlhf.assets, rlhf.config.
"""
