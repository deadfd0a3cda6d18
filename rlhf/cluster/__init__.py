"""Where a job runs: which GPUs each process sees (`devices`), several ranks of one job locally
or as SLURM tasks and what they share (`distributed`), the vLLM server a job starts and stops
(`vllm_server`), and the check of every GPU path on a GPU host (`gpu_check`).

May import: every side up to rlhf.trl.
"""
