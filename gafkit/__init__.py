"""gafkit: animatable 3D Gaussian head avatars from a monocular video.

Stages (each a function from a typed config and an input artifact to an output artifact):
``gafkit.trackers`` (video -> tracked sequence), ``gafkit.recon`` (tracked sequence -> avatar,
animation, export) and ``gafkit.diffusion`` (the multi-view prior that supervises unseen views).
"""

from pathlib import Path

__version__ = "0.1.0"

ASSETS = Path(__file__).resolve().parent / "assets"
"""Files shipped inside the package: the ICT head, the taef2 autoencoder, the default prior."""
