"""Build the embedded "topics" task, deterministically, in the shapes each method reads.

    python -m rlhf.assets.build_data [OUT_DIR]

The task has a known answer: a prompt asks for a thing of one category (a fruit, an animal, a
colour, a tool); the preferred answer names a thing of that category, the dispreferred one a
thing of another. A model can only separate them by reading the prompt, and every
(prompt, word) combination in the eval files is absent from the train files, so held-out
preference accuracy measures what was learned, not what was memorised.

Files (JSON lines), each in a seed dataset type:
- `topics_pairs.{train,eval}.jsonl`: `system?`, `question`, `chosen`, `rejected` (`chatml.intel`)
- `topics_unpaired.{train,eval}.jsonl`: `system?`, `question`, `completion`, `label` (KTO `chatml.intel`)
- `topics_conversations.{train,eval}.jsonl`: `chosen` / `rejected` message lists (`chat_template.argilla`)
- `topics_prompts.{train,eval}.jsonl`: `prompt` (messages) and `category`, for GRPO with
  `rlhf.rewards.topic_reward` (no type: the rows already hold the trainer's columns)
- `gsm8k_sample.jsonl`: GSM8K-shaped `question` / `answer` rows for the seed's GRPO example
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


def _unpaired(rows: list[dict]) -> list[dict]:
    """Unpaired rows: alternate desirable and undesirable so every batch holds both labels."""
    out = []
    for i, row in enumerate(rows):
        base = {k: v for k, v in row.items() if k in ("system", "question")}
        good = i % 2 == 0
        out.append({**base, "completion": row["chosen" if good else "rejected"], "label": good})
    return out


def _conversations(rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        user = {"role": "user", "content": row["question"]}
        new = {"system": row["system"]} if "system" in row else {}
        new["chosen"] = [user, {"role": "assistant", "content": row["chosen"]}]
        new["rejected"] = [user, {"role": "assistant", "content": row["rejected"]}]
        out.append(new)
    return out


def _prompts(rows: list[dict]) -> list[dict]:
    """One prompt per (question, category); the reward knows the category."""
    seen, out = set(), []
    for row in rows:
        category = next(c for c in CATEGORIES if c in row["question"])
        key = (row.get("system"), row["question"])
        if key in seen:
            continue
        seen.add(key)
        messages = [{"role": "system", "content": row["system"]}] if "system" in row else []
        out.append({"prompt": messages + [{"role": "user", "content": row["question"]}], "category": category})
    return out


GSM8K_SAMPLE = [
    ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
     "How many clips did Natalia sell altogether in April and May?",
     "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether "
     "in April and May.\n#### 72"),
    ("Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
     "How much did she earn?",
     "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = "
     "$<<0.2*50=10>>10.\n#### 10"),
    ("Betty is saving money for a new wallet which costs $100. Betty has only half of the money she needs. "
     "Her parents decided to give her $15 for that purpose, and her grandparents twice as much as her "
     "parents. How much more money does Betty need to buy the wallet?",
     "In the beginning, Betty has only 100 / 2 = $<<100/2=50>>50.\nBetty's grandparents gave her 15 * 2 = "
     "$<<15*2=30>>30.\nThis means, Betty needs 100 - 50 - 30 - 15 = $<<100-50-30-15=5>>5 more.\n#### 5"),
    ("James writes a 3-page letter to 2 different friends twice a week. How many pages does he write a year?",
     "He writes each friend 3*2=<<3*2=6>>6 pages a week\nSo he writes 6*2=<<6*2=12>>12 pages every week\n"
     "That means he writes 12*52=<<12*52=624>>624 pages a year\n#### 624"),
    ("Albert is wondering how much pizza he can eat in one day. He buys 2 large pizzas and 2 small pizzas. "
     "A large pizza has 16 slices and a small pizza has 8 slices. If he eats it all, how many pieces does "
     "he eat that day?",
     "He eats 32 from the largest pizzas because 2 x 16 = <<2*16=32>>32\nHe eats 16 from the small pizza "
     "because 2 x 8 = <<2*8=16>>16\nHe eats 48 pieces because 32 + 16 = <<32+16=48>>48\n#### 48"),
    ("Ken created a care package to send to his brother. He placed a box on a scale, and then he poured into "
     "the box enough jelly beans to bring the weight to 2 pounds. Then, he added enough brownies to cause "
     "the weight to triple. Next, he added another 2 pounds of jelly beans. And finally, he added enough "
     "gummy worms to double the weight once again. What was the final weight of the box of goodies, in "
     "pounds?",
     "To the initial 2 pounds of jelly beans, he added enough brownies to cause the weight to triple, "
     "bringing the weight to 2*3=<<2*3=6>>6 pounds.\nNext, he added another 2 pounds of jelly beans, "
     "bringing the weight to 6+2=<<6+2=8>>8 pounds.\nAnd finally, he added enough gummy worms to double "
     "the weight once again, to a final weight of 8*2=<<8*2=16>>16 pounds.\n#### 16"),
    ("Alexis is applying for a new job and bought a new set of business clothes to wear to the interview. "
     "She went to a department store with a budget of $200 and spent $30 on a button-up shirt, $46 on "
     "suit pants, $38 on a suit coat, $11 on socks, and $18 on a belt. She also purchased a pair of shoes, "
     "but lost the receipt for them. She has $16 left from her budget. How much did Alexis pay for the "
     "shoes?",
     "Let S be the amount Alexis paid for the shoes.\nShe spent S + 30 + 46 + 38 + 11 + 18 = S + "
     "<<+30+46+38+11+18=143>>143.\nShe used all but $16 of her budget, so S + 143 = 200 - 16 = 184.\nThus, "
     "Alexis paid S = 184 - 143 = $<<184-143=41>>41 for the shoes.\n#### 41"),
    ("Tina makes $18.00 an hour. If she works more than 8 hours per shift, she is eligible for overtime, "
     "which is paid by your hourly wage + 1/2 your hourly wage. If she works 10 hours every day for 5 "
     "days, how much money does she make?",
     "She works 8 hours a day for $18 per hour so she makes 8*18 = $<<8*18=144.00>>144.00 per 8-hour "
     "shift\nShe works 10 hours a day and anything over 8 hours is eligible for overtime, so she gets "
     "10-8 = <<10-8=2>>2 hours of overtime\nOvertime is calculated as time and a half so and she makes "
     "$18/hour so her overtime pay is 18*.5 = $<<18*.5=9.00>>9.00\nHer overtime pay is 18+9 = "
     "$<<18+9=27.00>>27.00\nHer base pay is $144.00 per 8-hour shift and she works 5 days and makes 5 * "
     "$144 = $<<144*5=720.00>>720.00\nHer overtime pay is $27.00 per hour and she works 2 hours of "
     "overtime per day and makes 27*2 = $<<27*2=54.00>>54.00 in overtime pay\n2 hours of overtime pay "
     "for 5 days means she makes 54*5 = $270.00\nIn 5 days her base pay is $720.00 and she makes $270.00 "
     "in overtime pay so she makes $720 + $270 = $<<720+270=990.00>>990.00\n#### 990"),
]


def _write(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def build(out_dir: str | Path = DEFAULT_OUT, seed: int = 0) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train, evaluation = _split(_pairs(seed))
    shapes = (("pairs", list), ("unpaired", _unpaired), ("conversations", _conversations), ("prompts", _prompts))
    for name, convert in shapes:
        _write(out / f"topics_{name}.train.jsonl", convert(train))
        _write(out / f"topics_{name}.eval.jsonl", convert(evaluation))
    _write(out / "gsm8k_sample.jsonl", [{"question": q, "answer": a} for q, a in GSM8K_SAMPLE])
    return out


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_OUT))
