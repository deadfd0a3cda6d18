"""Reference log-probs shared across a sweep: computed by the first job, reused by the others,
no reference model in memory, and the same results as a run with its own reference model."""

from __future__ import annotations

import json

import pytest

from conftest import job_dir, run_cli, train

pytestmark = pytest.mark.slow


def test_sweep_computes_reference_log_probs_once_and_matches_an_own_reference(tmp_path):
    sweep = tmp_path / "sweep"
    run_cli("rlhf.train", "-m", f"hydra.sweep.dir={sweep}", f"cache_dir={tmp_path / 'cache'}",
            "method.beta=0.1,0.3", "method.max_steps=12", cwd=tmp_path)
    first, second = (json.loads((job_dir(sweep, n) / "metrics.json").read_text()) for n in (0, 1))
    assert first["reference"]["precomputed"] == {"train": "computed", "eval": "computed"}
    assert second["reference"]["precomputed"] == {"train": "reused", "eval": "reused"}
    assert first["reference"]["models_in_memory"] == second["reference"]["models_in_memory"] == 1

    own = tmp_path / "own"
    train(tmp_path, "method.beta=0.3", "method.max_steps=12", "method.precompute_ref_log_probs=false",
          run_dir=own)
    alone = json.loads((own / "metrics.json").read_text())
    assert alone["reference"]["kind"] == "separate_copy" and alone["reference"]["models_in_memory"] == 2
    for key in ("eval_loss", "eval_rewards/accuracies", "eval_rewards/margins", "eval_rewards/chosen"):
        assert second["eval"][key] == pytest.approx(alone["eval"][key], rel=1e-4, abs=1e-6), key
    assert second["train"]["train_loss"] == pytest.approx(alone["train"]["train_loss"], rel=1e-4)
