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
