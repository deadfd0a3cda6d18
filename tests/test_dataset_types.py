"""Every dataset type against hand-written expected strings (shared/spec/formats.md).

The templates below are written out by hand from the spec; the code under test is only ever
called, never used to build an expected value.
"""

from __future__ import annotations

import sys
import textwrap

import pytest

from rlhf.data.formats import RowError, format_row, get_formatter, suggest_types, valid_types
from rlhf.core.errors import ConfigError, UserCodeError

S = "Sé breve."
P = "Wie heißt du?\nZweite Zeile ✓"
C = "Ich bin 🤖.\nOk"
R = "Nein"
X = "Vielleicht…"

CHATML_P_SYS = f"<|im_start|>system\n{S}<|im_end|>\n<|im_start|>user\n{P}<|im_end|>\n<|im_start|>assistant\n"
CHATML_P = f"<|im_start|>user\n{P}<|im_end|>\n<|im_start|>assistant\n"
LLAMA3_P_SYS = (f"<|start_header_id|>system<|end_header_id|>\n\n{S}<|eot_id|><|start_header_id|>user"
                f"<|end_header_id|>\n\n{P}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
LLAMA3_P = f"<|start_header_id|>user<|end_header_id|>\n\n{P}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
END = {"chatml": "<|im_end|>", "llama3": "<|eot_id|>"}
PROMPT = {("chatml", True): CHATML_P_SYS, ("chatml", False): CHATML_P,
          ("llama3", True): LLAMA3_P_SYS, ("llama3", False): LLAMA3_P}


def msgs(*pairs):
    return [{"role": role, "content": text} for role, text in pairs]


# mapping -> (row without system, does the mapping read `system`)
DPO_ROWS = {
    "default": ({"prompt": P, "chosen": C, "rejected": R}, True),
    "argilla": ({"instruction": P, "chosen_response": C, "rejected_response": R}, True),
    "argilla_chat": ({"chosen": msgs(("user", P), ("assistant", C)),
                      "rejected": msgs(("user", P), ("assistant", R))}, False),
    "icr": ({"input": P, "chosen": C, "rejected": R}, True),
    "intel": ({"question": P, "chosen": C, "rejected": R}, True),
    "prompt_pairs": ({"prompt": P, "chosen": C, "rejected": R}, True),
    "ultra": ({"prompt": P, "chosen": msgs(("user", P), ("assistant", C)),
               "rejected": msgs(("user", P), ("assistant", R))}, True),
}
KTO_ROWS = {
    "argilla": ({"instruction": P, "completion": X, "label": True}, True),
    "argilla_chat": ({"chosen": msgs(("user", P)), "completion": msgs(("assistant", X)), "label": True}, False),
    "intel": ({"question": P, "completion": X, "label": True}, True),
    "prompt_pairs": ({"prompt": P, "completion": X, "label": True}, True),
    "ultra": ({"prompt": P, "completion": X, "label": True}, True),
}


@pytest.mark.parametrize("method", ["dpo", "ipo", "simpo", "orpo"])
@pytest.mark.parametrize("family", ["chatml", "llama3"])
@pytest.mark.parametrize("mapping", sorted(DPO_ROWS))
@pytest.mark.parametrize("with_system", [True, False])
def test_pair_types(method, family, mapping, with_system):
    row, reads_system = DPO_ROWS[mapping]
    row = {**row, "system": S} if with_system else dict(row)
    out = format_row(method, f"{family}.{mapping}", row)
    assert out == {"prompt": PROMPT[(family, with_system and reads_system)],
                   "chosen": C + END[family], "rejected": R + END[family]}


def test_bare_family_means_default():
    row = {"question": P, "chosen": C, "rejected": R}
    assert format_row("dpo", "chatml", row) == format_row("dpo", "chatml.default", row)
    assert format_row("dpo", "llama3", row)["prompt"] == LLAMA3_P


def test_default_mapping_takes_the_first_present_prompt_and_answer_fields():
    row = {"instruction": "I", "question": P, "chosen_response": C, "rejected": R}
    assert format_row("dpo", "chatml.default", row) == {"prompt": CHATML_P, "chosen": C + "<|im_end|>",
                                                        "rejected": R + "<|im_end|>"}


@pytest.mark.parametrize("family", ["chatml", "llama3"])
@pytest.mark.parametrize("mapping", sorted(KTO_ROWS))
@pytest.mark.parametrize("with_system", [True, False])
def test_kto_types(family, mapping, with_system):
    row, reads_system = KTO_ROWS[mapping]
    row = {**row, "system": S} if with_system else dict(row)
    out = format_row("kto", f"{family}.{mapping}", row)
    assert out == {"prompt": PROMPT[(family, with_system and reads_system)], "completion": X + END[family],
                   "label": True}


def test_kto_argilla_chat_also_takes_a_two_message_completion():
    row = {"completion": msgs(("user", P), ("assistant", X)), "label": False}
    assert format_row("kto", "chatml.argilla_chat", row) == {"prompt": CHATML_P, "completion": X + "<|im_end|>",
                                                             "label": False}


def test_zephyr_nectar_takes_rank_1_as_chosen_and_the_next_best_as_rejected():
    """Spec 6.2: Axolotl takes the largest rank number (the worst answer) as chosen."""
    row = {"prompt": P, "answers": [{"answer": "third", "rank": 3}, {"answer": C, "rank": 1},
                                    {"answer": R, "rank": 2}, {"answer": "fourth", "rank": 4}]}
    assert format_row("dpo", "zephyr.nectar", row) == {
        "prompt": f"<|system|>\n</s>\n<|user|>\n{P}</s>\n<|assistant|>\n", "chosen": C, "rejected": R}


def test_zephyr_nectar_ties_keep_input_order():
    row = {"prompt": P, "answers": [{"answer": "x", "rank": 2}, {"answer": "first-2", "rank": 2},
                                    {"answer": "best", "rank": 1}]}
    out = format_row("dpo", "zephyr.nectar", row)
    assert (out["chosen"], out["rejected"]) == ("best", "x")


def test_system_turn_only_for_a_non_empty_string():
    base = {"question": P, "chosen": C, "rejected": R}
    for system in (None, ""):
        assert format_row("dpo", "chatml.intel", {**base, "system": system})["prompt"] == CHATML_P
    assert format_row("dpo", "chatml.intel", {**base, "system": "  "})["prompt"] == (
        f"<|im_start|>system\n  <|im_end|>\n<|im_start|>user\n{P}<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("mapping", ["argilla_chat", "ultra"])
def test_multi_turn_conversations_keep_their_history(mapping):
    """Spec 6.3: the turns of chosen before its last message are rendered in order."""
    chosen = msgs(("user", "first"), ("assistant", "reply"), ("user", "second"), ("assistant", C))
    rejected = msgs(("user", "first"), ("assistant", "reply"), ("user", "second"), ("assistant", R))
    row = {"chosen": chosen, "rejected": rejected, **({"prompt": "first"} if mapping == "ultra" else {})}
    out = format_row("dpo", f"chatml.{mapping}", row)
    assert out["prompt"] == ("<|im_start|>user\nfirst<|im_end|>\n<|im_start|>assistant\nreply<|im_end|>\n"
                             "<|im_start|>user\nsecond<|im_end|>\n<|im_start|>assistant\n")
    assert (out["chosen"], out["rejected"]) == (C + "<|im_end|>", R + "<|im_end|>")
    llama = format_row("dpo", f"llama3.{mapping}", row)
    assert llama["prompt"] == ("<|start_header_id|>user<|end_header_id|>\n\nfirst<|eot_id|>"
                               "<|start_header_id|>assistant<|end_header_id|>\n\nreply<|eot_id|>"
                               "<|start_header_id|>user<|end_header_id|>\n\nsecond<|eot_id|>"
                               "<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_ultra_prompt_column_is_the_first_user_turn():
    row = {"prompt": P, "chosen": msgs(("user", "ignored copy"), ("assistant", C)),
           "rejected": msgs(("user", "ignored copy"), ("assistant", R))}
    assert format_row("dpo", "chatml.ultra", row)["prompt"] == CHATML_P


def test_conversation_roles_are_checked():
    row = {"chosen": msgs(("assistant", "x"), ("assistant", C)), "rejected": msgs(("user", P), ("assistant", R))}
    with pytest.raises(RowError, match="starts with a 'assistant' message"):
        format_row("dpo", "chatml.argilla_chat", row)
    row = {"chosen": msgs(("user", P), ("user", C)), "rejected": msgs(("user", P), ("assistant", R))}
    with pytest.raises(RowError, match="ends with a 'user' message"):
        format_row("dpo", "chatml.argilla_chat", row)


@pytest.mark.parametrize("mapping", ["argilla_chat", "ultra"])
@pytest.mark.parametrize("rejected,message", [
    (msgs(("assistant", "x"), ("assistant", R)), "field 'rejected' starts with a 'assistant' message"),
    (msgs(("assistant", R)), "field 'rejected' has 1 message"),
])
def test_the_rejected_conversation_is_checked_like_the_chosen_one(mapping, rejected, message):
    row = {"prompt": P, "chosen": msgs(("user", P), ("assistant", C)), "rejected": rejected}
    with pytest.raises(RowError, match=message):
        format_row("dpo", f"chatml.{mapping}", row)


def test_argilla_is_accepted_for_dpo():
    """Spec 6.1: Axolotl fails to load chatml.argilla / llama3.argilla for DPO."""
    assert "chatml.argilla" in valid_types("dpo") and "llama3.argilla" in valid_types("dpo")


# --------------------------------------------------------------- chat templates


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from rlhf.assets import asset_path

    return AutoTokenizer.from_pretrained(asset_path("models/tiny-chatml"))


def test_chat_template_default(tokenizer):
    row = {"messages": msgs(("system", S), ("user", P)), "chosen": C, "rejected": {"role": "assistant",
                                                                                    "content": R}}
    assert format_row("dpo", "chat_template.default", row, tokenizer) == {
        "prompt": CHATML_P_SYS, "chosen": C + "<|im_end|>", "rejected": R + "<|im_end|>"}


def test_chat_template_default_options_all_take_effect(tokenizer):
    row = {"conv": [{"from": "human", "value": P}], "good": [{"from": "gpt", "value": C}],
           "bad": [{"from": "human", "value": "x"}, {"from": "gpt", "value": R}]}
    out = format_row("dpo", "chat_template.default", row, tokenizer, field_messages="conv", field_chosen="good",
                     field_rejected="bad", message_property_mappings={"role": "from", "content": "value"},
                     roles={"user": ["human"], "assistant": ["gpt"]})
    assert out == {"prompt": CHATML_P, "chosen": C + "<|im_end|>", "rejected": R + "<|im_end|>"}


def test_chat_template_roles_map_replaces_the_default(tokenizer):
    row = {"messages": msgs(("user", P)), "chosen": C, "rejected": R}
    with pytest.raises(RowError, match="role 'user'.*known roles: human"):
        format_row("dpo", "chat_template.default", row, tokenizer, roles={"user": ["human"]})


def test_chat_template_string_messages_is_one_user_turn_and_empty_system_is_rendered(tokenizer):
    out = format_row("dpo", "chat_template.default", {"messages": P, "chosen": C, "rejected": R}, tokenizer)
    assert out["prompt"] == CHATML_P
    row = {"messages": msgs(("system", ""), ("user", P)), "chosen": C, "rejected": R}
    assert format_row("dpo", "chat_template.default", row, tokenizer)["prompt"] == (
        "<|im_start|>system\n<|im_end|>\n" + CHATML_P)


def test_chat_template_cuts_at_the_prompt_not_at_a_text_search(tokenizer):
    """Spec 6.4: an answer that also appears earlier in the conversation ("a")."""
    row = {"messages": msgs(("user", "a")), "chosen": "a", "rejected": "b"}
    out = format_row("dpo", "chat_template.default", row, tokenizer)
    assert out == {"prompt": "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\n", "chosen": "a<|im_end|>",
                   "rejected": "b<|im_end|>"}


def test_chat_template_argilla_chat(tokenizer):
    row = {"chosen": msgs(("user", P), ("assistant", C)), "rejected": msgs(("user", P), ("assistant", R))}
    assert format_row("dpo", "chat_template.argilla_chat", row, tokenizer) == {
        "prompt": CHATML_P, "chosen": C + "<|im_end|>", "rejected": R + "<|im_end|>"}


def test_orpo_chat_template_argilla_keeps_the_newline(tokenizer):
    row = {"system": S, "chosen": msgs(("user", P), ("assistant", C)), "rejected": msgs(("user", P),
                                                                                      ("assistant", R))}
    assert format_row("orpo", "chat_template.argilla", row, tokenizer) == {
        "prompt": CHATML_P_SYS, "chosen": C + "<|im_end|>\n", "rejected": R + "<|im_end|>\n"}
    with_prompt = {**row, "prompt": "only this"}
    assert format_row("orpo", "chat_template.argilla", with_prompt, tokenizer)["prompt"] == (
        f"<|im_start|>system\n{S}<|im_end|>\n<|im_start|>user\nonly this<|im_end|>\n<|im_start|>assistant\n")


def test_orpo_conversations_must_have_even_length(tokenizer):
    row = {"chosen": msgs(("user", P), ("assistant", C), ("user", "x")), "rejected": msgs(("user", P),
                                                                                        ("assistant", R))}
    with pytest.raises(RowError, match="even number"):
        format_row("orpo", "chat_template.argilla", row, tokenizer)


def test_chat_template_types_need_a_tokenizer():
    with pytest.raises(ConfigError, match="no tokenizer was given"):
        get_formatter("dpo", "chat_template.default")


# --------------------------------------------------------------- user_defined


def test_user_defined_dpo():
    spec = {"field_prompt": "q", "field_system": "sys", "field_chosen": "good", "field_rejected": "bad",
            "prompt_format": "[{system}] {prompt} {{literal}}\n", "chosen_format": "{chosen}!",
            "rejected_format": "{rejected}?"}
    row = {"q": P, "sys": S, "good": C, "bad": R}
    assert format_row("dpo", spec, row) == {"prompt": f"[{S}] {P} {{literal}}\n", "chosen": C + "!",
                                            "rejected": R + "?"}
    assert format_row("dpo", spec, {**row, "sys": ""})["prompt"] == f"[] {P} {{literal}}\n"
    assert format_row("dpo", "user_defined.default", {"prompt": P, "chosen": C, "rejected": R}) == {
        "prompt": P, "chosen": C, "rejected": R}


def test_user_defined_unknown_placeholder_names_it_and_the_format():
    with pytest.raises(ConfigError, match=r"prompt_format .* has the placeholder \{question\}"):
        format_row("dpo", {"prompt_format": "{question}"}, {"prompt": P, "chosen": C, "rejected": R})
    with pytest.raises(ConfigError, match="unknown key 'field_promt'.*did you mean 'field_prompt'"):
        format_row("dpo", {"field_promt": "q"}, {})


def test_user_defined_kto_with_system_placeholder_and_no_system_renders_empty():
    """Spec 6.7: Axolotl crashes here."""
    spec = {"prompt_format": "<{system}>{prompt}", "completion_format": "{completion}."}
    out = format_row("kto", spec, {"prompt": P, "completion": X, "label": "TRUE"})
    assert out == {"prompt": f"<>{P}", "completion": X + ".", "label": True}


# --------------------------------------------------------------- labels and bad rows


@pytest.mark.parametrize("raw,expected", [(True, True), (False, False), (1, True), (0, False), ("true", True),
                                          ("False", False), ("TRUE", True)])
def test_kto_labels_become_booleans(raw, expected):
    out = format_row("kto", "chatml.intel", {"question": P, "completion": X, "label": raw})
    assert out["label"] is expected


@pytest.mark.parametrize("raw", ["yes", 2, None, "", [True], " true", "false ", 1.0, 0.0, "1"])
def test_kto_label_that_is_not_boolean_is_an_error(raw):
    with pytest.raises(RowError, match="field 'label' is .*a KTO label must be true or false"):
        format_row("kto", "chatml.intel", {"question": P, "completion": X, "label": raw})


def test_missing_field_lists_needs_has_and_fitting_types():
    with pytest.raises(RowError) as error:
        format_row("dpo", "chatml.intel", {"prompt": P, "chosen": C, "rejected": R})
    message = str(error.value)
    assert "field 'question' is missing" in message and "needs question, chosen, rejected" in message
    assert "the row has chosen, prompt, rejected" in message and "chatml.prompt_pairs" in message


def test_null_is_an_error_never_the_text_none():
    """Spec 6.5: Axolotl writes the text None."""
    with pytest.raises(RowError, match="field 'question' is null"):
        format_row("dpo", "chatml.intel", {"question": None, "chosen": C, "rejected": R})
    with pytest.raises(RowError, match="field 'chosen' is a number"):
        format_row("dpo", "chatml.intel", {"question": P, "chosen": 3, "rejected": R})


def test_empty_answer_is_an_error_that_can_be_dropped():
    with pytest.raises(RowError) as error:
        format_row("dpo", "chatml.intel", {"question": P, "chosen": C, "rejected": ""})
    # the data stage adds the override that drops it, with the source's own key (tests/test_data.py)
    assert error.value.empty and error.value.field == "rejected" and "is empty" in str(error.value)


def test_unknown_type_lists_the_valid_ones():
    with pytest.raises(ConfigError) as error:
        get_formatter("kto", "chatml.default")
    assert "not a kto type" in str(error.value) and "chatml.intel" in str(error.value)
    with pytest.raises(ConfigError, match="did you mean 'llama3.ultra'"):
        get_formatter("dpo", "llama3.ultr")


def test_dataset_options_that_do_not_apply_are_errors():
    with pytest.raises(ConfigError, match="'field_messages' does not apply to type chatml.intel"):
        get_formatter("dpo", "chatml.intel", field_messages="m")


def test_no_type_passes_final_columns_through_and_checks_them():
    row = {"prompt": P, "chosen": C, "rejected": R, "extra": 1}
    assert format_row("dpo", None, row) == {"prompt": P, "chosen": C, "rejected": R}
    assert format_row("kto", None, {"prompt": P, "completion": X, "label": "false"})["label"] is False
    with pytest.raises(RowError, match="rows must already hold prompt, chosen, rejected"):
        format_row("dpo", None, {"question": P, "chosen": C, "rejected": R})


def test_suggestions_name_the_types_a_row_fits():
    assert "chatml.intel" in suggest_types("dpo", {"question": P, "chosen": C, "rejected": R})
    assert "chatml.ultra" not in suggest_types("dpo", {"prompt": P, "chosen": C, "rejected": R})


# --------------------------------------------------------------- GRPO transforms


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_rewards.py").write_text(textwrap.dedent('''
        def gsm8k(cfg, *args, **kwargs):
            def transform_fn(example, tokenizer=None):
                label = example["answer"].split("####")[-1].strip().replace(",", "")
                return {"prompt": [{"role": "user", "content": example["question"]}], "answer": label}
            return transform_fn, {"remove_columns": ["question", "not_a_column"]}

        def drop_all(cfg, dataset_idx=0):
            return lambda example: {"prompt": example["q"] + str(dataset_idx)}, {"remove_columns": "__all__"}

        def bad_factory(cfg, **kwargs):
            return 42

        NOT_CALLABLE = 3
    '''))
    yield tmp_path
    for name in [m for m in sys.modules if m == "my_rewards"]:
        del sys.modules[name]


def test_grpo_transform_from_the_current_directory(user_module):
    row = {"question": "2+2?", "answer": "so #### 1,004", "id": 7}
    assert format_row("grpo", "my_rewards.gsm8k", row) == {
        "id": 7, "answer": "1004", "prompt": [{"role": "user", "content": "2+2?"}]}
    assert format_row("grpo", "my_rewards.drop_all", {"q": "x", "other": 1}, dataset_idx=3) == {"prompt": "x3"}


def test_grpo_transform_errors_name_the_string_and_the_reason(user_module):
    with pytest.raises(UserCodeError, match="no module 'nowhere'"):
        get_formatter("grpo", "nowhere.fn")
    with pytest.raises(UserCodeError, match="has no 'missing'"):
        get_formatter("grpo", "my_rewards.missing")
    with pytest.raises(UserCodeError, match="'NOT_CALLABLE' .* is a int, not a function"):
        get_formatter("grpo", "my_rewards.NOT_CALLABLE")
    with pytest.raises(UserCodeError, match="returned int; it must return transform_fn or"):
        get_formatter("grpo", "my_rewards.bad_factory")


def test_builtin_family_names_win_over_user_files(tmp_path, monkeypatch):
    """Spec 6.8: a user file named chatml.py does not replace the built-in family."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "chatml.py").write_text("def intel(cfg, **kw):\n    return lambda row: {'prompt': 'hijacked'}\n")
    out = format_row("dpo", "chatml.intel", {"question": P, "chosen": C, "rejected": R})
    assert out["prompt"] == CHATML_P
    with pytest.raises(ConfigError):
        get_formatter("grpo", "chatml.intel")


def test_formats_import_no_heavy_libraries():
    import subprocess

    code = ("import sys, rlhf.data.formats; "
            "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'trl') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
