"""What the online methods share (GRPO, RLOO, Online DPO): they sample completions of the
training prompts and score them with rewards, so they share the knobs of sampling and reward,
under one name each, with their checks, their TRL fields and their trainer inputs.

A reward (`method.reward_funcs`) is a reward function, a reward model directory, a hub id or
the run dir of a finished reward-model job (rlhf.rewards.sources tells them apart at
validation). This module registers no method itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rlhf.rewards import sources as reward_sources
from rlhf.config.fields import knob
from rlhf.methods.base import PROMPTS, MethodConfig, MethodSpec

REWARDS_KEY = "method.reward_funcs"


@dataclass
class OnlineMethodConfig(MethodConfig):
    """Sampling and reward knobs every online method has."""

    reward_funcs: list[str] = knob(factory=list, help="rewards, each a reward function module.function, a reward "
                                                      "model dir, a hub id or a finished reward run dir")
    reward_weights: list[float] | None = knob(None, "one weight per reward (default: all 1.0)")
    max_completion_length: int = knob(256, "tokens generated per completion at most", ge=1)
    temperature: float = knob(1.0, "sampling temperature", gt=0)
    top_p: float = knob(1.0, "nucleus sampling mass", gt=0, le=1)
    top_k: int = knob(0, "sample from the k most likely tokens (0: all)", ge=0)
    use_vllm: bool = knob(False, "generate with vLLM instead of transformers")
    vllm_mode: str = knob("server", "vLLM as a separate server process or colocated in training",
                          choices=("server", "colocate"))


@dataclass
class GroupMethodConfig(OnlineMethodConfig):
    """The policy-gradient methods that sample a group of completions per prompt and compare
    each with its group (GRPO, RLOO)."""

    num_generations: int = knob(8, "completions sampled per prompt (the group)", ge=2)
    beta: float = knob(0.0, "KL penalty towards the reference model (0: no reference model)", ge=0)
    epsilon: float = knob(0.2, "lower clipping range of the importance ratio", gt=0)
    epsilon_high: float | None = knob(None, "upper clipping range (None: epsilon; DAPO: 0.28)", gt=0)
    mask_truncated_completions: bool = knob(False, "exclude completions cut at max_completion_length")
    num_iterations: int = knob(1, "optimisation passes per generation batch", ge=1)
    log_completions: bool = knob(False, "log sampled completions with their rewards")


# method.<knob> -> TRL field, the same in GRPOConfig, RLOOConfig and OnlineDPOConfig.
ONLINE_TRL_FIELDS = {name: name for name in ("reward_weights", "temperature", "top_p", "top_k", "use_vllm",
                                             "vllm_mode")}
GROUP_TRL_FIELDS = {**ONLINE_TRL_FIELDS, **{name: name for name in (
    "max_completion_length", "num_generations", "beta", "epsilon", "epsilon_high", "mask_truncated_completions",
    "num_iterations", "log_completions")}}
ONLINE_CONVERT = {"reward_weights": lambda w: None if w is None else list(w)}


def check_online(run: Any) -> list[str]:
    """The rewards resolve (before any model loads), one weight each, and vLLM has GPUs."""
    method = run.method
    problems = []
    if not method.reward_funcs:
        problems.append(f"{REWARDS_KEY} is empty: {method.kind} needs at least one reward: "
                        f"{reward_sources.accepted_forms()}")
    problems += reward_sources.check(list(method.reward_funcs), REWARDS_KEY, run.code_path)
    if method.reward_weights is not None and len(method.reward_weights) != len(method.reward_funcs):
        problems.append(f"method.reward_weights has {len(method.reward_weights)} weights for "
                        f"{len(method.reward_funcs)} rewards ({REWARDS_KEY}): give one weight per reward")
    if method.use_vllm and run.hardware.accelerator != "cuda":
        problems.append(f"method.use_vllm=true needs GPUs (hardware.accelerator=cuda); on CPU, {method.kind} "
                        "generates with transformers (method.use_vllm=false)")
    return problems


def check_group(run: Any) -> list[str]:
    """check_online, plus: every generation batch holds whole groups, and a reference the
    trainer builds itself cannot be a separate copy under an adapter."""
    method = run.method
    problems = check_online(run)
    # TRL samples num_generations completions per prompt from each generation batch.
    generation_batch = method.micro_batch_size * run.hardware.world_size * method.gradient_accumulation_steps
    if generation_batch % method.num_generations:
        problems.append(
            f"the generation batch (method.micro_batch_size={method.micro_batch_size} x {run.hardware.world_size} "
            f"processes x method.gradient_accumulation_steps={method.gradient_accumulation_steps} = "
            f"{generation_batch} completions) must be divisible by method.num_generations="
            f"{method.num_generations}")
    if run.peft.adapter != "none" and run.peft.rl_adapter_ref_model and method.beta > 0:
        problems.append(f"peft.rl_adapter_ref_model=true: {method.kind}'s trainer builds its reference itself, and "
                        "with an adapter it is the policy with the adapter disabled; it takes no separate copy "
                        "(set peft.rl_adapter_ref_model=false)")
    return problems


# vLLM's share of each GPU's memory when vllm.gpu_memory_utilization is None: a server has its
# GPUs to itself; colocated, vLLM shares the training GPU (TRL's own colocate default, 0.3).
MEMORY_SHARE = {"server": 0.9, "colocate": 0.3}


def memory_share(vllm: Any, mode: str) -> float:
    return vllm.gpu_memory_utilization if vllm.gpu_memory_utilization is not None else MEMORY_SHARE[mode]


def vllm_trl_kwargs(run: Any, fields: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The root `vllm` block as the TRL config's vllm_* fields (read only when use_vllm is set);
    `fields` keeps those a trainer's config has."""
    vllm = run.vllm
    kwargs = {
        "vllm_server_host": vllm.host,
        "vllm_server_port": vllm.port,
        "vllm_group_port": vllm.group_port,
        "vllm_server_timeout": vllm.server_timeout,
        "vllm_tensor_parallel_size": vllm.tensor_parallel_size,
        "vllm_gpu_memory_utilization": memory_share(vllm, getattr(run.method, "vllm_mode", "server")),
        "vllm_max_model_length": vllm.max_model_len,
    }
    return kwargs if fields is None else {k: v for k, v in kwargs.items() if k in fields}


def reward_trend(logged: str = "reward") -> Callable[[list[dict]], dict[str, Any]]:
    """The learning figures of an online method: the mean of the logged reward figure `logged`
    over the first and the last tenth of the logged training steps."""

    def trend(history: list[dict]) -> dict[str, Any]:
        rewards = [h[logged] for h in history if logged in h and f"eval_{logged}" not in h]
        if not rewards:
            return {}
        tenth = max(1, len(rewards) // 10)
        first, last = rewards[:tenth], rewards[-tenth:]
        return {"reward_first_tenth": sum(first) / len(first), "reward_last_tenth": sum(last) / len(last),
                "reward_logged_steps": len(rewards)}

    return trend


def reward_inputs(run: Any, columns: list[str]) -> dict[str, Any]:
    """TRL's reward_funcs and reward_processing_classes (each reward model with its own
    tokenizer), every reward function checked against the columns the training rows have. A
    reward model only scores: under bf16/fp16 autocast it is loaded in that dtype, not in the
    dtype it was saved in (a reward model trained in fp32 would take twice the memory on every rank)."""
    from rlhf.core.usercode import check_reward_columns
    from rlhf.models.loading import PRECISION_DTYPES

    sources = reward_sources.resolve_all(list(run.method.reward_funcs), REWARDS_KEY, run.code_path)
    functions, tokenizers = reward_sources.load(sources, REWARDS_KEY, run.code_path, run.model.trust_remote_code,
                                                dtype=PRECISION_DTYPES.get(run.hardware.precision))
    called = [(f, s.entry) for f, s in zip(functions, sources) if not s.is_model]
    check_reward_columns([f for f, _ in called], [name for _, name in called], columns)
    return {"reward_funcs": functions, "reward_processing_classes": tokenizers}


def group_spec(kind: str, schema: type, trl_config: str, trl_trainer: str, trl_fields: dict[str, str],
               check: Callable[[Any], list[str]], convert: dict[str, Callable[[Any], Any]] | None = None,
               presets: tuple[str, ...] = ()) -> MethodSpec:
    """The spec of a group policy-gradient method (GRPO, RLOO): everything the two share, with
    the method's own TRL classes, fields beyond GROUP_TRL_FIELDS, check, conversions and loss
    presets.

    Shared: prompts as rows; the mean reward of the last tenth of the logged steps as the
    learning metric (the logged reward while it trains); no reference model passed in, as the
    trainer loads a frozen copy of the policy itself when there is a KL term (beta > 0; with an
    adapter, the policy with its adapter disabled); the root `vllm` block; no max_length field in
    their TRL config (the data stage still bounds prompts by it); the rewards as trainer inputs."""
    return MethodSpec(
        kind=kind,
        schema=schema,
        shape=PROMPTS,
        trl_config=trl_config,
        trl_trainer=trl_trainer,
        trl_fields={**GROUP_TRL_FIELDS, **trl_fields},
        metric="reward_last_tenth",
        greater_is_better=True,
        progress_metric="reward",
        reference_arg=None,
        trainer_builds_reference=lambda method: method.beta > 0,
        presets=presets,
        check=check,
        convert={**ONLINE_CONVERT, **(convert or {})},
        run_trl=vllm_trl_kwargs,
        not_in_trl=("max_length",),
        summarize=reward_trend("reward"),
        trainer_inputs=reward_inputs,
    )
