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
from jaxtyping import Float, Int
from torch import Tensor

from gafkit.errors import InputError
from gafkit.heads.base import HeadModel, HeadParams, LandmarkEmbedding, axis_angle_to_matrix

__all__ = ["ICTHead", "ICTPointMap"]


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

    def deform_subset(self, params: HeadParams, vertex_ids: Int[Tensor, " K"]) -> Float[Tensor, "B K 3"]:
        """:meth:`deform` for ``vertex_ids`` only (tracking needs ~1.3k of the 24.6k vertices).

        Builds a :class:`ICTPointMap` on every call; callers that evaluate the same vertices many times
        build it once with :meth:`point_map`.
        """
        ones = torch.ones(vertex_ids.shape[0], 1, device=self.basis.device)
        return self.point_map(vertex_ids[:, None], ones)(params)

    def point_map(self, vertex_ids: Int[Tensor, "P C"], weights: Float[Tensor, "P C"]) -> ICTPointMap:
        """The deformed points ``sum_c weights[p, c] * deform(params)[:, vertex_ids[p, c]]`` (e.g. landmarks
        as barycentric points of their triangles) as a precomputed linear map: see :class:`ICTPointMap`."""
        return ICTPointMap(self, vertex_ids, weights)


class ICTPointMap:
    """Fixed weighted sums of deformed ICT vertices, precomputed so that evaluating ``P`` points costs
    O(P) per call, whatever the mesh size.

    ICT is linear in its coefficients except for the eyeballs, which turn rigidly about a centre that is
    itself linear in the coefficients. A point is ``lin + sum_s (R_s - I) (lin_s - m_s * centre_s)`` where
    ``lin`` is the linear (unturned) point, ``lin_s`` the part of it on eyeball ``s``, ``m_s`` its weight on
    that eyeball and ``R_s`` the gaze rotation; only points touching an eyeball pay for the second term.

    Calling it with ``params.shape`` of batch 1 and the other parameters of batch B broadcasts the
    identity over the batch, so a shared identity is applied once, not B times.

    Shapes: vertex_ids [P, C] long, weights [P, C]; call -> [B, P, 3] (the transpose of a contiguous
    [B, 3, P]).
    """

    def __init__(self, head: ICTHead, vertex_ids: Int[Tensor, "P C"], weights: Float[Tensor, "P C"]):
        device = head.basis.device
        ids = vertex_ids.to(device)
        w = weights.to(device, head.basis.dtype)
        n_points = ids.shape[0]
        n_id = head.n_shape
        rows = head.basis.reshape(head.basis.shape[0], -1, 3)  # [S+E, V, 3], a view

        def combine(wm: Tensor, at: Tensor) -> tuple[Tensor, Tensor]:
            """Template [len(at), 3] and basis [S+E, len(at), 3] of the points ``at`` under weights ``wm``."""
            wm = wm[at]
            return ((head.template[ids[at]] * wm[..., None]).sum(1),
                    (rows[:, ids[at]] * wm[None, :, :, None]).sum(2))

        everything = torch.arange(n_points, device=device)
        templates, bases = [], []
        t, b = combine(w, everything)
        # Coordinate-major (all x, then y, then z): the result is a transposed view whose [B, 3, P]
        # layout is contiguous, which batched rotations of many points handle much faster on the CPU.
        templates.append(t.T.reshape(-1))
        bases.append(b.transpose(1, 2).reshape(b.shape[0], -1))
        self._eyes: list[tuple[int, Tensor, Tensor]] = []  # (side, point indices, their weight on that eyeball)
        for side, key in enumerate(("eyeball_left", "eyeball_right")):
            idx = head.regions[key]
            on_eye = w * torch.isin(ids, idx)
            mass = on_eye.sum(1)
            at = torch.nonzero(mass != 0).squeeze(1)
            if at.numel() == 0:
                continue
            t, b = combine(on_eye, at)
            # The centre, as in deform(): the eyeball centre plus the mean shift of its vertices.
            centre_t = head.eyeball_centers[side]
            centre_b = rows[:, idx].mean(1)  # [S+E, 3]
            templates += [t.reshape(-1), centre_t]
            bases += [b.reshape(b.shape[0], -1), centre_b]
            self._eyes.append((side, at, mass[at]))
        # One matrix for all outputs: a call is two matmuls (identity, expression) and slices.
        basis = torch.cat(bases, dim=1)
        self._template = torch.cat(templates)
        self._id_basis = basis[:n_id].contiguous()
        self._expr_basis = basis[n_id:].contiguous()
        self._ids, self._weights, self._n_points = ids, w, n_points
        self._block_sizes = [n_points * 3] + [k for _, at, _ in self._eyes for k in (at.shape[0] * 3, 3)]
        self._eye_regions = [head.regions[k] for k in ("eyeball_left", "eyeball_right")]

    def __call__(self, params: HeadParams) -> Float[Tensor, "B P 3"]:
        flat = self._template + params.shape @ self._id_basis + params.expr @ self._expr_basis  # [B, X]
        n_batch = flat.shape[0]
        # One split, not a slice per block: its backward is a single concatenation of the blocks' grads.
        main, *eye_blocks = flat.split(self._block_sizes, dim=1)
        points = main.reshape(n_batch, 3, self._n_points).transpose(1, 2)
        if params.offsets is not None:
            points = points + (params.offsets[:, self._ids] * self._weights[None, ..., None]).sum(2)
        turns = axis_angle_to_matrix(params.eyes.reshape(-1, 2, 3)) if self._eyes else None  # [B, 2, 3, 3]
        for (side, at, mass), on_eye, centre in zip(self._eyes, eye_blocks[0::2], eye_blocks[1::2]):
            on_eye = on_eye.reshape(n_batch, -1, 3)
            if params.offsets is not None:
                w = self._weights[at] * torch.isin(self._ids[at], self._eye_regions[side])
                on_eye = on_eye + (params.offsets[:, self._ids[at]] * w[None, ..., None]).sum(2)
                centre = centre + params.offsets[:, self._eye_regions[side]].mean(1)
            turn = turns[:, side] - torch.eye(3, dtype=turns.dtype, device=turns.device)
            rel = on_eye - mass[:, None] * centre[:, None]  # [B, p, 3]
            points = points.index_add(1, at, rel @ turn.transpose(1, 2))
        return points


def _dense_expressions(arrays: dict[str, np.ndarray], n_vert: int) -> Tensor:
    """Scatter the sparse float16 expression rows into a dense float32 [E, V*3] matrix."""
    offsets = arrays["expr_offsets"]
    dense = np.zeros((len(offsets) - 1, n_vert, 3), dtype=np.float32)
    for e in range(len(offsets) - 1):
        a, b = offsets[e], offsets[e + 1]
        dense[e, arrays["expr_vertices"][a:b]] = arrays["expr_deltas"][a:b]
    return torch.from_numpy(dense.reshape(len(offsets) - 1, n_vert * 3))
