"""Typed schemas of the config groups other than `method` (methods keep theirs beside their
TRL mapping, in rlhf/methods). Each shipped YAML option extends one of these through its
defaults list, so Hydra rejects a typo'd key or a wrong type at compose time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING

from rlhf.config.fields import knob

DTYPES = ("auto", "float32", "bfloat16", "float16")
ATTENTION = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")
PRECISIONS = ("fp32", "bf16", "fp16")
ACCELERATORS = ("cpu", "cuda")
DISTRIBUTED = ("none", "ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3")
SHARDED = ("fsdp", "deepspeed_zero3")  # strategies where no rank holds whole weights
DS_TYPES = ("json", "jsonl", "csv", "parquet", "arrow", "text")
EXCESS_LENGTH = ("drop", "raise", "truncate")


@dataclass
class ModelConfig:
    name_or_path: str = knob(MISSING, "hub id or local checkpoint directory of the policy")
    revision: str | None = knob(None, "hub revision (branch, tag or commit)")
    tokenizer: str | None = knob(None, "tokenizer hub id or directory (default: name_or_path)")
    dtype: str = knob("auto", "weights dtype when loading", choices=DTYPES)
    attn_implementation: str | None = knob(None, "attention kernel (None: transformers' choice)",
                                           choices=ATTENTION)
    chat_template: str | None = knob(
        None, "override the tokenizer's chat template: chatml, llama3, a .jinja path or a template"
    )
    trust_remote_code: bool = knob(False, "allow model code from the hub")


@dataclass
class SourceConfig:
    """One dataset: where it is, and which type turns its rows into training rows."""

    path: str = knob(MISSING, "hub dataset id, or a local file or directory")
    name: str | None = knob(None, "hub dataset config name")
    split: str = knob("train", "split to read")
    revision: str | None = knob(None, "hub dataset revision")
    ds_type: str | None = knob(None, "local file format (default: from the extension)", choices=DS_TYPES)
    data_files: Any = knob(None, "a file, a list of files or a directory, relative to path")
    # A type string (family.mapping, e.g. chatml.intel), a user transform file.fn, or a
    # mapping for user_defined.default. None: rows already hold the trainer's columns.
    type: Any = knob(None, "dataset type: family.mapping, file.fn, or a user_defined mapping")
    field_messages: str | None = knob(None, "chat_template: column with the conversation")
    field_chosen: str | None = knob(None, "chat_template: column with the chosen answer")
    field_rejected: str | None = knob(None, "chat_template: column with the rejected answer")
    message_property_mappings: dict[str, str] | None = knob(None, "chat_template: role/content keys")
    roles: dict[str, list[str]] | None = knob(None, "chat_template: target role -> source role names")
    unpair: bool = knob(False, "KTO: turn preference pairs into unpaired rows with labels")
    drop_empty: bool = knob(False, "drop rows with an empty answer instead of failing (count reported)")
    num_rows: int | None = knob(None, "use only the first N rows (quick tries)", ge=1)


@dataclass
class DatasetConfig(SourceConfig):
    """The training data: a primary source (the keys above), more sources, and an eval set."""

    extra: list[SourceConfig] = knob(factory=list, help="more training sources, each with its own type")
    eval: list[SourceConfig] = knob(factory=list, help="separate eval sources")
    eval_split: str | None = knob(None, "a split of the primary source to evaluate on")
    val_set_size: float = knob(0.0, "fraction (< 1) or number of training rows held out for eval", ge=0)
    excess_length: str = knob("drop", "rows longer than method.max_length: drop, raise or truncate",
                              choices=EXCESS_LENGTH)
    shuffle: bool = knob(True, "shuffle the training rows with the run's seed")
    num_proc: int | None = knob(None, "processes that format and tokenize the rows (None: the job's CPUs, "
                                      "hardware.cpus_per_process per training process)", ge=1)


@dataclass
class HardwareConfig:
    """What one job needs; launchers take their resources from here."""

    accelerator: str = knob("cpu", "cpu or cuda", choices=ACCELERATORS)
    precision: str = knob("fp32", "training precision", choices=PRECISIONS)
    nodes: int = knob(1, "nodes per job", ge=1)
    processes_per_node: int = knob(1, "training processes per node", ge=1)
    gpus_per_node: int = knob(0, "GPUs per node", ge=0)
    cpus_per_process: int = knob(2, "CPU cores per training process", ge=1)
    mem_gb: int = knob(8, "memory per node, GiB", ge=1)
    distributed: str = knob("none", "multi-process strategy", choices=DISTRIBUTED)
    activation_checkpointing: bool = knob(False, "recompute activations in backward to save memory")
    train_gpus: list[int] | None = knob(None, "GPU ids that train (None: all visible ones but vllm_gpus)")
    vllm_gpus: list[int] | None = knob(None, "GPU ids the vLLM server uses (online methods, vllm_mode=server)")
    dataloader_num_workers: int = knob(0, "data-loading worker processes per training process", ge=0)
    torch_threads: int = knob(0, "intra-op CPU threads per process (0: cpus_per_process)", ge=0)
    # Why: rlhf.job.process.keep_freed_memory (freed step tensors otherwise fault in again).
    malloc_keep_mb: int = knob(256, "freed memory a CPU process keeps for reuse, MiB (0: the C library's "
                                    "default)", ge=0)

    @property
    def world_size(self) -> int:
        """Training processes of one job, over all its nodes."""
        return self.nodes * self.processes_per_node


@dataclass
class PeftConfig:
    adapter: str = knob("none", "parameter-efficient fine-tuning", choices=("none", "lora", "qlora"))
    r: int = knob(16, "LoRA rank", ge=1)
    alpha: int = knob(32, "LoRA scaling numerator (scale = alpha / r)", ge=1)
    dropout: float = knob(0.05, "dropout on the LoRA path", ge=0, lt=1)
    # "all-linear" or a list of module names, e.g. [q_proj, v_proj].
    target_modules: Any = knob("all-linear", "modules that get adapters: all-linear or a list of names")
    bias: str = knob("none", "which biases train", choices=("none", "all", "lora_only"))
    # With an adapter the reference is the base model with the adapter switched off (no second
    # copy in memory); true loads a separate reference model instead.
    rl_adapter_ref_model: bool = knob(False, "load a separate reference model instead of disabling the adapter")


@dataclass
class LoggerConfig:
    backend: str = knob("none", "where train metrics go besides the run dir", choices=("none", "wandb"))
    project: str = knob("rlhf", "W&B project")
    entity: str | None = knob(None, "W&B entity (team or user; None: your default)")
    mode: str = knob("offline", "W&B mode: online, offline (synced later with `wandb sync`) or disabled",
                     choices=("online", "offline", "disabled"))
    # Defaults: the sweep's directory for the group, the job's overrides for the name.
    group: str | None = knob(None, "W&B group (None: the sweep this job belongs to)")
    name: str | None = knob(None, "W&B run name (None: the job's overrides)")
    tags: list[str] = knob(factory=list, help="W&B tags")


@dataclass
class VLLMConfig:
    """The vLLM generation engine of the online methods (GRPO, RLOO, Online DPO; method.use_vllm):
    the server it talks to or runs."""

    host: str = knob("127.0.0.1", "vLLM server host")
    port: int = knob(8000, "vLLM server port", ge=1, le=65535)
    group_port: int = knob(51216, "port of the weight-sync process group", ge=1, le=65535)
    tensor_parallel_size: int = knob(1, "GPUs per model replica", ge=1)
    gpu_memory_utilization: float | None = knob(
        None, "fraction of each vLLM GPU's memory vLLM may use (None: 0.9 for a server, which has its GPUs to "
              "itself; 0.3 colocated, TRL's default, where training shares the GPU)", gt=0, le=1)
    dtype: str = knob("auto", "weights dtype in vLLM", choices=("auto", "float16", "bfloat16", "float32"))
    max_model_len: int | None = knob(None, "context length vLLM reserves KV cache for", ge=1)
    server_timeout: float = knob(240.0, "seconds to wait for the server to answer its health check", gt=0)
    enable_prefix_caching: bool = knob(True, "reuse KV cache across completions of one prompt")


@dataclass
class ObjectiveConfig:
    """What a job returns to a sweeper (Optuna): a final metric and its sense."""

    metric: str | None = knob(None, "metric from metrics.json (None: the method's learning metric)")
    direction: str | None = knob(None, "maximize or minimize (None: minimize losses, maximize the rest)",
                                 choices=("maximize", "minimize"))


@dataclass
class EvaluateConfig:
    """The generation eval stage (rlhf.evaluate): what the policy generates for held-out prompts,
    scored. Runs at the end of training (and every N steps if asked), and on any checkpoint
    through `python -m rlhf.evaluate`."""

    enabled: bool | None = knob(None, "run the stage (None: when a scorer is set, reward_funcs or reward_models)")
    prompts: str | None = knob(None, "a prompts file (jsonl, json, csv, parquet) or hub dataset id "
                                     "(None: the eval data's prompts)")
    split: str = knob("train", "split of a hub prompts dataset")
    prompt_column: str = knob("prompt", "column holding each prompt: text, or a list of chat messages")
    num_prompts: int = knob(64, "prompts scored (the first N)", ge=1)
    max_new_tokens: int = knob(128, "tokens generated per completion at most", ge=1)
    temperature: float = knob(0.7, "sampling temperature (0: greedy)", ge=0)
    top_p: float = knob(1.0, "nucleus sampling mass", gt=0, le=1)
    samples_per_prompt: int = knob(1, "completions generated per prompt", ge=1)
    seed: int = knob(0, "decoding seed, the same for every job (so jobs share the reference's completions)",
                     ge=0)
    batch_size: int = knob(16, "prompts per generate call (part of what makes decoding repeatable)", ge=1)
    every_n_steps: int = knob(0, "also run the stage every N optimizer steps (0: only at the end)", ge=0)
    reward_funcs: list[str] = knob(factory=list, help="rewards scoring completions, as method.reward_funcs takes "
                                                       "them: module.function, a reward model dir, a hub id or a "
                                                       "finished reward run dir")
    reward_models: list[str] = knob(factory=list, help="sequence-classification reward models only: a model "
                                                        "dir, a finished reward run dir or a hub id")
    group_by: str | None = knob(None, "a column of the prompt rows whose values group the prompts: every figure "
                                      "per group in metrics.json and a warning for a group whose completions are "
                                      "all empty (None: `category` when the rows have one)")
    win_rate: bool = knob(True, "judge each completion against the reference policy's for the same prompt")
    judge: str | None = knob(None, "the scorer that judges the win rate (None: the first scorer)")
    kl: bool = knob(True, "estimate KL(policy || reference) on the policy's own completions")
    reference: str | None = knob(None, "the reference policy of the win rate and KL (None: model.name_or_path, "
                                       "the starting model)")


@dataclass
class RunConfig:
    """The root: one option of each group, plus what belongs to the run as a whole."""

    method: Any = MISSING
    dataset: Any = MISSING
    model: Any = MISSING
    hardware: Any = MISSING
    peft: Any = MISSING
    logger: Any = MISSING
    vllm: VLLMConfig = knob(factory=VLLMConfig, help="vLLM engine settings (online methods with method.use_vllm)")
    objective: ObjectiveConfig = knob(factory=ObjectiveConfig, help="what a sweeper optimises")
    evaluate: EvaluateConfig = knob(factory=EvaluateConfig, help="the generation eval stage: prompts, decoding, "
                                                                 "scorers")
    seed: int = knob(42, "seed of data shuffling, initialisation and sampling", ge=0)
    cache_dir: str = knob(".cache/rlhf", "where preprocessed data is cached (shared by a sweep's jobs)")
    # Where user code named module.function is looked for, before sys.path. The launching
    # process adds its working directory and the config directory when it resolves a job.
    code_path: list[str] = knob(factory=list, help="directories searched for user code (module.function)")


# Nodes of the root config that are not groups, with their schemas.
NODE_SCHEMAS = {"vllm": VLLMConfig, "objective": ObjectiveConfig, "evaluate": EvaluateConfig}

# group -> schema of its options (method schemas come from the method registry).
GROUP_SCHEMAS = {
    "dataset": DatasetConfig,
    "model": ModelConfig,
    "hardware": HardwareConfig,
    "peft": PeftConfig,
    "logger": LoggerConfig,
}
