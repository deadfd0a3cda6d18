"""Local sweeps through Hydra multirun: one complete run dir per job."""

from __future__ import annotations

import json

import yaml

from conftest import job_dir, run_cli


def test_beta_by_loss_type_sweep_runs_four_complete_jobs(tmp_path):
    sweep = tmp_path / "multirun"
    run_cli("rlhf.train", "-m", f"hydra.sweep.dir={sweep}", f"cache_dir={tmp_path / 'cache'}",
            "method.beta=0.05,0.1", "method.loss_type=sigmoid,ipo", "method.num_epochs=1", cwd=tmp_path)
    # Each job's dir is named after its number and its overrides (cache_dir left out).
    jobs = [job_dir(sweep, n) for n in range(4)]
    assert [j.name for j in jobs] == [f"{n}_method.beta={beta},method.loss_type={loss},method.num_epochs=1"
                                      for n, (beta, loss) in enumerate([("0.05", "sigmoid"), ("0.05", "ipo"),
                                                                        ("0.1", "sigmoid"), ("0.1", "ipo")])]
    seen = set()
    for job in jobs:
        config = yaml.safe_load((job / "config.yaml").read_text())
        seen.add((config["method"]["beta"], config["method"]["loss_type"]))
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["eval"]["eval_rewards/accuracies"] is not None
        assert (job / "SUCCESS").is_file() and (job / "model" / "config.json").is_file()
        assert (job / "env.json").is_file()
    assert seen == {(0.05, "sigmoid"), (0.05, "ipo"), (0.1, "sigmoid"), (0.1, "ipo")}
    # Each job trained with its own loss: the first losses of sigmoid and IPO jobs differ.
    first = {json.loads((j / "metrics.json").read_text())["first_loss"] for j in jobs}
    assert len(first) >= 2


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
