"""Convert ICT-FaceKit's ``FaceXModel`` folder (MIT, ~400 MB of OBJs) into gafkit's ICT head asset.

What is kept: the parts an avatar needs (face, head and neck, mouth socket, eye sockets, gums and
tongue, teeth, eyeballs); lacrimal fluid, eye blend, eye occlusion and eyelash strips are dropped
(they are thin shading helpers for game engines and confuse mesh-bound Gaussians). ICT stores
centimetres with +Y up and the face toward +Z, so the conversion to gafkit model space is a scale by
0.01. Quads are split along their first diagonal, keeping ICT's counter-clockwise-from-outside winding.

Storage (see ``docs/HEAD_MODELS.md``): template float32; identity modes int8 with one float32 scale per
mode (ICT's 100 PCA modes in float16 alone would be 14.8 MB; int8 keeps each mode within 0.4% of its
peak, below 0.06 mm); expression deltas as float16 rows of the vertices each shape moves by more than
1 micrometre. The output is byte-reproducible: same input folder, same file.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from gafkit.errors import InputError

CM_TO_M = 0.01
# Expression rows that move less than this (metres) are dropped from the sparse storage.
EXPR_EPS = 1e-6
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class ICTLayout:
    """Where ICT's parts sit in its vertex list (from the ICT-FaceKit README).

    ``parts`` maps a part name to its inclusive vertex range; the kept parts must form a prefix of the
    vertex list (ICT orders the dropped helper meshes last). ``landmarks68`` are the Multi-PIE 68-point
    vertex indices; ``chin`` and ``nose_base`` index into them and drive the scalp/neck split.
    """

    parts: dict[str, tuple[int, int]]
    landmarks68: tuple[int, ...]
    sclera_left: tuple[int, int]
    sclera_right: tuple[int, int]
    chin: int = 8
    nose_base: int = 33

    @property
    def num_kept(self) -> int:
        return max(b for _, b in self.parts.values()) + 1


ICT_LAYOUT = ICTLayout(
    parts={
        "face": (0, 9408),
        "head_neck": (9409, 11247),
        "mouth_socket": (11248, 13293),
        "eye_socket_left": (13294, 13677),
        "eye_socket_right": (13678, 14061),
        "gums_tongue": (14062, 17038),
        "teeth": (17039, 21450),
        "eyeball_left": (21451, 23020),
        "eyeball_right": (23021, 24590),
    },
    landmarks68=(
        1225, 1888, 1052, 367, 1719, 1722, 2199, 1447, 966, 3661, 4390, 3927, 3924, 2608, 3272, 4088, 3443,
        268, 493, 1914, 2044, 1401, 3615, 4240, 4114, 2734, 2509, 978, 4527, 4942, 4857, 1140, 2075, 1147,
        4269, 3360, 1507, 1542, 1537, 1528, 1518, 1511, 3742, 3751, 3756, 3721, 3725, 3732, 5708, 5695,
        2081, 0, 4275, 6200, 6213, 6346, 6461, 5518, 5957, 5841, 5702, 5711, 5533, 6216, 6207, 6470,
        5517, 5966,
    ),
    sclera_left=(21451, 22220),
    sclera_right=(23021, 23790),
)


def read_obj_vertices(path: Path) -> np.ndarray:
    """The ``v`` rows of an OBJ as float64 [V, 3], parsed in one numpy call (files are ~2.5 MB)."""
    text = "\n" + _read_text(path)  # so a first-line vertex also starts with "\nv "
    start = text.find("\nv ")
    if start < 0:
        raise InputError(path, "no vertices ('v' lines) in this OBJ file")
    # Vertices come in one block before texture coordinates and faces in ICT's files.
    ends = [i for i in (text.find("\nvt ", start), text.find("\nvn ", start), text.find("\nf ", start)) if i >= 0]
    block = text[start:min(ends) if ends else len(text)]
    n_rows = block.count("\nv ")
    values = np.array(block.replace("v", " ").split(), dtype=np.float64)
    if values.size != 3 * n_rows:
        raise InputError(path, f"expected 3 coordinates per vertex, got {values.size} numbers for {n_rows} rows")
    return values.reshape(n_rows, 3)


def read_obj_topology(path: Path) -> tuple[list[list[int]], list[list[int]], np.ndarray]:
    """Polygons (0-based vertex and texture-coordinate indices per corner) and the ``vt`` table [T, 2]."""
    polys, tex, uvs = [], [], []
    for line in _read_text(path).splitlines():
        if line.startswith("f "):
            corners = [c.split("/") for c in line.split()[1:]]
            if any(len(c) < 2 or not c[1] for c in corners):
                raise InputError(path, "faces need texture-coordinate indices (f v/vt ...)")
            polys.append([int(c[0]) - 1 for c in corners])
            tex.append([int(c[1]) - 1 for c in corners])
        elif line.startswith("vt "):
            uvs.append(line.split()[1:3])
    return polys, tex, np.asarray(uvs, dtype=np.float64).reshape(-1, 2)


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as err:
        raise InputError(path, f"cannot read ({err.strerror})") from None


def triangulate(polys: list[list[int]], tex: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Fan-split polygons (quads along their first diagonal), keeping each polygon's winding."""
    tris, tuv = [], []
    for p, t in zip(polys, tex, strict=True):
        for k in range(1, len(p) - 1):
            tris.append((p[0], p[k], p[k + 1]))
            tuv.append((t[0], t[k], t[k + 1]))
    return np.asarray(tris, dtype=np.int64).reshape(-1, 3), np.asarray(tuv, dtype=np.int64).reshape(-1, 3)


def sphere_center(points: np.ndarray) -> np.ndarray:
    """Least-squares sphere centre of [N, 3] points (|p|^2 = 2 c.p + k is linear in c and k)."""
    a = np.concatenate([2 * points, np.ones((len(points), 1))], axis=1)
    sol, *_ = np.linalg.lstsq(a, (points**2).sum(1), rcond=None)
    return sol[:3]


def regions_and_pivot(verts: np.ndarray, layout: ICTLayout) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Region vertex sets and the neck-base pivot of the template [V, 3] (metres).

    ICT's "head and neck" part is split by a plane through the chin landmark that tilts up to the
    height of the nose base at the back of the head (roughly the skull base): vertices below it are
    ``neck``, the rest ``scalp``. The pivot is the centroid of the neck's lowest 2 cm.
    """
    rng = {k: np.arange(a, b + 1) for k, (a, b) in layout.parts.items()}
    head = rng["head_neck"]
    chin = verts[layout.landmarks68[layout.chin]]
    nose = verts[layout.landmarks68[layout.nose_base]]
    z_back = verts[head, 2].min()
    slope = (nose[1] - chin[1]) / max(chin[2] - z_back, 1e-9)
    plane_y = chin[1] + (chin[2] - verts[head, 2]) * slope
    neck = head[verts[head, 1] < plane_y]
    regions = {
        "face": rng["face"],
        "scalp": head[verts[head, 1] >= plane_y],
        "neck": neck,
        "eye_sockets": np.concatenate([rng["eye_socket_left"], rng["eye_socket_right"]]),
        "eyeball_left": rng["eyeball_left"],
        "eyeball_right": rng["eyeball_right"],
        "eyes": np.concatenate([rng["eyeball_left"], rng["eyeball_right"]]),
        "mouth": np.concatenate([rng["mouth_socket"], rng["gums_tongue"]]),
        "teeth": rng["teeth"],
    }
    bottom = neck[verts[neck, 1] < verts[neck, 1].min() + 0.02]
    pivot = verts[bottom].mean(0)
    pivot[0] = 0.0  # the mesh is left-right symmetric; keep the pivot on the mid-plane exactly
    return regions, pivot


def _sparse_rows(deltas: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[E, V, 3] deltas -> (row offsets [E+1], vertex ids [N], float16 rows [N, 3]) of moving vertices."""
    offsets, ids, rows = [0], [], []
    for d in deltas:
        keep = np.flatnonzero(np.abs(d).max(1) > EXPR_EPS)
        ids.append(keep)
        rows.append(d[keep])
        offsets.append(offsets[-1] + keep.size)
    return (np.asarray(offsets, dtype=np.int64), np.concatenate(ids).astype(np.int32),
            np.concatenate(rows).astype(np.float16))


def convert(src: str | Path, layout: ICTLayout = ICT_LAYOUT) -> tuple[dict[str, np.ndarray], dict]:
    """Read an ICT ``FaceXModel`` folder; return the asset's arrays and metadata (no landmark embedding).

    ``src`` may be the repository root or its ``FaceXModel`` folder.
    """
    src = Path(src)
    if (src / "FaceXModel").is_dir():
        src = src / "FaceXModel"
    config = src / "vertex_indices.json"
    neutral_path = src / "generic_neutral_mesh.obj"
    for need in (config, neutral_path):
        if not need.is_file():
            raise InputError(src, f"not an ICT-FaceKit FaceXModel folder (missing {need.name})")
    try:
        expr_names = list(json.loads(config.read_text())["expressions"])
    except (ValueError, KeyError, TypeError):
        raise InputError(config, "has no 'expressions' list") from None
    id_paths = sorted(src.glob("identity[0-9][0-9][0-9].obj"))
    if not id_paths:
        raise InputError(src, "no identityNNN.obj files")

    n_keep = layout.num_kept
    neutral = read_obj_vertices(neutral_path)
    if neutral.shape[0] < n_keep:
        raise InputError(neutral_path, f"has {neutral.shape[0]} vertices, the ICT layout needs {n_keep}")

    def deltas(paths: list[Path]) -> np.ndarray:
        out = np.empty((len(paths), n_keep, 3), dtype=np.float64)
        for i, p in enumerate(paths):
            if not p.is_file():
                raise InputError(p, "missing from the ICT folder")
            v = read_obj_vertices(p)
            if v.shape != neutral.shape:
                raise InputError(p, f"has {v.shape[0]} vertices, generic_neutral_mesh.obj has {neutral.shape[0]}")
            out[i] = (v[:n_keep] - neutral[:n_keep]) * CM_TO_M
        return out

    template = neutral[:n_keep] * CM_TO_M
    polys, tex, uv_table = read_obj_topology(neutral_path)
    tris, tri_uv = triangulate(polys, tex)
    kept = (tris < n_keep).all(1)
    # Polygons either lie wholly in the kept prefix or wholly in the dropped helper meshes.
    if ((tris < n_keep).any(1) & ~kept).any():
        raise InputError(neutral_path, "a polygon joins kept and dropped parts; the layout does not match")
    tris, tri_uv = tris[kept], tri_uv[kept]
    used_uv, face_uvs = np.unique(tri_uv, return_inverse=True)
    face_uvs = face_uvs.reshape(-1, 3)

    identity = deltas(id_paths)
    scale = np.abs(identity).reshape(len(id_paths), -1).max(1) / 127.0
    scale = np.where(scale > 0, scale, 1.0)
    id_q = np.round(identity / scale[:, None, None]).astype(np.int8)
    expr_off, expr_ids, expr_rows = _sparse_rows(deltas([src / f"{n}.obj" for n in expr_names]))

    regions, pivot = regions_and_pivot(template, layout)
    centers = np.stack([sphere_center(template[a:b + 1]) for a, b in (layout.sclera_left, layout.sclera_right)])
    arrays = {
        "template": template.astype(np.float32),
        "faces": tris.astype(np.int32),
        "uvs": uv_table[used_uv].astype(np.float32),
        "face_uvs": face_uvs.astype(np.int32),
        "identity_q": id_q,
        "identity_scale": scale.astype(np.float32),
        "expr_offsets": expr_off,
        "expr_vertices": expr_ids,
        "expr_deltas": expr_rows,
        "pivot": pivot.astype(np.float32),
        "eyeball_centers": centers.astype(np.float32),
        "landmarks68_vertices": np.asarray(layout.landmarks68, dtype=np.int32),
        **{f"region.{k}": v.astype(np.int32) for k, v in regions.items()},
    }
    meta = {
        "format_version": FORMAT_VERSION,
        "source": "ICT-FaceKit FaceXModel (MIT, USC Institute for Creative Technologies)",
        "units": "metres, +Y up, face toward +Z",
        "expression_names": expr_names,
        "identity_names": [p.stem for p in id_paths],
        "regions": sorted(regions),
    }
    return arrays, meta


def save_asset(path: str | Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write the safetensors file; all metadata goes into one sorted-JSON entry so bytes are stable."""
    from safetensors.numpy import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".partial")
    save_file({k: np.ascontiguousarray(v) for k, v in sorted(arrays.items())}, str(tmp),
              metadata={"gafkit": json.dumps(meta, sort_keys=True)})
    tmp.replace(path)


def build_ict_asset(src: str | Path, out: str | Path, *, landmarks: bool = True,
                    layout: ICTLayout = ICT_LAYOUT) -> Path:
    """Convert ICT-FaceKit at ``src`` into the asset ``out``; with ``landmarks`` also compute the
    mediapipe 478-landmark embedding by rendering the neutral head (needs mediapipe, ~1 minute)."""
    arrays, meta = convert(src, layout)
    if landmarks:
        import torch

        from gafkit.heads.landmark_embedding import embed_landmarks

        keep = np.concatenate([arrays[f"region.{k}"] for k in ("face", "scalp", "neck", "eyes")])
        emb = embed_landmarks(torch.from_numpy(arrays["template"]), torch.from_numpy(arrays["faces"]).long(),
                              visible_vertices=torch.from_numpy(keep).long(),
                              eyeball_vertices=torch.from_numpy(arrays["region.eyes"]).long())
        arrays["landmarks.faces"] = emb.faces.numpy().astype(np.int32)
        arrays["landmarks.bary"] = emb.bary.numpy().astype(np.float32)
    save_asset(out, arrays, meta)
    return Path(out)
