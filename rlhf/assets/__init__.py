"""Files the project ships: the embedded tiny model and the embedded datasets.

`asset_path("models/tiny-chatml")` gives the absolute path of a shipped asset. Configs reach
the same place through the `${asset:...}` resolver, so a resolved config holds a plain local
path that loads exactly like any user's local checkpoint or data file.
"""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent


def asset_path(relative: str) -> str:
    path = ASSETS / relative
    if not path.exists():
        available = sorted(
            str(p.relative_to(ASSETS)) for p in ASSETS.glob("*/*") if not p.name.startswith("_")
        )
        raise FileNotFoundError(
            f"no embedded asset {relative!r} under {ASSETS}; available: {', '.join(available)}"
        )
    return str(path)
