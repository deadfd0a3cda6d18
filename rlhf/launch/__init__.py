"""The launching side, where Hydra lives: the schemas and resolvers registered with Hydra
(`store`), one job composed as Hydra will (`compose`), the command line that validates every job
of a command before Hydra starts any (`cli`), the function Hydra runs once per job (`task`), the
end of a sweep (`sweep`) and `--help` (`help`); and the command lines that compose a run from
overrides without training it: `evaluate` (python -m rlhf.evaluate), `preview` and `vllm_serve`.

May import: every side up to rlhf.job.
"""

from rlhf import job  # noqa: F401  (every side registers its part of validation before a config is composed)
