"""Single-file and plain-folder outputs (videos, PLY files, PNG frame folders) written atomically.

Artifacts (directories with a manifest) go through :func:`gafkit.artifact.write_artifact`; the outputs
of ``gafkit animate`` and ``gafkit export`` are ordinary files meant for other tools, so they get the
same promise without a manifest: the work happens under a temporary name next to the target and is
renamed onto it only when it finished, and a failure (user error, crash, Ctrl-C) removes it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from gafkit.errors import GafkitError


def check_target(path: Path, overwrite: bool, *, folder: bool = False) -> None:
    """Refuse an existing output unless ``overwrite``; never replace a folder by a file or vice versa,
    and never a non-empty folder that does not look like one of our frame folders."""
    if not path.exists():
        if not path.parent.is_dir():
            raise GafkitError(f"{path}: its folder {path.parent} does not exist")
        return
    if not overwrite:
        raise GafkitError(f"{path}: already exists (use --overwrite to replace it)")
    if folder and not path.is_dir():
        raise GafkitError(f"{path}: is a file, expected a folder of frames")
    if folder and any(p.suffix.lower() != ".png" for p in path.iterdir()):
        raise GafkitError(f"{path}: holds files other than PNG frames; refusing to replace it")
    if not folder and path.is_dir():
        raise GafkitError(f"{path}: is a folder, expected a file")


def _temp_name(path: Path) -> Path:
    # Keep the suffix: PyAV and plyfile pick the format from it.
    return path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")


@contextlib.contextmanager
def atomic_file(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; it becomes ``path`` when the block succeeds."""
    path = Path(path)
    check_target(path, overwrite)
    tmp = _temp_name(path)
    try:
        yield tmp
        if not tmp.is_file():
            raise RuntimeError(f"{tmp} was not written")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_folder(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder; it replaces ``path`` when the block succeeds."""
    path = Path(path)
    check_target(path, overwrite, folder=True)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
