"""Pieces every command shares: global options and the user-error boundary."""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from gafkit.console import log, stderr, verbosity
from gafkit.errors import GafkitError

F = TypeVar("F", bound=Callable[..., Any])


@dataclasses.dataclass
class GlobalOptions:
    """Set by the ``gafkit`` callback before any command runs."""

    device: str = "auto"
    verbosity: int = 0


options = GlobalOptions()


def handles_errors(fn: F) -> F:
    """Print a :class:`GafkitError` as one line and exit 2 (traceback only with ``-v``); exit 130
    on Ctrl-C/SIGTERM."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GafkitError as err:
            if verbosity() > 0:
                stderr.print_exception()
            stderr.print(f"[bold red]error:[/] {err}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            log.warning("interrupted")
            sys.stderr.flush()
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]
