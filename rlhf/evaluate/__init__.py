"""Judging a policy by what it generates: the generation eval stage.

    prompts -> the policy's completions -> scores (reward functions, reward models)
            -> win rate against the reference policy's completions (generated once per sweep)
            -> KL(policy || reference) on the policy's own completions -> completion length
            -> completions.jsonl + the `generation` block of metrics.json

The stage is configured by the root `evaluate` block (rlhf.config.schema.EvaluateConfig) and
runs at the end of training (rlhf.runner), every N steps if asked, and on any checkpoint
through `python -m rlhf.evaluate`. Modules:

- `checks`: what can be known from the config alone (no torch), run by validation;
- `prompts`: the prompt rows (the eval data's distinct prompts, or a file / hub dataset);
- `scorers`: reward functions and reward models, each named in the results;
- `generate`: sampling completions and their token log-probs (transformers);
- `stage`: the stage itself, the shared reference completions and the results.
"""
