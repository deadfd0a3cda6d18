"""A plain TRL script on a large dataset, as a careful user would write it without the platform:
the baseline of the data-stage benchmark (`python -m rlhf.bench --only data_large`). The rows are
read with datasets, formatted with f-strings (the same ChatML text as the platform's
chatml.intel type) and handed to TRL's trainer, which tokenizes them itself; one optimizer
step. The bench gives it what the platform's run has: `dataset_num_proc` (and the formatting
map's num_proc) equal to the platform's data workers, the same torch threads, batch and
precision (TRL's configs turn bf16 on by default; the platform's CPU runs are fp32).

    python -m rlhf.dev.bench.plain_trl_data <DPOTrainer|KTOTrainer> <data.jsonl> <tokenizer dir> <max_length> \
        <out_dir> <data workers> <torch threads> <batch> <fp32|bf16|fp16>

Writes <out_dir>/times.json: the process start, the wall-clock time at the end of the first
optimizer step, and the settings the trainer trained with (rlhf.dev.bench.settings).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

STARTED = time.time()

END = "<|im_end|>"


def chatml(row: dict) -> str:
    system = f"<|im_start|>system\n{row['system']}<|im_end|>\n" if row.get("system") else ""
    return system + f"<|im_start|>user\n{row['question']}<|im_end|>\n<|im_start|>assistant\n"


def main() -> None:
    trainer, data_file, tokenizer_dir, max_length, out_dir = sys.argv[1:6]
    workers, threads, batch = (int(n) for n in sys.argv[6:9])
    precision = sys.argv[9]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from rlhf.assets import asset_path
    from rlhf.dev.bench.settings import trainer_settings

    torch.set_num_threads(threads)
    tiny = asset_path("models/tiny-chatml")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
    common = dict(output_dir=str(out_dir / "trl"), learning_rate=1e-3, per_device_train_batch_size=batch,
                  gradient_accumulation_steps=1, max_steps=1, logging_steps=1, seed=42, data_seed=42, use_cpu=True,
                  report_to=[], save_strategy="no", eval_strategy="no", disable_tqdm=True,
                  max_length=int(max_length), dataset_num_proc=workers, bf16=precision == "bf16",
                  fp16=precision == "fp16")
    rows = datasets.load_dataset("json", data_files=data_file, split="train")
    if trainer == "DPOTrainer":
        from trl import DPOConfig, DPOTrainer

        rows = rows.map(lambda r: {"prompt": chatml(r), "chosen": r["chosen"] + END, "rejected": r["rejected"] + END},
                        remove_columns=rows.column_names, num_proc=workers)
        trainer_class, args, extra = DPOTrainer, DPOConfig(beta=0.1, **common), {}
    elif trainer == "KTOTrainer":
        from trl import KTOConfig, KTOTrainer

        rows = rows.map(lambda r: {"prompt": chatml(r), "completion": r["completion"] + END, "label": r["label"]},
                        remove_columns=rows.column_names, num_proc=workers)
        trainer_class, args = KTOTrainer, KTOConfig(beta=0.1, **common)
        extra = {"ref_model": AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)}
    else:
        raise SystemExit(f"no plain script for {trainer}")

    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            stamps.append(time.time())

    trainer = trainer_class(model=model, args=args, train_dataset=rows, processing_class=tokenizer,
                            callbacks=[Stamp()], **extra)
    settings = trainer_settings(trainer, attention=None)  # nothing here asks for an attention kernel
    trainer.train()
    (out_dir / "times.json").write_text(json.dumps({"started": STARTED, "steps": stamps, "settings": settings}))


if __name__ == "__main__":
    main()
