"""Where the config tree the project ships lives (conf/, beside the package): the root config
and one directory per config group, each option a YAML file."""

from __future__ import annotations

from pathlib import Path

from rlhf.core.errors import RlhfError

REPO = Path(__file__).resolve().parents[2]  # the project's checkout (an editable install's)
CONF_DIR = REPO / "conf"
CONFIG_NAME = "config"


def conf_dir() -> Path:
    """The shipped config tree's directory; an RlhfError when it is missing (an install that
    did not come from the project's checkout)."""
    if not (CONF_DIR / f"{CONFIG_NAME}.yaml").is_file():
        raise RlhfError(f"the config tree is missing: expected {CONF_DIR / CONFIG_NAME}.yaml "
                        "(install the project with `pip install -e .` from its checkout)")
    return CONF_DIR


def options(group: str) -> list[str]:
    """The shipped options of a config group (conf/<group>/*.yaml), by name, sorted."""
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))
