"""The data stage: sources of every kind, mixing, eval splits, the length rule, the cache, the
preview, and bad input reported with dataset, file, row and field before any model loads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, cli_env, run_cli, train
from rlhf.launch.compose import compose_job
from rlhf.config.validate import validate
from rlhf.core.errors import ConfigError, DataError

PAIRS = [{"question": f"Name a fruit, number {i}?", "chosen": "mango", "rejected": "tiger"} for i in range(12)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def prepare(tmp_path: Path, *overrides: str):
    """The data stage alone, as a run does it (tokenizer, no model)."""
    from rlhf.data.cache import prepare_data
    from rlhf.models.loading import load_tokenizer

    run = validate(compose_job([f"cache_dir={tmp_path / 'cache'}", *overrides]))
    return prepare_data(run, load_tokenizer(run.model))


# ------------------------------------------------------------------ sources


def test_local_formats_and_data_files(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    write_jsonl(tmp_path / "d" / "a.jsonl", PAIRS[:4])
    (tmp_path / "d" / "b.json").write_text(json.dumps(PAIRS[4:6]))
    with open(tmp_path / "d" / "c.csv", "w") as f:
        f.write("question,chosen,rejected\n" + "".join(f"\"{r['question']}\",{r['chosen']},{r['rejected']}\n"
                                                        for r in PAIRS[6:9]))
    pq.write_table(pa.Table.from_pylist(PAIRS[9:12]), tmp_path / "d" / "e.parquet")
    for overrides, count in (
        ([f"dataset.path={tmp_path / 'd'}"], 12),  # a directory: every data file
        ([f"dataset.path={tmp_path / 'd'}", "dataset.data_files=a.jsonl"], 4),  # one path
        ([f"dataset.path={tmp_path / 'd'}", "dataset.data_files=[b.json,c.csv]"], 5),  # a list
        ([f"dataset.path={tmp_path / 'd' / 'e.parquet'}"], 3),  # one file
    ):
        data = prepare(tmp_path, *overrides, "dataset.type=chatml.intel", "dataset.eval=[]")
        assert data.report.train_rows == count, overrides
        assert data.train[0]["prompt"].startswith("<|im_start|>user\nName a fruit")


def test_several_datasets_each_with_its_own_type_are_mixed_and_shuffled(tmp_path):
    write_jsonl(tmp_path / "intel.jsonl", PAIRS[:6])
    llama = [{"prompt": r["question"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in PAIRS[6:]]
    write_jsonl(tmp_path / "pairs.jsonl", llama)
    extra = f"dataset.extra=[{{path: {tmp_path / 'pairs.jsonl'}, type: llama3.prompt_pairs}}]"
    data = prepare(tmp_path, f"dataset.path={tmp_path / 'intel.jsonl'}", "dataset.type=chatml.intel", extra,
                   "dataset.eval=[]")
    prompts = data.train["prompt"]
    assert len(prompts) == 12
    assert sum(p.startswith("<|im_start|>") for p in prompts) == 6
    assert sum(p.startswith("<|start_header_id|>") for p in prompts) == 6
    first_six = [p.startswith("<|im_start|>") for p in prompts[:6]]
    assert not all(first_six)  # shuffled together, not one source after the other
    again = prepare(tmp_path / "other", f"dataset.path={tmp_path / 'intel.jsonl'}", "dataset.type=chatml.intel",
                    extra, "dataset.eval=[]")
    assert again.train["prompt"] == prompts  # the run's seed fixes the order


def test_eval_from_a_held_out_fraction_a_named_split_or_separate_data(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", PAIRS)
    held = prepare(tmp_path, f"dataset.path={tmp_path / 'train.jsonl'}", "dataset.type=chatml.intel",
                   "dataset.eval=[]", "dataset.val_set_size=0.25")
    assert (held.report.train_rows, held.report.eval_rows) == (9, 3)
    repo = tmp_path / "hub_like"
    write_jsonl(repo / "data" / "train-00000-of-00001.jsonl", PAIRS[:8])
    write_jsonl(repo / "data" / "test-00000-of-00001.jsonl", PAIRS[8:])
    split = prepare(tmp_path, f"dataset.path={repo}", "dataset.type=chatml.intel", "dataset.eval=[]",
                    "dataset.eval_split=test")
    assert (split.report.train_rows, split.report.eval_rows) == (8, 4)
    with pytest.raises(ConfigError, match="choose one"):
        prepare(tmp_path, f"dataset.path={repo}", "dataset.type=chatml.intel", "dataset.eval_split=test",
                "dataset.eval=[]", "dataset.val_set_size=0.25")
    with pytest.raises(ConfigError, match="still holds the embedded default's eval set"):
        prepare(tmp_path, f"dataset.path={tmp_path / 'train.jsonl'}", "dataset.type=chatml.intel",
                "dataset.val_set_size=0.25")  # the default config has its own dataset.eval


@pytest.mark.parametrize("rule,train_rows", [("drop", 6), ("truncate", 12)])
def test_length_rule_drops_or_truncates_and_reports_the_count(tmp_path, rule, train_rows):
    long = [{**r, "chosen": "mango " * 80} for r in PAIRS[:6]]
    write_jsonl(tmp_path / "mixed.jsonl", PAIRS[:6] + long)
    data = prepare(tmp_path, f"dataset.path={tmp_path / 'mixed.jsonl'}", "dataset.type=chatml.intel",
                   "dataset.eval=[]", "method.max_length=64", f"dataset.excess_length={rule}")
    assert data.report.train_rows == train_rows
    assert (data.report.dropped_long, data.report.truncated) == ((6, 0) if rule == "drop" else (0, 6))


def test_length_rule_raise_names_the_limit(tmp_path):
    write_jsonl(tmp_path / "long.jsonl", [{**PAIRS[0], "chosen": "mango " * 80}])
    with pytest.raises(DataError, match="1 rows are longer than method.max_length=64 tokens"):
        prepare(tmp_path, f"dataset.path={tmp_path / 'long.jsonl'}", "dataset.type=chatml.intel",
                "dataset.eval=[]", "method.max_length=64", "dataset.excess_length=raise")


def test_empty_answers_can_be_dropped_and_are_counted(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", PAIRS[:4] + [{**PAIRS[0], "rejected": ""}])
    data = prepare(tmp_path, f"dataset.path={tmp_path / 'd.jsonl'}", "dataset.type=chatml.intel",
                   "dataset.eval=[]", "dataset.drop_empty=true")
    assert (data.report.train_rows, data.report.dropped_empty) == (4, 1)


def test_kto_can_unpair_preference_pairs_explicitly(tmp_path):
    write_jsonl(tmp_path / "pairs.jsonl", PAIRS[:5])
    data = prepare(tmp_path, "method=kto", f"dataset.path={tmp_path / 'pairs.jsonl'}", "dataset.type=chatml.intel",
                   "dataset.unpair=true", "dataset.eval=[]")
    assert data.report.train_rows == 10 and sorted(data.train["label"]) == [False] * 5 + [True] * 5


# ------------------------------------------------------------------ cache


def test_second_preparation_hits_the_cache_and_returns_the_same_rows(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", PAIRS)
    args = (f"dataset.path={tmp_path / 'd.jsonl'}", "dataset.type=chatml.intel", "dataset.eval=[]")
    first, second = prepare(tmp_path, *args), prepare(tmp_path, *args)
    assert (first.cache, second.cache) == ("miss", "hit")
    assert second.train.to_list() == first.train.to_list()
    write_jsonl(tmp_path / "d.jsonl", PAIRS[:-1])  # the content changed: a new key
    assert prepare(tmp_path, *args).cache == "miss"
    assert prepare(tmp_path, *args[:-2], "dataset.type=llama3.intel", "dataset.eval=[]").cache == "miss"


def test_two_jobs_building_the_same_cache_at_once_agree(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", PAIRS * 50)
    code = f"""
import json, sys
sys.path.insert(0, {str(REPO)!r})
from rlhf.launch.compose import compose_job
from rlhf.config.validate import validate
from rlhf.data.cache import prepare_data
from rlhf.models.loading import load_tokenizer
run = validate(compose_job(["cache_dir={tmp_path / 'cache'}", "dataset.path={tmp_path / 'd.jsonl'}",
                            "dataset.type=chatml.intel", "dataset.eval=[]"]))
data = prepare_data(run, load_tokenizer(run.model))
print(json.dumps([data.cache, len(data.train), data.train[0]["prompt"]]))
"""
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=cli_env()) for _ in range(2)]
    results = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
    assert sorted(r[0] for r in results) == ["hit", "miss"]
    assert results[0][1:] == results[1][1:] == [600, results[0][2]]


def test_a_run_logs_the_cache_hit_of_its_data_stage(tmp_path):
    train(tmp_path, "method.max_steps=1", run_dir=tmp_path / "one")
    train(tmp_path, "method.max_steps=1", "seed=42", run_dir=tmp_path / "two")
    first = json.loads((tmp_path / "one" / "metrics.json").read_text())["data"]["cache"]
    second = json.loads((tmp_path / "two" / "metrics.json").read_text())["data"]["cache"]
    assert (first, second) == ("miss", "hit")
    assert "data cache hit" in (tmp_path / "two" / "train.log").read_text()


# ------------------------------------------------------------------ runs from local data


@pytest.mark.parametrize("method,rows,type_name", [
    ("dpo", PAIRS, "chatml.intel"),
    ("kto", [{"question": r["question"], "completion": r["chosen" if i % 2 else "rejected"], "label": bool(i % 2)}
             for i, r in enumerate(PAIRS)], "llama3.intel"),
])
def test_runs_train_from_a_local_jsonl_in_a_seed_type(tmp_path, method, rows, type_name):
    write_jsonl(tmp_path / "data.jsonl", rows)
    train(tmp_path, f"method={method}", f"dataset.path={tmp_path / 'data.jsonl'}", f"dataset.type={type_name}",
          "dataset.eval=[]", "dataset.val_set_size=0.25", "method.max_steps=2", run_dir=tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data"]["train_rows"] == 9 and metrics["global_step"] == 2 and metrics["eval"]


def test_a_run_mixing_two_datasets_of_different_types_trains(tmp_path):
    write_jsonl(tmp_path / "intel.jsonl", PAIRS[:6])
    nectar = [{"prompt": r["question"], "answers": [{"answer": "tiger", "rank": 2}, {"answer": "mango", "rank": 1}]}
              for r in PAIRS[6:]]
    write_jsonl(tmp_path / "nectar.jsonl", nectar)
    train(tmp_path, f"dataset.path={tmp_path / 'intel.jsonl'}", "dataset.type=chatml.intel",
          f"dataset.extra=[{{path: {tmp_path / 'nectar.jsonl'}, type: zephyr.nectar}}]", "dataset.eval=[]",
          "method.max_steps=2", run_dir=tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data"]["train_rows"] == 12 and len(metrics["data"]["sources"]) == 2


def test_sweeping_over_dataset_types_runs_each(tmp_path):
    sweep = tmp_path / "sweep"
    run_cli("rlhf.train", "-m", f"hydra.sweep.dir={sweep}", f"cache_dir={tmp_path / 'cache'}",
            "dataset.type=chatml.intel,llama3.intel", "dataset.eval=[]", "method.max_steps=1", cwd=tmp_path)
    types = sorted(yaml.safe_load((job / "config.yaml").read_text())["dataset"]["type"]
                   for job in sweep.iterdir() if (job / "SUCCESS").is_file())
    assert types == ["chatml.intel", "llama3.intel"]


# ------------------------------------------------------------------ preview


def test_preview_prints_the_exact_strings_with_token_counts(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"system": "Sé breve.", "question": "Zwei\nZeilen?", "chosen": "ja",
                                        "rejected": "nein"}])
    args = (f"dataset.path={tmp_path / 'd.jsonl'}", "dataset.type=chatml.intel", "dataset.eval=[]")
    lines = run_cli("rlhf.preview", "--jsonl", *args, cwd=tmp_path).stdout.strip().splitlines()
    row = json.loads(lines[0])
    assert row["prompt"] == ("<|im_start|>system\nSé breve.<|im_end|>\n<|im_start|>user\nZwei\nZeilen?<|im_end|>\n"
                             "<|im_start|>assistant\n")
    assert (row["chosen"], row["rejected"]) == ("ja<|im_end|>", "nein<|im_end|>")
    assert row["_tokens"]["prompt"] > 10 and row["_tokens"]["chosen"] >= 2
    human = run_cli("rlhf.preview", *args, cwd=tmp_path).stdout
    assert "Zwei\nZeilen?<|im_end|>" in human and "--- chosen: " in human
    assert not (tmp_path / "outputs").exists()  # nothing trained, nothing written


def test_preview_of_an_empty_file_says_so(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    proc = run_cli("rlhf.preview", f"dataset.path={tmp_path / 'empty.jsonl'}", "dataset.type=chatml.intel",
                   "dataset.eval=[]", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and f"{tmp_path / 'empty.jsonl'} is empty (no rows)" in proc.stderr


def test_preview_loads_no_model(tmp_path):
    code = ("import sys; sys.argv=['preview','--rows','1']; from rlhf.preview import main; main(); "
            "import transformers; from transformers import PreTrainedModel; import gc; "
            "print('MODELS', sum(isinstance(o, PreTrainedModel) for o in gc.get_objects()))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=cli_env(), capture_output=True, text=True,
                         timeout=120)
    assert "MODELS 0" in out.stdout, out.stderr[-2000:]


# ------------------------------------------------------------------ bad input


def _bad(tmp_path: Path, rows_text: str, *overrides: str, name: str = "bad.jsonl"):
    path = tmp_path / name
    path.write_text(rows_text, encoding="utf-8")
    run_dir = tmp_path / "run"
    proc = train(tmp_path, f"dataset.path={path}", "dataset.eval=[]", *overrides, run_dir=run_dir, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.count("error:") == 1, proc.stderr[-3000:]  # one message, printed once
    assert not (run_dir / "SUCCESS").exists()
    assert "model" not in {p.name for p in run_dir.iterdir()} if run_dir.exists() else True
    return proc.stderr


def test_missing_field_names_file_row_field_and_fitting_types(tmp_path):
    rows = json.dumps(PAIRS[0]) + "\n" + json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"}) + "\n"
    err = _bad(tmp_path, rows, "dataset.type=chatml.intel")
    assert "bad.jsonl:2: field 'question' is missing" in err
    assert "needs question, chosen, rejected" in err and "the row has chosen, prompt, rejected" in err
    assert "chatml.prompt_pairs" in err


def test_null_and_wrong_typed_values_name_the_field(tmp_path):
    err = _bad(tmp_path, json.dumps({**PAIRS[0], "chosen": None}) + "\n", "dataset.type=chatml.intel")
    assert "bad.jsonl:1: field 'chosen' is null" in err
    err = _bad(tmp_path, json.dumps({**PAIRS[0], "question": ["a"]}) + "\n", "dataset.type=chatml.intel")
    assert "bad.jsonl:1: field 'question' is a list, not text" in err


def test_empty_answer_is_an_error(tmp_path):
    err = _bad(tmp_path, json.dumps({**PAIRS[0], "rejected": ""}) + "\n", "dataset.type=chatml.intel")
    assert "bad.jsonl:1: field 'rejected' is empty" in err
    assert "(to drop such rows instead, add dataset.drop_empty=true)" in err


def test_empty_answer_in_an_extra_source_names_its_own_key(tmp_path):
    write_jsonl(tmp_path / "more.jsonl", [{**PAIRS[0], "chosen": ""}])
    err = _bad(tmp_path, json.dumps(PAIRS[0]) + "\n", "dataset.type=chatml.intel",
               f"dataset.extra=[{{path: {tmp_path / 'more.jsonl'}, type: chatml.intel}}]")
    assert "more.jsonl:1: field 'chosen' is empty" in err
    assert "add dataset.extra[0].drop_empty=true" in err and "drop_empty: true" not in err


def test_corrupt_jsonl_line_is_file_and_line(tmp_path):
    err = _bad(tmp_path, json.dumps(PAIRS[0]) + "\n" + json.dumps(PAIRS[1])[:-5] + "\n",
               "dataset.type=chatml.intel")
    assert "bad.jsonl:2: not valid JSON" in err
    with pytest.raises(json.JSONDecodeError) as expected:  # where the cut line itself fails, not "column 1"
        json.loads(json.dumps(PAIRS[1])[:-5])
    assert expected.value.colno > 1 and f"at column {expected.value.colno})" in err
    assert "at at" not in err  # json's "Unterminated string starting at" takes the column straight after
    err = _bad(tmp_path, '[{"question": "q", "chosen": "a" "rejected": "b"}]', "dataset.type=chatml.intel",
               name="array.json")
    assert "array.json:1: not valid JSON (Expecting ',' delimiter at column 34)" in err


@pytest.mark.parametrize("name,text", [("e.jsonl", ""), ("blank.jsonl", "\n\n"), ("e.json", "[]"),
                                       ("e.csv", ""), ("header.csv", "question,chosen,rejected\n")])
def test_an_empty_data_file_is_called_empty(tmp_path, name, text):
    err = _bad(tmp_path, text, "dataset.type=chatml.intel", name=name)
    assert f"{tmp_path / name} is empty (no rows)" in err


def test_a_csv_row_with_more_or_fewer_cells_than_the_header_is_named(tmp_path):
    err = _bad(tmp_path, "question,chosen,rejected\nq,a,b\nq,a,b,extra\n", "dataset.type=chatml.intel", name="d.csv")
    assert ("d.csv data row 2 (line 3, after the header): 4 cells, but the header has 3 columns "
            "(question, chosen, rejected)") in err
    err = _bad(tmp_path, "question,chosen,rejected\nq,a\n", "dataset.type=chatml.intel", name="e.csv")
    assert "e.csv data row 1 (line 2, after the header): 2 cells, but the header has 3 columns" in err
    # a quoted cell over two lines and a blank line: the row number counts data rows, the line is where it starts
    err = _bad(tmp_path, 'question,chosen,rejected\n"two\nlines",a,b\n\nq,a,\n', "dataset.type=chatml.intel",
               name="f.csv")
    assert "f.csv data row 2 (line 5, after the header): field 'rejected' is empty" in err


def test_missing_file_is_named(tmp_path):
    proc = train(tmp_path, f"dataset.path={tmp_path / 'nope.jsonl'}", "dataset.eval=[]", run_dir=tmp_path / "r",
                 check=False)
    assert proc.returncode == 2 and f"dataset.path: no such file or directory: {tmp_path / 'nope.jsonl'}" in proc.stderr
    assert not (tmp_path / "r").exists()  # found before the job started


def test_unknown_type_for_the_method_lists_the_valid_ones_before_the_job_starts(tmp_path):
    proc = run_cli("rlhf.train", "method=kto", "dataset.type=zephyr.nectar", f"hydra.run.dir={tmp_path / 'r'}",
                   cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "'zephyr.nectar' is not a kto type" in proc.stderr
    assert "chatml.intel" in proc.stderr and not (tmp_path / "r").exists()


def test_pairs_given_to_kto_suggest_unpairing(tmp_path):
    err = _bad(tmp_path, json.dumps(PAIRS[0]) + "\n", "method=kto", "dataset.type=chatml.intel")
    assert "field 'completion' is missing" in err and "add dataset.unpair=true" in err


@pytest.mark.parametrize("method,type_name", [("dpo", "chatml.intel"), ("dpo", "null"), ("reward", "chatml.intel")])
def test_unpaired_rows_given_to_a_pair_method_say_which_method_reads_them(tmp_path, method, type_name):
    rows = json.dumps({"prompt": "p", "completion": "c", "label": True}) + "\n"
    err = _bad(tmp_path, rows, f"method={method}", f"dataset.type={type_name}")
    assert "bad.jsonl:1:" in err and "This row is an unpaired row with a label" in err
    assert "not a preference pair: train it with method=kto and a type that reads it: chatml.prompt_pairs" in err


def test_a_shipped_kto_sample_given_to_the_reward_model_is_one_message_naming_the_fitting_types(tmp_path):
    proc = train(tmp_path, "method=reward", "dataset=sample_kto_argilla", run_dir=tmp_path / "run", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and proc.stderr.count("error:") == 1
    assert ("field 'chosen_response' is missing: chatml.argilla needs instruction, chosen_response, "
            "rejected_response; the row has completion, instruction, label") in proc.stderr
    assert ("This row is an unpaired row with a label (what kto trains on), not a preference pair: train it with "
            "method=kto and a type that reads it: chatml.argilla or llama3.argilla") in proc.stderr
    assert not (tmp_path / "run" / "model").exists()


def test_kto_label_that_is_not_boolean(tmp_path):
    err = _bad(tmp_path, json.dumps({"question": "q", "completion": "c", "label": "maybe"}) + "\n", "method=kto",
               "dataset.type=chatml.intel")
    assert "bad.jsonl:1: field 'label' is 'maybe'" in err and "true or false" in err
