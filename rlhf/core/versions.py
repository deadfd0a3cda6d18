"""The installed version of a package, read from its metadata (no import of the package)."""

from __future__ import annotations

from importlib import metadata


def installed_versions(packages: list[str] | tuple[str, ...]) -> dict[str, str | None]:
    """Each package's installed version, None for one that is not installed."""
    versions: dict[str, str | None] = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions
