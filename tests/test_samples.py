"""The embedded samples, one per dataset type's layout, go through the data stage of the
methods that read them, in each family that reads them; and they rebuild byte for byte."""

from __future__ import annotations

import filecmp

import pytest

from rlhf.assets import ASSETS
from rlhf.assets.build_samples import LAYOUTS, build
from rlhf.launch.compose import compose_job
from rlhf.config.validate import validate

PAIR_LAYOUTS = ["default", "argilla", "argilla_chat", "icr", "intel", "prompt_pairs", "ultra"]
KTO_LAYOUTS = ["argilla", "argilla_chat", "intel", "prompt_pairs", "ultra"]
CASES = (
    [(f"sample_{m}", method, f"{family}.{m}") for m in PAIR_LAYOUTS for family in ("chatml", "llama3")
     for method in ("dpo",)]
    + [(f"sample_{m}", "simpo", f"chatml.{m}") for m in PAIR_LAYOUTS]
    + [(f"sample_kto_{m}", "kto", f"{family}.{m}") for m in KTO_LAYOUTS for family in ("chatml", "llama3")]
    + [("sample_nectar", "dpo", "zephyr.nectar"), ("sample_chat_template", "dpo", "chat_template.default"),
       ("sample_chat_template_argilla_chat", "dpo", "chat_template.argilla_chat"),
       ("sample_chat_template_argilla_chat", "orpo", "chat_template.argilla_chat"),
       ("sample_user_defined", "dpo", None), ("sample_kto_user_defined", "kto", None),
       ("sample_intel", "orpo", "chatml.intel"), ("sample_intel", "kto_unpaired", "chatml.intel")]
)
MARKER = {"chatml": "<|im_start|>", "llama3": "<|start_header_id|>", "zephyr": "<|system|>",
          "chat_template": "<|im_start|>", None: "<|im_start|>"}


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ASSETS / "models" / "tiny-chatml")


@pytest.mark.parametrize("option,method,type_name", CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES])
def test_every_sample_prepares_in_every_type_that_reads_it(tmp_path, tokenizer, option, method, type_name):
    from rlhf.data.build import build as build_rows

    overrides = [f"dataset={option}", f"cache_dir={tmp_path}"]
    if method == "kto_unpaired":
        method, overrides = "kto", overrides + ["dataset.unpair=true"]
    overrides.append(f"method={method}")
    if type_name is not None:
        overrides.append(f"dataset.type={type_name}")
    run = validate(compose_job(overrides))
    train, _, report = build_rows(run, tokenizer)
    rows_in_file = sum(1 for _ in open(run.dataset.path, encoding="utf-8"))
    expected = rows_in_file * (2 if run.dataset.unpair else 1)
    assert report.rows_read == rows_in_file and len(train) == expected
    family = type_name.split(".")[0] if type_name else None
    assert all(row["prompt"].startswith(MARKER[family]) for row in train)
    answer = "completion" if method == "kto" else "chosen"
    assert all(isinstance(row[answer], str) and row[answer] for row in train)
    if method == "kto":
        assert {row["label"] for row in train} == {True, False}
    assert any("—" in row["prompt"] or "\n" in row["prompt"].split("user")[-1] for row in train)


def test_samples_rebuild_byte_identical(tmp_path):
    built = build(tmp_path / "samples")
    names = sorted(p.name for p in built.iterdir())
    assert names == sorted(f"{n}.jsonl" for n in LAYOUTS) == sorted(p.name for p in (ASSETS / "samples").iterdir())
    assert [n for n in names if not filecmp.cmp(built / n, ASSETS / "samples" / n, shallow=False)] == []
