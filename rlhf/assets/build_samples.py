"""Build small embedded samples in the row shape of every dataset type, deterministically.

    python -m rlhf.assets.build_samples [OUT_DIR]

One JSON-lines file per field layout under `rlhf/assets/samples/`: the DPO mappings
(`default`, `argilla`, `argilla_chat`, `icr`, `intel`, `prompt_pairs`, `ultra`, each read by
`chatml.*` and `llama3.*` alike), `nectar` (zephyr.nectar), `chat_template` (chat_template
.default), `chat_template_argilla_chat`, `user_defined`, and the KTO layouts (`kto_argilla`,
`kto_argilla_chat`, `kto_intel`, `kto_prompt_pairs`, `kto_ultra`, `kto_user_defined`). Each
holds the topics task's answers (so a run on it can learn), with and without a system prompt,
and with Unicode and multi-line text. conf/dataset/sample_*.yaml point at them.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from rlhf.assets import ASSETS
from rlhf.assets.build_data import CATEGORIES, SYSTEMS

DEFAULT_OUT = ASSETS / "samples"
QUESTIONS = ["Name a {c}.", "Nenne ein {c} — bitte!", "Which {c}?\nOne word is enough."]
ROWS = 48


def _items(seed: int) -> list[dict]:
    rng = random.Random(seed)
    items = []
    for i in range(ROWS):
        category = list(CATEGORIES)[i % len(CATEGORIES)]
        wrong = rng.choice([c for c in CATEGORIES if c != category])
        items.append({"system": SYSTEMS[i % len(SYSTEMS)], "question": rng.choice(QUESTIONS).format(c=category),
                      "chosen": rng.choice(CATEGORIES[category]), "rejected": rng.choice(CATEGORIES[wrong]),
                      "good": i % 2 == 0})
    return items


def _with_system(item: dict, row: dict) -> dict:
    return {"system": item["system"], **row} if item["system"] else row


def _messages(question: str, answer: str) -> list[dict]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


LAYOUTS = {
    "default": lambda it: _with_system(it, {"prompt": it["question"], "chosen": it["chosen"],
                                            "rejected": it["rejected"]}),
    "argilla": lambda it: _with_system(it, {"instruction": it["question"], "chosen_response": it["chosen"],
                                            "rejected_response": it["rejected"]}),
    "argilla_chat": lambda it: {"chosen": _messages(it["question"], it["chosen"]),
                                "rejected": _messages(it["question"], it["rejected"])},
    "icr": lambda it: _with_system(it, {"input": it["question"], "chosen": it["chosen"], "rejected": it["rejected"]}),
    "intel": lambda it: _with_system(it, {"question": it["question"], "chosen": it["chosen"],
                                          "rejected": it["rejected"]}),
    "prompt_pairs": lambda it: _with_system(it, {"prompt": it["question"], "chosen": it["chosen"],
                                                 "rejected": it["rejected"]}),
    "ultra": lambda it: _with_system(it, {"prompt": it["question"], "chosen": _messages(it["question"], it["chosen"]),
                                          "rejected": _messages(it["question"], it["rejected"])}),
    "nectar": lambda it: {"prompt": it["question"], "answers": [{"answer": it["rejected"], "rank": 2},
                                                                {"answer": it["chosen"], "rank": 1}]},
    "chat_template": lambda it: {"messages": ([{"role": "system", "content": it["system"]}] if it["system"] else [])
                                 + [{"role": "user", "content": it["question"]}],
                                 "chosen": it["chosen"], "rejected": it["rejected"]},
    "chat_template_argilla_chat": lambda it: {"chosen": _messages(it["question"], it["chosen"]),
                                              "rejected": _messages(it["question"], it["rejected"])},
    "user_defined": lambda it: {"instruction": it["question"], "sys": it["system"] or "", "good": it["chosen"],
                                "bad": it["rejected"]},
    "kto_argilla": lambda it: _with_system(it, {"instruction": it["question"], "completion": _answer(it),
                                                "label": it["good"]}),
    "kto_argilla_chat": lambda it: {"chosen": [{"role": "user", "content": it["question"]}],
                                    "completion": [{"role": "assistant", "content": _answer(it)}],
                                    "label": it["good"]},
    "kto_intel": lambda it: _with_system(it, {"question": it["question"], "completion": _answer(it),
                                              "label": it["good"]}),
    "kto_prompt_pairs": lambda it: _with_system(it, {"prompt": it["question"], "completion": _answer(it),
                                                     "label": it["good"]}),
    "kto_ultra": lambda it: _with_system(it, {"prompt": it["question"], "completion": _answer(it),
                                              "label": "true" if it["good"] else "false"}),
    "kto_user_defined": lambda it: {"instruction": it["question"], "reply": _answer(it),
                                    "ok": 1 if it["good"] else 0},
}


def _answer(item: dict) -> str:
    return item["chosen"] if item["good"] else item["rejected"]


def build(out_dir: str | Path = DEFAULT_OUT, seed: int = 0) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items = _items(seed)
    for name, layout in LAYOUTS.items():
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for item in items:
                f.write(json.dumps(layout(item), ensure_ascii=False) + "\n")
    return out


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_OUT))
