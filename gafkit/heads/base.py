"""The head-model interface every downstream stage uses, whatever model sits behind it.

Conventions (all head models):
- model space: metres, +Y up, the face looks toward +Z, right-handed;
- ``faces``: triangles (quads are split by the loaders), counter-clockwise seen from outside;
- rotations are axis-angle vectors (radians); ``rotation`` turns the whole head about the model's
  ``pivot`` (the neck base), then ``translation`` moves it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

# Order and sizes of the per-frame parameter blocks that are not model-specific.
POSE_FIELDS = ("rotation", "translation", "neck", "jaw", "eyes")


@dataclasses.dataclass
class HeadParams:
    """Batched head-model parameters. Every tensor has the batch dimension ``B`` first.

    Shapes:
        shape:       [B, n_shape]  identity coefficients (shared across a sequence by the tracker)
        expr:        [B, n_expr]   expression coefficients (ICT: ARKit blendshape weights in 0..1)
        rotation:    [B, 3]        head rotation, axis-angle about the model pivot
        translation: [B, 3]        metres
        neck:        [B, 3]        neck joint, axis-angle (zeros for models without one)
        jaw:         [B, 3]        jaw joint, axis-angle (zeros for models without one)
        eyes:        [B, 6]        left then right eyeball, axis-angle
        offsets:     [B, V, 3] or None  static per-vertex offsets in model space, added before posing
    """

    shape: Float[Tensor, "B S"]
    expr: Float[Tensor, "B E"]
    rotation: Float[Tensor, "B 3"]
    translation: Float[Tensor, "B 3"]
    neck: Float[Tensor, "B 3"]
    jaw: Float[Tensor, "B 3"]
    eyes: Float[Tensor, "B 6"]
    offsets: Float[Tensor, "B V 3"] | None = None

    @property
    def batch_size(self) -> int:
        return self.shape.shape[0]

    def tensors(self) -> dict[str, Tensor]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}

    def to(self, device: torch.device | str) -> HeadParams:
        return dataclasses.replace(self, **{k: v.to(device) for k, v in self.tensors().items()})

    def detach(self) -> HeadParams:
        return dataclasses.replace(self, **{k: v.detach() for k, v in self.tensors().items()})

    def __getitem__(self, index: int | slice | Tensor) -> HeadParams:
        """Select frames; an integer keeps the batch dimension (``params[3]`` has B = 1)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return dataclasses.replace(self, **{k: v[index] for k, v in self.tensors().items()})

    @staticmethod
    def cat(items: Sequence[HeadParams]) -> HeadParams:
        first = items[0]
        return dataclasses.replace(first, **{k: torch.cat([p.tensors()[k] for p in items]) for k in first.tensors()})

    def save_npz(self, path: str | Path) -> None:
        np.savez(path, **{k: v.detach().cpu().numpy().astype(np.float32) for k, v in self.tensors().items()})

    @classmethod
    def load_npz(cls, path: str | Path, device: torch.device | str = "cpu") -> HeadParams:
        with np.load(path) as data:
            missing = [f.name for f in dataclasses.fields(cls) if f.name != "offsets" and f.name not in data]
            if missing:
                from gafkit.errors import InputError

                raise InputError(path, f"not a head-parameter file (missing {', '.join(missing)})")
            names = [f.name for f in dataclasses.fields(cls) if f.name in data.files]
            return cls(**{k: torch.from_numpy(np.asarray(data[k], dtype=np.float32)).to(device) for k in names})


@dataclasses.dataclass
class LandmarkEmbedding:
    """Where each of mediapipe's 478 face-mesh landmarks sits on the mesh.

    Shapes:
        faces: [L]     triangle index per landmark
        bary:  [L, 3]  barycentric coordinates in that triangle
    """

    faces: Int[Tensor, " L"]
    bary: Float[Tensor, "L 3"]

    def points(self, vertices: Float[Tensor, "B V 3"], triangles: Int[Tensor, "F 3"]) -> Float[Tensor, "B L 3"]:
        """3D landmark positions on posed ``vertices``."""
        corners = vertices[:, triangles[self.faces]]  # [B, L, 3, 3]
        return (corners * self.bary[None, :, :, None]).sum(dim=2)


class HeadModel(nn.Module):
    """A parametric head mesh: parameters in, posed vertices out.

    Subclasses fill the attributes in ``__init__`` and implement :meth:`deform`.

    Attributes:
        name: ``"ict"`` or ``"flame"``.
        faces: [F, 3] long, triangles.
        template: [V, 3] neutral mesh of the mean identity.
        pivot: [3] the point the head rotation turns about.
        expression_names: names of the ``expr`` coefficients (ARKit names for ICT, ``"0".."N"`` for FLAME).
        regions: region name -> vertex indices (``face``, ``scalp``, ``neck``, ``eyes``, ``mouth``, ...).
        uvs / face_uvs: [T, 2] texture coordinates and [F, 3] their per-corner indices, or None.
        landmarks: the mediapipe 478-point embedding, or None when not yet computed.
    """

    name: str
    expr_bounds: tuple[float, float] | None = None
    """Valid range of the expression coefficients (ICT's blendshape weights: 0..1), or None."""
    expression_names: list[str]
    regions: dict[str, Tensor]
    landmarks: LandmarkEmbedding | None

    faces: Tensor
    template: Tensor
    pivot: Tensor
    uvs: Tensor | None
    face_uvs: Tensor | None

    def set_regions(self, regions: dict[str, Tensor]) -> None:
        """Keep ``regions`` as non-persistent buffers so ``.to()``/``.cuda()`` move them with the model."""
        self.regions = dict(regions)
        for name, idx in regions.items():
            self.register_buffer(f"_region_{name}", idx, persistent=False)

    def _apply(self, fn, recurse=True):
        # ``regions`` and ``landmarks`` are plain attributes of the interface: move them with the buffers.
        out = super()._apply(fn, recurse)
        regions = getattr(self, "regions", {})
        self.regions = {k: getattr(self, f"_region_{k}", None) if hasattr(self, f"_region_{k}") else fn(v)
                        for k, v in regions.items()}
        if getattr(self, "landmarks", None) is not None:
            self.landmarks = LandmarkEmbedding(faces=fn(self.landmarks.faces), bary=fn(self.landmarks.bary))
        return out

    @property
    def n_shape(self) -> int:
        raise NotImplementedError

    @property
    def n_expr(self) -> int:
        return len(self.expression_names)

    @property
    def num_vertices(self) -> int:
        return self.template.shape[0]

    @property
    def has_jaw_joint(self) -> bool:
        return False

    @property
    def has_eye_joints(self) -> bool:
        return False

    def zero_params(self, batch: int = 1, device: torch.device | str | None = None) -> HeadParams:
        device = device or self.template.device
        z = lambda n: torch.zeros(batch, n, device=device)  # noqa: E731
        return HeadParams(shape=z(self.n_shape), expr=z(self.n_expr), rotation=z(3), translation=z(3),
                          neck=z(3), jaw=z(3), eyes=z(6))

    def deform(self, params: HeadParams) -> Float[Tensor, "B V 3"]:
        """Unposed-to-posed vertices *before* the global rotation/translation (model specific)."""
        raise NotImplementedError

    def deform_subset(self, params: HeadParams, vertex_ids: Int[Tensor, " K"]) -> Float[Tensor, "B K 3"]:
        """:meth:`deform` restricted to ``vertex_ids``. Models override it when they can compute a few
        vertices much faster than all of them (tracking poses only the landmark triangles)."""
        return self.deform(params)[:, vertex_ids]

    def pose(self, verts: Float[Tensor, "B K 3"], params: HeadParams) -> Float[Tensor, "B K 3"]:
        """Head rotation about ``pivot``, then translation."""
        rot = axis_angle_to_matrix(params.rotation)  # [B, 3, 3]
        verts = torch.einsum("bij,bvj->bvi", rot, verts - self.pivot) + self.pivot
        return verts + params.translation[:, None, :]

    def forward(self, params: HeadParams, vertex_ids: Int[Tensor, " K"] | None = None) -> Float[Tensor, "B V 3"]:
        """Posed vertices ``[B, V, 3]`` (or ``[B, K, 3]`` for ``vertex_ids``): model deformation, then
        head rotation about ``pivot`` and translation."""
        verts = self.deform(params) if vertex_ids is None else self.deform_subset(params, vertex_ids)
        return self.pose(verts, params)

    def vertex_normals(self, vertices: Float[Tensor, "B V 3"]) -> Float[Tensor, "B V 3"]:
        return vertex_normals(vertices, self.faces)

    def landmark_points(self, vertices: Float[Tensor, "B V 3"]) -> Float[Tensor, "B L 3"]:
        if self.landmarks is None:
            from gafkit.errors import GafkitError

            raise GafkitError(f"head model {self.name!r} has no landmark embedding")
        return self.landmarks.points(vertices, self.faces)


HEAD_REGIONS = ("face", "scalp", "eyes")
"""Regions whose bounding box centre is the head's centre (the neck would pull it down)."""


def head_center(model: HeadModel, vertices: Float[Tensor, "*B V 3"]) -> Float[Tensor, "*B 3"]:
    """Middle of the bounding box of the face, scalp and eyes (not the neck) of ``vertices``: what
    cameras aim at and orbit."""
    parts = [model.regions[k] for k in HEAD_REGIONS if k in model.regions]
    pts = vertices[..., torch.cat(parts), :] if parts else vertices
    return (pts.amin(-2) + pts.amax(-2)) / 2


def axis_angle_to_matrix(aa: Float[Tensor, "*B 3"]) -> Float[Tensor, "*B 3 3"]:
    """Rodrigues' formula, differentiable at zero (Taylor terms below 1e-6 rad).

    >>> axis_angle_to_matrix(torch.zeros(2, 3)).shape
    torch.Size([2, 3, 3])
    """
    theta2 = (aa * aa).sum(-1, keepdim=True)[..., None]  # [*B, 1, 1]
    small = theta2 < 1e-12
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / torch.where(small, torch.ones_like(theta2), theta2))
    x, y, z = aa.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*aa.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand_as(k)
    return eye + a * k + b * (k @ k)


def vertex_normals(vertices: Float[Tensor, "B V 3"], faces: Int[Tensor, "F 3"]) -> Float[Tensor, "B V 3"]:
    """Area-weighted unit vertex normals."""
    v0, v1, v2 = (vertices[:, faces[:, i]] for i in range(3))
    fn = torch.cross(v1 - v0, v2 - v0, dim=-1)  # [B, F, 3], length = 2 * area
    normals = torch.zeros_like(vertices)
    for i in range(3):
        normals.index_add_(1, faces[:, i], fn)
    return torch.nn.functional.normalize(normals, dim=-1, eps=1e-12)
