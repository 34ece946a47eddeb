"""The package list in pyproject.toml must name every package folder, under its gafkit.* name."""

from __future__ import annotations

import sys

from paths import REPO

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MAPPING = {"gafkit": "gafkit", "trackers": "gafkit.trackers", "diffusion": "gafkit.diffusion", "recon": "gafkit.recon"}


def test_every_package_folder_is_listed():
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    found = set()
    for folder, name in MAPPING.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder).parts
            found.add(".".join((name, *rel)))
    assert found == listed, f"missing: {sorted(found - listed)}, stale: {sorted(listed - found)}"
    for name, folder in setuptools["package-dir"].items():
        assert (REPO / folder / "__init__.py").is_file(), name
