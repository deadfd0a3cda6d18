"""The shipped tiny model and data are exactly what their build scripts produce."""

from __future__ import annotations

import filecmp

from rlhf.assets import ASSETS
from rlhf.assets import build_data, build_tiny


def _same_tree(a, b) -> list[str]:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    return [n for n in names if not filecmp.cmp(a / n, b / n, shallow=False)]


def test_tiny_model_rebuilds_byte_identical(tmp_path):
    built = build_tiny.build(tmp_path / "tiny")
    assert _same_tree(built, ASSETS / "models" / "tiny-chatml") == []


def test_embedded_data_rebuilds_byte_identical(tmp_path):
    built = build_data.build(tmp_path / "data")
    assert _same_tree(built, ASSETS / "data") == []


def test_tiny_tokenizer_loads_like_a_hub_tokenizer_and_round_trips_any_text():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ASSETS / "models" / "tiny-chatml")
    text = tokenizer.apply_chat_template(
        [{"role": "system", "content": "Sé breve."}, {"role": "user", "content": "Name a fruit 🍎\nplease"}],
        tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nSé breve.<|im_end|>\n<|im_start|>user\nName a fruit 🍎\nplease"
                    "<|im_end|>\n<|im_start|>assistant\n")
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    # Task words are single tokens, so the tiny model can learn the task in seconds.
    assert tokenizer.tokenize(" mango") == ["Ġmango"]
