"""Paths the tests share. Imported as ``from paths import ...``: several folders have a ``conftest.py``,
so ``from conftest import ...`` would pick whichever conftest was loaded last."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_VIDEO = REPO / "examples" / "d20.mp4"
REAL_DATA = REPO.parent / "shared" / "data" / "real"
