"""Installed versions of named distributions: what a manifest's provenance and a benchmark record."""

from __future__ import annotations

import importlib.metadata as md


def installed_versions(*names: str) -> dict[str, str]:
    """{name: version} for each distribution that is installed (the others are left out)."""
    found = {}
    for name in names:
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return found
