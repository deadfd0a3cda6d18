"""What the launching process checks before any job starts, beyond the config itself: the
machine (a GPU where the jobs train), and every row of the jobs' local data whose type needs no
tokenizer; and the warning a job gives when a dataset's chat format is not its model's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cli_env, job_dir, run_cli
from rlhf.config.checks import cuda_driver_present
from rlhf.launch.compose import compose_job
from rlhf.config.validate import validate
from rlhf.core.errors import ConfigError
from rlhf.launch.cli import preflight

GOOD = [{"question": f"Name a fruit, number {i}?", "chosen": "mango", "rejected": "tiger"} for i in range(12)]
HEAVY = ("torch", "trl", "transformers")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def cli_importtime(cwd: Path, *args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """The real command line under `python -X importtime`: its result and the top-level
    packages it imported."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "rlhf.train", *args], cwd=cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=120)
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    return proc, imported


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# ------------------------------------------------------------------ the machine

needs_cpu_machine = pytest.mark.skipif(cuda_driver_present(), reason="this machine has an NVIDIA driver")


@needs_cpu_machine
def test_cuda_on_a_machine_without_one_is_one_message_and_no_run_dir(tmp_path):
    proc, imported = cli_importtime(tmp_path, "hardware=gpu", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert errors(proc.stderr) == ["error: invalid config: hardware.accelerator=cuda, but this machine has no NVIDIA "
                                   "driver (no nvidia-smi on PATH, no /proc/driver/nvidia): choose hardware=cpu, run "
                                   "on a GPU host, or send the jobs to GPU nodes with hydra/launcher=slurm"]
    assert not (tmp_path / "run").exists()
    assert not imported & set(HEAVY)  # found without torch, so without initialising CUDA either
    # A sweep whose every point asks for the GPU: still one message, and no sweep dir.
    proc = run_cli("rlhf.train", "-m", "hardware=gpu", "method.beta=0.1,0.2", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                   cwd=tmp_path, check=False)
    assert proc.returncode == 2 and len(errors(proc.stderr)) == 1 and "no NVIDIA driver" in proc.stderr
    assert not (tmp_path / "sweep").exists()


@needs_cpu_machine
def test_the_machine_is_checked_only_where_the_jobs_train(tmp_path, monkeypatch):
    from rlhf.launch import cli

    monkeypatch.setattr(cli, "sbatch_on_path", lambda: True)  # a login node, with sbatch
    preflight = cli.preflight
    cache = f"cache_dir={tmp_path / 'cache'}"
    for launcher in ([], ["hydra/launcher=local_parallel"]):  # this machine trains: refused here
        with pytest.raises(ConfigError, match="no NVIDIA driver"):
            preflight(["-m", *launcher, "hardware=gpu", cache])
    # SLURM: the login node has no GPU, its compute nodes do; each job checks its own node.
    assert preflight(["-m", "hydra/launcher=slurm", "hardware=gpu", cache]).hardware.accelerator == "cuda"
    with pytest.raises(ConfigError, match="no NVIDIA driver"):  # without -m, Hydra runs the job here
        preflight(["hydra/launcher=slurm", "hardware=gpu", cache])
    # A job validating its saved config (a SLURM task, an extra rank) checks the config only.
    assert validate(compose_job(["hardware=gpu"])).hardware.accelerator == "cuda"
    # --cfg job prints the config of a GPU run on any machine.
    assert run_cli("rlhf.train", "--cfg", "job", "hardware=gpu", cwd=tmp_path).returncode == 0


# ------------------------------------------------------------------ rows, before the first job


def test_a_bad_row_in_a_later_sweep_point_stops_the_sweep_before_the_first_job(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", GOOD)
    bad = write_jsonl(tmp_path / "bad.jsonl", [GOOD[0], {"question": "q", "chosen": "a"}])
    sweep = tmp_path / "sweep"
    proc = run_cli("rlhf.train", "-m", f"hydra.sweep.dir={sweep}", f"cache_dir={tmp_path / 'cache'}",
                   f"dataset.path={good},{bad}", "dataset.eval=[]", "method.max_steps=1", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    # The data stage's own message: file:line and field, with the sweep point it belongs to.
    assert f"in the sweep job cache_dir={tmp_path / 'cache'} dataset.path={bad}" in proc.stderr
    assert f"{bad}:2: field 'rejected' is missing: chatml.intel needs question, chosen, rejected" in proc.stderr
    assert not sweep.exists() and not list(tmp_path.rglob("SUCCESS"))  # no job started, none trained


ROW_ERRORS = [  # (rows as written, overrides, what the message says): types that need no tokenizer
    ('{"question": "q", "chosen": "a", "rejected": "b"}\n{"question": \n', ["dataset.type=chatml.intel"],
     "bad.jsonl:2: not valid JSON"),
    ('{"question": "q", "chosen": "a"}\n', ["dataset.type=llama3.intel"], "bad.jsonl:1: field 'rejected' is missing"),
    ('{"prompt": "q", "chosen": "a", "rejected": null}\n', ["dataset.type=null"], "bad.jsonl:1: field 'rejected' is null"),
    ('{"q": "x", "good": "a"}\n', ["dataset=sample_user_defined", "dataset.type.field_prompt=q"],
     "bad.jsonl:1: field 'bad' is missing"),
    ('{"question": "q", "completion": "a", "label": "maybe"}\n', ["method=kto", "dataset.type=chatml.intel"],
     "bad.jsonl:1: field 'label' is 'maybe'"),
]


@pytest.mark.parametrize("rows,overrides,expected", ROW_ERRORS, ids=[e[2].split(": ", 1)[1][:30] for e in ROW_ERRORS])
def test_a_row_error_of_a_type_without_tokenizer_comes_before_torch_is_imported(tmp_path, rows, overrides, expected):
    (tmp_path / "bad.jsonl").write_text(rows)
    proc, imported = cli_importtime(tmp_path, f"dataset.path={tmp_path / 'bad.jsonl'}", "dataset.eval=[]", *overrides,
                                    f"hydra.run.dir={tmp_path / 'run'}", f"cache_dir={tmp_path / 'cache'}")
    assert proc.returncode == 2 and expected in proc.stderr, proc.stderr[-3000:]
    assert not imported & set(HEAVY), imported & set(HEAVY)
    assert not (tmp_path / "run").exists()


def test_a_type_that_needs_the_tokenizer_is_left_to_the_job(tmp_path):
    from rlhf.data.preflight import check_rows_before_jobs

    bad = write_jsonl(tmp_path / "bad.jsonl", [{"messages": "not a list"}])
    run = validate(compose_job([f"dataset.path={bad}", "dataset.type=chat_template.default", "dataset.eval=[]",
                                f"cache_dir={tmp_path / 'cache'}"]))
    assert check_rows_before_jobs(run, {}) == []  # not read: the job renders it with its tokenizer


def test_each_source_is_checked_once_per_command_and_not_again_while_unchanged(tmp_path, capsys):
    from rlhf.launch.cli import preflight

    data = write_jsonl(tmp_path / "d.jsonl", GOOD)
    command = ["-m", f"cache_dir={tmp_path / 'cache'}", f"dataset.path={data}", "dataset.eval=[]",
               "method.beta=0.1,0.2,0.3"]
    preflight(command)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("data: checked")]
    # Three jobs, one source: read once (12 rows, not 36).
    assert len(lines) == 1 and lines[0].startswith("data: checked 12 rows of 1 local source(s)"), lines
    markers = list((tmp_path / "cache" / "data" / "rows").glob("*.json"))
    assert len(markers) == 1 and json.loads(markers[0].read_text())["rows"] == 12
    preflight(command)  # the same data again (a re-run): the marker says it was checked
    assert "data: checked" not in capsys.readouterr().err
    write_jsonl(data, GOOD[:-1])  # changed content: checked again
    preflight(command)
    assert "data: checked 11 rows" in capsys.readouterr().err


def test_a_valid_sweep_reads_its_rows_before_the_first_job_and_its_jobs_share_one_data_build(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", GOOD)
    sweep = tmp_path / "sweep"
    proc = run_cli("rlhf.train", "-m", f"hydra.sweep.dir={sweep}", f"cache_dir={tmp_path / 'cache'}",
                   f"dataset.path={data}", "dataset.eval=[]", "method.max_steps=1", "method.beta=0.1,0.2",
                   cwd=tmp_path, timeout=900)
    assert proc.stderr.count("data: checked 12 rows of 1 local source(s)") == 1
    logs = [(job_dir(sweep, n) / "train.log").read_text() for n in (0, 1)]
    assert "data cache miss" in logs[0] and "data cache hit" in logs[1]  # one data build for the sweep


# ------------------------------------------------------------------ template and tokenizer


def test_a_dataset_format_the_tokenizer_does_not_use_is_a_warning_naming_tokens_and_a_preset(tmp_path):
    """argilla_kto is llama3.ultra; the default tiny model's template is ChatML. The job warns once
    its tokenizer is loaded (then fails here only because the hub is offline)."""
    proc = run_cli("rlhf.train", "method=kto", "dataset=argilla_kto", f"hydra.run.dir={tmp_path / 'run'}",
                   f"cache_dir={tmp_path / 'cache'}", cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "cannot load the dataset" in proc.stderr
    log = (tmp_path / "run" / "train.log").read_text()
    warnings = [line for line in log.splitlines() if "[WARNING]" in line and "chat format" in line]
    assert len(warnings) == 1, log[-3000:]
    assert "dataset.type=llama3.ultra does not match the model's chat format" in warnings[0]
    assert "<|start_header_id|>, <|end_header_id|>, <|eot_id|> are missing from the chat template" in warnings[0]
    assert "model=llama-3" in warnings[0] and "model.chat_template=llama3" in warnings[0]
    assert "chatml.ultra" in warnings[0]


def test_a_format_the_tokenizer_uses_gives_no_warning():
    from rlhf.data.lint import template_mismatch
    from rlhf.models.loading import load_tokenizer

    for overrides in ([], ["model.chat_template=llama3", "dataset=sample_ultra", "dataset.type=llama3.ultra"]):
        run = validate(compose_job(overrides))
        assert template_mismatch(run, load_tokenizer(run.model)) == [], overrides
    run = validate(compose_job(["dataset=sample_nectar"]))  # zephyr on ChatML: not even in the vocabulary
    (warning,) = template_mismatch(run, load_tokenizer(run.model))
    assert "<|system|>, <|user|>, <|assistant|>, </s> from its vocabulary too" in warning


def test_every_family_names_its_tokens_and_presets_that_exist():
    from rlhf.config.tree import conf_dir
    from rlhf.data.formats.families import FAMILIES

    presets = [p.stem for p in (conf_dir() / "model").glob("*.yaml")]
    for family in FAMILIES.values():
        assert family.special_tokens, family.name
        for prefix in family.model_presets:
            assert any(p.startswith(prefix) for p in presets), (family.name, prefix)


def _launch_in_process(argv: list[str], monkeypatch) -> tuple[list, int, int]:
    """rlhf.launch.cli.launch run here on `argv` with a task that takes each job's run as
    rlhf.launch.task does (and marks the job finished, so the sweep's summary is content): the
    runs the task got, and how often the launching side composed and validated a config."""
    from hydra.core.hydra_config import HydraConfig

    import rlhf.config.validate
    from rlhf.launch import cli, task
    from rlhf.launch.compose import resolved_config
    from rlhf.run import rundir

    counts = {"validate": 0, "compose": 0}
    validate, compose = rlhf.config.validate.validate, cli.compose_with_choices

    def counted_validate(cfg):
        counts["validate"] += 1
        return validate(cfg)

    def counted_compose(*args, **kwargs):
        counts["compose"] += 1
        return compose(*args, **kwargs)

    monkeypatch.setattr(rlhf.config.validate, "validate", counted_validate)
    monkeypatch.setattr(task, "validate", counted_validate)
    monkeypatch.setattr(cli, "compose_with_choices", counted_compose)
    runs = []

    def job(cfg):
        runs.append(task.validated(resolved_config(cfg)))
        rundir.mark_success(Path(HydraConfig.get().runtime.output_dir))
        return 0.0

    monkeypatch.setattr(sys, "argv", ["rlhf.train", *argv])
    cli.launch(job)
    return runs, counts["validate"], counts["compose"]


def test_each_job_is_composed_and_validated_once_by_the_launching_process(tmp_path, monkeypatch):
    """The launching process composes and validates every job before Hydra starts; the job Hydra
    then runs here takes that run instead of validating its config again."""
    monkeypatch.chdir(tmp_path)
    runs, validated, composed = _launch_in_process(
        ["-m", "method.beta=0.1,0.2", "evaluate.enabled=false", f"hydra.sweep.dir={tmp_path / 'sweep'}",
         f"cache_dir={tmp_path / 'cache'}"], monkeypatch)
    assert [run.method.beta for run in runs] == [0.1, 0.2]
    assert validated == 2 and composed == 2  # one per job: the jobs took the runs preflight validated
    runs, validated, composed = _launch_in_process(
        ["method.beta=0.3", "evaluate.enabled=false", f"hydra.run.dir={tmp_path / 'single'}",
         f"cache_dir={tmp_path / 'cache'}"], monkeypatch)
    assert [run.method.beta for run in runs] == [0.3] and validated == 1 and composed == 1


def test_a_slurm_sweep_on_a_machine_without_sbatch_is_one_message_before_anything_starts(tmp_path, monkeypatch):
    from rlhf.launch import cli

    command = ["-m", "hydra/launcher=slurm", "method.beta=0.1,0.2", f"cache_dir={tmp_path / 'cache'}"]
    monkeypatch.setattr(cli, "sbatch_on_path", lambda: False)
    with pytest.raises(ConfigError, match="hydra/launcher=slurm submits the sweep's jobs with sbatch, which is not "
                                          "on PATH on this machine.*hydra/launcher=local"):
        preflight(command)
    preflight(["-m", "hydra/launcher=local", *command[2:]])  # a local launcher needs no sbatch
    monkeypatch.setattr(cli, "sbatch_on_path", lambda: True)
    assert preflight(command).method.beta == 0.1  # with sbatch there, the sweep may go
    # Through the real command line, on a PATH without sbatch: one line, exit 2, no run dir.
    proc = subprocess.run([sys.executable, "-m", "rlhf.train", *command, f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                          cwd=tmp_path, env=cli_env(PATH=str(tmp_path)), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "not on PATH" in proc.stderr, proc.stderr
    assert not (tmp_path / "sweep").exists()


def test_a_held_out_share_that_leaves_no_rows_is_found_by_the_row_check_before_any_job(tmp_path):
    def rows(name: str, count: int) -> Path:
        path = tmp_path / name
        path.write_text("".join(json.dumps({"question": f"q{i}", "chosen": "yes", "rejected": "no"}) + "\n"
                                for i in range(count)))
        return path

    five, two = rows("five.jsonl", 5), rows("two.jsonl", 2)
    common = ["dataset.type=chatml.intel", "dataset.eval=[]", f"cache_dir={tmp_path / 'c'}"]
    proc = run_cli("rlhf.train", f"dataset.path={five}", *common, "dataset.val_set_size=0.99",
                   f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "dataset.val_set_size=0.99 holds out 5 of 5 training rows" in proc.stderr
    assert not (tmp_path / "run").exists()  # found before any job started, so no run dir
    with pytest.raises(ConfigError, match=r"in the sweep job .*val_set_size=0.99: .*holds out 2 of 2 training rows"):
        preflight(["-m", f"dataset.path={two}", *common, "dataset.val_set_size=0.5,0.99"])
    assert preflight([f"dataset.path={five}", *common, "dataset.val_set_size=0.2"]).dataset.val_set_size == 0.2
