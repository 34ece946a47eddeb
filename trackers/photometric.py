"""Stage 6 of tracking: photometric refinement of the landmark fit.

The head mesh is rendered with a per-sequence albedo and low-order spherical-harmonics lighting and
compared with the frames inside their foreground masks; the per-frame parameters (expression, head
rotation and translation, gaze, jaw) move so the render matches the pixels, while a landmark term
keeps the fit from drifting away from the detections. The albedo is a UV texture when the head model
has texture coordinates (ICT), per-vertex colours otherwise (FLAME pickles carry none); both start
from the frames' own colours splatted onto the mesh, so a few dozen steps suffice.

The identity (``shape``) stays fixed: in a monocular video its photometric gradients are confounded
with albedo and lighting, and the landmark fit's per-frame parameters were solved for its identity.

Each step renders every frame in minibatches of ``batch_size`` and accumulates the gradients, then
takes one Adam step: the gradient is the full-sequence one (Adam sees no partial epochs), while memory
is bounded by one minibatch. Rendering uses :mod:`gafkit.render.mesh` (nvdiffrast on CUDA when
installed, the pure-torch rasterizer elsewhere).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from gafkit.console import track
from gafkit.errors import GafkitError
from gafkit.heads.base import HeadModel, HeadParams
from gafkit.render.camera import Cameras
from gafkit.render.mesh import MeshRaster, interpolate, rasterize_mesh, resolve_backend, vertex_normals
from gafkit.trackers.appearance import SH_C0, UVAtlas, fill_holes, sample_texture, sh_basis, uv_atlas
from gafkit.trackers.losses import l2_prior, landmark_loss, temporal_smoothness, weighted_sum

log = logging.getLogger("gafkit.track")

# Landmark distances are measured in pixels of a 512-pixel-wide image whatever the crop size, so the
# landmark weight and Huber scale mean the same at every resolution.
LANDMARK_UNIT_WIDTH = 512.0
# Observations from surfaces seen at a grazing angle are blurred and shaded; they count less in the
# initial albedo (weight = cosine to the viewing direction, zero below this).
INIT_MIN_COSINE = 0.2


@dataclasses.dataclass
class PhotometricWeights:
    """Loss weights; ``None`` turns a term off."""

    photo: float | None = 1.0
    """Mean absolute RGB difference (0..1 colour units) over the compared pixels of each frame."""
    landmarks: float | None = 1e-3
    """Huber landmark distance (scale ``huber_px``, pixels at 512 wide); keeps the fit near the
    detections so texture and pose cannot slide together."""
    expr_delta: float | None = 0.1
    """Squared change of the expression coefficients from the landmark fit."""
    smooth_expr: float | None = 1e-3
    smooth_rotation: float | None = 1e-1
    smooth_translation: float | None = 10.0
    """Second-order temporal smoothness of the corrections to the landmark fit (translations are
    metres, hence the larger weight)."""
    texture_smooth: float | None = 1e-2
    """Squared differences of neighbouring texels (or of the two ends of every mesh edge for
    per-vertex albedo): fills texels no frame sees with their neighbours' colours."""
    light_delta: float | None = 1e-2
    """Squared per-frame deviation of the lighting from the sequence's (``per_frame_light`` only)."""


@dataclasses.dataclass
class PhotometricConfig:
    """Stage 6 of ``gafkit track`` (``--set photometric.steps=40``)."""

    enabled: bool | None = None
    """``None``: on when the device is CUDA (it needs a GPU to be quick), off on the CPU; ``gafkit
    track --photometric/--no-photometric`` sets it."""
    appearance_steps: int = 20
    """Adam steps on albedo and lighting alone before the parameters move: the initial albedo has the
    frames' shading baked in, and while it is wrong its errors would drag the pose and expressions."""
    steps: int = 60
    """Adam steps on everything (after ``appearance_steps``); each step renders every frame once."""
    batch_size: int = 32
    """Frames rendered together; bounds the memory (activations of one minibatch at a time)."""
    render_size: int = 256
    """Width of the rendered and compared images (crops are area-downsampled to it; never upsampled).
    Lighting and albedo are smooth and pose errors are sub-pixel at 512 anyway, so half the crop
    resolution keeps the signal at a quarter of the pixels; landmarks stay at full resolution."""
    texture_size: int | None = None
    """Texels per side of each UV tile of the albedo atlas (UV models only); ``None``: half the render
    width, about two pixels per texel on the face of a ``gafkit track`` crop. A texture much finer than
    the pixels could fit each frame's misalignment on its own texels instead of correcting the pose."""
    sh_order: int = 2
    """Spherical-harmonics lighting order: 0 (ambient), 1 (4 coefficients), 2 (9 coefficients per
    colour channel; captures Lambertian shading of distant light to about 1 %)."""
    per_frame_light: bool = False
    """Add a per-frame lighting offset (camera auto-exposure, changing light), kept small by
    ``w.light_delta``."""
    regions: tuple[str, ...] = ("face", "eyes")
    """Head-model regions whose pixels are compared (hair, neck and mouth interior are not modelled by
    a skin-tight mesh; the whole mesh is still rendered so they occlude correctly). Missing region
    names are ignored; when none exists, every triangle counts."""
    lr_pose: float = 4e-3
    """Adam step of head rotation, gaze and jaw (radians)."""
    lr_translation: float = 4e-4
    """Adam step of the head translation (metres)."""
    lr_expr: float = 2e-2
    """Adam step of the expression coefficients."""
    lr_albedo: float = 1e-2
    lr_light: float = 1e-2
    huber_px: float = 2.0
    """Landmark errors below this (pixels at 512 wide) are penalized quadratically, above linearly."""
    backend: Literal["auto", "torch", "nvdiffrast"] = "auto"
    """Mesh rasterizer (:func:`gafkit.render.mesh.rasterize_mesh`)."""
    w: PhotometricWeights = dataclasses.field(default_factory=PhotometricWeights)


@dataclasses.dataclass
class PhotometricResult:
    """Refined parameters, the appearance that explains the frames, and before/after metrics.

    Shapes: params [N, ...]; errors_px [N, L] landmark errors in crop pixels (None without landmarks);
    albedo [Ht, Wt, 3] texture atlas or [V, 3] vertex colours; light [K, 3] (+ light_frame [N, K, 3]
    with ``per_frame_light``), K = (sh_order + 1)^2.
    """

    params: HeadParams
    errors_px: Tensor | None
    albedo: Tensor
    light: Tensor
    light_frame: Tensor | None
    metrics: dict
    """JSON-ready summary (the ``photometric`` section of ``tracking.json``)."""


def photometric_enabled(cfg: PhotometricConfig, device: torch.device | str) -> bool:
    """Whether stage 6 runs: the explicit setting, else only on CUDA.

    >>> photometric_enabled(PhotometricConfig(), "cpu"), photometric_enabled(PhotometricConfig(), "cuda:0")
    (False, True)
    """
    if cfg.enabled is not None:
        return cfg.enabled
    return torch.device(device).type == "cuda"


def load_frames(images: Sequence[Path], masks: Sequence[Path], width: int) -> tuple[Tensor, Tensor]:
    """Read crops and masks, area-downsampled to ``width`` (never upsampled): images [N, H, W, 3]
    uint8, masks [N, H, W] uint8 (255 = foreground). Pillow only, so it runs wherever torch does."""
    from PIL import Image, UnidentifiedImageError

    from gafkit.errors import InputError

    def read(path: Path, mode: str) -> np.ndarray:
        try:
            with Image.open(path) as img:
                img = img.convert(mode)
                if img.width > width:
                    img = img.resize((width, round(img.height * width / img.width)), Image.Resampling.BOX)
                return np.asarray(img)
        except (OSError, UnidentifiedImageError) as err:
            raise InputError(path, f"cannot read the image ({err.__class__.__name__})") from None

    out_img = [read(p, "RGB") for p in images]
    out_mask = [read(p, "L") for p in masks]
    if len(out_img) != len(out_mask):
        raise ValueError(f"{len(out_img)} images but {len(out_mask)} masks")
    return torch.from_numpy(np.stack(out_img)), torch.from_numpy(np.stack(out_mask))


def _resize(x: Tensor, height: int, width: int) -> Tensor:
    """[N, H, W, C] -> [N, height, width, C] float by area averaging (identity when the size matches)."""
    x = x.float()
    if x.shape[1:3] == (height, width):
        return x
    return F.interpolate(x.permute(0, 3, 1, 2), size=(height, width), mode="area").permute(0, 2, 3, 1)


class _Problem:
    """The refinement's fixed data and its variables, and one differentiable render of a frame range."""

    def __init__(self, model: HeadModel, params: HeadParams, cameras: Cameras, images: Tensor, masks: Tensor,
                 landmarks: Tensor | None, cfg: PhotometricConfig, device: torch.device):
        n = params.batch_size
        self.model, self.cfg, self.device, self.n = model, cfg, device, n
        if len(cameras) == 1:
            cameras = Cameras(K=cameras.K.expand(n, 3, 3), w2c=cameras.w2c.expand(n, 4, 4),
                              width=cameras.width, height=cameras.height)
        self.cams = cameras.to(device)  # crop size: landmarks
        factor = min(1.0, cfg.render_size / cameras.width)
        self.rcams = self.cams.scaled(factor) if factor < 1 else self.cams  # render size
        h, w = self.rcams.height, self.rcams.width
        # Kept as uint8 on the device (300 x 256^2 x 3 = 59 MB); each minibatch converts its frames.
        self.images = (_resize(images.to(device), h, w) if images.dtype != torch.uint8 or images.shape[1:3] != (h, w)
                       else images.to(device))
        if self.images.dtype != torch.uint8:
            self.images = self.images.round().clamp(0, 255).to(torch.uint8)
        m = masks.to(device)
        m = m.float() if m.dtype != torch.bool else m.float() * 255
        # Pixels fully inside the (area-downsampled) mask: edge pixels mix in the background.
        self.fg = _resize(m[..., None], h, w)[..., 0] >= 0.99 * 255
        self.faces = model.faces.to(device)
        names = [r for r in cfg.regions if r in model.regions]
        if names:
            in_region = torch.zeros(model.num_vertices, dtype=torch.bool, device=device)
            for r in names:
                in_region[model.regions[r].to(device)] = True
            self.compared = in_region[self.faces].all(1)
        else:
            self.compared = torch.ones(self.faces.shape[0], dtype=torch.bool, device=device)

        self.landmarks = None
        if landmarks is not None and model.landmarks is not None:
            self.landmarks = landmarks.to(device, torch.float32)
            self.lmk_valid = torch.isfinite(self.landmarks).all(-1)
            self.landmarks = torch.nan_to_num(self.landmarks)

        p = params.to(device)
        self.fixed = p.detach()
        self.expr0 = p.expr.detach().clone()
        self.vars = {"expr": p.expr.detach().clone(), "rotation": p.rotation.detach().clone(),
                     "translation": p.translation.detach().clone(), "eyes": p.eyes.detach().clone()}
        if model.has_jaw_joint:
            self.vars["jaw"] = p.jaw.detach().clone()
        for v in self.vars.values():
            v.requires_grad_(True)

        k = (cfg.sh_order + 1) ** 2
        self.light = torch.zeros(k, 3, device=device)
        self.light[0] = 1.0 / SH_C0  # shading 1 everywhere: the albedo starts as the colours
        self.light.requires_grad_(True)
        self.light_frame = torch.zeros(n, k, 3, device=device, requires_grad=True) if cfg.per_frame_light else None

        self.texture_size = cfg.texture_size or max(4, w // 2)
        self.atlas = None
        if model.uvs is not None and model.face_uvs is not None:
            atlas = uv_atlas(model)
            self.atlas = UVAtlas(uv=atlas.uv.to(device), faces=atlas.faces.to(device), tiles=atlas.tiles)
        self.albedo = self._initial_albedo().requires_grad_(True)
        if self.atlas is None:
            edges = torch.cat([self.faces[:, [0, 1]], self.faces[:, [1, 2]], self.faces[:, [2, 0]]])
            self.edges = torch.unique(torch.sort(edges, 1).values, dim=0)

    def params(self, start: int = 0, stop: int | None = None) -> HeadParams:
        stop = self.n if stop is None else stop
        return dataclasses.replace(self.fixed[start:stop], **{k: v[start:stop] for k, v in self.vars.items()})

    def raster(self, start: int, stop: int, geometry_grad: bool = True) -> tuple[Tensor, MeshRaster, Tensor]:
        """Posed vertices [B, V, 3], the raster at render size and the compared pixels [B, H, W]."""
        with torch.set_grad_enabled(geometry_grad and torch.is_grad_enabled()):
            verts = self.model(self.params(start, stop))
        raster = rasterize_mesh(verts, self.faces, self.rcams[start:stop], backend=self.cfg.backend)
        sel = raster.mask & self.fg[start:stop] & self.compared[raster.tri_id.clamp(min=0)]
        return verts, raster, sel

    def _albedo_at(self, raster: MeshRaster, albedo: Tensor) -> Tensor:
        if self.atlas is None:
            return interpolate(albedo[None], self.faces, raster)
        return sample_texture(albedo, interpolate(self.atlas.uv[None], self.atlas.faces, raster))

    def render(self, start: int, stop: int, geometry_grad: bool = True) -> dict[str, Tensor]:
        """Per-frame photometric L1 and MSE over the compared pixels [B], the posed vertices and, with
        landmarks, their projections and errors."""
        verts, raster, sel = self.raster(start, stop, geometry_grad)
        normals = F.normalize(interpolate(vertex_normals(verts, self.faces), self.faces, raster), dim=-1)
        light = self.light[None]
        if self.light_frame is not None:
            light = light + self.light_frame[start:stop]
        shading = torch.einsum("bhwk,bkc->bhwc", sh_basis(normals, self.cfg.sh_order), light.expand(stop - start, -1, -1))
        rgb = self._albedo_at(raster, self.albedo) * shading
        target = self.images[start:stop].float() / 255
        diff = torch.where(sel[..., None], rgb - target, torch.zeros_like(rgb))
        count = sel.sum((1, 2)).clamp_min(1)
        out = {"l1": diff.abs().mean(-1).sum((1, 2)) / count, "mse": (diff**2).mean(-1).sum((1, 2)) / count,
               "pixels": sel.sum((1, 2)), "verts": verts}
        if self.landmarks is not None:
            uv, error = self._landmarks(verts, start, stop)
            out["lmk_uv"], out["lmk_error"] = uv, error
        return out

    def _landmarks(self, verts: Tensor, start: int, stop: int) -> tuple[Tensor, Tensor]:
        """Projected landmarks [B, L, 2] (crop pixels) and their errors [B, L] (nan where not detected)."""
        uv, _ = self.cams[start:stop].project(self.model.landmark_points(verts))
        error = (uv - self.landmarks[start:stop]).norm(dim=-1).detach()
        return uv, torch.where(self.lmk_valid[start:stop], error, torch.full_like(error, float("nan")))

    def landmark_term(self, verts: Tensor, uv: Tensor, start: int, stop: int) -> Tensor:
        """Visibility-weighted Huber landmark loss of frames ``start:stop`` (pixels at 512 wide)."""
        emb = self.model.landmarks
        corners = verts[:, self.faces[emb.faces.to(self.device)]]  # [B, L, 3, 3]
        normal = F.normalize(torch.cross(corners[:, :, 1] - corners[:, :, 0], corners[:, :, 2] - corners[:, :, 0],
                                         dim=-1), dim=-1)
        to_cam = F.normalize(self.cams[start:stop].centers[:, None] - corners.mean(2), dim=-1)
        # Far-side contour points slide along the silhouette in the detector: they count less.
        weight = (normal * to_cam).sum(-1).clamp(0, 1).sqrt().detach() * self.lmk_valid[start:stop]
        unit = LANDMARK_UNIT_WIDTH / self.cams.width
        return landmark_loss(uv * unit, self.landmarks[start:stop] * unit, weight, self.cfg.huber_px)

    @torch.no_grad()
    def _initial_albedo(self) -> Tensor:
        """Frame colours splatted onto the mesh (texels or vertices), weighted by how squarely each
        surface faces the camera; unseen texels take their surroundings' colour, unseen vertices the
        mean colour."""
        bs = max(1, self.cfg.batch_size)
        if self.atlas is not None:
            side = self.texture_size
            shape = (side, side * self.atlas.tiles)
            total = torch.zeros(shape[0] * shape[1], 3, device=self.device)
        else:
            total = torch.zeros(self.model.num_vertices, 3, device=self.device)
        weight = torch.zeros(total.shape[0], device=self.device)
        for start in range(0, self.n, bs):
            stop = min(self.n, start + bs)
            verts, raster, sel = self.raster(start, stop)
            normals = vertex_normals(verts, self.faces) @ self.rcams[start:stop].w2c[:, :3, :3].transpose(1, 2)
            facing = -F.normalize(interpolate(normals, self.faces, raster), dim=-1)[..., 2]  # OpenCV: -z faces us
            w = torch.where(sel, ((facing - INIT_MIN_COSINE) / (1 - INIT_MIN_COSINE)).clamp(0, 1), 0.0)
            colour = self.images[start:stop].float() / 255
            keep = w > 0
            if self.atlas is not None:
                uv = interpolate(self.atlas.uv[None], self.atlas.faces, raster)[keep]
                col = (uv[:, 0] * shape[1]).long().clamp(0, shape[1] - 1)
                row = ((1 - uv[:, 1]) * shape[0]).long().clamp(0, shape[0] - 1)
                index, wk = row * shape[1] + col, w[keep]
                total.index_add_(0, index, colour[keep] * wk[:, None])
                weight.index_add_(0, index, wk)
            else:
                corners = self.faces[raster.tri_id[keep]]  # [P, 3]
                wk = raster.bary[keep] * w[keep][:, None]  # [P, 3]
                for c in range(3):
                    total.index_add_(0, corners[:, c], colour[keep] * wk[:, c:c + 1])
                    weight.index_add_(0, corners[:, c], wk[:, c])
        if self.atlas is not None:
            return fill_holes(total.view(*shape, 3), weight.view(shape)).permute(2, 0, 1).contiguous()
        seen = weight > 0
        mean = total[seen].sum(0) / weight[seen].sum() if bool(seen.any()) else total.new_full((3,), 0.5)
        return torch.where(seen[:, None], total / weight.clamp_min(1e-12)[:, None], mean)

    def regularizers(self) -> dict[str, Tensor]:
        v, p0 = self.vars, self.fixed
        # Smoothness acts on the corrections, not the trajectory: the landmark fit already chose how
        # smooth the motion is, and refinement should not add jitter to it.
        terms = {"expr_delta": l2_prior(v["expr"] - self.expr0),
                 "smooth_expr": temporal_smoothness(v["expr"] - self.expr0),
                 "smooth_rotation": temporal_smoothness(v["rotation"] - p0.rotation),
                 "smooth_translation": temporal_smoothness(v["translation"] - p0.translation)}
        if self.atlas is not None:
            a = self.albedo
            terms["texture_smooth"] = ((a[:, 1:] - a[:, :-1]) ** 2).mean() + ((a[:, :, 1:] - a[:, :, :-1]) ** 2).mean()
        else:
            terms["texture_smooth"] = ((self.albedo[self.edges[:, 0]] - self.albedo[self.edges[:, 1]]) ** 2).sum(-1).mean()
        if self.light_frame is not None:
            terms["light_delta"] = (self.light_frame**2).sum((1, 2)).mean()
        return terms


def _check(cfg: PhotometricConfig, params: HeadParams, images: Tensor, masks: Tensor, landmarks: Tensor | None) -> None:
    if cfg.sh_order not in (0, 1, 2):
        raise GafkitError(f"photometric.sh_order: {cfg.sh_order} is not 0, 1 or 2")
    if (cfg.steps < 0 or cfg.appearance_steps < 0 or cfg.batch_size < 1 or cfg.render_size < 16
            or (cfg.texture_size is not None and cfg.texture_size < 4)):
        raise GafkitError("photometric: need steps >= 0, batch_size >= 1, render_size >= 16 and texture_size >= 4 "
                          f"(got {cfg.steps}, {cfg.batch_size}, {cfg.render_size}, {cfg.texture_size})")
    n = params.batch_size
    if images.shape[0] != n or masks.shape[0] != n or (landmarks is not None and landmarks.shape[0] != n):
        raise ValueError(f"photometric: {n} parameter sets but {images.shape[0]} images, {masks.shape[0]} masks"
                         + ("" if landmarks is None else f", {landmarks.shape[0]} landmark sets"))


def _summary(before: dict[str, Tensor], after: dict[str, Tensor]) -> dict:
    """JSON metrics from the per-frame values of the first and the final evaluation."""

    def psnr(mse: Tensor) -> float:
        return float(-10 * torch.log10(mse.mean().clamp_min(1e-12)))

    out = {"photometric_l1_before": float(before["l1"].mean()), "photometric_l1_after": float(after["l1"].mean()),
           "psnr_db_before": psnr(before["mse"]), "psnr_db_after": psnr(after["mse"]),
           "compared_pixels_per_frame": float(after["pixels"].float().mean())}
    if "lmk_error" in after:
        for name, values in (("before", before), ("after", after)):
            err = values["lmk_error"]
            out[f"landmark_error_mean_px_{name}"] = float(err.nanmean())
            ok = err[torch.isfinite(err)]
            out[f"landmark_error_p95_px_{name}"] = float(torch.quantile(ok, 0.95)) if ok.numel() else float("nan")
    out["per_frame_l1_before"] = [round(float(x), 5) for x in before["l1"]]
    out["per_frame_l1_after"] = [round(float(x), 5) for x in after["l1"]]
    return out


def refine_photometric(
    model: HeadModel,
    params: HeadParams,
    cameras: Cameras,
    images: Int[Tensor, "N H W 3"] | Float[Tensor, "N H W 3"],
    masks: Float[Tensor, "N H W"] | Bool[Tensor, "N H W"],
    landmarks: Float[Tensor, "N L 2"] | None,
    cfg: PhotometricConfig | None = None,
    device: torch.device | str | None = None,
) -> PhotometricResult:
    """Refine the per-frame ``params`` of a tracked sequence against its frames.

    Args:
        model: the head model (moved to ``device``).
        params: [N, ...] landmark-fit parameters; ``shape`` stays fixed.
        cameras: N cameras (or one shared) at the crop size; ``landmarks`` are in its pixels.
        images: [N, H, W, 3] uint8 (0..255) or float (0..255) frames, at the crop size or already
            downsampled to the render size (:func:`load_frames`).
        masks: [N, H, W] foreground masks, uint8/float 0..255 or bool, same size as ``images``.
        landmarks: [N, L, 2] detected landmarks (crop pixels, NaN where missing) or None (no
            landmark term).
        device: where to optimize (default: the model's device).

    Returns:
        :class:`PhotometricResult` with params on the device ``params`` came from.
    """
    cfg = cfg or PhotometricConfig()
    _check(cfg, params, images, masks, landmarks)
    device = torch.device(device) if device is not None else model.template.device
    model = model.to(device)
    prob = _Problem(model, params, cameras, images, masks, landmarks, cfg, device)
    n, bs = prob.n, cfg.batch_size
    ranges = [(s, min(n, s + bs)) for s in range(0, n, bs)]

    appearance = [{"params": [prob.albedo], "lr": cfg.lr_albedo},
                  {"params": [prob.light] + ([prob.light_frame] if prob.light_frame is not None else []),
                   "lr": cfg.lr_light}]
    geometry = [{"params": [prob.vars["expr"]], "lr": cfg.lr_expr},
                {"params": [prob.vars["rotation"], prob.vars["eyes"]] + ([prob.vars["jaw"]] if "jaw" in prob.vars else []),
                 "lr": cfg.lr_pose},
                {"params": [prob.vars["translation"]], "lr": cfg.lr_translation}]
    weights = dataclasses.asdict(cfg.w)
    bounds = model.expr_bounds

    def evaluate() -> dict[str, Tensor]:
        with torch.no_grad():
            parts = [prob.render(a, b) for a, b in ranges]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0] if k not in ("lmk_uv", "verts")}

    def step(opt: torch.optim.Optimizer, move_geometry: bool) -> dict[str, Tensor]:
        """One Adam step on the gradient of all frames; returns the weighted terms (device tensors: no
        host sync inside the loop)."""
        opt.zero_grad(set_to_none=True)
        logs: dict[str, Tensor] = {}
        for a, b in ranges:
            out = prob.render(a, b, geometry_grad=move_geometry)
            terms = {"photo": out["l1"].sum() * (1.0 / n)}
            if prob.landmarks is not None and move_geometry and weights["landmarks"] is not None:
                terms["landmarks"] = prob.landmark_term(out["verts"], out["lmk_uv"], a, b) * ((b - a) / n)
            if any(weights[k] is not None for k in terms):
                weighted_sum(terms, weights).backward()
            for k, v in terms.items():
                if weights[k] is not None:
                    logs[k] = logs.get(k, 0.0) + weights[k] * v.detach()
        reg = {k: v for k, v in prob.regularizers().items() if move_geometry or k in ("texture_smooth", "light_delta")}
        if any(weights[k] is not None for k in reg):
            weighted_sum(reg, weights).backward()
            logs.update({k: weights[k] * v.detach() for k, v in reg.items() if weights[k] is not None})
        opt.step()
        if bounds is not None and move_geometry:
            with torch.no_grad():
                prob.vars["expr"].clamp_(*bounds)
        return logs

    def debug(name: str, logs: dict[str, Tensor]) -> None:
        if logs:
            log.debug("[track-photometric-%s] %s", name, ", ".join(f"{k}={float(v):.4g}" for k, v in logs.items()))

    before = evaluate()
    logs: dict[str, Tensor] = {}
    if cfg.appearance_steps:
        opt = torch.optim.Adam(appearance)
        for _ in track(range(cfg.appearance_steps), "track: photometric appearance"):
            logs = step(opt, move_geometry=False)
        debug("appearance", logs)
    opt = torch.optim.Adam(appearance + geometry)
    # Constant steps cover the landmark fit's errors fastest; a linear decay over the last 30 % (to 10 %)
    # lets Adam's sign-like steps settle instead of oscillating around the optimum.
    decay_from = int(0.7 * cfg.steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 1.0 - 0.9 * min(1.0, max(0, i - decay_from) / max(1, cfg.steps - decay_from)))
    for _ in track(range(cfg.steps), "track: photometric"):
        logs = step(opt, move_geometry=True)
        sched.step()
    if cfg.steps:
        debug("joint", logs)
    after = evaluate()

    metrics = {"appearance_steps": cfg.appearance_steps, "steps": cfg.steps, "render_size": prob.rcams.width, "sh_order": cfg.sh_order,
               "per_frame_light": cfg.per_frame_light, "backend": resolve_backend(cfg.backend, device),
               "albedo": (f"uv texture {prob.texture_size}x{prob.texture_size * prob.atlas.tiles}"
                          if prob.atlas is not None else "per vertex"),
               **_summary(before, after)}
    log.info("photometric refinement: L1 %.4f -> %.4f, PSNR %.2f -> %.2f dB over %d frames",
             metrics["photometric_l1_before"], metrics["photometric_l1_after"], metrics["psnr_db_before"],
             metrics["psnr_db_after"], n)
    out_device = params.shape.device
    return PhotometricResult(
        params=prob.params().detach().to(out_device),
        errors_px=after.get("lmk_error"),
        albedo=(prob.albedo.detach().permute(1, 2, 0) if prob.atlas is not None else prob.albedo.detach()),
        light=prob.light.detach(),
        light_frame=None if prob.light_frame is None else prob.light_frame.detach(),
        metrics=metrics,
    )

