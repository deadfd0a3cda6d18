"""BENCHMARKS.md comes from the bench's records alone: the committed document is what the
committed records (benchmarks/<section>.json) render, a figure typed into it by hand or a record
changed without re-rendering fails the check, and every section's renderer reads the layout its
runner writes (tests/bench_records: records of a small run of every section). Nothing here
measures anything: speed is the bench's business, not the tests'."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import REPO, cli_env, run_cli
from rlhf.dev.bench import document, record
from rlhf.dev.bench.settings import compared
from rlhf.dev.bench.suite import SECTIONS

SAMPLES = Path(__file__).parent / "bench_records"


def test_the_committed_document_is_what_the_committed_records_render():
    """`python -m rlhf.bench --check` on the repository: BENCHMARKS.md, as committed, holds no
    figure that no record produces, and no record is of an unknown section."""
    proc = run_cli("rlhf.bench", "--check", cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stderr
    assert document.check(REPO) == []


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    """A directory with every sample record and the document they render."""
    shutil.copytree(SAMPLES, tmp_path / record.RECORDS)
    document.write(tmp_path)
    assert document.check(tmp_path) == []
    return tmp_path


def test_a_figure_typed_into_the_document_fails_the_check(out_dir: Path):
    path = out_dir / record.DOCUMENT
    path.write_text(path.read_text() + "\nThe platform is 0.34x plain TRL.\n")
    problems = document.check(out_dir)
    assert problems and any("+The platform is 0.34x plain TRL." in line for line in problems), problems


def test_a_figure_changed_in_the_document_fails_the_check(out_dir: Path):
    path = out_dir / record.DOCUMENT
    text = path.read_text()
    figure = f"{json.loads((out_dir / record.RECORDS / 'sweep.json').read_text())['figures']['ratio']:.2f}"
    assert f"ratio {figure}" in text
    path.write_text(text.replace(f"ratio {figure}", "ratio 0.01"))
    assert any("ratio 0.01" in line for line in document.check(out_dir))


def test_a_record_changed_without_rendering_fails_the_check_until_rendered(out_dir: Path):
    path = out_dir / record.RECORDS / "sweep.json"
    rec = json.loads(path.read_text())
    rec["figures"]["sweep_s"] = 1234.5
    record.write(out_dir, rec)
    assert any("1234.5" in line for line in document.check(out_dir))
    run_cli("rlhf.bench", "--render", "--out-dir", str(out_dir), cwd=out_dir)
    assert "Sweep: 1234.5 s" in (out_dir / record.DOCUMENT).read_text()
    assert run_cli("rlhf.bench", "--check", "--out-dir", str(out_dir), cwd=out_dir, check=False).returncode == 0


def test_a_record_of_no_section_fails_the_check(out_dir: Path):
    shutil.copy(out_dir / record.RECORDS / "sweep.json", out_dir / record.RECORDS / "old_full_run.json")
    assert any("old_full_run.json is the record of no section" in line for line in document.check(out_dir))


def test_every_section_renders_from_its_runners_record_under_its_provenance(out_dir: Path):
    """The sample records are a small run's (python -m rlhf.bench --out-dir ... --steps 4 --repeats 1
    --rows 5000): each renders, in SECTIONS order, under its date, commit, command and load."""
    assert sorted(p.stem for p in SAMPLES.glob("*.json")) == sorted(SECTIONS)
    text = (out_dir / record.DOCUMENT).read_text()
    records = record.read(out_dir)
    places = []
    for section in SECTIONS:
        heading = f"## {document.TITLES[section]}"
        assert text.count(heading) == 1
        places.append(text.index(heading))
        rec = records[section]
        body = text[places[-1]:]
        assert f"Measured {rec['started']} to {rec['finished']}" in body
        assert f"at commit {rec['commit'][:12]}" in body and f"by `{rec['command']}`" in body
        assert f"load average {rec['load']['start']:.2f} at the start, {rec['load']['end']:.2f} at the end" in body
    assert places == sorted(places)


def test_a_section_without_a_record_renders_as_not_measured_and_the_rest_as_before(out_dir: Path):
    full = (out_dir / record.DOCUMENT).read_text()
    (out_dir / record.RECORDS / "data.json").unlink()
    document.write(out_dir)
    text = (out_dir / record.DOCUMENT).read_text()
    assert "Not measured: no `benchmarks/data.json`. `python -m rlhf.bench --only data` measures it." in text
    assert "rows/s" not in text and "rows/s" in full
    sweep = full[full.index(f"## {document.TITLES['sweep']}"):]
    assert text.endswith(sweep)
    assert document.check(out_dir) == []


def test_the_plain_data_script_trains_with_the_platforms_workers_threads_batch_and_precision(tmp_path: Path):
    """The data stage's baseline, run on a few rows: what its trainer holds (read back from TRL's
    config and torch) is what the platform's run of the same overrides decides (its
    rlhf.data.workers.processes as dataset_num_proc, its threads, batch and precision)."""
    from rlhf.dev.bench import data_large

    data = data_large.write_rows(tmp_path / "pairs.jsonl", 32, unpaired=False)
    # Not TRL's or torch's defaults (one process, every core): the script must use what it is given.
    overrides = [*data_large.platform_overrides("dpo", data, None, tmp_path / "cache"), "hardware.torch_threads=1",
                 "dataset.num_proc=2"]
    resources = data_large.platform_resources(overrides)
    assert resources == {"workers": 2, "threads": 1, "precision": "fp32"}
    command = data_large.plain_command("dpo", data, data_large.EMBEDDED, tmp_path / "out", resources)
    run_cli(command[2], *command[3:], cwd=tmp_path, env=cli_env(HF_DATASETS_CACHE=str(tmp_path / "hf")))
    settings = json.loads((tmp_path / "out" / "times.json").read_text())["settings"]
    assert settings["data_workers"] == resources["workers"]
    assert settings["threads"] == resources["threads"]
    assert settings["batch"] == data_large.BATCH and settings["accumulation"] == 1
    assert settings["precision"] == "float32"


def test_settings_that_differ_are_named_in_the_table():
    plain = {"threads": 2, "batch": 8, "accumulation": 1, "precision": "float32", "optimizer": "adamw_torch_fused",
             "attention": "default", "attention_chosen": "sdpa", "data_workers": 2}
    assert compared(dict(plain), plain) == ("both: 2 threads, batch 8, float32, adamw_torch_fused, attention "
                                            "default (sdpa), 2 data workers")
    assert compared({**plain, "data_workers": 2}, {**plain, "data_workers": 1}).endswith("(differ: data_workers)")
    assert compared({**plain, "threads": 1, "precision": "bf16 mixed"}, plain).endswith("(differ: threads, precision)")


def test_lengths_compares_the_same_step_on_both_sides_and_refuses_sides_that_trained_different_batches():
    """The lengths section pairs step i of the platform with step i of plain TRL (the same batch):
    a slow batch on both sides moves both medians alike, not the ratio. Losses that disagree
    mean the sides trained different batches, and the section stops instead of comparing them."""
    from rlhf.dev.bench import lengths

    # Steps after the first: plain 10, 40, 20 s; the platform half of each.
    plain = {"stamps": [0.0, 10.0, 50.0, 70.0]}
    platform = {"stamps": [5.0, 10.0, 30.0, 40.0]}
    figures = lengths.compare_repeat(platform, plain, real_tokens=[7, 100, 400, 200])
    assert figures["step_ratios"] == [0.5, 0.5, 0.5]
    assert figures["median_ratio"] == 0.5 and figures["total_ratio"] == 0.5
    assert figures["plain_tokens_per_s"] == 700 / 70 and figures["platform_tokens_per_s"] == 700 / 35
    with pytest.raises(RuntimeError, match="timed 3 steps, plain TRL 4"):
        lengths.compare_repeat({"stamps": [0.0, 1.0, 2.0]}, plain, real_tokens=[1, 1, 1, 1])

    same = [0.6931, 0.6925, 0.6890]
    assert lengths.loss_difference([x * (1 + 1e-6) for x in same], same) < 1e-5
    with pytest.raises(RuntimeError, match="did not train the same batches"):
        lengths.loss_difference([0.6931, 0.6890, 0.6925], same)
    with pytest.raises(RuntimeError, match="logged 2 losses, plain TRL 3"):
        lengths.loss_difference(same[:2], same)
