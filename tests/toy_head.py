"""A small procedural head model for tests that must not depend on the ICT asset or FLAME.

An ellipsoid "head" (metres, +Y up, face toward +Z) with smooth random expression blendshapes, a
few identity modes and a random 478-point landmark embedding on the front half.
"""

from __future__ import annotations

import math

import torch

from gafkit.heads.base import HeadModel, HeadParams, LandmarkEmbedding


def ellipsoid(n_lat: int = 24, n_lon: int = 32, radii=(0.08, 0.11, 0.09)) -> tuple[torch.Tensor, torch.Tensor]:
    """UV-sphere vertices [V, 3] and outward, counter-clockwise triangles [F, 3]."""
    verts = [[0.0, radii[1], 0.0]]
    for i in range(1, n_lat):
        theta = math.pi * i / n_lat
        for j in range(n_lon):
            phi = 2 * math.pi * j / n_lon
            verts.append([radii[0] * math.sin(theta) * math.sin(phi), radii[1] * math.cos(theta),
                          radii[2] * math.sin(theta) * math.cos(phi)])
    verts.append([0.0, -radii[1], 0.0])
    faces = []
    ring = lambda i, j: 1 + (i - 1) * n_lon + (j % n_lon)  # noqa: E731
    for j in range(n_lon):
        faces.append([0, ring(1, j), ring(1, j + 1)])
    for i in range(1, n_lat - 1):
        for j in range(n_lon):
            a, b, c, d = ring(i, j), ring(i, j + 1), ring(i + 1, j), ring(i + 1, j + 1)
            faces += [[a, c, b], [b, c, d]]
    last = len(verts) - 1
    for j in range(n_lon):
        faces.append([last, ring(n_lat - 1, j + 1), ring(n_lat - 1, j)])
    v = torch.tensor(verts, dtype=torch.float32)
    f = torch.tensor(faces, dtype=torch.long)
    # make every face wind outward
    c = v[f].mean(1)
    n = torch.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]], dim=-1)
    flip = (n * c).sum(-1) < 0
    f[flip] = f[flip][:, [0, 2, 1]]
    return v, f


class ToyHead(HeadModel):
    name = "toy"

    def __init__(self, n_shape: int = 4, n_expr: int = 6, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        v, f = ellipsoid()
        self.register_buffer("template", v)
        self.register_buffer("faces", f)
        self.register_buffer("pivot", torch.tensor([0.0, -0.1, -0.02]))
        # smooth deformation fields: low-frequency functions of the vertex position
        def field(k: int) -> torch.Tensor:
            w = torch.randn(k, 3, 3, generator=g)
            b = torch.randn(k, 3, generator=g)
            return torch.sin(torch.einsum("kij,vj->kvi", w * 20, v) + b[:, None]) * 0.01
        self.register_buffer("shapedirs", field(n_shape))
        self.register_buffer("exprdirs", field(n_expr))
        self.expression_names = [f"e{i}" for i in range(n_expr)]
        self.regions = {"face": torch.nonzero(v[:, 2] > 0).squeeze(1)}
        self.uvs = self.face_uvs = None
        front = torch.nonzero(v[f].mean(1)[:, 2] > 0.03).squeeze(1)
        pick = front[torch.randint(len(front), (478,), generator=g)]
        bary = torch.rand(478, 3, generator=g) + 0.2
        self.landmarks = LandmarkEmbedding(faces=pick, bary=bary / bary.sum(1, keepdim=True))

    @property
    def n_shape(self) -> int:
        return self.shapedirs.shape[0]

    def deform(self, params: HeadParams) -> torch.Tensor:
        v = self.template + torch.einsum("bk,kvi->bvi", params.shape, self.shapedirs)
        v = v + torch.einsum("bk,kvi->bvi", params.expr, self.exprdirs)
        if params.offsets is not None:
            v = v + params.offsets
        return v
