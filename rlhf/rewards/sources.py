"""Where a reward comes from: each entry of a reward list (`method.reward_funcs` of the online
methods, `evaluate.reward_funcs`, and `evaluate.reward_models`, which accepts the model forms
only) is one of

- a reward function, `module.function` (loaded by rlhf.core.usercode);
- a reward model directory: a `*ForSequenceClassification` with one label, saved with its
  tokenizer;
- a hub id `org/name` of such a model;
- the run dir of a finished job that trained a reward model (config.yaml, a SUCCESS file, and a
  `model/` that is a one-label sequence classifier, as `method=reward` saves it).

`resolve` tells them apart from the string and the files alone, before any model loads
(at validation), and refuses a bad entry with one message; `load` turns resolved entries into
what TRL's reward_funcs and reward_processing_classes take: each reward model with its own
tokenizer, which is what it scores with. Every load logs the form each entry took.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf.run import files as run_files
from rlhf.core.errors import RlhfError, UserCodeError

log = logging.getLogger("rlhf")

FUNCTION = "function"
MODEL_DIR = "model_dir"
HUB_ID = "hub_id"
RUN_DIR = "run_dir"
MODEL_FORMS = (MODEL_DIR, HUB_ID, RUN_DIR)

# Files one of which a saved tokenizer has (AutoTokenizer reads the first it finds).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")


class RewardSourceError(RlhfError):
    """A reward entry that is none of the accepted forms, or a model that cannot score."""


def accepted_forms(models_only: bool = False) -> str:
    """The forms a reward entry may take, as a sentence for messages."""
    models = ("a reward model directory (a *ForSequenceClassification with num_labels=1, saved with its "
              "tokenizer), a hub id org/name of one, or the run dir of a finished method=reward job "
              "(its model/)")
    if models_only:
        return models
    return f"a reward function, which must be written module.function (e.g. rlhf.rewards.topic_reward); {models}"


@dataclass(frozen=True)
class RewardSource:
    entry: str  # as the config gives it
    form: str  # FUNCTION | MODEL_DIR | HUB_ID | RUN_DIR
    target: str  # what loads: the module.function, the model directory or the hub id

    @property
    def is_model(self) -> bool:
        return self.form in MODEL_FORMS

    def describe(self) -> str:
        return {
            FUNCTION: f"reward function {self.target}",
            MODEL_DIR: f"reward model from the directory {self.target}",
            HUB_ID: f"reward model {self.target} from the hub",
            RUN_DIR: f"reward model of the finished run {self.entry} ({self.target})",
        }[self.form]


def looks_like_path(entry: str) -> bool:
    """A string meant as a local path: a hub id is exactly one `org/name`, and its `org` is not a
    local directory."""
    text = str(entry)
    return (text.startswith(("/", ".", "~")) or text.count("/") > 1 or text.endswith("/")
            or ("/" in text and Path(text).parent.is_dir()))


def classify(entry: str) -> str:
    """The form an entry takes, from the string and the file system alone (nothing imported,
    nothing checked): a directory is a run dir (it has config.yaml) or a model dir; a string
    with a slash is a hub id; anything else is a function."""
    path = Path(str(entry)).expanduser()
    if path.is_dir():
        return RUN_DIR if (path / run_files.CONFIG).is_file() else MODEL_DIR
    if "/" in str(entry) and not looks_like_path(entry):
        return HUB_ID
    return FUNCTION if not looks_like_path(entry) else MODEL_DIR


def resolve(entry: str, where: str, code_path: list[str] | tuple[str, ...] = (),
            models_only: bool = False) -> RewardSource:
    """The entry's form and what it loads, checked as far as can be without loading a model:
    a function is imported and its signature checked; a directory's config.json and tokenizer
    files are read; a run dir must be finished and hold a reward model. `where` names the list
    in messages (e.g. method.reward_funcs[1])."""
    entry = str(entry)
    form = classify(entry)
    if form == FUNCTION:
        if models_only:
            raise RewardSourceError(f"{where}={entry!r} is not a reward model: give {accepted_forms(True)}")
        return RewardSource(entry, FUNCTION, _check_function(entry, where, code_path))
    if form == HUB_ID:
        return RewardSource(entry, HUB_ID, entry)
    path = Path(entry).expanduser()
    if not path.is_dir():
        raise RewardSourceError(f"{where}={entry!r}: no such directory. An entry is {accepted_forms(models_only)}")
    if form == RUN_DIR:
        return RewardSource(entry, RUN_DIR, str(_check_run_dir(path, entry, where)))
    _check_model_dir(path, entry, where)
    return RewardSource(entry, MODEL_DIR, str(path))


def _check_function(entry: str, where: str, code_path: list[str] | tuple[str, ...]) -> str:
    from rlhf.core.usercode import load_reward_functions

    if "." not in entry.strip(".") or not all(entry.split(".")):
        raise RewardSourceError(f"{where}={entry!r} is neither a reward function nor a reward model. An entry is "
                                f"{accepted_forms()}")
    try:
        load_reward_functions([entry], code_path)
    except UserCodeError as error:
        if ": no module " in str(error):  # neither an importable module nor a directory
            raise UserCodeError(f"{where}: {error}; nor is {entry!r} a directory. An entry is "
                                f"{accepted_forms()}") from None
        raise UserCodeError(f"{where}: {error}") from None
    return entry


def _check_run_dir(path: Path, entry: str, where: str) -> Path:
    """A finished run dir whose model/ is a reward model: told by the saved model itself (a
    one-label sequence classifier), whatever method trained it."""
    if not run_files.is_finished(path):
        status = run_files.status(path)
        why = (f"it failed ({run_files.failure(path, first_line=True)})" if status == run_files.FAILED_STATUS
               else "it is still running, or was stopped")
        raise RewardSourceError(f"{where}={entry!r} is a run dir that has not finished (no {run_files.SUCCESS} file: "
                                f"{why}), so it holds no reward model yet: name a finished run dir")
    try:
        kind = ((run_files.read_config(path) or {}).get("method") or {}).get("kind")
    except (OSError, ValueError, AttributeError) as error:
        raise RewardSourceError(f"{where}={entry!r}: its {run_files.CONFIG} cannot be read: {error}") from None
    model = path / run_files.MODEL_DIR
    if not model.is_dir():
        raise RewardSourceError(f"{where}={entry!r} is a finished run dir without {run_files.MODEL_DIR}/: its reward "
                                "model was not saved")
    architectures = _architectures(model)
    if architectures and not any(str(a).endswith("ForSequenceClassification") for a in architectures):
        raise RewardSourceError(
            f"{where}={entry!r} is the run dir of a method={kind} job: its {run_files.MODEL_DIR}/ holds a "
            f"{', '.join(architectures)}, not a sequence classifier: it is a policy, not a reward model. Name the run "
            "dir of a finished method=reward job (or a reward model directory or hub id)")
    _check_model_dir(model, entry, where)
    return model


def _architectures(model_dir: Path) -> list[str]:
    """The architectures a saved model's config.json names ([] when it cannot be read: the model
    dir's own check says why)."""
    try:
        return list(json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get("architectures") or [])
    except (OSError, ValueError, AttributeError):
        return []


def _check_model_dir(path: Path, entry: str, where: str) -> None:
    config = path / "config.json"
    if not config.is_file():
        raise RewardSourceError(f"{where}={entry!r}: {path} has no config.json, so it is not a model directory "
                                f"(nor a run dir: no {run_files.CONFIG}). An entry is {accepted_forms()}")
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise RewardSourceError(f"{where}={entry!r}: {config} cannot be read: {error}") from None
    architectures = data.get("architectures") or []
    if architectures and not any(str(a).endswith("ForSequenceClassification") for a in architectures):
        raise RewardSourceError(
            f"{where}={entry!r}: {path} holds a {', '.join(architectures)}, not a sequence classifier: a reward "
            "model scores a text with one number (*ForSequenceClassification, num_labels=1)")
    labels = len(data["id2label"]) if isinstance(data.get("id2label"), dict) else data.get("num_labels")
    if labels not in (None, 1):
        raise RewardSourceError(f"{where}={entry!r}: {path} is a classifier with {labels} labels; a reward model "
                                "scores a text with one number (num_labels=1)")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise RewardSourceError(
            f"{where}={entry!r}: the reward model's tokenizer cannot be loaded: {path} has no tokenizer files "
            f"({', '.join(TOKENIZER_FILES[:2])}, ...). The reward model scores with its own tokenizer: save it "
            "beside the model (tokenizer.save_pretrained)")


def check(entries: list[str], where: str, code_path: list[str] | tuple[str, ...] = (),
          models_only: bool = False) -> list[str]:
    """One problem per bad entry of a reward list."""
    problems = []
    for index, entry in enumerate(entries):
        try:
            resolve(entry, f"{where}[{index}]", code_path, models_only)
        except RlhfError as error:
            problems.append(str(error))
    return problems


def resolve_all(entries: list[str], where: str, code_path: list[str] | tuple[str, ...] = (),
                models_only: bool = False) -> list[RewardSource]:
    return [resolve(entry, f"{where}[{index}]", code_path, models_only) for index, entry in enumerate(entries)]


def load(sources: list[RewardSource], where: str, code_path: list[str] | tuple[str, ...] = (),
         trust_remote_code: bool = False, dtype: str | None = None) -> tuple[list[Any], list[Any]]:
    """TRL's reward_funcs and reward_processing_classes, one entry each (see `load_one`)."""
    loaded = [load_one(source, f"{where}[{index}]", code_path, trust_remote_code, dtype)
              for index, source in enumerate(sources)]
    return [reward for reward, _ in loaded], [tokenizer for _, tokenizer in loaded]


def load_one(source: RewardSource, where: str, code_path: list[str] | tuple[str, ...] = (),
             trust_remote_code: bool = False, dtype: str | None = None) -> tuple[Any, Any]:
    """A checked reward function and None, or a reward model (in `dtype`: float32, bfloat16,
    float16; None: as saved) and its own tokenizer; logs the form the entry took."""
    from rlhf.core.usercode import load_reward_functions

    log.info("%s = %s: %s", where, source.entry, source.describe())
    if source.form == RUN_DIR:  # trained here: scored on the text its rows had (RewardRun)
        model, tokenizer = load_reward_model(source, where, trust_remote_code, dtype)
        return RewardRun(model, tokenizer), None
    if source.is_model:
        return load_reward_model(source, where, trust_remote_code, dtype)
    (function,) = load_reward_functions([source.target], code_path)
    return function, None


def load_reward_model(source: RewardSource, where: str, trust_remote_code: bool = False,
                      dtype: str | None = None) -> tuple[Any, Any]:
    """The reward model (on the CPU, in eval mode, in `dtype` when given) and its own
    tokenizer, each load failure one message naming the entry."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rlhf.models.loading import from_pretrained, torch_dtype

    fix = f"Give {where} a local reward model directory or a finished reward run dir"
    try:  # the tokenizer first: it is cheap, and a model without it cannot score
        tokenizer = from_pretrained(AutoTokenizer, f"tokenizer of the reward model {where}",
                                    source.target, fix, trust_remote_code=trust_remote_code)
    except (ValueError, TypeError, KeyError) as error:  # files present but not a tokenizer transformers reads
        raise RewardSourceError(f"{where}={source.entry!r}: the reward model's tokenizer cannot be loaded from "
                                f"{source.target}: {error}") from None
    model = from_pretrained(AutoModelForSequenceClassification, f"reward model {where}",
                            source.target, fix, trust_remote_code=trust_remote_code,
                            **({"dtype": torch_dtype(dtype)} if dtype else {}))
    if model.config.num_labels != 1:
        raise RewardSourceError(f"{where}={source.entry!r} has {model.config.num_labels} labels; a reward model "
                                "scores a text with one number (num_labels=1)")
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise RewardSourceError(f"{where}={source.entry!r}: the reward model's tokenizer has neither a pad nor "
                                    "an end-of-sequence token to pad its batches with")
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer


class RewardRun:
    """A reward model trained here (`method=reward`), called as a reward function, so that it
    scores the text its pair rows had: the prompt rendered with the chat template and the
    assistant's turn opened, then the completion as generated, its end-of-turn token included
    (decoded from completion_ids with the reward model's tokenizer, which a reward run trained
    from the policy's checkpoint shares).

    Why not TRL's own path for a reward model: it renders the whole conversation with the chat
    template, which puts text after the end-of-turn token (ChatML's newline), so the one-label
    head reads its score at a position no training row ended at. Measured on the embedded task
    (2026-12-05): scored that way, the trained model's scores correlate -0.24 with the task's
    known reward over 120 completions, and RLOO against it drove the topic reward to 0; scored
    as trained, +0.59."""

    __name__ = "reward_run"
    BATCH = 32

    def __init__(self, model: Any, tokenizer: Any):
        self.model, self.tokenizer = model, tokenizer

    def place(self) -> Any:
        """The device it scores on: the training process's, as accelerate decided it (the CPU
        for a CPU job, even on a GPU host; this rank's GPU otherwise), where TRL also puts a
        reward model it is given (trl/trainer/grpo_trainer.py:1208-1216). Moved there on the
        first call; a model a strategy placed already (rlhf.job.runner.place_reward_runs under
        DeepSpeed) stays where it is."""
        from accelerate import PartialState

        current = next(self.model.parameters()).device
        wanted = PartialState().device
        if current.type == "cpu" and wanted.type != "cpu":
            self.model.to(wanted)
            return wanted
        return current

    def texts(self, prompts: list[Any], completions: list[Any], completion_ids: list[list[int]] | None) -> list[str]:
        from rlhf.rewards import completion_text

        out = []
        for index, (prompt, completion) in enumerate(zip(prompts, completions)):
            head = prompt if isinstance(prompt, str) else self.tokenizer.apply_chat_template(
                prompt, tokenize=False, add_generation_prompt=True)
            ids = completion_ids[index] if completion_ids else None
            tail = self.tokenizer.decode(ids, skip_special_tokens=False) if ids else completion_text(completion)
            out.append(head + tail)
        return out

    def __call__(self, prompts: list[Any], completions: list[Any], completion_ids: list[list[int]] | None = None,
                 **kwargs: Any) -> list[float]:
        import torch

        device = self.place()
        texts = self.texts(prompts, completions, completion_ids)
        scores: list[float] = []
        with torch.no_grad():
            for start in range(0, len(texts), self.BATCH):
                encoded = self.tokenizer(texts[start:start + self.BATCH], return_tensors="pt", padding=True,
                                         padding_side="right", add_special_tokens=False).to(device)
                scores += self.model(**encoded).logits[:, 0].float().tolist()
        return scores
