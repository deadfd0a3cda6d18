"""GRPO: online RL from reward functions over groups of sampled completions (TRL GRPOTrainer).

The loss variants (`method=grpo|bnpo|dr_grpo|dapo`) are thin presets in conf/method/ that set
every coupled setting of their paper, not just loss_type. Generation runs in transformers, or
in vLLM (`method.use_vllm`, `method.vllm_mode=server|colocate`, the root `vllm` block).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlhf.config.fields import knob
from rlhf.methods.base import PROMPTS, MethodConfig, MethodSpec, register
from rlhf.usercode import check_reward_columns, load_reward_functions

GRPO_LOSSES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo")
SCALE_REWARDS = ("group", "batch", "none")


@dataclass
class GRPOMethod(MethodConfig):
    kind: str = "grpo"
    reward_funcs: list[str] = knob(factory=list, help="reward functions, each module.function")
    reward_weights: list[float] | None = knob(None, "one weight per reward function (default: all 1.0)")
    num_generations: int = knob(8, "completions sampled per prompt (the group)", ge=2)
    max_completion_length: int = knob(256, "tokens generated per completion at most", ge=1)
    temperature: float = knob(1.0, "sampling temperature", gt=0)
    top_p: float = knob(1.0, "nucleus sampling mass", gt=0, le=1)
    top_k: int = knob(0, "sample from the k most likely tokens (0: all)", ge=0)
    beta: float = knob(0.0, "KL penalty towards the reference model (0: no reference model)", ge=0)
    loss_type: str = knob("dapo", "loss aggregation", choices=GRPO_LOSSES)
    epsilon: float = knob(0.2, "lower clipping range of the importance ratio", gt=0)
    epsilon_high: float | None = knob(None, "upper clipping range (None: epsilon; DAPO: 0.28)", gt=0)
    scale_rewards: str = knob("group", "advantage normalisation by the reward std", choices=SCALE_REWARDS)
    mask_truncated_completions: bool = knob(False, "exclude completions cut at max_completion_length")
    num_iterations: int = knob(1, "optimisation passes per generation batch", ge=1)
    importance_sampling_level: str = knob("token", "importance ratio per token or per sequence (GSPO)",
                                          choices=("token", "sequence"))
    use_vllm: bool = knob(False, "generate with vLLM instead of transformers")
    vllm_mode: str = knob("server", "vLLM as a separate server process or colocated in training",
                          choices=("server", "colocate"))
    log_completions: bool = knob(False, "log sampled completions with their rewards")


def check_grpo(run: Any) -> list[str]:
    from rlhf.errors import RlhfError

    method = run.method
    problems = []
    if not method.reward_funcs:
        problems.append("method.reward_funcs is empty: GRPO needs at least one reward function (module.function)")
    else:
        try:
            load_reward_functions(list(method.reward_funcs), run.code_path)
        except RlhfError as error:
            problems.append(str(error))
    if method.reward_weights is not None and len(method.reward_weights) != len(method.reward_funcs):
        problems.append(f"method.reward_weights has {len(method.reward_weights)} weights for "
                        f"{len(method.reward_funcs)} reward functions: give one weight per function")
    # TRL samples num_generations completions per prompt from each generation batch.
    generation_batch = method.micro_batch_size * run.hardware.world_size * method.gradient_accumulation_steps
    if generation_batch % method.num_generations:
        problems.append(
            f"the generation batch (method.micro_batch_size={method.micro_batch_size} x {run.hardware.world_size} "
            f"processes x method.gradient_accumulation_steps={method.gradient_accumulation_steps} = "
            f"{generation_batch} completions) must be divisible by method.num_generations="
            f"{method.num_generations}")
    if method.loss_type == "luspo" and method.importance_sampling_level != "sequence":
        problems.append("method.loss_type=luspo needs method.importance_sampling_level=sequence")
    if method.use_vllm and run.hardware.accelerator != "cuda":
        problems.append("method.use_vllm=true needs GPUs (hardware.accelerator=cuda); on CPU, GRPO generates "
                        "with transformers (method.use_vllm=false)")
    return problems


def vllm_trl_kwargs(run: Any) -> dict[str, Any]:
    """The root `vllm` block, as GRPOConfig's vllm_* fields (read only when use_vllm is set)."""
    vllm = run.vllm
    return {
        "vllm_server_host": vllm.host,
        "vllm_server_port": vllm.port,
        "vllm_group_port": vllm.group_port,
        "vllm_server_timeout": vllm.server_timeout,
        "vllm_tensor_parallel_size": vllm.tensor_parallel_size,
        "vllm_gpu_memory_utilization": vllm.gpu_memory_utilization,
        "vllm_max_model_length": vllm.max_model_len,
    }


def reward_trend(history: list[dict]) -> dict[str, Any]:
    """Mean reward over the first and the last tenth of the logged training steps."""
    rewards = [h["reward"] for h in history if "reward" in h and "eval_reward" not in h]
    if not rewards:
        return {}
    tenth = max(1, len(rewards) // 10)
    first, last = rewards[:tenth], rewards[-tenth:]
    return {"reward_first_tenth": sum(first) / len(first), "reward_last_tenth": sum(last) / len(last),
            "reward_logged_steps": len(rewards)}


def reward_functions(run: Any, columns: list[str]) -> dict[str, Any]:
    """GRPOTrainer's reward_funcs, each checked against the columns the training rows have."""
    names = list(run.method.reward_funcs)
    functions = load_reward_functions(names, run.code_path)
    check_reward_columns(functions, names, columns)
    return {"reward_funcs": functions}


SPEC = register(MethodSpec(
    kind="grpo",
    schema=GRPOMethod,
    shape=PROMPTS,
    trl_config="trl:GRPOConfig",
    trl_trainer="trl:GRPOTrainer",
    trl_fields={
        "reward_weights": "reward_weights",
        "num_generations": "num_generations",
        "max_completion_length": "max_completion_length",
        "temperature": "temperature",
        "top_p": "top_p",
        "top_k": "top_k",
        "beta": "beta",
        "loss_type": "loss_type",
        "epsilon": "epsilon",
        "epsilon_high": "epsilon_high",
        "scale_rewards": "scale_rewards",
        "mask_truncated_completions": "mask_truncated_completions",
        "num_iterations": "num_iterations",
        "importance_sampling_level": "importance_sampling_level",
        "use_vllm": "use_vllm",
        "vllm_mode": "vllm_mode",
        "log_completions": "log_completions",
    },
    metric="reward_last_tenth",
    greater_is_better=True,
    # reward_last_tenth exists only once training ended; while it trains, the logged reward.
    progress_metric="reward",
    reference_arg=None,
    # With a KL term (beta > 0) TRL loads a frozen copy of the policy itself.
    trainer_builds_reference=lambda method: method.beta > 0,
    # The loss presets of conf/method/ (each sets every coupled setting of its paper).
    presets=("bnpo", "dr_grpo", "dapo"),
    check=check_grpo,
    convert={"reward_weights": lambda w: None if w is None else list(w)},
    run_trl=vllm_trl_kwargs,
    # GRPOConfig has no max_length; the data stage still bounds prompts by it.
    not_in_trl=("max_length",),
    summarize=reward_trend,
    trainer_inputs=reward_functions,
))
