"""Procedural closed meshes for tests, benchmarks and examples (no asset files needed)."""

from __future__ import annotations

import math

import torch
from jaxtyping import Float, Int
from torch import Tensor

_ICO_FACES = (
    (0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2),
    (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5),
    (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1),
)  # fmt: skip


def icosphere(
    frequency: int = 16, radius: float = 1.0, dtype: torch.dtype = torch.float32
) -> tuple[Float[Tensor, "V 3"], Int[Tensor, "F 3"]]:
    """A unit icosahedron with every edge split into ``frequency`` segments, projected to a sphere.

    It has ``20 * frequency**2`` counter-clockwise (outward) triangles: 16 gives 5,120, 50 gives 50,000.

    >>> v, f = icosphere(2)
    >>> v.shape, f.shape, bool(torch.allclose(v.norm(dim=-1), torch.ones(v.shape[0])))
    (torch.Size([42, 3]), torch.Size([80, 3]), True)
    """
    t = (1.0 + math.sqrt(5.0)) / 2.0
    base = torch.tensor(
        [[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t],
         [0, -1, -t], [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]],
        dtype=torch.float64,
    )  # fmt: skip
    n = frequency
    # Points (i, j) with i + j <= n on each face: a + (b - a) * i / n + (c - a) * j / n.
    ij = torch.tensor([(i, j) for i in range(n + 1) for j in range(n + 1 - i)], dtype=torch.float64)
    index = {(i, j): k for k, (i, j) in enumerate(ij.long().tolist())}
    tris = []
    for i in range(n):
        for j in range(n - i):
            tris.append((index[i, j], index[i + 1, j], index[i, j + 1]))
            if i + j + 2 <= n:
                tris.append((index[i + 1, j], index[i + 1, j + 1], index[i, j + 1]))
    local = torch.tensor(tris)
    corners = base[torch.tensor(_ICO_FACES)]  # [20, 3, 3]
    pts = corners[:, :1] + (corners[:, 1:2] - corners[:, :1]) * ij[None, :, :1] / n
    pts = pts + (corners[:, 2:3] - corners[:, :1]) * ij[None, :, 1:] / n  # [20, P, 3]
    pts = torch.nn.functional.normalize(pts.reshape(-1, 3), dim=-1)
    faces = (local[None] + torch.arange(20)[:, None, None] * ij.shape[0]).reshape(-1, 3)
    # Points on shared edges appear once per face: merge them by rounded position.
    _, inverse = torch.unique(torch.round(pts * 1e6).long(), dim=0, return_inverse=True)
    verts = torch.zeros(int(inverse.max()) + 1, 3, dtype=torch.float64).index_copy(0, inverse, pts)
    return (verts * radius).to(dtype), inverse[faces]


def bumpy_sphere(
    frequency: int = 16, amplitude: float = 0.05, seed: int = 0
) -> tuple[Float[Tensor, "V 3"], Int[Tensor, "F 3"]]:
    """An :func:`icosphere` with smooth random radial bumps: closed, non-convex, curvature everywhere.

    >>> v, f = bumpy_sphere(4)
    >>> f.shape
    torch.Size([320, 3])
    """
    verts, faces = icosphere(frequency, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    dirs = torch.nn.functional.normalize(torch.randn(8, 3, generator=gen, dtype=torch.float64), dim=-1)
    phase = torch.rand(8, generator=gen, dtype=torch.float64) * 2 * math.pi
    bumps = torch.sin(4.0 * verts @ dirs.T + phase).mean(-1)
    return (verts * (1.0 + amplitude * bumps)[:, None]).float(), faces
