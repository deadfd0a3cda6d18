"""The typed config: a schema per config group (`schema`), knobs that carry their help and
valid range (`fields`), validation of a whole run into a `RunSpec` with every problem at once
(`validate`), the checks that span groups (`checks`), and the messages that explain a bad key or
value (`explain`). Where the config tree lives on disk is `tree`.

Validation also runs what the sides above register in `registry`: each method's spec (with its
own check), and the data and judge sides' run checks.

May import: rlhf.core, rlhf.assets. No Hydra (composing is rlhf.launch's), no torch.
"""
