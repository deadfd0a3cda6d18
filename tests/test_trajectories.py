"""Every method option's first optimizer steps, as recorded with the packages that produced them.

`tests/trajectories.json` holds, for each option in `conf/method/` (the embedded default of
`python -m rlhf.train method=<m>`), the loss and gradient norm of its first STEPS optimizer steps
(and, for the GRPO family, the mean reward of the completions sampled at that step; null at a
step that reused the previous step's completions, as with num_iterations 2), together with the
environment they were recorded in: the versions of the packages that compute them, Python, and
torch's CPU kernel level. The slow test retrains all of them in one Hydra sweep and compares:

* same environment: every value must be equal (==). Training here is bit-for-bit repeatable
  (checked run against run, with a fresh and with a reused data cache, and with 1, 2 and 4
  torch threads), so any difference comes from this repository's code or assets.
* different environment (e.g. after a TRL upgrade): equal within TOLERANCE, and the failure
  names every package whose version differs, old -> new. A TRL or transformers upgrade that
  changes results is seen, not guessed.

Why the gradient norm too: on-policy (the first pass over a generation batch), GRPO's clipped
surrogate is minus the mean of zero-mean group advantages, so the loss of bnpo, dr_grpo and dapo
(no KL term) is 0 up to rounding (0.0, 1.5e-08, ...) whatever the trainer does; a 1% change of
the learning rate leaves it unchanged. Their gradient norm moves with it.

The GRPO loss presets (grpo, bnpo, dr_grpo, dapo) share the tiny model's tuning, so their
trajectories differ only by each preset's own settings; the record must tell them apart
(test_the_grpo_presets_train_differently).

After an intended change (a new TRL, a new default, a new method option), regenerate and
commit the file (about 30 s):

    python tests/test_trajectories.py --update
"""

from __future__ import annotations

import json
import math
import platform
import sys
import tempfile
import warnings
from datetime import date
from pathlib import Path

import pytest
import yaml

from rlhf.run.rundir import job_dirs

from conftest import REPO, read_history, run_cli

TRAJECTORIES = Path(__file__).with_name("trajectories.json")
METHODS = sorted(p.stem for p in (REPO / "conf" / "method").glob("*.yaml"))
STEPS = 5  # pair methods warm up for one step at lr 0: steps 1 and 2 both see the initial weights
KEYS = ("loss", "grad_norm", "reward")  # those a method logs; reward: the GRPO family
PACKAGES = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "tokenizers", "numpy")

# Across environments. Measured on this machine over all nine options and 5 steps (2026-12-02,
# torch 2.13.0 AVX512): 1, 2 or 4 torch threads change nothing (bit-identical); torch's kernels
# at AVX2 or DEFAULT instead of AVX512 (ATEN_CPU_CAPABILITY, with MKL and oneDNN limited alike),
# or eager attention instead of SDPA, move values by at most 3.7e-7 relative (a few fp32 ulps,
# not growing over the steps), and a value that is 0 up to rounding (a GRPO-family loss) by at
# most 7.5e-9 absolute. A real change is far larger: the learning rate 1% higher moves the DPO
# loss by 3.5e-5 relative and every gradient norm by >= 1.2e-3. rel 1e-5 is 27x the noise and
# 3.5x under the smallest of these; abs 1e-7 is 13x the noise on values that are 0 by design.
TOLERANCE = dict(rel=1e-5, abs=1e-7)

UPDATE = "python tests/test_trajectories.py --update"


def sweep_args(sweep_dir: Path, cache_dir: Path) -> list[str]:
    return ["-m", f"method={','.join(METHODS)}", f"method.max_steps={STEPS}", "method.logging_steps=1",
            f"hydra.sweep.dir={sweep_dir}", f"cache_dir={cache_dir}"]


def cpu_capability() -> str:
    import torch

    return torch.backends.cpu.get_cpu_capability()


def cpu_host() -> str:
    """The CPU the kernels ran on: model name, instruction-set flags (a digest) and core count.
    Two hosts that report the same torch capability (AVX512) can still pick different kernels
    and round differently (measured 2026-12-05: a new host moved the last bits, rel ~1e-7, of
    seven of nine options with unchanged code); bit-for-bit is asked only on the same CPU."""
    import hashlib
    import os

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    field = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in info.splitlines()) if v}
    flags = hashlib.blake2b(" ".join(sorted(field.get("flags", "").split())).encode(), digest_size=6).hexdigest()
    return f"{field.get('model name', platform.processor())}; flags {flags}; {os.cpu_count()} cores"


def train_all(tmp: Path) -> dict:
    """Train every method option for STEPS steps in one sweep; their trajectories and environment."""
    sweep = tmp / "multirun"
    run_cli("rlhf.train", *sweep_args(sweep, tmp / "cache"), cwd=tmp)
    methods, env = {}, None
    for job in job_dirs(sweep):  # <number>_<overrides>, in job order
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        method = next(o.split("=", 1)[1] for o in overrides if o.startswith("method="))
        steps = [h for h in read_history(job) if "loss" in h][:STEPS]
        methods[method] = {k: [h.get(k) for h in steps] for k in KEYS if any(k in h for h in steps)}
        job_env = json.loads((job / "env.json").read_text())  # what the training process imported
        env = {**{p: job_env["packages"][p] for p in PACKAGES}, "python": job_env["python"],
               "machine": platform.machine(), "torch_cpu_capability": cpu_capability(), "cpu": cpu_host()}
    return {"environment": env, "methods": methods}


def close(x: float | None, y: float | None) -> bool:
    """Equal within TOLERANCE; a step with no value (null) matches only another."""
    return x is None and y is None or x is not None and y is not None and y == pytest.approx(x, **TOLERANCE)


def environment_changes(old: dict, new: dict) -> list[str]:
    """'trl 1.16.0 -> 1.17.0' for every entry that differs (a missing one reads 'none')."""
    return [f"{key} {old.get(key, 'none')} -> {new.get(key, 'none')}"
            for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def compare(recorded: dict, current: dict) -> str | None:
    """None when `current` reproduces `recorded` (both {"environment", "methods"}): exactly in the
    same environment, within TOLERANCE in another; otherwise a message saying what moved and,
    when the environment differs, what changed in it."""
    changes = environment_changes(recorded["environment"], current["environment"])
    problems = []
    for method in sorted(set(recorded["methods"]) | set(current["methods"])):
        old, new = recorded["methods"].get(method), current["methods"].get(method)
        if old is None or new is None:
            problems.append(f"{method}: {'not recorded' if old is None else 'not trained'}")
            continue
        for key in [k for k in KEYS if k in old or k in new]:
            a, b = old.get(key), new.get(key)
            if a is None or b is None or len(a) != len(b):
                problems.append(f"{method} {key}: recorded {a}, now {b}")
                continue
            for step, (x, y) in enumerate(zip(a, b), start=1):
                same = close(x, y) if changes else x == y
                if not same:
                    rel = abs(y - x) / abs(x) if x and y is not None else math.inf
                    problems.append(f"{method} {key} step {step}: recorded {x!r}, now {y!r} (rel {rel:.1e})")
    if not problems:
        return None
    if changes:
        head = (f"trajectories differ by more than {TOLERANCE} from those recorded on "
                f"{recorded.get('recorded')}; the environment differs: {', '.join(changes)}")
    else:
        head = (f"trajectories are not bit-for-bit those recorded on {recorded.get('recorded')} in this same "
                f"environment: this repository's code or assets changed them")
    return "\n  ".join([head, *problems]) + f"\nIf the change is intended, regenerate: {UPDATE}"


@pytest.mark.slow
def test_every_method_reproduces_its_recorded_trajectory(tmp_path):
    recorded = json.loads(TRAJECTORIES.read_text())
    trained = train_all(tmp_path)
    problem = compare(recorded, trained)
    assert problem is None, problem
    changes = environment_changes(recorded["environment"], trained["environment"])
    if changes:  # passed within the tolerance: say so, the file can be re-recorded here
        warnings.warn(f"trajectories match within {TOLERANCE}, not exactly, as the environment differs: "
                      f"{', '.join(changes)}")


# The comparison itself, on made-up records (no training).

ENV = {"torch": "2.13.0+cpu", "transformers": "5.23.0", "trl": "1.16.0", "python": "3.11.7",
       "machine": "x86_64", "torch_cpu_capability": "AVX512"}
RECORD = {"recorded": "2026-12-02", "environment": ENV,
          "methods": {"dpo": {"loss": [0.6931471824645996, 0.6947898268699646], "grad_norm": [0.52, 0.40]},
                      "bnpo": {"loss": [0.0, 1.4901161193847656e-08], "grad_norm": [2.237, 1.117],
                               "reward": [0.0677, None]}}}


def current(env: dict = ENV, *changes: tuple[str, str, list]) -> dict:
    """RECORD as trained in `env`, with each (method, key, values) of `changes` replaced."""
    methods = json.loads(json.dumps(RECORD["methods"]))
    for method, key, values in changes:
        methods[method][key] = values
    return {"environment": env, "methods": methods}


def test_same_environment_same_values_pass():
    assert compare(RECORD, current()) is None


def test_same_environment_demands_every_bit():
    one_ulp = math.nextafter(0.6947898268699646, 1.0)
    message = compare(RECORD, current(ENV, ("dpo", "loss", [0.6931471824645996, one_ulp])))
    assert message is not None
    assert "dpo loss step 2" in message and "same environment" in message and UPDATE in message


def test_other_environment_tolerates_rounding_and_names_what_changed():
    env = {**ENV, "trl": "1.17.0"}
    near = [0.6931471824645996 * (1 + 3e-7), 0.6947898268699646]
    assert compare(RECORD, current(env, ("dpo", "loss", near), ("bnpo", "loss", [3e-8, 0.0]))) is None
    message = compare(RECORD, current(env, ("dpo", "loss", [0.6931471824645996, 0.6948])))
    assert message is not None
    assert "trl 1.16.0 -> 1.17.0" in message and "dpo loss step 2" in message
    assert "transformers" not in message and "torch" not in message


def test_every_differing_package_and_the_cpu_level_are_named():
    env = {**ENV, "transformers": "5.24.0", "torch_cpu_capability": "AVX2"}
    env.pop("trl")
    message = compare(RECORD, current(env, ("bnpo", "grad_norm", [2.237, 1.2])))
    assert "transformers 5.23.0 -> 5.24.0" in message
    assert "torch_cpu_capability AVX512 -> AVX2" in message and "trl 1.16.0 -> none" in message
    assert "bnpo grad_norm step 2" in message


def test_a_step_without_a_value_matches_only_another():
    """A GRPO step that reused the previous step's completions logs no reward (null)."""
    assert compare(RECORD, current({**ENV, "trl": "1.17.0"})) is None
    for env in (ENV, {**ENV, "trl": "1.17.0"}):
        message = compare(RECORD, current(env, ("bnpo", "reward", [0.0677, 0.0156])))
        assert message is not None and "bnpo reward step 2: recorded None, now 0.0156" in message


def test_a_method_missing_on_either_side_fails():
    trained = current()
    trained["methods"]["kto"] = {"loss": [0.5]}
    del trained["methods"]["bnpo"]
    message = compare(RECORD, trained)
    assert "kto: not recorded" in message and "bnpo: not trained" in message


def test_the_record_covers_every_method_option_for_every_step():
    recorded = json.loads(TRAJECTORIES.read_text())
    assert sorted(recorded["methods"]) == METHODS, f"method options changed: {UPDATE}"
    for method, values in recorded["methods"].items():
        assert {"loss", "grad_norm"} <= set(values), method
        assert all(len(v) == STEPS for v in values.values()), method
    assert set(PACKAGES) | {"python", "machine", "torch_cpu_capability", "cpu"} == set(recorded["environment"])


# The GRPO loss presets (conf/method/), each its paper's settings on top of method=grpo.
GRPO_PRESETS = ("grpo", "bnpo", "dr_grpo", "dapo")


def same_trajectory(a: dict, b: dict) -> bool:
    """Two recorded trajectories no value of which differs by more than rounding (TOLERANCE)."""
    return all(key in a and key in b and len(a[key]) == len(b[key])
               and all(close(x, y) for x, y in zip(a[key], b[key]))
               for key in set(a) | set(b))


def test_same_trajectory_is_equal_up_to_rounding():
    bnpo = RECORD["methods"]["bnpo"]
    assert same_trajectory(bnpo, {**bnpo, "loss": [3e-8, 0.0]})
    assert not same_trajectory(bnpo, {**bnpo, "grad_norm": [2.237, 1.118]})
    assert not same_trajectory(bnpo, {k: v for k, v in bnpo.items() if k != "reward"})


def test_the_grpo_presets_train_differently():
    """Each GRPO preset's own settings reach TRL on the embedded task: no two of grpo, bnpo,
    dr_grpo and dapo leave the same trajectory (beyond rounding). When two do, one preset trains
    as the other there and nothing shows that its settings act (as bnpo and dapo did with one
    pass per generation batch, where the ratio is 1 and nothing is clipped).

    What tells them apart in the record (conf/tuning/tiny_grpo.yaml): grpo's KL term (beta 0.04)
    from step 2 (at step 1 the policy is its reference); dr_grpo's advantages, not divided by
    the group's std, from step 1's gradient norm; dapo's clip-higher (0.28 against 0.2) from
    step 2, the first that trains on completions sampled before the policy moved. Not shown by these trajectories: DAPO's overlong masking (off on
    the tiny model, conf/tuning/tiny_dapo.yaml) and the length normalisers of dapo and dr_grpo
    (equal to bnpo's while every completion runs to max_completion_length, as all recorded do)."""
    methods = json.loads(TRAJECTORIES.read_text())["methods"]
    same = [f"{a} == {b}" for i, a in enumerate(GRPO_PRESETS) for b in GRPO_PRESETS[i + 1:]
            if same_trajectory(methods[a], methods[b])]
    assert not same, f"recorded trajectories that do not tell the presets apart: {', '.join(same)}"


def update() -> None:
    """Retrain every method option and write TRAJECTORIES."""
    with tempfile.TemporaryDirectory() as tmp:
        current = train_all(Path(tmp))
    record = {"recorded": date.today().isoformat(),
              "command": UPDATE,
              "sweep": "python -m rlhf.train " + " ".join(sweep_args(Path("<tmp>/multirun"), Path("<tmp>/cache"))),
              "steps": STEPS,
              "tolerance_across_environments": TOLERANCE,
              **current}
    TRAJECTORIES.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {TRAJECTORIES}: {', '.join(sorted(current['methods']))} in {current['environment']}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit(__doc__)
    update()
