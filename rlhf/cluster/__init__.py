"""Where a job runs: which GPUs each process sees (`devices`), several ranks of one job locally
or as SLURM tasks and what they share (`distributed`), the vLLM server a job starts and stops
(`vllm_server`), and the check of every GPU path on a GPU host (`gpu_check`, with what a
finished check's run dir must show in `findings`).

May import: every side up to rlhf.trl.
"""
