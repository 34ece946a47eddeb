"""``gafkit prior ...``: the multi-view diffusion prior's data, training and sampling commands.

The group lives here; each command module adds its commands to ``prior_app`` (data:
:mod:`gafkit.cli.prior_data`; train and sample: :mod:`gafkit.cli.prior_train`).
"""

from __future__ import annotations

import typer

from gafkit.cli import app

prior_app = typer.Typer(help="The multi-view diffusion prior: build data, train, sample.", no_args_is_help=True)
app.add_typer(prior_app, name="prior", rich_help_panel="Prior")
