"""`python -m rlhf.train --help`: every default shown whole, and every example a valid command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli
from rlhf.launch.help import EXAMPLES


def example_commands() -> list[list[str]]:
    """The arguments of each example command (after `python -m rlhf.train`), as a shell splits them."""
    import shlex

    commands = []
    for line in EXAMPLES.splitlines()[1:]:
        words = shlex.split(line, comments=True)
        if words[:3] == ["python", "-m", "rlhf.train"]:
            commands.append(words[3:])
    return commands


def test_help_shows_long_defaults_whole(tmp_path):
    out = run_cli("rlhf.train", "--help", cwd=tmp_path).stdout
    assert "${asset:models/tiny-chatml}" in out  # was cut to ${asset:models/tin
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.split()[:1] == ["model.name_or_path"])
    assert "hub id or local checkpoint directory" in lines[at + 1]  # its help text on the next line
    grpo = run_cli("rlhf.train", "--help", "method=grpo", "method.reward_funcs=[rewards.a,rewards.b]",
                   cwd=tmp_path).stdout
    assert "method.reward_funcs" in grpo and "[rewards.a,rewards.b]" in grpo  # a list, not [...]
    assert "vllm.port" in out and "{...}" not in out  # nested nodes list their keys


@pytest.mark.parametrize("args", example_commands(), ids=lambda args: " ".join(args) or "(no overrides)")
def test_every_example_in_help_is_a_valid_command(tmp_path, monkeypatch, args):
    """Composed and validated as the command line does (every job of a sweep), in a directory
    that holds the user's data.jsonl the examples name."""
    from rlhf.launch.cli import preflight

    monkeypatch.chdir(tmp_path)
    # Enough rows that a held-out fraction of them (dataset.val_set_size=0.05) leaves rows on each side.
    rows = [{"question": f"q{i}", "chosen": "yes", "rejected": "no"} for i in range(40)]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # A GPU example is checked as a config (--cfg job) on a machine without one: the check of the
    # machine itself rightly refuses it here (tests/test_preflight.py).
    gpu = any(arg.startswith("hardware=gpu") for arg in args) and not Path("/proc/driver/nvidia").exists()
    assert preflight((["--cfg", "job"] if gpu else []) + list(args)) is not None


def test_help_has_examples():
    assert len(example_commands()) >= 4 and ["-m"] == example_commands()[2][:1]
