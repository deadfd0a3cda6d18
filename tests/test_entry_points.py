"""Every `python -m rlhf.<name>` entry point, run by a Python that lacks the project's libraries (as
outside its environment), says so in one line and how to get in, instead of an import traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO, cli_env

ENTRY_POINTS = sorted(p.stem for p in (REPO / "rlhf").glob("*.py") if p.stem != "__init__")
# Hides one library from the interpreter, installed or not, then runs an entry point as `-m` does.
WITHOUT = ("import importlib.abc, runpy, sys\n"
           "hidden = sys.argv[1]\n"
           "class Hide(importlib.abc.MetaPathFinder):\n"
           "    def find_spec(self, name, path=None, target=None):\n"
           "        if name == hidden or name.startswith(hidden + '.'):\n"
           "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
           "sys.meta_path.insert(0, Hide())\n"
           "module, sys.argv = sys.argv[2], [sys.argv[2], *sys.argv[3:]]\n"
           "runpy.run_module(module, run_name='__main__')\n")


def without(library: str, module: str, *args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT, library, module, *args], cwd=cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=120)


def test_the_entry_points_are_the_modules_at_the_top():
    assert ENTRY_POINTS == ["bench", "docs", "evaluate", "gpu_check", "preview", "report", "train", "vllm_serve"]


# Those that read a config even for --help (the rest, gpu_check and bench, answer it without one).
CONFIGURED = ["docs", "evaluate", "preview", "report", "train", "vllm_serve"]


@pytest.mark.parametrize("entry", CONFIGURED)
def test_outside_the_environment_each_entry_point_is_one_line_naming_the_way_in(entry, tmp_path):
    proc = without("omegaconf", f"rlhf.{entry}", "--help", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: omegaconf is not installed")
    assert "source .venv/bin/activate" in proc.stderr and "make train" in proc.stderr


@pytest.mark.parametrize("entry", sorted(set(ENTRY_POINTS) - set(CONFIGURED)))
def test_the_others_answer_help_without_the_config_libraries(entry, tmp_path):
    proc = without("omegaconf", f"rlhf.{entry}", "--help", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: python -m rlhf."), proc.stderr[-2000:]


def test_a_missing_module_of_rlhf_itself_stays_a_traceback(tmp_path):
    """The guard is for the libraries a user installs, not for the platform's own bugs."""
    proc = without("rlhf.launch", "rlhf.train", "--help", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "ModuleNotFoundError" in proc.stderr
