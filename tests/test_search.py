"""Optuna search over the same config space, optimising the objective the config names."""

from __future__ import annotations

import json

import yaml

from conftest import run_cli


def _job_values(sweep, metric):
    values = {}
    for job in sweep.iterdir():
        if (job / "metrics.json").is_file():
            config = yaml.safe_load((job / "config.yaml").read_text())
            metrics = json.loads((job / "metrics.json").read_text())
            values[config["method"]["beta"]] = metrics["eval"][metric]
    return values


def test_optuna_search_over_beta_reports_the_best_value(tmp_path):
    sweep = tmp_path / "search"
    proc = run_cli("rlhf.train", "-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=3",
                   "hydra.sweeper.sampler.seed=1", f"hydra.sweep.dir={sweep}", f"cache_dir={tmp_path / 'cache'}",
                   "method.beta=interval(0.05,0.5)", "method.max_steps=6", cwd=tmp_path)
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    values = _job_values(sweep, "eval_rewards/accuracies")
    assert len(values) == 3
    # The method's metric, maximised: the best value is the largest a trial reached.
    assert results["best_value"] == max(values.values())
    assert values[results["best_params"]["method.beta"]] == results["best_value"]
    assert "Best value" in proc.stdout + proc.stderr or (sweep / "optimization_results.yaml").is_file()


def test_optuna_minimises_a_loss_objective(tmp_path):
    sweep = tmp_path / "search"
    run_cli("rlhf.train", "-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.seed=1",
            f"hydra.sweep.dir={sweep}", f"cache_dir={tmp_path / 'cache'}", "objective.metric=eval_loss",
            "method.beta=interval(0.05,0.5)", "method.max_steps=4", cwd=tmp_path)
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    values = _job_values(sweep, "eval_loss")
    assert results["best_value"] == min(values.values())
    hydra_cfg = yaml.safe_load(next(sweep.glob("*/.hydra/hydra.yaml")).read_text())
    assert hydra_cfg["hydra"]["sweeper"]["direction"] == "minimize"


def test_optuna_maximises_a_generation_score(tmp_path):
    """Any figure of the generation eval stage can be the objective: the win rate against the
    reference, read from each trial's generation block."""
    sweep = tmp_path / "search"
    run_cli("rlhf.train", "-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.seed=1",
            f"hydra.sweep.dir={sweep}", f"cache_dir={tmp_path / 'cache'}", "objective.metric=generation/win_rate",
            "method.beta=interval(0.05,0.5)", "method.max_steps=20", cwd=tmp_path)
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    values = {}
    for job in sweep.iterdir():
        if (job / "metrics.json").is_file():
            config = yaml.safe_load((job / "config.yaml").read_text())
            values[config["method"]["beta"]] = json.loads((job / "metrics.json").read_text())["generation"][
                "metrics"]["win_rate"]
    assert len(values) == 2
    assert results["best_value"] == max(values.values())
    assert values[results["best_params"]["method.beta"]] == results["best_value"]
    hydra_cfg = yaml.safe_load(next(sweep.glob("*/.hydra/hydra.yaml")).read_text())
    assert hydra_cfg["hydra"]["sweeper"]["direction"] == "maximize"
