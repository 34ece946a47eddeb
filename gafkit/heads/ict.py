"""The embedded default head model, built from ICT-FaceKit (MIT) by :mod:`gafkit.heads.ict_build`.

Linear model, no skinning: ``template + identity @ shape + expressions @ expr + offsets``; the jaw
opens through the ``jawOpen`` / ``jawLeft`` / ... expression shapes (no jaw joint), and ``eyes`` turns
each eyeball rigidly about its centre (gaze). Units and parameter meanings: ``docs/HEAD_MODELS.md``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from gafkit.errors import InputError
from gafkit.heads.base import HeadModel, HeadParams, LandmarkEmbedding, axis_angle_to_matrix

__all__ = ["ICTHead"]


class ICTHead(HeadModel):
    """ICT-FaceKit head: 100 identity PCA modes, 53 ARKit-named expression shapes, rigid eyeballs.

    Extra attributes beyond :class:`HeadModel`:
        identity_basis: [S, V*3] identity modes (metres per unit coefficient; coefficients ~ N(0, 1)).
        expr_basis: [E, V*3] expression deltas (metres at weight 1).
        eyeball_centers: [2, 3] left then right eyeball centre of the template.
        landmarks68_vertices: [68] vertex index per Multi-PIE 68-point landmark (ICT README).
        meta: the asset's metadata (source, names, format version).
    """

    name = "ict"
    expr_bounds = (0.0, 1.0)

    def __init__(self, arrays: dict[str, np.ndarray], meta: dict):
        super().__init__()
        t = lambda k, dt=torch.float32: torch.from_numpy(np.asarray(arrays[k])).to(dt)  # noqa: E731
        n_vert = arrays["template"].shape[0]
        self.meta = meta
        self.expression_names = list(meta["expression_names"])
        self.register_buffer("template", t("template"))
        self.register_buffer("faces", t("faces", torch.long))
        self.register_buffer("uvs", t("uvs"))
        self.register_buffer("face_uvs", t("face_uvs", torch.long))
        self.register_buffer("pivot", t("pivot"))
        self.register_buffer("eyeball_centers", t("eyeball_centers"))
        self.register_buffer("landmarks68_vertices", t("landmarks68_vertices", torch.long))
        # int8 modes times their per-mode scale, as stored by the converter.
        identity = t("identity_q") * t("identity_scale")[:, None, None]
        self._n_identity = identity.shape[0]
        # One [S+E, V*3] matrix so a frame's deformation is a single matmul.
        basis = torch.cat([identity.reshape(self._n_identity, n_vert * 3), _dense_expressions(arrays, n_vert)])
        self.register_buffer("basis", basis)
        self.set_regions({k.split(".", 1)[1]: t(k, torch.long) for k in sorted(arrays) if k.startswith("region.")})
        self.landmarks = None
        if "landmarks.faces" in arrays:
            self.landmarks = LandmarkEmbedding(faces=t("landmarks.faces", torch.long), bary=t("landmarks.bary"))

    @classmethod
    def from_asset(cls, path: str | Path) -> ICTHead:
        """Load the safetensors asset written by ``gafkit assets build-ict``."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        try:
            with safe_open(str(path), framework="np") as f:
                raw_meta = (f.metadata() or {}).get("gafkit")
                arrays = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
        except (OSError, SafetensorError) as err:
            raise InputError(path, f"cannot read the ICT head asset ({err})") from None
        if raw_meta is None or "template" not in arrays:
            raise InputError(path, "not a gafkit ICT head asset (no 'gafkit' metadata or template)")
        return cls(arrays, json.loads(raw_meta))

    @property
    def identity_basis(self) -> Float[Tensor, "S V3"]:
        return self.basis[: self._n_identity]

    @property
    def expr_basis(self) -> Float[Tensor, "E V3"]:
        return self.basis[self._n_identity:]

    @property
    def n_shape(self) -> int:
        return self._n_identity

    @property
    def has_eye_joints(self) -> bool:
        return True

    def deform(self, params: HeadParams) -> Float[Tensor, "B V 3"]:
        """Vertices [B, V, 3] before the head rotation: template + identity + expression + offsets,
        then each eyeball turned by ``params.eyes`` (left ``[:, :3]``, right ``[:, 3:]``) about its centre.

        >>> from gafkit.heads import load_head_model
        >>> head = load_head_model("ict")
        >>> head.deform(head.zero_params(4)).shape
        torch.Size([4, 24591, 3])
        """
        n_batch, n_vert = params.batch_size, self.template.shape[0]
        coeffs = torch.cat([params.shape, params.expr], dim=1)
        verts = torch.addmm(self.template.reshape(1, -1), coeffs, self.basis).reshape(n_batch, n_vert, 3)
        if params.offsets is not None:
            verts = verts + params.offsets
        parts = []
        for side, key in enumerate(("eyeball_left", "eyeball_right")):
            idx = self.regions[key]
            eye = verts[:, idx]  # [B, N, 3]
            # The eyeball moves (almost) rigidly with identity and expression: follow its mean shift.
            center = self.eyeball_centers[side] + (eye - self.template[idx]).mean(1, keepdim=True)
            rot = axis_angle_to_matrix(params.eyes[:, 3 * side:3 * side + 3])
            parts.append((idx, torch.einsum("bij,bnj->bni", rot, eye - center) + center))
        # In place is safe: nothing above saved ``verts`` for backward (addmm and gathers keep their inputs).
        for idx, eye in parts:
            verts[:, idx] = eye
        return verts

    def deform_subset(self, params: HeadParams, vertex_ids: Tensor) -> Float[Tensor, "B K 3"]:
        """:meth:`deform` for ``vertex_ids`` only: gathers those columns of the basis (tracking needs
        ~1.4k of the 24.6k vertices per step)."""
        n_batch, k = params.batch_size, vertex_ids.shape[0]
        cols = (vertex_ids[:, None] * 3 + torch.arange(3, device=vertex_ids.device)).reshape(-1)
        coeffs = torch.cat([params.shape, params.expr], dim=1)
        verts = torch.addmm(self.template[vertex_ids].reshape(1, -1), coeffs, self.basis[:, cols]).reshape(n_batch, k, 3)
        if params.offsets is not None:
            verts = verts + params.offsets[:, vertex_ids]
        out = verts
        for side, key in enumerate(("eyeball_left", "eyeball_right")):
            idx = self.regions[key]
            hit = torch.isin(vertex_ids, idx)
            if not bool(hit.any()):
                continue
            # Same centre as deform(): the eyeball's mean shift, which is linear in the coefficients.
            eye_cols = (idx[:, None] * 3 + torch.arange(3, device=idx.device)).reshape(-1)
            mean_basis = self.basis[:, eye_cols].reshape(-1, idx.shape[0], 3).mean(1)  # [S+E, 3]
            shift = coeffs @ mean_basis
            if params.offsets is not None:
                shift = shift + params.offsets[:, idx].mean(1)
            center = (self.eyeball_centers[side] + shift)[:, None]
            rot = axis_angle_to_matrix(params.eyes[:, 3 * side:3 * side + 3])
            turned = torch.einsum("bij,bnj->bni", rot, verts - center) + center
            out = torch.where(hit[None, :, None], turned, out)
        return out


def _dense_expressions(arrays: dict[str, np.ndarray], n_vert: int) -> Tensor:
    """Scatter the sparse float16 expression rows into a dense float32 [E, V*3] matrix."""
    offsets = arrays["expr_offsets"]
    dense = np.zeros((len(offsets) - 1, n_vert, 3), dtype=np.float32)
    for e in range(len(offsets) - 1):
        a, b = offsets[e], offsets[e + 1]
        dense[e, arrays["expr_vertices"][a:b]] = arrays["expr_deltas"][a:b]
    return torch.from_numpy(dense.reshape(len(offsets) - 1, n_vert * 3))
