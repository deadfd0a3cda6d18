"""Settings that belong to an option follow it (rlhf.launch.companions): the embedded dataset's
evaluate block judges the embedded task only, the tiny model's tuning trains the tiny checkpoint
only. A run that keeps the option but overrides what it holds is never judged on the embedded
prompts, nor tuned for another checkpoint; one line says so."""

from __future__ import annotations

import json

import yaml

from conftest import REPO, run_cli, train

# The README's own-data line, shortened to a few steps.
OWN_DATA = [f"dataset.path={REPO / 'rlhf/assets/samples/intel.jsonl'}", "dataset.type=chatml.intel",
            "dataset.eval=[]", "dataset.val_set_size=0.1", "method.max_steps=2"]
SCORER = "def length_reward(completions, **kwargs):\n    return [float(len(str(c))) for c in completions]\n"


def test_own_data_is_never_scored_on_the_embedded_prompts_and_the_sweep_report_says_so(tmp_path):
    proc = train(tmp_path, *OWN_DATA)
    assert "note: dataset.path=" in proc.stderr and "evaluate=embedded" in proc.stderr and "does not apply" in proc.stderr
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["evaluate"]["reward_funcs"] == [] and config["evaluate"]["prompts"] is None
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "generation" not in metrics and "no scorer is named" in metrics["generation_off"]
    assert "generation eval: off (no scorer is named" in (tmp_path / "run" / "train.log").read_text()
    # A scorer the user names judges the run's own held-out prompts, not the embedded ones.
    (tmp_path / "scorers.py").write_text(SCORER)
    train(tmp_path, *OWN_DATA, "evaluate.reward_funcs=[scorers.length_reward]", run_dir=tmp_path / "scored")
    block = json.loads((tmp_path / "scored" / "metrics.json").read_text())["generation"]
    held_out = round(0.1 * 48)  # the sample's 48 rows, val_set_size=0.1
    assert block["prompts"]["source"].startswith("the eval data's distinct prompts"), block["prompts"]
    assert 0 < block["prompts"]["count"] <= held_out  # the held-out rows' prompts, not the embedded 60
    assert [s["name"] for s in block["scorers"]] == ["length_reward"]
    # A sweep of such runs: its report says the stage did not run, and why.
    sweep = tmp_path / "sweep"
    run_cli("rlhf.train", "-m", *OWN_DATA, "seed=1,2", f"hydra.sweep.dir={sweep}", f"cache_dir={tmp_path / 'cache'}",
            cwd=tmp_path)
    report = (sweep / "report.md").read_text()
    assert "The generation eval stage did not run in 2 of 2 jobs: no scorer is named" in report, report


def test_the_embedded_task_keeps_its_evaluate_block(tmp_path):
    """The companion stays while the option holds its own data (the same path, written out)."""
    from rlhf.launch.cli import preflight

    embedded = REPO / "rlhf/assets/data/topics_pairs.train.jsonl"
    for overrides in ([], [f"dataset.path={embedded}"], [f"dataset.path={REPO}/rlhf/./assets/data/{embedded.name}"]):
        run = preflight([*overrides, f"cache_dir={tmp_path / 'cache'}"])
        assert run.evaluate.reward_funcs == ["rlhf.rewards.topic_reward"], overrides


def test_a_sweep_whose_jobs_differ_in_what_applies_is_refused_before_any_job(tmp_path):
    """Hydra gives every job the command's overrides: a sweep with one job on the embedded task
    and one on other data cannot drop the evaluate block for one only, so it stops, naming both."""
    copy = tmp_path / "mine.jsonl"
    copy.write_text((REPO / "rlhf/assets/data/topics_pairs.train.jsonl").read_text())
    embedded = REPO / "rlhf/assets/data/topics_pairs.train.jsonl"
    sweep = tmp_path / "sweep"
    proc = run_cli("rlhf.train", "-m", f"dataset.path={embedded},{copy}", "dataset.eval=[]", f"hydra.sweep.dir={sweep}",
                   f"cache_dir={tmp_path / 'cache'}", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Run them as separate sweeps" in proc.stderr, proc.stderr
    mixed = proc.stderr.split("differ in which option-made settings apply")[1]
    assert mixed.index(f"dataset.path={embedded} ") < mixed.index(": none") < mixed.index(f"dataset.path={copy} ")
    assert mixed.index(f"dataset.path={copy} ") < mixed.index(": ~evaluate"), mixed
    assert not sweep.exists()


def test_another_checkpoint_leaves_the_tiny_tuning_unless_the_command_names_it(tmp_path):
    """The tiny model's tuning (lr 1e-3, beta 0.5 for DPO) is made for the tiny checkpoint: the
    same checkpoint elsewhere (a fine-tune, here a copy) trains with the method's own defaults,
    one note says so, and naming the tuning keeps it; each preset's tuning follows it alike."""
    import shutil

    from rlhf.launch.cli import preflight

    copy = tmp_path / "policy"
    shutil.copytree(REPO / "rlhf/assets/models/tiny-chatml", copy)
    cache = f"cache_dir={tmp_path / 'cache'}"
    tuned, own = preflight([cache]), preflight([cache, f"model.name_or_path={copy}"])
    assert (tuned.method.learning_rate, tuned.method.beta) == (1e-3, 0.5)
    assert (own.method.learning_rate, own.method.beta) == (5e-7, 0.1)  # conf/method/dpo.yaml's
    named = preflight([cache, f"model.name_or_path={copy}", "tuning=tiny_dpo"])
    assert (named.method.learning_rate, named.method.beta) == (1e-3, 0.5)
    dapo = preflight([cache, "method=dapo", f"model.name_or_path={copy}"])
    assert dapo.method.learning_rate == 1e-6 and dapo.method.mask_truncated_completions  # DAPO's own
    # The command line shows the same config, with the note (--cfg job: overrides before a flag).
    proc = run_cli("rlhf.train", f"model.name_or_path={copy}", cache, "--cfg", "job", cwd=tmp_path)
    assert "so tuning=tiny_dpo (conf/tuning/tiny_dpo.yaml" in proc.stderr and "does not apply" in proc.stderr
    assert yaml.safe_load(proc.stdout)["method"]["learning_rate"] == 5e-7
    # The job's own log says it too (a SLURM job's log is read far from the launching terminal).
    train(tmp_path, f"model.name_or_path={copy}", cache, "method.max_steps=1", "dataset.num_rows=16",
          "dataset.eval=[]", "evaluate.enabled=false", run_dir=tmp_path / "run")
    log = (tmp_path / "run" / "train.log").read_text()
    assert "tuning: none, left by this command (made for that model option's checkpoint)" in log, log
    assert "evaluate: embedded (conf/evaluate/embedded.yaml)" in log
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["method"]["learning_rate"] == 5e-7
