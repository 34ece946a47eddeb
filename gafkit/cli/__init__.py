"""The ``gafkit`` command line: parse, call a stage function, report. No stage logic lives here."""

from __future__ import annotations

import signal
from typing import Annotated, Optional

import typer

from gafkit import __version__
from gafkit.cli.common import options
from gafkit.console import setup_logging

app = typer.Typer(
    name="gafkit",
    help="Animatable 3D Gaussian head avatars from a monocular video.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gafkit {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    device: Annotated[str, typer.Option(help="Compute device: auto, cpu, cuda or cuda:N.", envvar="GAFKIT_DEVICE")] = "auto",
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More output; tracebacks on errors.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
) -> None:
    options.device = device
    options.verbosity = -1 if quiet else verbose
    setup_logging(options.verbosity)


def _register() -> None:
    # Each module adds its commands to `app`; heavy imports stay inside command bodies.
    from gafkit.cli import (  # noqa: F401
        animate,
        assets,
        doctor,
        fit,
        head,
        import_vhap,  # noqa: F401
        prior,  # noqa: F401
        prior_data,  # noqa: F401
        prior_train,  # noqa: F401
        run,  # noqa: F401
        synth,  # noqa: F401
        track,
    )


_register()


def main() -> None:
    """Console-script entry point."""

    def _term(signum, frame):  # SIGTERM ends a run like Ctrl-C, so stages can checkpoint.
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    app()
