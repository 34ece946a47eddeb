"""Console output shared by all commands: logging verbosity and progress bars.

Progress bars are drawn with rich on an interactive terminal and stay silent otherwise (CI logs,
pipes), where one line per finished step is logged instead.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

stderr = Console(stderr=True)
log = logging.getLogger("gafkit")
_verbosity = 0


def setup_logging(verbosity: int = 0) -> None:
    """``verbosity``: -1 quiet (warnings and errors), 0 normal, 1 debug."""
    global _verbosity
    _verbosity = verbosity
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    log.handlers.clear()
    handler = RichHandler(console=stderr, show_path=verbosity > 0, show_time=False, markup=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False


def verbosity() -> int:
    return _verbosity


def interactive() -> bool:
    return _verbosity >= 0 and sys.stderr.isatty()


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate ``items`` with a progress bar (TTY) or a closing log line (non-TTY)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    start = time.perf_counter()
    count = 0
    if interactive():
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=stderr, transient=False) as bar:
            task = bar.add_task(description, total=total)
            for item in items:
                yield item
                count += 1
                bar.advance(task)
    else:
        for item in items:
            yield item
            count += 1
    log.info("%s: %d in %.1f s", description, count, time.perf_counter() - start)
