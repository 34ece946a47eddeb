"""Errors that come from the user's input rather than from a bug in gafkit.

The CLI prints a :class:`GafkitError` as one line and exits with code 2; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class GafkitError(Exception):
    """A problem with the user's input, environment or request: one line, exit code 2."""

    exit_code = 2
    keep_partial = False
    """True when ``OUT.partial/`` holds a usable checkpoint to resume from after fixing the cause."""


class ConfigError(GafkitError):
    """A config file, preset or override that does not fit the stage's config dataclass."""


class ArtifactError(GafkitError):
    """A missing, incomplete or wrong-kind artifact directory."""


class InputError(GafkitError):
    """An input file that cannot be used (unreadable, empty, wrong content)."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class StoppedError(GafkitError):
    """A resumable stage stopped on purpose (diverged, disk full): ``OUT.partial/`` keeps its last good
    checkpoint, and the same command continues from it once the cause is fixed."""

    exit_code = 1
    keep_partial = True
