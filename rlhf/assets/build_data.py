"""Build the embedded "topics" task, deterministically, in the shapes each method reads.

    python -m rlhf.assets.build_data [OUT_DIR]

The task has a known answer: a prompt asks for a thing of one category (a fruit, an animal, a
colour, a tool); the preferred answer names a thing of that category, the dispreferred one a
thing of another. A model can only separate them by reading the prompt, and every
(prompt, word) combination in the eval files is absent from the train files, so held-out
preference accuracy measures what was learned, not what was memorised.

Files (JSON lines), each in a seed dataset type:
- `topics_pairs.{train,eval}.jsonl`: `system?`, `question`, `chosen`, `rejected` (`chatml.intel`)
- `topics_kto.{train,eval}.jsonl`: `system?`, `question`, `completion`, `label` (KTO `chatml.intel`)
- `topics_orpo.{train,eval}.jsonl`: `chosen` / `rejected` message lists (`chat_template.argilla`)
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from rlhf.assets import ASSETS

DEFAULT_OUT = ASSETS / "data"

CATEGORIES = {
    "fruit": ["apple", "banana", "cherry", "grape", "lemon", "mango", "peach", "pear", "plum", "kiwi"],
    "animal": ["cat", "dog", "horse", "mouse", "tiger", "lion", "zebra", "camel", "otter", "panda"],
    "colour": ["red", "blue", "green", "yellow", "purple", "pink", "brown", "black", "white", "grey"],
    "tool": ["hammer", "saw", "drill", "wrench", "chisel", "pliers", "spade", "rake", "file", "axe"],
}
QUESTIONS = [
    "Name a {c}.",
    "Give me one {c}.",
    "Which {c} do you like?",
    "Tell me a {c}, please.",
    "Say any {c}.",
    "Pick a {c} for me.",
]
ANSWERS = ["{w}", "A {w}.", "I pick the {w}.", "My answer: {w}."]
SYSTEMS = [None, None, "You are a helpful assistant.", "Answer in a few words."]


def task_words() -> list[str]:
    """Every word the task's texts use (the tiny tokenizer makes each one token)."""
    import re

    texts = [*QUESTIONS, *ANSWERS, *(s for s in SYSTEMS if s)]
    texts += [w for words in CATEGORIES.values() for w in words] + list(CATEGORIES)
    return sorted({w for text in texts for w in re.findall(r"[A-Za-z]+", text.replace("{c}", "").replace("{w}", ""))})


def _pairs(seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for category, words in CATEGORIES.items():
        others = [w for c, ws in CATEGORIES.items() if c != category for w in ws]
        for question in QUESTIONS:
            for word in words:
                for answer in ANSWERS:
                    row = {"question": question.format(c=category)}
                    system = rng.choice(SYSTEMS)
                    if system is not None:
                        row = {"system": system, **row}
                    row["chosen"] = answer.format(w=word)
                    row["rejected"] = answer.format(w=rng.choice(others))
                    rows.append(row)
    rng.shuffle(rows)
    return rows


def _split(rows: list[dict], eval_fraction: float = 0.15) -> tuple[list[dict], list[dict]]:
    n_eval = int(len(rows) * eval_fraction)
    return rows[n_eval:], rows[:n_eval]


def _kto(rows: list[dict]) -> list[dict]:
    """Unpaired rows: alternate desirable and undesirable so every batch holds both labels."""
    out = []
    for i, row in enumerate(rows):
        base = {k: v for k, v in row.items() if k in ("system", "question")}
        good = i % 2 == 0
        out.append({**base, "completion": row["chosen" if good else "rejected"], "label": good})
    return out


def _orpo(rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        user = {"role": "user", "content": row["question"]}
        new = {"system": row["system"]} if "system" in row else {}
        new["chosen"] = [user, {"role": "assistant", "content": row["chosen"]}]
        new["rejected"] = [user, {"role": "assistant", "content": row["rejected"]}]
        out.append(new)
    return out


def _write(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def build(out_dir: str | Path = DEFAULT_OUT, seed: int = 0) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train, evaluation = _split(_pairs(seed))
    for name, convert in (("pairs", list), ("kto", _kto), ("orpo", _orpo)):
        _write(out / f"topics_{name}.train.jsonl", convert(train))
        _write(out / f"topics_{name}.eval.jsonl", convert(evaluation))
    return out


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_OUT))
