"""The plain TRL script of the `lengths` bench section: TRL's trainer as a careful user sets it on
the long-tailed rows (fp32, the reference log-probs precomputed where TRL offers it, the bench's
batch and threads, no gradient checkpointing), with each step's time and the padding of every
batch its collator makes.

    python -m rlhf.dev.bench.plain_trl_lengths <DPOTrainer|KTOTrainer|RewardTrainer> <model_dir> <data_dir> <out_dir> <steps>
        <threads> <batch> <max_length>

Writes <out_dir>/times.json: step wall and CPU times, each step's logged loss, the padding share
of the training batches (padding positions over all positions of input_ids), each batch's real
tokens, and the trainer's settings (rlhf.dev.bench.settings).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

STARTED = time.time()


def chatml(question: str) -> str:
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


def main() -> None:
    """Train and record. Long because it is the plain script a user writes, one straight branch
    per trainer: cut into the platform's kind of functions it would stop being the baseline."""
    trainer_name, model_dir, data_dir, out_dir = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
    steps, threads, batch, max_length = (int(a) for a in sys.argv[5:9])
    out_dir.mkdir(parents=True, exist_ok=True)
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from rlhf.dev.bench.settings import trainer_settings

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    common = dict(output_dir=str(out_dir / "trl"), learning_rate=1e-5, lr_scheduler_type="cosine", warmup_steps=0.1,
                  per_device_train_batch_size=batch, gradient_accumulation_steps=1, max_steps=steps, logging_steps=1,
                  seed=42, data_seed=42, use_cpu=True, bf16=False, report_to=[], save_strategy="no",
                  eval_strategy="no", activation_checkpointing=False, disable_tqdm=True, max_length=max_length)
    end = "<|im_end|>"
    pairs = datasets.load_dataset("json", data_files=str(data_dir / "pairs.jsonl"), split="train")
    if trainer_name == "DPOTrainer":
        from trl import DPOConfig as Config, DPOTrainer as Trainer

        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        args = Config(beta=0.1, precompute_ref_log_probs=True, **common)
        train = pairs.map(lambda r: {"prompt": chatml(r["question"]), "chosen": r["chosen"] + end,
                                     "rejected": r["rejected"] + end}, remove_columns=pairs.column_names)
        kwargs = {}
    elif trainer_name == "KTOTrainer":
        from trl import KTOConfig as Config, KTOTrainer as Trainer

        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        common["per_device_train_batch_size"] = 2 * batch
        args = Config(beta=0.1, precompute_ref_log_probs=True, **common)
        rows = datasets.load_dataset("json", data_files=str(data_dir / "unpaired.jsonl"), split="train")
        train = rows.map(lambda r: {"prompt": chatml(r["question"]), "completion": r["completion"] + end,
                                    "label": r["label"]}, remove_columns=rows.column_names)
        kwargs = {}
    elif trainer_name == "RewardTrainer":
        from transformers import AutoModelForSequenceClassification, set_seed
        from trl import RewardConfig as Config, RewardTrainer as Trainer

        set_seed(42)
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1, dtype=torch.float32)
        model.config.pad_token_id = tokenizer.pad_token_id
        args = Config(**common)
        train = pairs.map(lambda r: {"chosen": chatml(r["question"]) + r["chosen"] + end,
                                     "rejected": chatml(r["question"]) + r["rejected"] + end},
                          remove_columns=pairs.column_names)
        kwargs = {}
    else:
        raise SystemExit(f"no plain script for {trainer_name}")

    stamps: list[float] = []
    cpu: list[float] = []
    losses: list[float] = []
    seen = {"positions": 0, "real": []}

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            stamps.append(time.time())
            cpu.append(time.process_time())

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(logs["loss"])

    trainer = Trainer(model=model, args=args, processing_class=tokenizer, train_dataset=train, callbacks=[Stamp()],
                      **kwargs)
    collate = trainer.data_collator

    def counting(examples):
        out = collate(examples)
        mask = out["attention_mask"]
        seen["positions"] += mask.numel()
        seen["real"].append(int(mask.sum()))
        return out

    trainer.data_collator = counting
    settings = trainer_settings(trainer, attention=None)
    trainer.train()
    (out_dir / "times.json").write_text(json.dumps({
        "started": STARTED, "steps": stamps, "cpu": cpu, "losses": losses, "settings": settings,
        "padding_share": 1 - sum(seen["real"]) / seen["positions"], "real_tokens": seen["real"]}))


if __name__ == "__main__":
    main()
