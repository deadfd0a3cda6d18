"""What every method shares: the training knobs, and the spec a method registers.

A method is a `MethodSpec` in `METHODS` (filled by each module of this package): its config
schema, the kind of rows it trains on and its embedded default data, its reference model, the
TRL config and trainer it wraps, and the one place where each `method.<name>` becomes a TRL
field. The rest of the platform asks the spec and never tests a method's name, so a new
method is one module here plus its `conf/method/<name>.yaml`. Nothing here imports TRL or
torch: composing and validating a config stays fast.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rlhf.config import registry
from rlhf.config.fields import knob
from rlhf.core.errors import ConfigError, did_you_mean, one_of
from rlhf.models.heads import CAUSAL_LM, MODEL_HEADS, SEQUENCE_CLASSIFICATION

# Row shapes a trainer receives (see rlhf.data): preference pairs, unpaired rows with a
# boolean label, or prompts for online generation.
PAIRS = "pairs"
UNPAIRED = "unpaired"
PROMPTS = "prompts"

# What the data stage tokenizes for a method's TRL trainer (MethodSpec.tokenized), so the
# trainer trains on those ids and does not tokenize again (rlhf.data.tokenize makes them,
# rlhf.trl.pretokenized makes the trainer take them):
# - prompt_ids, chosen_ids and rejected_ids, as DPOTrainer's _prepare_dataset makes them;
PROMPT_ANSWER_IDS = "prompt_answer_ids"
# - prompt_ids and completion_ids, as KTOTrainer's _prepare_dataset makes them;
PROMPT_COMPLETION_IDS = "prompt_completion_ids"
# - chosen_ids and rejected_ids, whole sequences, as RewardTrainer's _prepare_dataset makes them;
SEQUENCE_PAIR_IDS = "sequence_pair_ids"
# - the columns of the `tokenize_row` of ORPOTrainer and CPOTrainer (prompt_input_ids,
#   chosen_input_ids, chosen_labels, ...).
TOKENIZE_ROW_IDS = "tokenize_row_ids"
TOKENIZED = (PROMPT_ANSWER_IDS, PROMPT_COMPLETION_IDS, SEQUENCE_PAIR_IDS, TOKENIZE_ROW_IDS)


@dataclass(frozen=True)
class EmbeddedData:
    """A shipped task a method trains on when no dataset is chosen (files under rlhf/assets)."""

    train: str
    type: str | None
    eval: str | None = None


# The embedded "topics" task in each row shape (rlhf/assets/build_data.py writes the files):
# a method trains on its shape's data unless its spec names other data.
EMBEDDED_BY_SHAPE = {
    PAIRS: EmbeddedData("data/topics_pairs.train.jsonl", "chatml.intel", "data/topics_pairs.eval.jsonl"),
    UNPAIRED: EmbeddedData("data/topics_unpaired.train.jsonl", "chatml.intel", "data/topics_unpaired.eval.jsonl"),
    # Rows already hold `prompt` (messages) and the `category` column the topic reward reads.
    PROMPTS: EmbeddedData("data/topics_prompts.train.jsonl", None),
}

LR_SCHEDULERS = (
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
    "constant_with_warmup", "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr",
    "warmup_stable_decay",
)
OPTIMIZERS = (
    "adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit",
    "adafactor", "sgd", "lion_32bit", "paged_lion_8bit", "rmsprop",
)


@dataclass
class MethodConfig:
    """The training knobs every method has. Method schemas extend it."""

    # Which registered method trains this config; set by each method's schema.
    kind: str = knob("", "registered method this config trains with (set by the method option)")
    learning_rate: float = knob(5e-7, "peak learning rate", gt=0)
    lr_scheduler: str = knob("cosine", "learning-rate schedule", choices=LR_SCHEDULERS)
    warmup: float = knob(0.1, "warm-up: a fraction of training if < 1, else a number of steps", ge=0)
    num_epochs: float = knob(1.0, "passes over the training data (ignored when max_steps > 0)", gt=0)
    max_steps: int = knob(-1, "stop after this many optimizer steps (-1: use num_epochs)", ge=-1)
    micro_batch_size: int = knob(2, "training rows per device per forward pass", ge=1)
    eval_batch_size: int = knob(8, "eval rows per device per forward pass", ge=1)
    gradient_accumulation_steps: int = knob(4, "micro-batches per optimizer step", ge=1)
    max_length: int = knob(2048, "token limit of prompt + completion (see dataset.excess_length)", ge=8)
    weight_decay: float = knob(0.0, "AdamW weight decay", ge=0)
    max_grad_norm: float = knob(1.0, "gradient clipping norm (0: off)", ge=0)
    # transformers' own default (fused AdamW, since torch 2.8): a plain TRL script gets it, so
    # the platform's steps cost the same as TRL's.
    optimizer: str = knob("adamw_torch_fused", "optimizer name, as transformers spells it", choices=OPTIMIZERS)
    logging_steps: int = knob(10, "log train metrics every N optimizer steps", ge=1)
    eval_steps: int = knob(0, "evaluate every N steps (0: at the end of each epoch)", ge=0)
    save_steps: int = knob(0, "checkpoint every N steps (0: at the end of each epoch)", ge=0)
    save_total_limit: int = knob(1, "checkpoints kept in the run dir (older ones are deleted)", ge=1)


@dataclass
class ReferenceMethodConfig(MethodConfig):
    """Knobs of the methods that compare against a frozen reference model (DPO family, KTO)."""

    beta: float = knob(0.1, "strength of the pull towards the reference model (IPO: tau)", gt=0)
    sync_ref_model: bool = knob(False, "TR-DPO: mix the policy into the reference periodically")
    ref_model_mixup_alpha: float = knob(0.6, "TR-DPO mixing weight", ge=0, le=1)
    ref_model_sync_steps: int = knob(512, "TR-DPO steps between reference updates", ge=1)
    precompute_ref_log_probs: bool = knob(
        False, "compute reference log-probs once before training: no reference model in memory, shared by a sweep"
    )


# How a trainer calls its model, for a method whose batches can run padding-free
# (MethodSpec.padding_free): a causal LM under TRL's fused head (per-token log-probs), a causal
# LM returning logits, or a sequence classifier (one score per sequence).
FUSED_LOGPS = "fused_logps"
LOGITS = "logits"
SCORES = "scores"
PADDING_FREE_KINDS = (FUSED_LOGPS, LOGITS, SCORES)


def padding_free_knob(default: bool = True) -> Any:
    """The `method.padding_free` knob of the methods whose batches can run as packed rows
    (MethodSpec.padding_free; rlhf.trl.padding_free). No TRL field: TRL 1.16's own DPO
    padding_free is switched off, and the platform lays the batch out itself. On by default
    where the packed row only removes work (DPO, KTO, the reward model: fewer positions through
    the model and TRL's fused head); `make bench`, section lengths, measures it."""
    return knob(default, "run each micro-batch's sequences as one packed row, no padding (false: pad as TRL does)")


# Each one TRL field of the same name, in DPOConfig and KTOConfig alike.
REFERENCE_TRL_FIELDS = {name: name for name in ("beta", "sync_ref_model", "ref_model_mixup_alpha",
                                                "ref_model_sync_steps", "precompute_ref_log_probs")}


def check_reference(run: Any) -> list[str]:
    method = run.method
    if method.sync_ref_model and method.precompute_ref_log_probs:
        return ["method.sync_ref_model (TR-DPO) updates the reference, so its log-probs cannot be "
                "precomputed: set method.precompute_ref_log_probs=false"]
    return []


# method.<knob> -> TRL/transformers field, for the knobs every method shares. Cadence knobs
# (eval_steps, save_steps) become a strategy plus steps in `common_trl_kwargs`.
COMMON_TRL_FIELDS = {
    "learning_rate": "learning_rate",
    "lr_scheduler": "lr_scheduler_type",
    "warmup": "warmup_steps",
    "num_epochs": "num_train_epochs",
    "max_steps": "max_steps",
    "micro_batch_size": "per_device_train_batch_size",
    "eval_batch_size": "per_device_eval_batch_size",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "max_length": "max_length",
    "weight_decay": "weight_decay",
    "max_grad_norm": "max_grad_norm",
    "optimizer": "optim",
    "logging_steps": "logging_steps",
    "save_total_limit": "save_total_limit",
}


def _cadence(steps: int) -> dict[str, Any]:
    return {"strategy": "steps", "steps": steps} if steps > 0 else {"strategy": "epoch"}


def common_trl_kwargs(method: MethodConfig, has_eval: bool) -> dict[str, Any]:
    kwargs = {trl: getattr(method, ours) for ours, trl in COMMON_TRL_FIELDS.items()}
    # transformers reads a float warmup_steps < 1 as a ratio; keep whole step counts ints.
    if kwargs["warmup_steps"] >= 1:
        kwargs["warmup_steps"] = int(kwargs["warmup_steps"])
    save = _cadence(method.save_steps)
    kwargs["save_strategy"] = save["strategy"]
    kwargs["save_steps"] = save.get("steps", 500)
    if has_eval:
        evaluation = _cadence(method.eval_steps)
        kwargs["eval_strategy"] = evaluation["strategy"]
        kwargs["eval_steps"] = evaluation.get("steps")
    else:
        kwargs["eval_strategy"] = "no"
    return kwargs


@dataclass(frozen=True)
class MethodSpec:
    """A method as the platform knows it: registered once (`register`), asked everywhere else.

    Args (the fields; the comments beside each below say more):
        kind: the method's name (method.kind, conf/method/<kind>.yaml).
        schema: its config dataclass (a MethodConfig): every `method.*` knob, typed.
        shape: the rows it trains on: PAIRS, UNPAIRED or PROMPTS.
        trl_config, trl_trainer: TRL's config and trainer classes, as "module:Class".
        trl_fields: method.<knob> -> the one TRL config field it sets.
        metric, greater_is_better: the figure that shows it learning, and its sense.
        reference_arg: the trainer argument that takes a reference model (None: none).
        The rest have defaults: presets, checks, conversions, fixed TRL settings, the head the
        checkpoint loads with, the columns the data stage tokenizes for it, ...

    `trl_kwargs(method, has_eval)` is the TRL config's keyword arguments for a typed method
    config; the properties answer what the rest of the platform asks (does it generate, does it
    train a reward model, which embedded data, does it use a reference).
    """

    kind: str
    schema: type
    shape: str
    trl_config: str  # "module:Class", imported only when a run trains
    trl_trainer: str
    # method.<ours> -> the TRL config field it sets. Each concept has exactly one entry.
    trl_fields: dict[str, str]
    # The metric that shows the method learning, as it lands in metrics.json, and its sense.
    metric: str
    greater_is_better: bool
    # The trainer's argument that takes an explicit reference model (None: the method has no
    # reference model, or its trainer builds one itself, as GRPO does when beta > 0).
    reference_arg: str | None
    # For a trainer that builds its own reference: whether this config makes it build one
    # (GRPO: a KL term, beta > 0).
    trainer_builds_reference: Callable[[Any], bool] | None = None
    # The trainer's reference log-probs can be precomputed once and shared by every job on the
    # same model and data (rlhf.trl.shared_reference hooks DPOTrainer's precompute).
    shares_reference_logps: bool = False
    # Dataset types only this method reads, beyond those of its shape (ORPO's
    # chat_template.argilla).
    extra_types: tuple[str, ...] = ()
    # Other conf/method options that train with this spec (loss presets such as ipo): format_row
    # and the dataset-type messages accept them as the method's name.
    presets: tuple[str, ...] = ()
    # Data trained on by default (dataset=embedded); None: the embedded task of its shape.
    embedded: EmbeddedData | None = None
    # Method-specific checks beyond types and ranges: returns the problems found.
    check: Callable[[Any], list[str]] | None = None
    # Converts a value of ours to TRL's form where the two differ (e.g. a name -> a list).
    convert: dict[str, Callable[[Any], Any]] = dataclasses.field(default_factory=dict)
    # TRL settings this method always needs, whatever the user sets.
    fixed_trl: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Shared knobs the method's TRL config has no field for (the data stage still uses them).
    not_in_trl: tuple[str, ...] = ()
    # TRL fields that come from other nodes of the run (e.g. GRPO's from the root vllm block).
    run_trl: Callable[[Any], dict[str, Any]] | None = None
    # Learning figures computed from the log history (e.g. GRPO's reward early vs late);
    # `metric` may name one of them instead of an eval metric.
    summarize: Callable[[list[dict]], dict[str, Any]] | None = None
    # Extra trainer arguments built from the run and the training rows' columns (e.g. GRPO's
    # reward functions, checked against the columns they read).
    trainer_inputs: Callable[[Any, list[str]], dict[str, Any]] | None = None
    # The logged value the progress line shows while training (rlhf.job.progress): `metric` unless
    # that one is derived after training and never logged (GRPO's reward trend), in which case
    # the logged figure it is derived from. "" means `metric`.
    progress_metric: str = ""
    # The head the checkpoint is loaded with (rlhf.models.loading.load_model), which also decides the
    # LoRA task type and whether the trained model generates (the generation eval stage).
    model_head: str = CAUSAL_LM
    # The columns the data stage tokenizes for the trainer (one of TOKENIZED), which then trains
    # on them without tokenizing again; None: the trainer tokenizes what it needs itself (the
    # online methods tokenize prompts as they generate), and the data stage only measures.
    tokenized: str | None = None
    # How its trainer calls the model, if its batches can run padding-free (one of
    # PADDING_FREE_KINDS); its schema then has the
    # `padding_free` knob (padding_free_knob), which is not a TRL field.
    padding_free: str | None = None

    def __post_init__(self) -> None:
        if not self.progress_metric:
            object.__setattr__(self, "progress_metric", self.metric)
        if self.model_head not in MODEL_HEADS:
            raise ValueError(f"{self.kind}: model_head={self.model_head!r} is not one of {', '.join(MODEL_HEADS)}")
        if self.tokenized is not None and self.tokenized not in TOKENIZED:
            raise ValueError(f"{self.kind}: tokenized={self.tokenized!r} is not one of {', '.join(TOKENIZED)}")
        if self.padding_free is not None and self.padding_free not in PADDING_FREE_KINDS:
            raise ValueError(f"{self.kind}: padding_free={self.padding_free!r} is not one of {', '.join(PADDING_FREE_KINDS)}")
        if self.padding_free is not None and "padding_free" not in self.schema.__dataclass_fields__:
            raise ValueError(f"{self.kind}: padding_free={self.padding_free!r} needs a padding_free knob in its schema")

    @property
    def generates(self) -> bool:
        """Whether the trained model generates text (a reward model only scores it)."""
        return self.model_head == CAUSAL_LM

    @property
    def trains_reward_model(self) -> bool:
        """Whether the trained model is a reward model (a one-label sequence classifier), which
        judges other runs and serves as an online method's reward (rlhf.rewards.sources)."""
        return self.model_head == SEQUENCE_CLASSIFICATION

    @property
    def embedded_data(self) -> EmbeddedData:
        return self.embedded or EMBEDDED_BY_SHAPE[self.shape]

    def uses_reference(self, method: Any) -> bool:
        """Whether training compares against a reference model (held, built or precomputed)."""
        if self.reference_arg is not None:
            return True
        return self.trainer_builds_reference is not None and self.trainer_builds_reference(method)

    def trl_kwargs(self, method: Any, has_eval: bool) -> dict[str, Any]:
        """The TRL config's keyword arguments for `method` (this spec's schema, typed): the shared
        knobs, the fixed settings, then each of the method's knobs in its one TRL field,
        converted where TRL's form differs. `has_eval`: whether the run has eval data (an eval
        cadence, or none)."""
        common = common_trl_kwargs(method, has_eval)
        for knob_name in self.not_in_trl:
            common.pop(COMMON_TRL_FIELDS.get(knob_name, knob_name), None)
        kwargs = {**common, **self.fixed_trl}
        for ours, trl in self.trl_fields.items():
            value = getattr(method, ours)
            kwargs[trl] = self.convert[ours](value) if ours in self.convert else value
        return kwargs


# Every registered method by its kind: config's registry, which validation reads.
METHODS: dict[str, MethodSpec] = registry.METHODS


def register(spec: MethodSpec) -> MethodSpec:
    taken = {name for other in METHODS.values() for name in (other.kind, *other.presets)}
    clash = [name for name in (spec.kind, *spec.presets) if name in taken]
    if clash:
        raise ValueError(f"method name(s) {', '.join(clash)} registered twice")
    METHODS[spec.kind] = spec
    return spec


def method_names() -> list[str]:
    """Every name a method answers to: registered kinds and their presets."""
    return sorted(name for spec in METHODS.values() for name in (spec.kind, *spec.presets))


def lookup(name: str) -> MethodSpec:
    """The spec of a registered method, by its kind or one of its presets (ipo -> dpo)."""
    for spec in METHODS.values():
        if name == spec.kind or name in spec.presets:
            return spec
    names = method_names()
    raise ConfigError(f"{name!r} is not a registered method{did_you_mean(str(name), names)}; methods: "
                      f"{one_of(names)}")
