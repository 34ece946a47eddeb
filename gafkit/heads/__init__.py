"""Parametric head models behind one interface (:class:`~gafkit.heads.base.HeadModel`).

``ict``: the embedded default, built from ICT-FaceKit (MIT) by ``gafkit assets build-ict`` and shipped
in ``gafkit/assets/``. ``flame``: FLAME 2020/2023 from a file the user downloads after registration,
given by ``--flame-model`` or the ``GAFKIT_FLAME_MODEL`` environment variable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from gafkit import ASSETS
from gafkit.errors import GafkitError
from gafkit.heads.base import HeadModel, HeadParams, LandmarkEmbedding

__all__ = ["HeadModel", "HeadParams", "LandmarkEmbedding", "load_head_model", "flame_model_path", "ICT_ASSET"]

HeadName = Literal["ict", "flame"]
ICT_ASSET = ASSETS / "ict_head.safetensors"
FLAME_ENV = "GAFKIT_FLAME_MODEL"


def flame_model_path(explicit: str | Path | None = None) -> Path | None:
    """The FLAME file to use: ``--flame-model`` if given, else ``$GAFKIT_FLAME_MODEL``, else None."""
    value = explicit or os.environ.get(FLAME_ENV)
    return Path(value).expanduser() if value else None


def load_head_model(name: HeadName = "ict", flame_model: str | Path | None = None) -> HeadModel:
    """Load a head model by name (CPU, float32; move it with ``.to(device)``)."""
    if name == "ict":
        from gafkit.heads.ict import ICTHead

        if not ICT_ASSET.is_file():
            raise GafkitError(f"{ICT_ASSET}: the embedded ICT head asset is missing from this install")
        return ICTHead.from_asset(ICT_ASSET)
    if name == "flame":
        path = flame_model_path(flame_model)
        if path is None:
            raise GafkitError(
                f"--head flame needs a FLAME model file: pass --flame-model PATH or set {FLAME_ENV} "
                "(download FLAME 2020 or 2023 from the MPI FLAME site after registering)"
            )
        from gafkit.heads.flame import FlameHead

        return FlameHead.from_pickle(path)
    raise GafkitError(f"unknown head model {name!r}; choose ict or flame")
