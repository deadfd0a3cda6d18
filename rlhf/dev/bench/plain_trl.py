"""A plain TRL script, as a user would write it without the platform: the baseline `make bench`
measures the platform against. Same tiny model, same embedded data (formatted here with a few
lines of Python), same hyperparameters as the platform's tiny-model tuning.

    python -m rlhf.dev.bench.plain_trl <TRL trainer class, e.g. DPOTrainer> <out_dir> <max_steps> [<threads>]

Writes <out_dir>/times.json: the wall-clock and CPU time at the end of every optimizer step, and
the settings the trainer trained with (rlhf.dev.bench.settings), which the bench sets beside the
platform's.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

STARTED = time.time()


def chatml(row: dict) -> str:
    system = f"<|im_start|>system\n{row['system']}<|im_end|>\n" if row.get("system") else ""
    return system + f"<|im_start|>user\n{row['question']}<|im_end|>\n<|im_start|>assistant\n"


def main() -> None:
    """Train TRL's trainer `argv[1]` and record each step's time. Long because it is the plain
    script a user writes, one straight branch per trainer: cut into the platform's kind of
    functions it would stop being the baseline it stands for."""
    trainer, out_dir, max_steps = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    threads = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    out_dir.mkdir(parents=True, exist_ok=True)
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from rlhf.assets import asset_path
    from rlhf.dev.bench.settings import trainer_settings

    torch.set_num_threads(threads)
    tiny = asset_path("models/tiny-chatml")
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
    common = dict(output_dir=str(out_dir / "trl"), learning_rate=1e-3, lr_scheduler_type="cosine", warmup_steps=0.1,
                  per_device_train_batch_size=16, gradient_accumulation_steps=1, max_steps=max_steps,
                  logging_steps=1, seed=42, data_seed=42, use_cpu=True, bf16=False, report_to=[],
                  save_strategy="no", eval_strategy="no", activation_checkpointing=False, disable_tqdm=True)
    end = "<|im_end|>"

    def pairs(name: str):
        data = datasets.load_dataset("json", data_files=asset_path(f"data/{name}.train.jsonl"), split="train")
        return data.map(lambda r: {"prompt": chatml(r), "chosen": r["chosen"] + end, "rejected": r["rejected"] + end},
                        remove_columns=data.column_names)

    if trainer == "DPOTrainer":
        from trl import DPOConfig as Config, DPOTrainer as Trainer

        args = Config(beta=0.5, loss_type=["sigmoid"], max_length=256, precompute_ref_log_probs=True, **common)
        kwargs = dict(train_dataset=pairs("topics_pairs"))
    elif trainer == "KTOTrainer":
        from trl import KTOConfig as Config, KTOTrainer as Trainer

        data = datasets.load_dataset("json", data_files=asset_path("data/topics_unpaired.train.jsonl"), split="train")
        data = data.map(lambda r: {"prompt": chatml(r), "completion": r["completion"] + end, "label": r["label"]},
                        remove_columns=data.column_names)
        args = Config(beta=0.1, max_length=256, **common)
        kwargs = dict(train_dataset=data, ref_model=AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32))
    elif trainer == "CPOTrainer":
        from trl.experimental.cpo import CPOConfig as Config, CPOTrainer as Trainer

        args = Config(loss_type="simpo", beta=2.0, simpo_gamma=0.5, cpo_alpha=0.0, max_length=256,
                      remove_unused_columns=False, **common)
        kwargs = dict(train_dataset=pairs("topics_pairs"))
    elif trainer == "ORPOTrainer":
        from trl.experimental.orpo import ORPOConfig as Config, ORPOTrainer as Trainer

        args = Config(beta=3.0, max_length=256, remove_unused_columns=False, **common)
        conversations = asset_path("data/topics_conversations.train.jsonl")
        data = datasets.load_dataset("json", data_files=conversations, split="train")

        def orpo_row(r: dict) -> dict:
            history = ([{"role": "system", "content": r["system"]}] if r.get("system") else []) + r["chosen"][:-1]
            prompt = tokenizer.apply_chat_template(history, tokenize=False, add_generation_prompt=True)
            answer = {m: tokenizer.apply_chat_template(history + [r[m][-1]], tokenize=False)[len(prompt):]
                      for m in ("chosen", "rejected")}
            return {"prompt": prompt, **answer}

        kwargs = dict(train_dataset=data.map(orpo_row, remove_columns=data.column_names))
    elif trainer == "RewardTrainer":
        from transformers import AutoModelForSequenceClassification, set_seed
        from trl import RewardConfig as Config, RewardTrainer as Trainer

        common["learning_rate"] = 3e-4
        args = Config(max_length=256, **common)
        set_seed(42)  # the new score head's init, as RewardTrainer seeds it when it loads a path
        model = AutoModelForSequenceClassification.from_pretrained(tiny, num_labels=1, dtype=torch.float32)
        model.config.pad_token_id = tokenizer.pad_token_id
        kwargs = dict(train_dataset=pairs("topics_pairs"))
    elif trainer == "GRPOTrainer":
        from trl import GRPOConfig as Config, GRPOTrainer as Trainer

        from rlhf.rewards import topic_reward

        # The tiny GRPO tuning (conf/tuning/tiny_grpo.yaml): 8 completions per micro-batch, two
        # micro-batches per step, each generation batch trained on twice.
        common.update(warmup_steps=0.0, per_device_train_batch_size=8, gradient_accumulation_steps=2)
        args = Config(loss_type="grpo", beta=0.04, num_generations=8, max_completion_length=8, num_iterations=2,
                      **common)
        data = datasets.load_dataset("json", data_files=asset_path("data/topics_prompts.train.jsonl"), split="train")
        kwargs = dict(train_dataset=data, reward_funcs=[topic_reward])
    elif trainer == "RLOOTrainer":
        from trl import RLOOConfig as Config, RLOOTrainer as Trainer

        from rlhf.rewards import topic_reward

        common.update(warmup_steps=0.0, learning_rate=3e-3)
        args = Config(beta=0.01, num_generations=8, max_completion_length=8, **common)
        data = datasets.load_dataset("json", data_files=asset_path("data/topics_prompts.train.jsonl"), split="train")
        kwargs = dict(train_dataset=data, reward_funcs=[topic_reward])
    elif trainer == "OnlineDPOTrainer":
        from trl.experimental.online_dpo import OnlineDPOConfig as Config, OnlineDPOTrainer as Trainer

        from rlhf.rewards import topic_reward

        common["warmup_steps"] = 0.0
        args = Config(beta=0.1, max_new_tokens=8, temperature=0.5, max_length=256, **common)
        data = datasets.load_dataset("json", data_files=asset_path("data/topics_prompts.train.jsonl"), split="train")
        kwargs = dict(train_dataset=data, reward_funcs=[topic_reward])
    else:
        raise SystemExit(f"no plain script for {trainer}")

    stamps: list[float] = []
    cpu: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            stamps.append(time.time())
            cpu.append(time.process_time())

    trainer = Trainer(model=model, args=args, processing_class=tokenizer, callbacks=[Stamp()], **kwargs)
    settings = trainer_settings(trainer, attention=None)  # nothing here asks for an attention kernel
    trainer.train()
    (out_dir / "times.json").write_text(json.dumps({"started": STARTED, "steps": stamps, "cpu": cpu,
                                                    "settings": settings}))


if __name__ == "__main__":
    main()
