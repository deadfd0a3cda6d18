"""Judging: what a policy generates, and which setting of a sweep gave the better model.

The generation eval stage:

    prompts -> the policy's completions -> scores (reward functions, reward models)
            -> win rate against the reference policy's completions (generated once per sweep)
            -> KL(policy || reference) on the policy's own completions -> completion length
            -> completions.jsonl + the `generation` block of metrics.json

The stage is configured by the root `evaluate` block (rlhf.config.schema.EvaluateConfig) and
runs at the end of training (rlhf.job.runner), every N steps if asked, and on any checkpoint
through `python -m rlhf.evaluate` (rlhf.judge.checkpoint). Modules:

- `checks`: what can be known from the config alone (no torch), registered with validation;
- `prompts`: the prompt rows (the eval data's distinct prompts, or a file / hub dataset);
- `scorers`: reward functions and reward models, each named in the results;
- `generate`: sampling completions and their token log-probs (transformers);
- `stage`: the stage itself, the shared reference completions and the results;
- `checkpoint`: the stage on a saved checkpoint (the Python side of `python -m rlhf.evaluate`);
- `report`: a sweep's table, plot and best-setting sentence; `paired`: a sweep's generation
  figures prompt by prompt; `stats`: intervals, the two-level model, Holm, power, length control.

May import: every side up to rlhf.data.
"""

from rlhf.judge import checks  # noqa: F401  (registers the evaluate block's checks with validation)
