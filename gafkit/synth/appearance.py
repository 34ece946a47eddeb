"""Per-vertex albedo of synthetic subjects: procedural (seeded palette on the model's regions and
landmarks) or projected from a face photo onto the head fitted to it."""

from __future__ import annotations

import dataclasses
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from gafkit.errors import GafkitError
from gafkit.heads.base import HeadModel, HeadParams
from gafkit.render.camera import Cameras

# Palettes (linear-ish sRGB albedo in 0..1) the seed picks from, then jitters slightly.
SKIN_TONES = np.array([[0.93, 0.78, 0.68], [0.87, 0.68, 0.56], [0.78, 0.58, 0.45], [0.62, 0.44, 0.33],
                       [0.45, 0.31, 0.23], [0.33, 0.22, 0.16]])
HAIR_COLOURS = np.array([[0.07, 0.05, 0.04], [0.22, 0.14, 0.08], [0.42, 0.28, 0.15], [0.72, 0.58, 0.36],
                         [0.45, 0.18, 0.08], [0.55, 0.54, 0.52]])
IRIS_COLOURS = np.array([[0.30, 0.18, 0.09], [0.20, 0.35, 0.55], [0.28, 0.38, 0.22], [0.42, 0.32, 0.18]])
SCLERA = np.array([0.92, 0.90, 0.87])
TEETH = np.array([0.90, 0.87, 0.78])
MOUTH_INSIDE = np.array([0.42, 0.14, 0.14])
# Angular radii (about the eyeball centre, from its forward axis) of the iris and the pupil.
IRIS_COS, PUPIL_COS = np.cos(np.radians(30.0)), np.cos(np.radians(12.0))
# mediapipe face-mesh points on the cheeks (blush centres) and the forehead top (hairline anchor).
CHEEK_LANDMARKS = (50, 280)
FOREHEAD_TOP = 10
# Distances (metres) from the lip and brow landmark polylines that are coloured as lips and brows.
LIP_RADIUS, BROW_RADIUS = 0.0045, 0.0045


@lru_cache(maxsize=1)
def _feature_edges() -> dict[str, list[tuple[int, int]]]:
    """Landmark-index edges of the lips and brows in mediapipe's face mesh."""
    from mediapipe.python.solutions import face_mesh_connections as fmc

    return {"lips": sorted(fmc.FACEMESH_LIPS),
            "brows": sorted(fmc.FACEMESH_LEFT_EYEBROW | fmc.FACEMESH_RIGHT_EYEBROW)}


def _segment_distance(points: Float[np.ndarray, "V 3"], a: Float[np.ndarray, "E 3"],
                      b: Float[np.ndarray, "E 3"]) -> Float[np.ndarray, " V"]:
    """Distance of each point to the nearest of the segments ``a[e] -> b[e]``."""
    ab = b - a
    t = ((points[:, None] - a[None]) * ab[None]).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12)
    t = np.clip(t, 0.0, 1.0)
    closest = a[None] + t[..., None] * ab[None]
    return np.linalg.norm(points[:, None] - closest, axis=-1).min(1)


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _region(head: HeadModel, name: str) -> np.ndarray:
    idx = head.regions.get(name)
    return np.zeros(0, dtype=np.int64) if idx is None else idx.cpu().numpy()


def procedural_colors(
    head: HeadModel, vertices: Float[Tensor, "V 3"], seed: int, *,
    skin: np.ndarray | None = None, hair: np.ndarray | None = None,
) -> Float[np.ndarray, "V 3"]:
    """Seeded per-vertex albedo on the neutral ``vertices`` of an identity (model space).

    Skin with low-frequency variation and cheek colour, lips and brows around mediapipe's landmark
    polylines, hair on the scalp and above a hairline that runs from the forehead-top landmark down
    toward the ears, eyeballs with sclera, iris and pupil, dark mouth interior and light teeth.
    ``skin`` / ``hair`` override the palette's colours (used for the photo appearance's unseen parts).

    >>> from gafkit.heads import load_head_model
    >>> head = load_head_model("ict")
    >>> procedural_colors(head, head.template, seed=0).shape
    (24591, 3)
    """
    rng = np.random.default_rng([seed, 2])
    verts = vertices.detach().cpu().double().numpy()
    n_vert = verts.shape[0]
    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.95, 1.05, 3) if skin is None else skin
    hair = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] * rng.uniform(0.9, 1.1, 3) if hair is None else hair
    iris = IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))] * rng.uniform(0.85, 1.15, 3)
    skin, hair = np.clip(skin, 0, 1), np.clip(hair, 0, 1)

    # Low-frequency skin variation: a few plane waves of 4-12 cm wavelength, +-5 % in brightness.
    dirs = rng.normal(size=(4, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    waves = np.sin(verts @ (dirs * (2 * np.pi / rng.uniform(0.04, 0.12, (4, 1)))).T + rng.uniform(0, 2 * np.pi, 4))
    colors = skin[None] * (1.0 + 0.05 * waves.mean(1, keepdims=True) + 0.02 * waves[:, :3])
    colors[_region(head, "neck")] *= 0.96

    face = np.zeros(n_vert, dtype=bool)
    face[_region(head, "face")] = True
    eyes = _region(head, "eyes")
    if head.landmarks is not None:
        lmk = head.landmark_points(vertices[None].float().to(head.template.device))[0].cpu().double().numpy()
        for idx in CHEEK_LANDMARKS:
            weight = np.exp(-((np.linalg.norm(verts - lmk[idx], axis=1) / 0.025) ** 2)) * face
            colors += 0.12 * weight[:, None] * (np.array([0.85, 0.35, 0.35]) - colors)
        edges = _feature_edges()
        for name, radius, target, amount in (("lips", LIP_RADIUS, skin * np.array([0.85, 0.5, 0.5]), 1.0),
                                             ("brows", BROW_RADIUS, hair * 0.8, 0.85)):
            pairs = np.array(edges[name])
            dist = _segment_distance(verts[face], lmk[pairs[:, 0]], lmk[pairs[:, 1]])
            weight = amount * (1 - _smoothstep(radius * 0.6, radius * 1.3, dist))
            colors[face] += weight[:, None] * (target[None] - colors[face])
        # Hairline: just above the forehead-top landmark in front, dropping toward the back of the head,
        # never below eye level + 2.5 cm on the face region (which includes the ears).
        top = lmk[FOREHEAD_TOP]
        eye_y = verts[eyes, 1].mean() if len(eyes) else top[1] - 0.045
        line = np.maximum(top[1] + 0.004 - 0.8 * np.clip(top[2] - verts[:, 2], 0, None), eye_y + 0.025)
        hairy = face & (verts[:, 1] > line)
        colors[hairy] = hair * (1 + 0.04 * waves[hairy, :1])
    scalp = _region(head, "scalp")
    colors[scalp] = hair * (1 + 0.04 * waves[scalp, :1])

    # Eyeballs: split the eye region by side, look along +Z from each eyeball's centre.
    for side in (eyes[verts[eyes, 0] > 0], eyes[verts[eyes, 0] <= 0]):
        if len(side) == 0:
            continue
        rel = verts[side] - verts[side].mean(0)
        cos = rel[:, 2] / np.maximum(np.linalg.norm(rel, axis=1), 1e-9)
        iris_mix = _smoothstep(IRIS_COS - 0.03, IRIS_COS + 0.01, cos)[:, None]
        radial = 0.75 + 0.25 * _smoothstep(IRIS_COS, 1.0, cos)[:, None]  # darker toward the rim
        c = SCLERA * (1 - iris_mix) + iris * radial * iris_mix
        pupil = _smoothstep(PUPIL_COS - 0.01, PUPIL_COS + 0.01, cos)[:, None]
        colors[side] = c * (1 - pupil) + 0.03 * pupil
    colors[_region(head, "mouth")] = MOUTH_INSIDE
    colors[_region(head, "eye_sockets")] = skin * np.array([0.7, 0.5, 0.5])
    colors[_region(head, "teeth")] = TEETH
    return np.clip(colors, 0.0, 1.0).astype(np.float32)


@dataclasses.dataclass
class PhotoFit:
    """The head fitted to one photo and the colours projected from it.

    Shapes: colors [V, 3]; weight [V] (1 = seen straight on, 0 = not seen, filled procedurally);
    params: one frame; camera: one camera of the photo's size.
    """

    colors: Float[np.ndarray, "V 3"]
    weight: Float[np.ndarray, " V"]
    params: HeadParams
    camera: Cameras


def load_photo(path: str | None) -> tuple[np.ndarray, str]:
    """The photo as [H, W, 3] uint8 and a label; ``None`` gives scikit-image's astronaut."""
    if path is None:
        from skimage import data

        return np.ascontiguousarray(data.astronaut()[..., :3]), "skimage.data.astronaut()"
    from PIL import Image, UnidentifiedImageError

    from gafkit.errors import InputError

    try:
        with Image.open(path) as img:
            return np.array(img.convert("RGB")), str(path)  # writable: torch.from_numpy warns on read-only
    except FileNotFoundError:
        raise InputError(path, "no such photo") from None
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(path, f"cannot read the photo ({err.__class__.__name__})") from None


def photo_colors(head: HeadModel, image: np.ndarray, label: str, seed: int) -> PhotoFit:
    """Fit ``head`` to the face in ``image`` ([H, W, 3] uint8) and project the photo onto it.

    Each vertex facing the camera and not occluded (depth test against the fitted mesh's depth map)
    takes the photo's colour at its projection, divided by a mild frontal shading so that renders lit
    from the front look like the photo again. The weight ramps from 0 to 1 as the surface turns toward
    the camera, blending into a procedural appearance whose skin (and hair, if enough of it is seen) is
    the median of the seen colours, so unseen parts are a smooth, matching fill.
    """
    from gafkit.heads.landmark_embedding import detect_landmarks
    from gafkit.render.mesh import rasterize_mesh
    from gafkit.trackers.fit import fit_landmarks

    height, width = image.shape[:2]
    pixels = detect_landmarks(image[None])
    if np.isnan(pixels).any():
        raise GafkitError(f"{label}: mediapipe found no face in the photo")
    with torch.enable_grad():
        fit = fit_landmarks(head, torch.from_numpy(pixels).float(), torch.ones(1, dtype=torch.bool), width, height)
    params, camera = fit.params, fit.cameras
    with torch.no_grad():
        verts = head(params)  # [1, V, 3]
        raster = rasterize_mesh(verts, head.faces, camera, backend="torch")
        uv, depth = camera.project(verts)
        normals = head.vertex_normals(verts)[0]
        to_cam = F.normalize(camera.centers[0] - verts[0], dim=-1)
        cos = (normals * to_cam).sum(-1)
        ij = uv[0].floor().long()
        inside = (ij[:, 0] >= 0) & (ij[:, 0] < width) & (ij[:, 1] >= 0) & (ij[:, 1] < height)
        ij = torch.stack([ij[:, 0].clamp(0, width - 1), ij[:, 1].clamp(0, height - 1)], -1)
        zbuf = raster.depth[0, ij[:, 1], ij[:, 0]]
        front = raster.mask[0, ij[:, 1], ij[:, 0]] & (depth[0] <= zbuf + 0.004)
        grid = torch.stack([uv[0, :, 0] / width * 2 - 1, uv[0, :, 1] / height * 2 - 1], -1)
        img = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        sampled = F.grid_sample(img, grid[None, None], mode="bilinear", align_corners=False)[0, :, 0].T
        shading = 0.5 + 0.5 * cos.clamp(0, 1)
        albedo = (sampled / shading[:, None]).clamp(0, 1).numpy()
        weight = (inside & front).float() * ((cos - 0.15) / 0.35).clamp(0, 1)
    weight = weight.numpy()
    # Interior surfaces are never really seen in a photo with a closed mouth; keep them procedural.
    for name in ("mouth", "teeth", "eye_sockets"):
        weight[_region(head, name)] = 0.0
    with torch.no_grad():
        neutral = head(dataclasses.replace(head.zero_params(1), shape=params.shape[:1]))[0]
    seen = weight > 0.9
    # Skin tone from the cheeks (no lips, brows or hair there), hair from the seen scalp.
    with torch.no_grad():
        lmk = head.landmark_points(neutral[None])[0]
    near_cheek = torch.cdist(neutral, lmk[list(CHEEK_LANDMARKS)]).min(1).values < 0.025
    skin_idx = np.nonzero(seen & near_cheek.numpy())[0]
    skin = np.median(albedo[skin_idx], 0) if len(skin_idx) >= 20 else None
    hair_idx = np.intersect1d(_region(head, "scalp"), np.nonzero(seen)[0])
    hair = np.median(albedo[hair_idx], 0) if len(hair_idx) >= 20 else None
    base = procedural_colors(head, neutral, seed, skin=skin, hair=hair)
    colors = weight[:, None] * albedo + (1 - weight[:, None]) * base
    return PhotoFit(colors=colors.astype(np.float32), weight=weight.astype(np.float32), params=params[0],
                    camera=camera)
