"""FLAME (2020, 2023, 2023 Open) behind the :class:`~gafkit.heads.base.HeadModel` interface.

The model file is the user's (downloaded after registering at the MPI FLAME site); gafkit never ships
it or anything derived from it. :meth:`FlameHead.from_pickle` reads it with the restricted loader of
:mod:`gafkit.heads.flame_pickle`, so a tampered file cannot run code.

Parameter mapping onto FLAME's 5 joints (root, neck, jaw, left eye, right eye):

- ``rotation`` is *not* put into FLAME's root joint: :meth:`HeadModel.forward` turns the deformed head
  about ``pivot``, the root joint of the *template*. FLAME would turn about the root joint of the
  *shaped* mesh, which moves with the identity coefficients; the two differ only by the constant
  translation ``(R - I)(root(shape) - pivot)``, which ``translation`` absorbs. Keeping the pivot
  fixed means ``rotation``/``translation`` mean the same for every identity, as the interface says.
  :func:`translation_from_vhap` and :func:`translation_to_vhap` convert between the two
  (VHAP/GaussianAvatars put ``rotation`` into the root joint);
- ``neck`` -> joint 1, ``jaw`` -> joint 2, ``eyes[:, :3]`` -> joint 3 (left eye), ``eyes[:, 3:]`` ->
  joint 4 (right eye); the root joint's own rotation stays zero;
- ``shape``/``expr``: FLAME stores both bases in ``shapedirs``' last axis, identity first (300 columns)
  then expression (100 columns in 2020 and 2023); ``from_pickle`` keeps the first ``n_shape`` and
  ``n_expr`` of each.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from gafkit.errors import GafkitError, InputError
from gafkit.heads.base import HeadModel, HeadParams, LandmarkEmbedding, axis_angle_to_matrix, vertex_normals
from gafkit.heads.flame_pickle import load_flame_file
from gafkit.heads.landmark_cache import load_cached_embedding
from gafkit.heads.lbs import lbs, parents_from_kintree

__all__ = ["FlameHead", "FLAME_PARENTS", "FLAME_SHAPE_COLUMNS", "flame_regions", "translation_from_vhap",
           "translation_to_vhap"]

# root -> neck -> {jaw, left eye, right eye}: the tree every FLAME release uses.
FLAME_PARENTS = [-1, 0, 1, 1, 1]
# Identity columns at the front of FLAME's ``shapedirs``; the expression columns follow.
FLAME_SHAPE_COLUMNS = 300
_REQUIRED = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table")


class FlameHead(HeadModel):
    """FLAME as a :class:`HeadModel`; build it with :meth:`from_pickle`.

    Buffers (move with ``.to(device)``): ``template [V,3]``, ``faces [F,3]``, ``dirs [V,3,S+E]``
    (identity then expression), ``posedirs [V,3,36]``, ``j_regressor [5,V]``, ``weights [V,5]``,
    ``pivot [3]``.
    """

    name = "flame"

    def __init__(
        self,
        template: Float[Tensor, "V 3"],
        faces: Tensor,
        shapedirs: Float[Tensor, "V 3 S"],
        exprdirs: Float[Tensor, "V 3 E"],
        posedirs: Float[Tensor, "V 3 P"],
        j_regressor: Float[Tensor, "J V"],
        weights: Float[Tensor, "V J"],
        landmarks: LandmarkEmbedding | None = None,
        uvs: Float[Tensor, "T 2"] | None = None,
        face_uvs: Tensor | None = None,
    ):
        super().__init__()
        self.register_buffer("template", template.float())
        self.register_buffer("faces", faces.long())
        self.register_buffer("dirs", torch.cat([shapedirs, exprdirs], dim=-1).float())
        self.register_buffer("posedirs", posedirs.float())
        self.register_buffer("j_regressor", j_regressor.float())
        self.register_buffer("weights", weights.float())
        self.register_buffer("pivot", (self.j_regressor @ self.template)[0].clone())
        self._n_shape = shapedirs.shape[-1]
        self.expression_names = [str(i) for i in range(exprdirs.shape[-1])]
        self.parents = list(FLAME_PARENTS)
        self.landmarks = landmarks
        # None stays None: registering it keeps ``uvs``/``face_uvs`` moving with the module when present.
        self.register_buffer("uvs", None if uvs is None else uvs.float())
        self.register_buffer("face_uvs", None if face_uvs is None else face_uvs.long())
        self.set_regions(flame_regions(self.template, self.faces, self.weights, self.j_regressor @ self.template))

    @property
    def n_shape(self) -> int:
        return self._n_shape

    @property
    def has_jaw_joint(self) -> bool:
        return True

    @property
    def has_eye_joints(self) -> bool:
        return True

    def joint_pose(self, params: HeadParams) -> Float[Tensor, "B 5 3"]:
        """FLAME's per-joint axis-angles from ``params``; the root stays zero (see the module docstring)."""
        root = torch.zeros_like(params.neck)
        return torch.stack([root, params.neck, params.jaw, params.eyes[:, :3], params.eyes[:, 3:]], dim=1)

    def root_joint(self, params: HeadParams) -> Float[Tensor, "B 3"]:
        """FLAME's root joint ``J0`` regressed from the shaped mesh (identity, expression and offsets):
        the point FLAME's own root rotation, and VHAP's ``rotation``, turns the head about. It is
        ``pivot`` for zero coefficients and offsets."""
        regressor = self.j_regressor[0]  # [V]
        coeffs = torch.cat([params.shape, params.expr], dim=-1)  # [B, S + E]
        root = regressor @ self.template + torch.einsum("v,vck,bk->bc", regressor, self.dirs, coeffs)
        if params.offsets is not None:
            root = root + torch.einsum("v,bvc->bc", regressor, params.offsets)
        return root

    def deform(self, params: HeadParams) -> Float[Tensor, "B V 3"]:
        """Blendshapes, pose correctives and skinning of neck/jaw/eyes; ``[B, V, 3]``.

        ``params.offsets`` are added with the blendshapes, so the joints follow them.
        """
        if params.shape.shape[-1] != self.n_shape or params.expr.shape[-1] != self.n_expr:
            raise GafkitError(f"FLAME model has {self.n_shape} shape and {self.n_expr} expression "
                              f"coefficients, got {params.shape.shape[-1]} and {params.expr.shape[-1]}")
        coeffs = torch.cat([params.shape, params.expr], dim=-1)
        verts, _ = lbs(coeffs, self.joint_pose(params), self.template, self.dirs, self.posedirs,
                       self.j_regressor, self.parents, self.weights, params.offsets)
        return verts

    @classmethod
    def from_pickle(cls, path: str | Path, n_shape: int = 300, n_expr: int = 100) -> FlameHead:
        """Load a FLAME model file (``.pkl``, or a ``.npz`` of the same keys) on the CPU, float32.

        Args:
            path: ``generic_model.pkl`` (2020), ``flame2023.pkl`` or ``flame2023_Open.pkl``.
            n_shape: identity coefficients to keep (clipped to the 300 the file has).
            n_expr: expression coefficients to keep (clipped to what the file has, 100 for FLAME).

        A mediapipe landmark embedding cached for this exact file (see
        :mod:`gafkit.heads.landmark_cache`) is attached as ``landmarks``; otherwise it is None.
        """
        if n_shape < 0 or n_expr < 0:
            raise GafkitError(f"n_shape and n_expr must be >= 0, got {n_shape} and {n_expr}")
        path = Path(path)
        data = load_flame_file(path)
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise InputError(path, f"not a FLAME model (missing {', '.join(missing)})")
        arrays = _validated(path, data)
        dirs = arrays["shapedirs"]
        n_shape = min(n_shape, FLAME_SHAPE_COLUMNS)
        n_expr = min(n_expr, dirs.shape[-1] - FLAME_SHAPE_COLUMNS)
        uvs = face_uvs = None
        if "vt" in data and "ft" in data:  # texture coordinates, when the file carries them
            uvs = torch.from_numpy(np.asarray(data["vt"], dtype=np.float32))
            face_uvs = torch.from_numpy(np.asarray(data["ft"], dtype=np.int64))
            if (uvs.ndim != 2 or uvs.shape[1] != 2 or face_uvs.shape != arrays["f"].shape
                    or int(face_uvs.min()) < 0 or int(face_uvs.max()) >= uvs.shape[0]):
                raise InputError(path, f"vt {tuple(uvs.shape)} / ft {tuple(face_uvs.shape)} do not match "
                                       f"the {len(arrays['f'])} triangles")
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
        return cls(
            template=t(arrays["v_template"]),
            faces=torch.from_numpy(arrays["f"]),
            shapedirs=t(dirs[..., :n_shape]),
            exprdirs=t(dirs[..., FLAME_SHAPE_COLUMNS:FLAME_SHAPE_COLUMNS + n_expr]),
            posedirs=t(arrays["posedirs"]),
            j_regressor=t(arrays["J_regressor"]),
            weights=t(arrays["weights"]),
            landmarks=load_cached_embedding(path),
            uvs=uvs,
            face_uvs=face_uvs,
        )


def _root_shift(model: FlameHead, params: HeadParams) -> Float[Tensor, "B 3"]:
    """``(I - R)(J0 - pivot)``: what turning about ``J0`` instead of ``pivot`` adds to the translation.

    ``R(v - J0) + J0 + t`` equals ``R(v - pivot) + pivot + t + (I - R)(J0 - pivot)``.
    """
    rot = axis_angle_to_matrix(params.rotation)  # [B, 3, 3]
    arm = model.root_joint(params) - model.pivot  # [B, 3]
    return arm - torch.einsum("bij,bj->bi", rot, arm)


def translation_from_vhap(model: FlameHead, params: HeadParams) -> Float[Tensor, "B 3"]:
    """gafkit's ``[B, 3]`` translations for ``params`` whose ``translation`` is VHAP's (head turned
    about ``J0``): ``model(params)`` with them gives VHAP's FLAME vertices."""
    return params.translation + _root_shift(model, params)


def translation_to_vhap(model: FlameHead, params: HeadParams) -> Float[Tensor, "B 3"]:
    """VHAP's/GaussianAvatars' ``[B, 3]`` translations for gafkit ``params`` (head turned about
    ``pivot``); the inverse of :func:`translation_from_vhap` (``J0`` does not depend on the pose)."""
    return params.translation - _root_shift(model, params)


def _validated(path: Path, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The FLAME arrays with their shapes checked against each other; a clear InputError otherwise."""
    try:
        template = np.asarray(data["v_template"], dtype=np.float64)
        faces = np.asarray(data["f"]).astype(np.int64)
        shapedirs = np.asarray(data["shapedirs"], dtype=np.float64)
        posedirs = np.asarray(data["posedirs"], dtype=np.float64)
        j_regressor = np.asarray(data["J_regressor"], dtype=np.float64)
        weights = np.asarray(data["weights"], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(path, f"not a FLAME model (non-numeric arrays: {err})") from None
    n_verts = template.shape[0] if template.ndim == 2 else -1
    n_joints = len(FLAME_PARENTS)
    problems = []
    if template.ndim != 2 or template.shape[1] != 3:
        problems.append(f"v_template has shape {template.shape}, expected [V, 3]")
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.min(initial=0) < 0 or faces.max(initial=0) >= n_verts:
        problems.append(f"f has shape {faces.shape} or indices outside 0..{n_verts - 1}")
    if shapedirs.ndim != 3 or shapedirs.shape[:2] != (n_verts, 3) or shapedirs.shape[2] <= FLAME_SHAPE_COLUMNS:
        problems.append(f"shapedirs has shape {shapedirs.shape}, expected [{n_verts}, 3, "
                        f"{FLAME_SHAPE_COLUMNS} identity + expression columns]")
    if posedirs.ndim != 3 or posedirs.shape != (n_verts, 3, 9 * (n_joints - 1)):
        problems.append(f"posedirs has shape {posedirs.shape}, expected [{n_verts}, 3, {9 * (n_joints - 1)}]")
    if j_regressor.shape != (n_joints, n_verts):
        problems.append(f"J_regressor has shape {j_regressor.shape}, expected [{n_joints}, {n_verts}]")
    if weights.shape != (n_verts, n_joints):
        problems.append(f"weights has shape {weights.shape}, expected [{n_verts}, {n_joints}]")
    try:
        parents = parents_from_kintree(np.asarray(data["kintree_table"]).astype(np.int64).tolist())
    except (ValueError, TypeError) as err:
        problems.append(f"kintree_table: {err}")
    else:
        if parents != FLAME_PARENTS:
            problems.append(f"kintree_table gives parents {parents}, not FLAME's {FLAME_PARENTS}")
    if problems:
        raise InputError(path, "not a FLAME model: " + "; ".join(problems))
    return {"v_template": template, "f": faces, "shapedirs": shapedirs, "posedirs": posedirs,
            "J_regressor": j_regressor, "weights": weights}


def flame_regions(
    template: Float[Tensor, "V 3"], faces: Tensor, weights: Float[Tensor, "V 5"], joints: Float[Tensor, "5 3"]
) -> dict[str, Tensor]:
    """Vertex regions of a FLAME-rigged mesh, derived from its skinning weights and rest geometry.

    FLAME ships no region masks we may use, so they are computed (all index tensors, long):

    - ``eyes``: vertices whose weight on the two eye joints sums above 0.5 (the eyeballs);
    - ``mouth``: non-eye vertices the jaw joint dominates (weight > 0.5): lower lip, chin, lower jaw;
    - ``neck``: other vertices lower than the lowest ``mouth`` vertex (the chin bottom), i.e. the throat
      and neck below the head;
    - ``face``: remaining vertices that face forward (template normal's +Z component > 0.2) and lie in
      front of the jaw joint (the jaw hinge sits roughly under the ears), plus all of ``mouth``;
    - ``scalp``: everything else that is not an eye: the top, back and sides of the head.

    ``face`` contains ``mouth``; the other regions are disjoint.
    """
    w = weights.detach().float().cpu()
    verts = template.detach().float().cpu()
    eyes = (w[:, 3] + w[:, 4]) > 0.5
    mouth = (w[:, 2] > 0.5) & ~eyes
    y, z = verts[:, 1], verts[:, 2]
    chin_bottom = y[mouth].min() if bool(mouth.any()) else joints[2, 1].cpu()
    neck = ~eyes & ~mouth & (y < chin_bottom)
    normals = vertex_normals(verts[None], faces.cpu())[0]
    facing = (normals[:, 2] > 0.2) & (z > joints[2, 2].cpu())
    face = (~eyes & ~neck & facing) | mouth
    scalp = ~eyes & ~neck & ~face
    as_idx = lambda m: torch.nonzero(m).flatten()  # noqa: E731
    return {"face": as_idx(face), "scalp": as_idx(scalp), "neck": as_idx(neck), "eyes": as_idx(eyes),
            "mouth": as_idx(mouth)}
