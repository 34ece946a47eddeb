"""Cameras and the differentiable mesh rasterizer (nvdiffrast on CUDA, pure torch anywhere).

Heavy pieces load lazily: ``from gafkit.render.mesh import render_normals`` imports nvdiffrast only
when a CUDA render asks for it.
"""

from __future__ import annotations


def mesh_backends_available() -> list[str]:
    """Mesh rasterizer backends usable here, best first (``"torch"`` is always there).

    >>> "torch" in mesh_backends_available()
    True
    """
    import torch

    from gafkit.render.mesh import nvdiffrast_importable

    found = ["torch"]
    if torch.cuda.is_available() and nvdiffrast_importable():
        found.insert(0, "nvdiffrast")
    return found
