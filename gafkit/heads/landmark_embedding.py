"""Build a mediapipe 478-landmark embedding for any head mesh by detecting landmarks on renders of it.

Recipe (works on ICT and on a user's FLAME template, so no non-commercial embedding file is needed):

1. render the neutral mesh Lambert-shaded grey at 512x512, frontally and at +-20 degrees yaw;
2. run mediapipe FaceMesh (``refine_landmarks=True``: 468 mesh points + 10 iris points) on each;
3. back-project every landmark through the rasterizer's triangle id and barycentrics at its pixel;
4. combine the views: median of the hits, drop hits more than 5 mm from it (a landmark hidden behind
   the nose in a turned view lands on the nose), average the rest (the median if none is left);
5. snap that point to the closest surface point -> (triangle, barycentric); given the eyeballs, the
   10 iris points snap to them and the 468 others to the rest of the mesh.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from gafkit.errors import GafkitError
from gafkit.heads.base import LandmarkEmbedding

NUM_LANDMARKS = 478
# mediapipe's refined iris points (two centres and their rings) follow the eyeballs, all others the skin.
IRIS_LANDMARKS = tuple(range(468, 478))
# Hits farther than this from the per-landmark median of the views are treated as occluded (metres).
OUTLIER_M = 0.005
# Depth is divided by this when a landmark is moved along the view ray onto the eyeballs or off them.
RAY_SQUASH = 20.0
# ... onto triangles whose normal is within 60 degrees of the frontal view (cosine above this).
MIN_FACING = 0.5


@dataclasses.dataclass
class EmbeddingViews:
    """What :func:`detect_on_renders` saw: per view, the detections and their back-projections.

    Shapes:
        images:    [N, H, W, 3] uint8 renders
        pixels:    [N, L, 2] detected landmark pixel coordinates (x, y), NaN where no face was found
        points:    [N, L, 3] back-projected surface points, NaN where the pixel missed the mesh
        mask:      [N, H, W] bool mesh coverage
    """

    images: np.ndarray
    pixels: np.ndarray
    points: np.ndarray
    mask: np.ndarray


def render_views(vertices: Float[Tensor, "V 3"], faces: Int[Tensor, "F 3"], *, yaws_deg: Sequence[float] = (0.0, 20.0, -20.0),
                 size: int = 512, distance: float = 1.0, fill: float = 0.85):
    """Cameras around the mesh (turned by ``yaws_deg`` about +Y, looking at the bounding-box centre,
    the mesh height filling ``fill`` of the image) and their grey Lambert renders.

    Returns ``(cameras, raster, rgb [N, H, W, 3] float)``.
    """
    from gafkit.render.camera import Cameras
    from gafkit.render.mesh import rasterize_mesh, render_shaded

    used = vertices[torch.unique(faces)]
    lo, hi = used.amin(0), used.amax(0)
    center = (lo + hi) / 2
    yaw = torch.tensor([math.radians(y) for y in yaws_deg])
    eye = center + distance * torch.stack([torch.sin(yaw), torch.zeros_like(yaw), torch.cos(yaw)], dim=1)
    focal = fill * size * distance / float(hi[1] - lo[1])
    cams = Cameras.look_at(eye, center.expand_as(eye), focal=focal, width=size, height=size)
    verts = vertices[None].expand(len(yaws_deg), -1, -1).contiguous()
    raster = rasterize_mesh(verts, faces, cams, backend="torch")
    rgb, _ = render_shaded(verts, faces, cams, backend="torch")
    return cams, raster, rgb


def detect_landmarks(images: np.ndarray) -> np.ndarray:
    """mediapipe FaceMesh (static images, refined irises) on [N, H, W, 3] uint8 RGB images.

    Returns [N, 478, 2] pixel coordinates (x, y) with pixel centres at ``j + 0.5``; NaN for images
    where no face was found.
    """
    import mediapipe as mp

    out = np.full((len(images), NUM_LANDMARKS, 2), np.nan)
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=1) as mesh:
        for i, img in enumerate(images):
            result = mesh.process(np.ascontiguousarray(img))
            if result.multi_face_landmarks:
                lms = result.multi_face_landmarks[0].landmark
                # mediapipe's normalised coordinates put 0 and 1 at the image borders.
                out[i] = [(p.x * img.shape[1], p.y * img.shape[0]) for p in lms]
    return out


def detect_on_renders(vertices: Float[Tensor, "V 3"], faces: Int[Tensor, "F 3"], **view_kw) -> EmbeddingViews:
    """Render, detect and back-project (steps 1-3 of the module recipe)."""
    cams, raster, rgb = render_views(vertices, faces, **view_kw)
    images = (rgb.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    pixels = detect_landmarks(images)
    n_view = images.shape[0]
    points = np.full((n_view, NUM_LANDMARKS, 3), np.nan)
    for v in range(n_view):
        if np.isnan(pixels[v]).any():
            continue
        ij = _front_pixel(raster.depth[v].numpy(), raster.mask[v].numpy(), pixels[v])
        tri = raster.tri_id[v, ij[:, 0], ij[:, 1]]
        hit = tri >= 0
        bary = raster.bary[v, ij[:, 0], ij[:, 1]]
        corners = vertices[faces[tri.clamp(min=0)]]  # [L, 3, 3]
        pts = (bary[..., None] * corners).sum(1)
        points[v, hit.numpy()] = pts[hit].double().numpy()
    return EmbeddingViews(images=images, pixels=pixels, points=points, mask=raster.mask.numpy())


def _front_pixel(depth: np.ndarray, mask: np.ndarray, xy: np.ndarray, radius: int = 2,
                 slack: float = 0.01) -> np.ndarray:
    """(row, col) [L, 2] per landmark: its own pixel unless that shows a far surface.

    Lip-seam landmarks sit on the thin gap between closed lips, where the ray passes through to the
    inside of the head. Within a (2r+1)^2 window, pixels deeper than the nearest one by more than
    ``slack`` metres are ignored and the remaining pixel closest to the landmark is used.
    """
    h, w = depth.shape
    d = np.arange(-radius, radius + 1)
    off = np.stack(np.meshgrid(d, d, indexing="ij"), -1).reshape(-1, 2)  # [K, 2]
    centre = np.floor(xy[:, ::-1]).astype(np.int64)
    cand = np.clip(centre[:, None] + off[None], [0, 0], [h - 1, w - 1])  # [L, K, 2]
    z = np.where(mask[cand[..., 0], cand[..., 1]], depth[cand[..., 0], cand[..., 1]], np.inf)
    near = z <= z.min(1, keepdims=True) + slack
    dist = np.where(near, (off**2).sum(1)[None], np.iinfo(np.int64).max)
    return cand[np.arange(len(xy)), dist.argmin(1)]


def combine_views(points: np.ndarray) -> np.ndarray:
    """[N, L, 3] per-view points (NaN = missed) -> [L, 3]: median, drop far hits, average."""
    med = np.nanmedian(points, axis=0)
    if np.isnan(med).any():
        missing = np.flatnonzero(np.isnan(med).any(1))
        raise GafkitError(f"landmark embedding: landmarks {missing[:10].tolist()} were not seen in any view")
    far = np.linalg.norm(points - med[None], axis=-1) > OUTLIER_M  # NaN compares False -> kept, then nanmean
    kept = np.where(far[..., None], np.nan, points)
    # Where the views all disagree (no hit near the median), the median itself is the best guess.
    lost = np.isnan(kept).all(axis=(0, 2))
    kept[:, lost] = med[None, lost]
    return np.nanmean(kept, axis=0)


def closest_surface_points(points: Float[Tensor, "L 3"], vertices: Float[Tensor, "V 3"], faces: Int[Tensor, "F 3"],
                           candidates: int = 64) -> tuple[Int[Tensor, " L"], Float[Tensor, "L 3"]]:
    """Closest point on the mesh for each point, as (triangle index [L], barycentrics [L, 3]).

    The exact point-triangle distance is evaluated on the ``candidates`` triangles with the nearest
    centroids; the point is the in-plane projection when it falls inside the triangle, else the
    nearest point on one of its edges.

    >>> tri = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    >>> f, b = closest_surface_points(torch.tensor([[0.25, 0.25, 1.0]]), tri, torch.tensor([[0, 1, 2]]))
    >>> f.tolist(), b.tolist()
    ([0], [[0.5, 0.25, 0.25]])
    """
    points, vertices = points.double(), vertices.double()
    centroids = vertices[faces].mean(1)
    k = min(candidates, faces.shape[0])
    cand = torch.cdist(points, centroids).topk(k, largest=False).indices  # [L, K]
    a, b, c = (vertices[faces[cand][..., i]] for i in range(3))  # [L, K, 3]
    p = points[:, None]
    n = torch.linalg.cross(b - a, c - a)
    n = n / n.norm(dim=-1, keepdim=True).clamp(min=1e-20)
    proj = p - ((p - a) * n).sum(-1, keepdim=True) * n
    best = _barycentric(proj, a, b, c)
    inside = (best >= 0).all(-1)
    candidates_pts = [torch.where(inside[..., None], proj, torch.full_like(proj, math.inf))]
    for s, e in ((a, b), (b, c), (c, a)):
        d = e - s
        t = (((p - s) * d).sum(-1) / (d * d).sum(-1).clamp(min=1e-20)).clamp(0, 1)
        candidates_pts.append(s + t[..., None] * d)
    options = torch.stack(candidates_pts, dim=2)  # [L, K, 4, 3]
    dist = (options - p[:, :, None]).norm(dim=-1).nan_to_num(math.inf)  # inf rows (outside) never win
    flat = dist.reshape(dist.shape[0], -1).argmin(1)
    kk, opt = flat // 4, flat % 4
    rows = torch.arange(points.shape[0])
    closest = options[rows, kk, opt]
    tri = cand[rows, kk]
    corners = vertices[faces[tri]]
    bary = _barycentric(closest[:, None], corners[:, None, 0], corners[:, None, 1], corners[:, None, 2])[:, 0]
    bary = bary.clamp(min=0)
    return tri, (bary / bary.sum(-1, keepdim=True)).float()


def _barycentric(p: Tensor, a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """Barycentric coordinates [..., 3] of points ``p`` in the plane of triangles (a, b, c)."""
    v0, v1, v2 = b - a, c - a, p - a
    d00, d01, d11 = (v0 * v0).sum(-1), (v0 * v1).sum(-1), (v1 * v1).sum(-1)
    d20, d21 = (v2 * v0).sum(-1), (v2 * v1).sum(-1)
    den = (d00 * d11 - d01 * d01).clamp(min=1e-30)
    w1 = (d11 * d20 - d01 * d21) / den
    w2 = (d00 * d21 - d01 * d20) / den
    return torch.stack([1 - w1 - w2, w1, w2], dim=-1)


def snap_landmarks(points: Float[Tensor, "L 3"], vertices: Float[Tensor, "V 3"], faces: Int[Tensor, "F 3"],
                   eyeball_vertices: Int[Tensor, " E"] | None = None) -> tuple[Int[Tensor, " L"], Float[Tensor, "L 3"]]:
    """:func:`closest_surface_points` of the 478 landmarks, with iris points kept on the eyeballs.

    The eyelid margin and the eyeball meet within a pixel of the renders, so the surface a landmark
    hits there is either one. A lid point bound to the eyeball turns with the gaze and an iris point
    bound to the lid does not, which damps the tracked gaze and blinks. With ``eyeball_vertices`` the
    iris points (:data:`IRIS_LANDMARKS`) go to the eyeballs and every other point off them: a point
    whose closest surface is on the wrong side moves along the frontal view ray (+-Z) to the nearest
    front-facing triangle of its side (:data:`MIN_FACING`), which keeps it where it was seen: an iris
    point under a lid goes to the eyeball behind it, a lid point to the lid's front edge rather than
    the margin's underside.
    """
    tri, bary = closest_surface_points(points, vertices, faces)
    if eyeball_vertices is None:
        return tri, bary
    flag = torch.zeros(vertices.shape[0], dtype=torch.bool)
    flag[eyeball_vertices] = True
    on_eye = flag[faces].all(1)
    corners = vertices[faces].double()
    normal = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    # Edge-on triangles (the lid margin's rim) would get almost no weight in the tracker's visibility term.
    facing = normal[:, 2] > MIN_FACING * normal.norm(dim=1)
    iris = torch.zeros(points.shape[0], dtype=torch.bool)
    iris[list(IRIS_LANDMARKS)] = True
    # Squashing depth makes the closest point the one along the view ray (to within 1/RAY_SQUASH of the
    # depth gap); affine maps keep barycentrics, so they hold for the unsquashed triangle.
    squash = torch.tensor([1.0, 1.0, 1.0 / RAY_SQUASH])
    for want_eye in (True, False):
        wrong = (iris == want_eye) & (on_eye[tri] != want_eye)
        if not wrong.any():
            continue
        ids = torch.nonzero((on_eye == want_eye) & facing).squeeze(1)
        if not len(ids):
            raise GafkitError(f"landmark embedding: no front-facing triangle {'on' if want_eye else 'off'} the eyeballs")
        t, b = closest_surface_points(points[wrong] * squash, vertices * squash, faces[ids])
        tri[wrong], bary[wrong] = ids[t], b
    return tri, bary


def embed_landmarks(vertices: Float[Tensor, "V 3"], faces: Int[Tensor, "F 3"], *,
                    visible_vertices: Int[Tensor, " N"] | None = None,
                    eyeball_vertices: Int[Tensor, " E"] | None = None,
                    yaws_deg: Sequence[float] = (0.0, 20.0, -20.0), size: int = 512) -> LandmarkEmbedding:
    """The mediapipe 478-landmark embedding of a neutral head mesh (model space, face toward +Z).

    Args:
        vertices: [V, 3] neutral mesh.
        faces: [F, 3] triangles; the returned triangle indices refer to this array.
        visible_vertices: [N] vertices to render (e.g. face, scalp, neck and eyeballs); triangles
            touching other vertices (mouth interior, teeth) are left out of the renders and of the
            snapping. Default: all.
        eyeball_vertices: [E] the eyeballs (:func:`snap_landmarks`); None snaps every landmark to the
            closest visible surface.
        yaws_deg, size: the views (degrees about +Y) and the square image size.
    """
    faces = faces.long()
    keep = torch.arange(faces.shape[0])
    if visible_vertices is not None:
        flag = torch.zeros(vertices.shape[0], dtype=torch.bool)
        flag[visible_vertices] = True
        keep = torch.nonzero(flag[faces].all(1)).squeeze(1)
    sub = faces[keep]
    with torch.no_grad():
        views = detect_on_renders(vertices.float(), sub, yaws_deg=yaws_deg, size=size)
    if np.isnan(views.pixels).all():
        raise GafkitError("landmark embedding: mediapipe found no face in any render of the mesh")
    target = torch.from_numpy(combine_views(views.points))
    tri, bary = snap_landmarks(target, vertices, sub, eyeball_vertices)
    return LandmarkEmbedding(faces=keep[tri], bary=bary)
