"""The README works as typed: its command lines run after the set-up it describes, and its
generated sections (methods, dataset types) match the code."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, cli_env

README = REPO / "README.md"
# Appended to training commands so that the README's examples take seconds, not minutes.
QUICK = "method.max_steps=2"


def bash_blocks() -> list[list[str]]:
    return [block.strip().splitlines() for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)]


def without_comment(line: str) -> str:
    return re.split(r"\s+#\s", line, maxsplit=1)[0].rstrip()


def runnable(line: str) -> bool:
    return line.startswith(("python -m rlhf.", "source .venv/bin/activate", "rlhf-train"))


def quick(line: str) -> str:
    command = without_comment(line)
    trains = command.startswith(("python -m rlhf.train", "rlhf-train")) and not re.search(r"--help|--cfg", command)
    return f"{command} {QUICK}" if trains else command


@pytest.fixture
def checkout_like(tmp_path: Path) -> Path:
    """A working directory that looks like the repository's root to the README's commands: the
    package, and the environment the set-up made (or, when the tests run elsewhere, one whose
    activate script puts this interpreter first)."""
    (tmp_path / "rlhf").symlink_to(REPO / "rlhf")
    venv = REPO / ".venv"
    if (venv / "bin" / "activate").is_file() and Path(sys.executable).resolve().is_relative_to(venv.resolve()):
        (tmp_path / ".venv").symlink_to(venv)
    else:
        (tmp_path / ".venv" / "bin").mkdir(parents=True)
        (tmp_path / ".venv" / "bin" / "activate").write_text(f'export PATH="{Path(sys.executable).parent}:$PATH"\n')
    return tmp_path


def run_block(lines: list[str], cwd: Path) -> subprocess.CompletedProcess:
    script = "set -e\n" + "\n".join(quick(line) for line in lines if runnable(line)) + "\n"
    env = cli_env()
    env.pop("PYTHONPATH", None)  # as a user's shell: the package comes from the environment
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if ".venv" not in p)
    return subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=1500)


def test_the_readme_has_the_commands_this_test_runs():
    lines = [line for block in bash_blocks() for line in block if runnable(line)]
    assert "source .venv/bin/activate" in lines
    assert sum(line.startswith("python -m rlhf.train") for line in lines) >= 8
    assert any(line.startswith("python -m rlhf.report") for line in lines)
    assert any(line.startswith("python -m rlhf.preview") for line in lines)


@pytest.mark.slow
def test_every_readme_command_runs_as_typed_in_the_environment_it_describes(checkout_like):
    blocks = [block for block in bash_blocks() if any(runnable(line) for line in block)]
    for block in blocks:
        # Each block runs as a user would paste it, after activating the environment.
        lines = block if "source .venv/bin/activate" in block else ["source .venv/bin/activate", *block]
        proc = run_block(lines, checkout_like)
        assert proc.returncode == 0, ("README block failed:\n" + "\n".join(lines)
                                      + f"\n--- stderr\n{proc.stderr[-4000:]}")
    sweep = checkout_like / "multirun" / "beta-by-loss"
    assert (sweep / "report.md").is_file() and (sweep / "report.png").is_file()
    assert sum((job / "SUCCESS").is_file() for job in sweep.iterdir() if job.is_dir()) == 4
    assert (checkout_like / "outputs" / "again" / "SUCCESS").is_file()
    # The entry point the set-up installs answers too.
    proc = run_block(["source .venv/bin/activate", "rlhf-train --cfg job method=kto"], checkout_like)
    assert proc.returncode == 0 and "kind: kto" in proc.stdout, proc.stderr[-2000:]


def test_generated_sections_match_the_code():
    proc = subprocess.run([sys.executable, "-m", "rlhf.docs", "--check"], cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


def test_every_dataset_type_has_a_row_in_the_data_section():
    from rlhf.data.formats import valid_types
    from rlhf.methods import METHODS

    section = README.read_text().split("BEGIN data types")[1].split("END data types")[0]
    for spec in METHODS.values():
        for type_name in valid_types(spec):
            assert f"`{type_name}`" in section, (spec.kind, type_name)
