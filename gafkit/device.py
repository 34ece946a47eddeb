"""Device selection shared by every stage (``--device auto|cpu|cuda[:N]``)."""

from __future__ import annotations

import re

import torch

from gafkit.errors import GafkitError

_SPEC = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def resolve_device(spec: str = "auto") -> torch.device:
    """Turn a ``--device`` value into a ``torch.device``.

    ``auto`` picks the first CUDA device when torch sees one, else the CPU. Asking for CUDA on a
    machine without it is a user error, not a silent fallback.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    spec = spec.strip().lower()
    if not _SPEC.match(spec):
        raise GafkitError(f"--device {spec!r}: expected auto, cpu, cuda or cuda:N")
    if spec == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise GafkitError(f"--device {spec}: this torch build sees no CUDA device (torch {torch.__version__})")
    index = int(spec.split(":")[1]) if ":" in spec else 0
    if index >= torch.cuda.device_count():
        raise GafkitError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return torch.device("cuda", index)
