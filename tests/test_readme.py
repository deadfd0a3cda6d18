"""The README works as typed: every command in its fenced blocks is checked, and its generated
sections (methods, dataset types) match the code.

A fenced block tagged `bash` or `sh` holds commands (a line continued with a trailing backslash is
one command); each command is checked by one rule (`check_line`):

- run: in a ```bash block, `source .venv/bin/activate`, `python -m rlhf.<entry point> ...` and
  `rlhf-train ...` are run as typed, block by block, after the set-up the README describes
  (`test_every_readme_command_runs_as_typed_in_the_environment_it_describes`; a training line gets
  method.max_steps=2). The fast check sees that the entry point exists.
- compose: `python -m rlhf.train ...` in a ```sh block (a cluster's or a GPU host's: it cannot run
  here) is composed through the real command line with `--cfg job`, each job of a `-m` sweep on its
  own, Hydra's own settings (launcher, its partition, ...) included: an option, key or value that
  does not exist fails here as it would there.
- make: `make <target> [VAR=value]` is not run (`make test` is this suite, `make train` builds the
  environment): each target must be a rule of the Makefile, each variable one the Makefile reads.
- script: `python <file>.py <args>` is not run (launchers/slurm_cluster.py starts daemons as root):
  the file must exist and its `main(argv)` must accept the args, read by its own argparse parser;
  the script is stopped right after parsing.
- `eval "$(<command>)"` is checked by its command's rule.
- Any other line in a bash or sh block (pip, git, sbatch, squeue, a `python -m rlhf.*` other than
  train in a sh block, ...) is reported until a rule for it is added here. So is a line that looks
  like a command in a block of another language, or of none: tag the block.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import REPO, cli_env

README = REPO / "README.md"
# Appended to training commands so that the README's examples take seconds, not minutes.
QUICK = "method.max_steps=2"

# The languages of the blocks that hold commands: bash runs here, sh needs a cluster or a GPU host.
COMMAND_LANGUAGES = ("bash", "sh")
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
LOOKS_LIKE_A_COMMAND = re.compile(r"^(\$ |python3?\s|make\s|pip\s|git\s|sbatch\s|squeue\s|srun\s|eval\s|"
                                  r"source\s|rlhf-)")
NO_RULE = "no rule checks this line: run it, compose it or check it in tests/test_readme.py"


def without_comment(line: str) -> str:
    return re.split(r"\s+#\s", line, maxsplit=1)[0].rstrip()


def fenced_blocks(text: str) -> list[tuple[str, list[str]]]:
    """Each fenced block's language and its commands: continued lines joined, comments and blank
    lines left out."""
    blocks = []
    for language, body in FENCE.findall(text):
        lines = (without_comment(line).strip() for line in re.sub(r"\s*\\\n\s*", " ", body).splitlines())
        blocks.append((language, [line for line in lines if line and not line.startswith("#")]))
    return blocks


def bash_blocks() -> list[list[str]]:
    return [lines for language, lines in fenced_blocks(README.read_text()) if language == "bash"]


def runnable(line: str) -> bool:
    return line.startswith(("python -m rlhf.", "source .venv/bin/activate", "rlhf-train"))


def quick(line: str) -> str:
    command = without_comment(line)
    trains = command.startswith(("python -m rlhf.train", "rlhf-train")) and not re.search(r"--help|--cfg", command)
    if trains and "hydra/sweeper=halving" in command:  # its rungs follow its length: both made small
        command = re.sub(r"method\.max_steps=\d+", "method.max_steps=4", command)
        return re.sub(r"hydra\.sweeper\.min_steps=\d+", "hydra.sweeper.min_steps=2", command)
    return f"{command} {QUICK}" if trains else command


@dataclass
class Verdict:
    """A README command, the rule that checked it and what that rule found wrong (nothing: it passed)."""

    rule: str
    line: str
    problems: list[str] = field(default_factory=list)
    jobs: list[list[str]] = field(default_factory=list)  # compose: each job's command line


def check_readme(text: str, root: Path = REPO) -> list[Verdict]:
    """Every command of every fenced block of a README `text`, checked by its rule against the
    repository at `root` (the composing runs in one process for all of them)."""
    verdicts = []
    for language, lines in fenced_blocks(text):
        for line in lines:
            if language in COMMAND_LANGUAGES:
                verdicts.append(check_line(language, line, root))
            elif LOOKS_LIKE_A_COMMAND.match(line):
                untagged = (f"a command in a ```{language or ' (untagged)'} block: tag it bash (runs here) "
                            "or sh (a cluster's or a GPU host's)")
                verdicts.append(Verdict("none", line, [untagged]))
    compose([v for v in verdicts if v.rule == "compose"], root)
    return verdicts


def check_line(language: str, line: str, root: Path) -> Verdict:
    """The rule for one command of a bash or sh block, applied (composing is left to `compose`)."""
    inner = re.fullmatch(r'eval "\$\((.+)\)"', line)
    if inner:
        return check_line(language, inner.group(1), root)
    try:
        words = shlex.split(line)
    except ValueError as error:
        return Verdict("none", line, [f"not a shell command: {error}"])
    if language == "bash" and runnable(line):
        module = words[2] if words[:2] == ["python", "-m"] else None
        missing = module and not (root / f"{module.replace('.', '/')}.py").is_file()
        return Verdict("run", line, [f"{module} is not an entry point of the package"] if missing else [])
    if words[:3] == ["python", "-m", "rlhf.train"]:
        try:
            return Verdict("compose", line, jobs=jobs_of(words[3:]))
        except (Exception, SystemExit) as error:  # noqa: BLE001 (Hydra's parsers refuse the line)
            return Verdict("compose", line, [f"its arguments do not parse: {error}"])
    if words[0] == "make":
        return Verdict("make", line, make_problems(words[1:], root / "Makefile"))
    if words[0] == "python" and len(words) > 1 and words[1].endswith(".py"):
        return Verdict("script", line, script_problems(root / words[1], words[2:]))
    return Verdict("none", line, [NO_RULE])


def jobs_of(args: list[str]) -> list[list[str]]:
    """The command line of each job of `python -m rlhf.train <args>` with `--cfg job`: the line
    itself without -m, one per point of the sweep with it (Hydra's basic sweeper's split, as the
    command line validates it; a search space keeps its fixed part), Hydra's own settings kept."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = get_args_parser().parse_args(args)
    flags = ["--cfg", "job", *(a for a in args if a not in parsed.overrides and a not in ("-m", "--multirun"))]
    if not parsed.multirun:
        return [[*flags, *parsed.overrides]]
    overrides = OverridesParser.create().parse_overrides(parsed.overrides)
    if any(o.is_sweep_override() and not o.is_discrete_sweep() for o in overrides):
        return [[*flags, *(o.input_line for o in overrides if not o.is_sweep_override())]]
    return [[*flags, *job] for job in BasicSweeper.split_arguments(overrides, max_batch_size=None)[0]]


# Runs each job's `python -m rlhf.train --cfg job ...` through the real entry point, one after
# another in one process (Hydra's global state cleared between them), and writes each exit code,
# whether a config was printed, and the error output to the file named by argv[1].
COMPOSER = """
import contextlib, io, json, sys
from hydra.core.global_hydra import GlobalHydra
import rlhf.train

out, jobs = sys.argv[1], json.loads(sys.argv[2])
results = []
for job in jobs:
    printed, errors, code = io.StringIO(), io.StringIO(), 0
    GlobalHydra.instance().clear()
    sys.argv = ["rlhf.train", *job]
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(errors):
        try:
            rlhf.train.main()
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        except Exception as error:  # a crash of the command line is a problem of the line too
            code = 1
            print(f"{type(error).__name__}: {error}", file=errors)
    results.append({"code": code, "config": printed.getvalue().startswith("method:"),
                    "error": errors.getvalue().strip()[-1500:]})
with open(out, "w") as f:
    json.dump(results, f)
"""


def compose(verdicts: list[Verdict], root: Path) -> None:
    """Compose every job of the `compose` verdicts with the package at `root`; a job that does not
    compose to a config is a problem of its line."""
    jobs = [job for verdict in verdicts for job in verdict.jobs]
    if not jobs:
        return
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "composed.json"
        env = cli_env(PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        # From the repository's root, as the README's commands are typed (--cfg writes nothing).
        proc = subprocess.run([sys.executable, "-c", COMPOSER, str(out), json.dumps(jobs)], cwd=root, env=env,
                              capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0 and out.is_file(), proc.stderr[-4000:]
        results = iter(json.loads(out.read_text()))
    for verdict in verdicts:
        for job in verdict.jobs:
            result = next(results)
            if result["code"] != 0 or not result["config"]:
                verdict.problems.append(f"the job `{' '.join(job[2:])}` does not compose "
                                        f"(exit {result['code']}): {result['error']}")


def make_problems(args: list[str], makefile: Path) -> list[str]:
    """What a `make <args>` line names that the Makefile does not have: a target that is no rule,
    a VAR=value whose VAR the Makefile never reads."""
    text = makefile.read_text()
    targets = set(re.findall(r"^([\w.-]+)\s*:(?!=)", text, re.MULTILINE))
    variables = set(re.findall(r"\$\((\w+)\)", text))
    problems = []
    for arg in args:
        name = arg.split("=", 1)[0]
        if "=" in arg and name not in variables:
            problems.append(f"the Makefile reads no variable {name}")
        elif "=" not in arg and not arg.startswith("-") and arg not in targets:
            problems.append(f"the Makefile has no target {arg} (it has {', '.join(sorted(targets))})")
    return problems


class _Parsed(Exception):
    """Raised by the patched parser once the script's own parser has read its arguments."""


def script_problems(script: Path, args: list[str]) -> list[str]:
    """What stops `python <script> <args>` before it does anything: no such file, no `main(argv)`,
    or arguments its argparse parser refuses. The script is imported (its `__main__` block does
    not run) and stopped right after parsing."""
    if not script.is_file():
        return [f"{script.name}: no such file"]
    spec = importlib.util.spec_from_file_location(f"readme_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "main", None)):
        return [f"{script.name} has no main(argv) to read its arguments"]
    real = argparse.ArgumentParser.parse_args

    def parse_then_stop(parser, argv=None, namespace=None):
        raise _Parsed(real(parser, argv, namespace))

    refused = io.StringIO()
    try:
        with contextlib.redirect_stderr(refused), pytest.MonkeyPatch.context() as patch:
            patch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
            module.main(args)
    except _Parsed:
        return []
    except SystemExit:
        return [f"{script.name} refuses its arguments: {refused.getvalue().strip().splitlines()[-1]}"]
    return [f"{script.name} ran without parsing its arguments with argparse: this test cannot check it"]


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


def test_every_command_in_the_readme_passes_its_rule():
    verdicts = check_readme(README.read_text())
    assert [(v.line, v.problems) for v in verdicts if v.problems] == []
    assert {v.rule for v in verdicts} == {"run", "compose", "make", "script"}
    # The sh blocks' training lines: the cluster's beta sweep, three jobs, and the two-node job.
    composed = [v for v in verdicts if v.rule == "compose"]
    assert [len(v.jobs) for v in composed] == [3, 1], [v.line for v in composed]
    assert [job[-1] for job in composed[0].jobs] == ["method.beta=0.05", "method.beta=0.1", "method.beta=0.3"]


BAD_README = """
```sh
python -m rlhf.train -m hardware=gpu_ddp_8 hydra/launcher=slurm hydra.launcher.partition=gpu method.beta=0.1,0.2
python -m rlhf.train -m hydra/launcher=slurm \\
    model.name_or_path=Qwen/Qwen2.5-7B-Instruct dataset=argilla_dpo method.beta=0.05,0.1
python -m rlhf.train hydra/launcher=slurm hydra.launcher.partitionX=gpu
python -m rlhf.train model=qwen2.5-7b-instruct method.betta=0.1
python -m rlhf.train method.beta=0.1,0.2
make trian
make train TORCH_VERSION=2.8
python launchers/slurm_cluster.py begin
python launchers/slurm_cluster.py start --nodez 2
python launchers/no_such_launcher.py start
eval "$(python launchers/slurm_cluster.py env)"
sbatch job.sh
python -m rlhf.evaluate outputs/first
```

```bash
python -m rlhf.trian method=kto
make test
```

```
python -m rlhf.train method=kto
```
"""


def test_the_checker_reports_each_readme_line_that_names_what_does_not_exist():
    """A README with one good line of each rule and bad ones beside them: each bad line is
    reported, with what is wrong, and no good line is."""
    found = {v.line: " | ".join(v.problems) for v in check_readme(BAD_README)}
    good = [("python -m rlhf.train -m hardware=gpu_ddp_8 hydra/launcher=slurm hydra.launcher.partition=gpu "
             "method.beta=0.1,0.2"), "python launchers/slurm_cluster.py env", "make test"]
    assert {line: found[line] for line in good} == {line: "" for line in good}
    expected = {
        "python -m rlhf.train -m hydra/launcher=slurm model.name_or_path=Qwen/Qwen2.5-7B-Instruct "
        "dataset=argilla_dpo method.beta=0.05,0.1": "dataset=argilla_dpo is not an option",
        "python -m rlhf.train hydra/launcher=slurm hydra.launcher.partitionX=gpu": "Key 'partitionX' not in",
        "python -m rlhf.train model=qwen2.5-7b-instruct method.betta=0.1": "unknown key 'method.betta'",
        "python -m rlhf.train method.beta=0.1,0.2": "does not compose",  # a sweep's values without -m
        "make trian": "the Makefile has no target trian",
        "make train TORCH_VERSION=2.8": "the Makefile reads no variable TORCH_VERSION",
        "python launchers/slurm_cluster.py begin": "slurm_cluster.py refuses its arguments: ",
        "python launchers/slurm_cluster.py start --nodez 2": "unrecognized arguments: --nodez",
        "python launchers/no_such_launcher.py start": "no_such_launcher.py: no such file",
        "sbatch job.sh": NO_RULE,
        "python -m rlhf.evaluate outputs/first": NO_RULE,  # in a sh block: neither run nor composed
        "python -m rlhf.trian method=kto": "rlhf.trian is not an entry point",
        "python -m rlhf.train method=kto": "a command in a ``` (untagged) block",
    }
    missed = {line: found.get(line, "(not checked)") for line, message in expected.items()
              if message not in found.get(line, "")}
    assert missed == {}
    # Both jobs of the bad sweep are composed, and each is reported.
    assert [p.count("does not compose") for line, p in found.items() if "argilla_dpo" in line] == [2]


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
