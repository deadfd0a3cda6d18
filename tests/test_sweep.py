"""Local sweeps through Hydra multirun: one complete run dir per job."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from conftest import job_dir, read_history, run_cli


# Past fp32 rounding (at most ~1e-5 apart here), at most this far apart.
SAME = 1e-4


def reference_terms(job: Path, beta: float) -> list[float]:
    """`rewards/margins / beta - (logps/chosen - logps/rejected)` at each logged train step and at the
    final eval, reading the job's margins with `beta`.

    TRL's DPO rewards are beta * (log pi - log pi_ref), so with the beta TRL used this is
    -(log pi_ref(chosen) - log pi_ref(rejected)) of the step's batch: the data's and the reference's
    alone, the same in every job of a sweep at the same step (same seed, same batches), whatever the
    job trains or how far its policy moved. With another beta it is off by the policy's own log-ratio
    margin, which is 0 only while the policy is still the reference (the first two steps here).
    """
    logs = [h for h in read_history(job) if "loss" in h]
    final = json.loads((job / "metrics.json").read_text())["eval"]
    return ([h["rewards/margins"] / beta - (h["logps/chosen"] - h["logps/rejected"]) for h in logs]
            + [final["eval_rewards/margins"] / beta - (final["eval_logps/chosen"] - final["eval_logps/rejected"])])


def farthest(terms: list[list[float]]) -> float:
    """How far the jobs' reference terms are apart, at the step where they are farthest."""
    return max(abs(a - b) for job in terms[1:] for a, b in zip(job, terms[0], strict=True))


def test_beta_by_loss_type_sweep_runs_four_complete_jobs_each_with_its_beta_and_loss(tmp_path):
    sweep = tmp_path / "multirun"
    run_cli("rlhf.train", "-m", f"hydra.sweep.dir={sweep}", f"cache_dir={tmp_path / 'cache'}",
            "method.beta=0.05,0.1", "method.loss_type=sigmoid,ipo", "method.max_steps=10",
            "method.logging_steps=1", cwd=tmp_path)
    # Each job's dir is named after its number and its overrides (cache_dir left out).
    jobs = [job_dir(sweep, n) for n in range(4)]
    settings = [(0.05, "sigmoid"), (0.05, "ipo"), (0.1, "sigmoid"), (0.1, "ipo")]
    assert [j.name for j in jobs] == [f"{n}_method.beta={beta},method.logging_steps=1,method.loss_type={loss},"
                                      "method.max_steps=10" for n, (beta, loss) in enumerate(settings)]
    for job, (beta, loss) in zip(jobs, settings):
        config = yaml.safe_load((job / "config.yaml").read_text())
        assert (config["method"]["beta"], config["method"]["loss_type"]) == (beta, loss)
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["eval"]["eval_rewards/accuracies"] is not None
        assert (job / "SUCCESS").is_file() and (job / "model" / "config.json").is_file()
        assert (job / "env.json").is_file()
        # Step 1's loss, with the policy still the reference (every log-ratio 0): sigmoid's is
        # -log sigmoid(0) = ln 2 at any beta; IPO's is (0 - 1/(2 beta))^2, 100 at beta 0.05 and 25 at
        # 0.1 (TRL's default beta, 0.1, would give 25 twice; the sigmoid loss would give ln 2 four times).
        expected = math.log(2) if loss == "sigmoid" else 1 / (4 * beta**2)
        assert metrics["first_loss"] == pytest.approx(expected, rel=1e-4), (job.name, metrics["first_loss"])
    # Each job's margins are its own beta times its log-ratios, at every step and at the eval.
    terms = [reference_terms(job, beta) for job, (beta, _) in zip(jobs, settings)]
    assert len(terms[0]) == 11 and farthest(terms) < SAME, terms
    # The check tells the betas apart on these very figures: read with the other beta (as a job
    # whose beta was lost on the way to TRL and trained with TRL's 0.1 would be), they disagree.
    swapped = [reference_terms(job, 0.15 - beta) for job, (beta, _) in zip(jobs, settings)]
    assert farthest(swapped) > 100 * SAME, swapped


def test_a_failing_job_of_a_sweep_is_logged_once_marked_failed_and_listed_at_the_end(tmp_path):
    # Valid rows (a bad row would stop the sweep before any job), all longer than
    # method.max_length: each job's data stage, which has the tokenizer, fails on them.
    for name in ("a", "b"):
        (tmp_path / f"{name}.jsonl").write_text(json.dumps({"question": "q", "chosen": "mango " * 400,
                                                            "rejected": "b"}) + "\n")
    sweep = tmp_path / "multirun"
    proc = run_cli("rlhf.train", "-m", f"hydra.sweep.dir={sweep}", f"cache_dir={tmp_path / 'cache'}",
                   f"dataset.path={tmp_path / 'a.jsonl'},{tmp_path / 'b.jsonl'}", "dataset.type=chatml.intel",
                   "dataset.eval=[]", cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "2 job(s) of the sweep did not finish" in proc.stderr
    output = proc.stdout + proc.stderr
    for number, name in ((0, "a"), (1, "b")):
        job = job_dir(sweep, number)
        message = f"no training rows are left from {tmp_path / name}.jsonl"
        assert "DataError" in (job / "FAILED").read_text()
        assert (job / "train.log").read_text().count(message) == 1
        # as the job fails, and in the list of failures when the sweep ends
        assert output.count(message) == 2, output
        assert f"job {job.name} failed: DataError: {message}" in output


def test_a_sweep_over_methods_reports_each_with_its_own_data_and_learning_metric(tmp_path):
    """-m method=dpo,reward: each job trains on its method's embedded data (both preference
    pairs), only the policy's generations are judged, and the report shows each job's own
    learning metric, per job and per setting."""
    import csv

    sweep = tmp_path / "multirun"
    run_cli("rlhf.train", "-m", f"hydra.sweep.dir={sweep}", f"cache_dir={tmp_path / 'cache'}", "method=dpo,reward",
            "method.max_steps=3", cwd=tmp_path)
    jobs = {"dpo": job_dir(sweep, 0), "reward": job_dir(sweep, 1)}
    learning = {"dpo": "eval_rewards/accuracies", "reward": "eval_accuracy"}
    metrics = {}
    for method, job in jobs.items():
        config = yaml.safe_load((job / "config.yaml").read_text())
        assert config["method"]["kind"] == method
        assert config["dataset"]["path"].endswith("topics_pairs.train.jsonl") and config["dataset"]["type"] == "chatml.intel"
        metrics[method] = json.loads((job / "metrics.json").read_text())
        assert metrics[method]["metric"] == learning[method] and 0 <= metrics[method]["metric_value"] <= 1
        architecture = json.loads((job / "model" / "config.json").read_text())["architectures"]
        assert architecture == [{"dpo": "LlamaForCausalLM", "reward": "LlamaForSequenceClassification"}[method]]
    assert "generation" in metrics["dpo"] and "generation" not in metrics["reward"]
    with open(sweep / "report.csv") as f:
        table = {r["method"]: r for r in csv.DictReader(f)}
    for method in jobs:
        assert table[method]["learning_metric"] == learning[method]
        assert float(table[method]["learning_value"]) == metrics[method]["metric_value"]
    markdown = (sweep / "report.md").read_text()
    assert "## Learning metrics" in markdown and "| method | learning metric | n | mean | ci_low | ci_high |" in markdown
    assert f"| reward | eval_accuracy | 1 | {metrics['reward']['metric_value']:.4g} |" in markdown
    assert f"| dpo | eval_rewards/accuracies | 1 | {metrics['dpo']['metric_value']:.4g} |" in markdown
