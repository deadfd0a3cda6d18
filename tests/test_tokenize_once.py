"""One tokenization pass (rlhf.data.tokenize, rlhf.trl.pretokenized): the data stage makes the ids
each method's TRL trainer trains on, identical to the trainer's own preparation, on the
embedded data and on every type's sample, chat templates and message-list rows included; the
trainer takes them without tokenizing again; the length rule keeps, cuts, drops or refuses
exactly the rows whose trainer sequences exceed method.max_length; the worker processes give
the same rows as one process; the cache key follows what the ids depend on."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import pytest

from rlhf.assets import ASSETS
from rlhf.launch.compose import compose_job
from rlhf.config.validate import validate
from rlhf.core.errors import DataError

TINY = ASSETS / "models" / "tiny-chatml"
BIG = 10**6  # a max_length no row reaches
PAIR_LAYOUTS = ["default", "argilla", "argilla_chat", "icr", "intel", "prompt_pairs", "ultra"]
KTO_LAYOUTS = ["argilla", "argilla_chat", "intel", "prompt_pairs", "ultra"]
PAIR_SAMPLES = ([(f"sample_{m}", f"{family}.{m}") for m in PAIR_LAYOUTS for family in ("chatml", "llama3")]
                + [("sample_nectar", "zephyr.nectar"), ("sample_chat_template", "chat_template.default"),
                   ("sample_chat_template_argilla_chat", "chat_template.argilla_chat"), ("sample_user_defined", None)])
KTO_SAMPLES = ([(f"sample_kto_{m}", f"{family}.{m}") for m in KTO_LAYOUTS for family in ("chatml", "llama3")]
               + [("sample_kto_user_defined", None), ("sample_intel", "chatml.intel unpair")])
# The data each method is held to TRL on: its embedded task (None) and every sample it reads.
CASES = {
    "dpo": [None, *PAIR_SAMPLES],
    "reward": [None, *PAIR_SAMPLES],
    "simpo": [None, *[c for c in PAIR_SAMPLES if c[1] is None or c[1].startswith(("chatml", "chat_template"))]],
    "orpo": [None, ("sample_intel", "chatml.intel"),
             ("sample_chat_template_argilla_chat", "chat_template.argilla_chat")],
    "kto": [None, *KTO_SAMPLES],
}


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TINY)


def run_for(method: str, case: tuple[str, str | None] | None, tmp: Path, *extra: str):
    overrides = [f"method={method}", f"cache_dir={tmp}", "dataset.eval=[]", "dataset.shuffle=false", *extra]
    if case is not None:
        option, type_name = case
        overrides.append(f"dataset={option}")
        if type_name is not None:
            name, _, unpair = type_name.partition(" ")
            overrides.append(f"dataset.type={name}")
            if unpair:
                overrides.append("dataset.unpair=true")
    return validate(compose_job(overrides))


def with_limit(run, max_length: int, rule: str):
    return dataclasses.replace(run, method=dataclasses.replace(run.method, max_length=max_length),
                               dataset=dataclasses.replace(run.dataset, excess_length=rule))


def stage(run, tokenizer):
    from rlhf.data.build import build

    return build(run, tokenizer)[0]


def id_columns(dataset) -> list[str]:
    return [c for c in dataset.column_names if c.endswith(("_ids", "_labels", "_mask"))]


def model_for(run):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if run.spec.model_head == "causal_lm":
        return AutoModelForCausalLM.from_pretrained(TINY)
    model = AutoModelForSequenceClassification.from_pretrained(TINY, num_labels=1)
    model.config.pad_token_id = 532
    return model


def trainer(run, dataset, tokenizer, max_length: int, ours: bool):
    """TRL's trainer of the method (ours: the class the runner builds) on `dataset`."""
    from rlhf.core.usercode import import_object
    from rlhf.data.tokenize import trainer_class

    config = import_object(run.spec.trl_config)
    kwargs = dict(output_dir=tempfile.mkdtemp(), max_length=max_length, report_to=[], use_cpu=True,
                  per_device_train_batch_size=4, **run.spec.fixed_trl)
    cls = import_object(run.spec.trl_trainer)
    if ours:
        cls = trainer_class(cls, run.spec.tokenized)
    return cls(model=model_for(run), args=config(**kwargs), train_dataset=dataset, processing_class=tokenizer)


def assert_same_ids(ours, theirs) -> None:
    assert len(ours) == len(theirs)
    columns = id_columns(theirs)
    assert columns and set(columns) <= set(ours.column_names)
    for column in columns:
        assert ours[column] == theirs[column], column


@pytest.mark.parametrize("method", sorted(CASES))
def test_ids_are_the_trainers_own_on_the_embedded_data_and_every_sample(tmp_path, tokenizer, method):
    """Every row the method reads (its embedded data and each sample in every type that reads
    it), tokenized by TRL's own preparation from the text the data stage formatted, under a
    limit that cuts some sequences and leaves some prompts nothing: the same rows, the same ids
    (KTO's KL completions and ORPO's cut answers included), and the trainer the runner builds
    keeps them as they are."""
    import datasets

    runs = [run_for(method, case, tmp_path) for case in CASES[method]]
    cases = [stage(with_limit(run, BIG, "drop"), tokenizer) for run in runs]
    whole = datasets.concatenate_datasets(cases)
    limit = telling_limit(cases)
    assert max(sequence_lengths(whole)) > limit
    limited = datasets.concatenate_datasets([stage(with_limit(run, limit, "truncate"), tokenizer) for run in runs])
    text = whole.remove_columns(id_columns(whole))
    theirs = trainer(runs[0], text, tokenizer, limit, ours=False).train_dataset
    ours = trainer(runs[0], limited, tokenizer, limit, ours=True).train_dataset
    assert_same_ids(ours, theirs)
    if runs[0].spec.tokenized != "tokenize_row_ids":  # those cut answers themselves: no row is ever dropped
        assert len(theirs) < len(whole)  # the limit drops rows, so the test shows the rule agrees


def telling_limit(cases: list) -> int:
    """A max_length that leaves rows in every case and acts on some rows: one that some prompts
    alone reach, where the trainer drops such rows (DPO, KTO); else the median length, at least
    every case's shortest sequence (RewardTrainer drops what is longer)."""
    if "prompt_ids" in cases[0].column_names:
        prompts = [sorted(len(ids) for ids in case["prompt_ids"]) for case in cases]
        every = sorted(n for case in prompts for n in case)
        limit = max(every[-max(1, len(every) // 20)], *(case[0] + 1 for case in prompts))
        assert every[-1] >= limit  # some prompts fill it
        return limit
    lengths = [sorted(sequence_lengths(case)) for case in cases]
    every = sorted(n for case in lengths for n in case)
    return max(every[len(every) // 2], *(case[0] for case in lengths))


def conversations(tmp_path: Path, kind: str) -> Path:
    """Rows whose prompt and answers are message lists (TRL's conversational path)."""
    rows = []
    for i in range(6):
        prompt = ([{"role": "system", "content": "Be brief."}] if i % 2 else []) + [
            {"role": "user", "content": f"Name a fruit, number {i}?"}]
        good, bad = [{"role": "assistant", "content": "mango"}], [{"role": "assistant", "content": f"tiger {i}"}]
        if kind == "unpaired":
            rows.append({"prompt": prompt, "completion": good if i % 3 else bad, "label": bool(i % 3)})
        else:
            rows.append({"prompt": prompt, "chosen": good, "rejected": bad})
    path = tmp_path / f"{kind}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("method", ["dpo", "kto", "reward", "orpo"])
def test_message_list_rows_get_the_chat_template_ids_the_trainer_makes(tmp_path, tokenizer, method):
    path = conversations(tmp_path, "unpaired" if method == "kto" else "pairs")
    run = run_for(method, None, tmp_path, f"dataset.path={path}", "dataset.type=null")
    prepared = stage(with_limit(run, 256, "drop"), tokenizer)
    assert isinstance(prepared[0]["prompt"], list)
    theirs = trainer(run, prepared.remove_columns(id_columns(prepared)), tokenizer, 256, ours=False).train_dataset
    assert_same_ids(trainer(run, prepared, tokenizer, 256, ours=True).train_dataset, theirs)


def trl_lengths(run, tokenizer, text) -> list[int]:
    """The longest sequence TRL builds from each row, from its own preparation without a limit."""
    return sequence_lengths(trainer(run, text, tokenizer, BIG, ours=False).train_dataset)


def sequence_lengths(prepared) -> list[int]:
    """The longest sequence of each row of a prepared dataset (prompt + answer)."""
    if "chosen_input_ids" in prepared.column_names:  # ORPO / CPO: whole sequences
        return [max(len(c), len(r)) for c, r in zip(prepared["chosen_input_ids"], prepared["rejected_input_ids"])]
    prompt = prepared["prompt_ids"] if "prompt_ids" in prepared.column_names else [[]] * len(prepared)
    answers = [prepared[c] for c in ("chosen_ids", "rejected_ids", "completion_ids") if c in prepared.column_names]
    return [len(p) + max(len(a[i]) for a in answers) for i, p in enumerate(prompt)]


def boundary_rows(tmp_path: Path, unpaired: bool) -> Path:
    """Rows whose sequences grow by about one token each, so some sit right at any limit."""
    rows = []
    for i in range(24):
        answer = "x" * (i + 1)
        if unpaired:
            rows.append({"question": "Say x.", "completion": answer, "label": bool(i % 2)})
        else:
            rows.append({"question": "Say x.", "chosen": answer, "rejected": "y"})
    path = tmp_path / "boundary.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("method", ["dpo", "kto", "reward", "orpo"])
def test_the_length_rule_acts_on_exactly_the_rows_whose_trainer_sequences_exceed_the_limit(tmp_path, tokenizer,
                                                                                          method):
    path = boundary_rows(tmp_path, unpaired=method == "kto")
    run = run_for(method, None, tmp_path, f"dataset.path={path}", "dataset.type=chatml.intel")
    text = stage(with_limit(run, BIG, "drop"), tokenizer)
    lengths = trl_lengths(run, tokenizer, text.remove_columns(id_columns(text)))
    limit = sorted(lengths)[len(lengths) // 2]
    assert limit in lengths and limit + 1 in lengths  # rows right at the limit and one token over it
    fits = [n <= limit for n in lengths]

    kept = stage(with_limit(run, limit, "drop"), tokenizer)
    assert kept["chosen" if method != "kto" else "completion"] == [
        row["chosen" if method != "kto" else "completion"] for row, ok in zip(text, fits) if ok]

    from rlhf.data.build import build

    cut, _, report = build(with_limit(run, limit, "truncate"), tokenizer)
    if run.spec.tokenized == "sequence_pair_ids":  # RewardTrainer drops what is over, it cannot cut
        assert (len(cut), report.dropped_long, report.truncated) == (sum(fits), len(fits) - sum(fits), 0)
    else:
        assert (len(cut), report.truncated, report.dropped_long) == (len(fits), len(fits) - sum(fits), 0)

    with pytest.raises(DataError) as raised:
        stage(with_limit(run, limit, "raise"), tokenizer)
    first = fits.index(False)
    assert f"{len(fits) - sum(fits)} rows are longer than method.max_length={limit} tokens" in str(raised.value)
    assert f"boundary.jsonl:{first + 1}, {lengths[first]} tokens" in str(raised.value)
    assert stage(with_limit(run, max(lengths), "raise"), tokenizer).num_rows == len(fits)


@pytest.mark.parametrize("method", ["dpo", "kto", "orpo", "simpo", "reward"])
def test_the_trainer_takes_the_ids_without_tokenizing_again(tmp_path, tokenizer, monkeypatch, method):
    from transformers import PreTrainedTokenizerFast

    run = run_for(method, None, tmp_path)
    ours = stage(with_limit(run, 256, "drop"), tokenizer)
    calls = []
    for name in ("_encode_plus", "apply_chat_template"):
        original = getattr(PreTrainedTokenizerFast, name)
        monkeypatch.setattr(PreTrainedTokenizerFast, name,
                            lambda self, *a, _original=original, _name=name, **k: calls.append(_name) or _original(
                                self, *a, **k))
    built = trainer(run, ours, tokenizer, 256, ours=True)
    assert calls == []
    assert built.train_dataset.num_rows == ours.num_rows
    for column in id_columns(ours):
        assert built.train_dataset[column] == ours[column]


def test_worker_processes_make_the_same_rows_and_report_the_first_bad_row(tmp_path, tokenizer, monkeypatch):
    from rlhf.data import workers

    rows = [{"question": f"Question {i}?", "chosen": "a" * (i % 50 + 1), "rejected": "b"} for i in range(1500)]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = run_for("dpo", None, tmp_path, f"dataset.path={path}", "dataset.type=chatml.intel",
                  "method.max_length=30")
    one = stage(dataclasses.replace(run, dataset=dataclasses.replace(run.dataset, num_proc=1)), tokenizer)
    monkeypatch.setattr(workers, "PARALLEL_MIN_ROWS", 1)
    monkeypatch.setattr(workers, "MAX_CHUNK_ROWS", 256)
    two = stage(dataclasses.replace(run, dataset=dataclasses.replace(run.dataset, num_proc=2)), tokenizer)
    assert 0 < len(two) < len(rows) and two.to_list() == one.to_list()

    rows[1200]["chosen"] = ["not", "text"]  # in a chunk a second worker formats
    rows[1400].pop("rejected")
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"d\.jsonl:1201: .*'chosen'"):
        stage(dataclasses.replace(run, dataset=dataclasses.replace(run.dataset, num_proc=2)), tokenizer)


def test_rows_that_mix_text_and_messages_are_refused_with_file_line_and_field(tmp_path, tokenizer):
    rows = [{"prompt": "Name a fruit?", "chosen": "mango", "rejected": "tiger"} for _ in range(3)]
    rows[2]["chosen"] = [{"role": "assistant", "content": "mango"}]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = run_for("dpo", None, tmp_path, f"dataset.path={path}", "dataset.type=null")
    with pytest.raises(DataError, match=r"mixed\.jsonl:3: field 'chosen' is a list, but the rows are text"):
        stage(run, tokenizer)


def test_the_cache_key_follows_tokenizer_type_limit_and_data_but_not_the_process_count(tmp_path, tokenizer):
    from transformers import AutoTokenizer

    from rlhf.data.cache import cache_key, dataset_sources

    path = boundary_rows(tmp_path, unpaired=False)

    def key(run, tok=tokenizer):
        sources = [s for _, _, s in dataset_sources(run.dataset)]
        return cache_key(run, tok, sources, [])

    run = run_for("dpo", None, tmp_path, f"dataset.path={path}", "dataset.type=chatml.intel")
    base = key(run)
    assert key(dataclasses.replace(run, dataset=dataclasses.replace(run.dataset, num_proc=7))) == base
    assert key(with_limit(run, 100, run.dataset.excess_length)) != base
    assert key(run_for("dpo", None, tmp_path, f"dataset.path={path}", "dataset.type=llama3.intel")) != base
    assert key(run_for("orpo", None, tmp_path, f"dataset.path={path}", "dataset.type=chatml.intel")) != base
    other = AutoTokenizer.from_pretrained(TINY)
    other.chat_template = "{{ messages }}"
    assert key(run, other) != base
    path.write_text(path.read_text() + json.dumps({"question": "q", "chosen": "a", "rejected": "b"}) + "\n")
    assert key(run) != base


def test_progress_lines_of_a_long_data_stage():
    from rlhf.data.workers import PROGRESS_EVERY_S, RowsProgress
    from rlhf.data.workers import rows_line

    assert rows_line("train dataset d.jsonl", 40000, 100000, 5000.0) == (
        "train dataset d.jsonl: 40000/100000 rows (40%) | 5000 rows/s | ETA 0:00:12")
    now = [0.0]
    progress = RowsProgress("train dataset d.jsonl", 1000, clock=lambda: now[0])
    now[0] = 1.0
    assert progress.add(100) is None  # not yet due
    now[0] = PROGRESS_EVERY_S + 1
    assert progress.add(100) == rows_line("train dataset d.jsonl", 200, 1000, 200 / (PROGRESS_EVERY_S + 1))
    now[0] = 30.0
    assert progress.add(800) is None  # the end has its own line
    assert progress.end(2) == ("train dataset d.jsonl: 1000 rows formatted and tokenized in 30.0 s "
                               "(33 rows/s, 2 processes)")


def test_workers_leave_the_jobs_signal_handlers_and_stop_with_the_stage(monkeypatch):
    """The job's preemption handler records SIGTERM for the trainer; a worker must not inherit
    it (pool shutdown signals the workers, and they would log 'saving a checkpoint' and live
    on), and a stage that stops early (a bad row) stops its workers."""
    import signal
    import time

    from rlhf.data import workers

    def record(signum, frame):  # what rlhf.job.preemption installs
        pass

    previous = signal.signal(signal.SIGTERM, record)
    try:
        handlers = list(workers.in_chunks(
            4096, lambda start, end: signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, 2, "rows", min_rows=1))
        assert handlers and all(handlers)
        started = time.monotonic()
        chunks = workers.in_chunks(4096, lambda start, end: time.sleep(0.05) or start, 2, "rows", min_rows=1)
        assert next(chunks) == 0
        chunks.close()  # the consumer stops at a bad row
        assert time.monotonic() - started < 30
        assert multiprocessing_children() == []
    finally:
        signal.signal(signal.SIGTERM, previous)


def multiprocessing_children() -> list:
    import multiprocessing

    return [p for p in multiprocessing.active_children() if p.is_alive()]


PIECE_CASES = [  # (prompt, answer): prompts with and without added tokens, answers that touch them
    ("<|im_start|>user\nName a fruit?<|im_end|>\n<|im_start|>assistant\n", "mango<|im_end|>"),
    ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
     " leading space and <|im_start|> inside<|im_end|>"),
    ("no added token at all: ", "plain answer"),
    ("ends on the token <|im_end|>", "\n\nnew lines first"),
    ("<|im_start|>", "<|im_end|>"),
    ("<|start_header_id|>user<|end_header_id|>\n\nQ?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
     "A.<|eot_id|>"),
    ("unicode: café — ", "naïve ☕"),
]


def test_prompt_pieces_give_whole_tokenization_ids_and_are_used_where_they_are_exact(tokenizer, tmp_path):
    """Prompt + answer tokenized as the prompt's head (to its last added token) and the rest:
    the same ids as the whole text, for the embedded tokenizer and the byte-level one, which
    do take this path; a tokenizer whose pieces depend on where they stand does not."""
    from transformers import AutoTokenizer

    from rlhf.dev.bench.data_large import byte_tokenizer
    from rlhf.data.tokenize import PromptPieces, TextIds

    for tok in (tokenizer, AutoTokenizer.from_pretrained(byte_tokenizer(tmp_path / "bytes"))):
        pieces = PromptPieces(TextIds(tok))
        prompts = [p for p, _ in PIECE_CASES] * 8  # past the rows checked against whole tokenization
        answers = [[a for _, a in PIECE_CASES] * 8, [a[::-1] for _, a in PIECE_CASES] * 8]
        prompt_ids, full = pieces(prompts, answers)
        assert pieces.state == "pieces"
        assert prompt_ids == tok(text=prompts)["input_ids"]
        assert full == [tok(text=[p + a for p, a in zip(prompts, column)])["input_ids"] for column in answers]

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    spec["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": True}
    (tmp_path / "first").mkdir()
    (tmp_path / "first" / "tokenizer.json").write_text(json.dumps(spec))
    for name in ("tokenizer_config.json", "chat_template.jinja"):
        (tmp_path / "first" / name).write_text((TINY / name).read_text())
    first = AutoTokenizer.from_pretrained(tmp_path / "first")
    pieces = PromptPieces(TextIds(first))
    prompt_ids, full = pieces([p for p, _ in PIECE_CASES], [[a for _, a in PIECE_CASES]])
    assert pieces.state == "whole"
    assert full == [first(text=[p + a for p, a in PIECE_CASES])["input_ids"]]
