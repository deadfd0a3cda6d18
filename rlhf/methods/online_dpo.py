"""Online DPO (Guo et al. 2024): DPO on pairs the policy makes itself. For each prompt it samples
two completions, the rewards pick the chosen and the rejected one, and the DPO loss (sigmoid, or
IPO's) against the reference model trains on that pair (TRL's experimental OnlineDPOTrainer).
Its sampling and reward knobs are GRPO's, under the same names (rlhf.methods.online); it always
samples two completions per prompt, so it has no num_generations.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlhf.config.fields import knob
from rlhf.methods.base import PROMPTS, MethodSpec, register
from rlhf.methods.online import (
    ONLINE_CONVERT,
    ONLINE_TRL_FIELDS,
    OnlineMethodConfig,
    check_online,
    reward_inputs,
    reward_trend,
    vllm_trl_kwargs,
)

ONLINE_DPO_LOSSES = ("sigmoid", "ipo")
# The vllm_* fields OnlineDPOConfig has (it sizes vLLM's context as max_length + max_new_tokens).
VLLM_FIELDS = ("vllm_server_host", "vllm_server_port", "vllm_group_port", "vllm_server_timeout",
               "vllm_tensor_parallel_size", "vllm_gpu_memory_utilization")


@dataclass
class OnlineDPOMethod(OnlineMethodConfig):
    kind: str = "online_dpo"
    beta: float = knob(0.1, "strength of the pull towards the reference model (IPO: tau)", gt=0)
    loss_type: str = knob("sigmoid", "DPO loss on each sampled pair", choices=ONLINE_DPO_LOSSES)
    missing_eos_penalty: float | None = knob(None, "subtracted from the reward of a completion that does not "
                                                   "end (no end-of-sequence token)", ge=0)


SPEC = register(MethodSpec(
    kind="online_dpo",
    schema=OnlineDPOMethod,
    shape=PROMPTS,
    trl_config="trl.experimental.online_dpo:OnlineDPOConfig",
    trl_trainer="trl.experimental.online_dpo:OnlineDPOTrainer",
    trl_fields={
        **ONLINE_TRL_FIELDS,
        "max_completion_length": "max_new_tokens",
        "beta": "beta",
        "loss_type": "loss_type",
        "missing_eos_penalty": "missing_eos_penalty",
    },
    metric="reward_last_tenth",
    greater_is_better=True,
    # The mean reward of the sampled completions, as OnlineDPOTrainer logs it.
    progress_metric="objective/scores",
    # DPO always compares against a reference: a separate frozen copy, or with an adapter the
    # policy with its adapter disabled (the trainer gets None and disables it).
    reference_arg="ref_model",
    check=check_online,
    convert=ONLINE_CONVERT,
    run_trl=lambda run: vllm_trl_kwargs(run, VLLM_FIELDS),
    summarize=reward_trend("objective/scores"),
    trainer_inputs=reward_inputs,
))
