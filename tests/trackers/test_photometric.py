"""Stage 6 of tracking: photometric refinement on synthetic subjects whose true parameters are known,
and its switch through ``gafkit track``."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from gafkit.cli import app
from gafkit.errors import GafkitError, InputError
from gafkit.heads import HeadParams, load_head_model
from gafkit.render.camera import Cameras
from gafkit.render.mesh import render_shaded
from gafkit.synth import SynthConfig
from gafkit.synth.generate import make_subject, render_views
from gafkit.trackers.appearance import fill_holes, uv_atlas
from gafkit.trackers.fit import default_camera
from gafkit.trackers.photometric import (
    PhotometricConfig,
    PhotometricWeights,
    load_frames,
    photometric_enabled,
    refine_photometric,
)
from paths import EXAMPLE_VIDEO
from toy_head import ToyHead

runner = CliRunner()
FRAMES, SIZE = 4, 96


@dataclasses.dataclass
class Scene:
    head: object
    truth: HeadParams
    cameras: Cameras
    images: torch.Tensor
    masks: torch.Tensor


def _perturb(truth: HeadParams, seed: int, rot_deg: float, trans_m: float, expr: float,
             expr_ids: list[int] | None = None) -> HeadParams:
    g = torch.Generator().manual_seed(seed)
    n = truth.batch_size
    noise = expr * torch.randn(truth.expr.shape, generator=g)
    if expr_ids is not None:
        keep = torch.zeros(truth.expr.shape[1], dtype=torch.bool)
        keep[expr_ids] = True
        noise = noise * keep
    return dataclasses.replace(truth, expr=truth.expr + noise,
                               rotation=truth.rotation + math.radians(rot_deg) * torch.randn(n, 3, generator=g),
                               translation=truth.translation + trans_m * torch.randn(n, 3, generator=g))


def _reprojection_px(scene: Scene, params: HeadParams, region: str | None = None) -> float:
    """Mean image distance between the vertices of ``params`` and of the truth."""
    with torch.no_grad():
        a, b = scene.head(params), scene.head(scene.truth)
        if region is not None:
            idx = scene.head.regions[region]
            a, b = a[:, idx], b[:, idx]
        return float((scene.cameras.project(a)[0] - scene.cameras.project(b)[0]).norm(dim=-1).mean())


@pytest.fixture(scope="module")
def ict_scene() -> Scene:
    """A `gafkit synth` subject (ICT, procedural look) rendered in memory: 4 frames at 96 px."""
    cfg = SynthConfig(frames=FRAMES, size=SIZE, seed=1)
    subject = make_subject(cfg)
    cams = Cameras(K=subject.camera.K.expand(FRAMES, 3, 3), w2c=subject.camera.w2c.expand(FRAMES, 4, 4),
                   width=SIZE, height=SIZE)
    with torch.no_grad():
        images, masks, _ = render_views(subject, subject.head(subject.params), cams, cfg)
    return Scene(subject.head, subject.params, cams, torch.from_numpy(images), torch.from_numpy(masks))


def _toy_scene(frames: int = 6, size: int = 96, gain: torch.Tensor | None = None) -> Scene:
    """The ellipsoid toy head (no UVs: per-vertex albedo) with a colourful albedo, turning and
    changing expression; ``gain`` [N] scales each frame's brightness (auto-exposure)."""
    head = ToyHead()
    g = torch.Generator().manual_seed(0)
    dirs = F.normalize(torch.randn(8, 3, generator=g), dim=-1)
    waves = torch.sin(head.template @ dirs.T * 2 * math.pi / 0.04 + torch.rand(8, generator=g) * 6)
    colors = (0.55 + 0.25 * waves[:, :3] * torch.tensor([1.0, 0.8, 0.6]) + 0.1 * waves[:, 3:6]).clamp(0.05, 0.95)
    cam = default_camera(size, size, 20.0)
    cams = Cameras(K=cam.K.expand(frames, 3, 3), w2c=cam.w2c.expand(frames, 4, 4), width=size, height=size)
    t = torch.linspace(0, 1, frames)
    truth = head.zero_params(frames)
    truth.rotation = torch.stack([0.15 * torch.sin(6 * t), 0.4 * torch.sin(4 * t + 1), 0.05 * torch.cos(5 * t)], -1)
    truth.translation = torch.stack([0.01 * torch.sin(3 * t), 0.005 * torch.cos(4 * t), -0.6 + 0.01 * torch.sin(2 * t)], -1)
    truth.expr = 0.5 * torch.sin(torch.arange(6)[None] * 1.3 + t[:, None] * 5)
    with torch.no_grad():
        rgb, cover = render_shaded(head(truth), head.faces, cams.scaled(2), colors=colors[None],
                                   light_dir=(-0.3, -0.4, -1.0), ambient=0.35, backend="torch")
    if gain is not None:
        rgb = rgb * gain[:, None, None, None]
    rgb = F.avg_pool2d(rgb.permute(0, 3, 1, 2), 2)
    alpha = F.avg_pool2d(cover[:, None].float(), 2)
    images = ((rgb + (1 - alpha)) * 255).round().clamp(0, 255).byte().permute(0, 2, 3, 1)
    return Scene(head, truth, cams, images, (alpha[:, 0] * 255).round().byte())


def test_ict_refinement_reduces_photometric_error_and_moves_toward_the_truth(ict_scene):
    """No landmarks: only the pixels can pull the perturbed fit back toward the true parameters."""
    head = ict_scene.head
    names = {n: i for i, n in enumerate(head.expression_names)}
    ids = [names[n] for n in ("jawOpen", "mouthSmile_L", "mouthSmile_R", "browInnerUp_L", "eyeBlink_L")]
    start = _perturb(ict_scene.truth, 5, rot_deg=2.0, trans_m=0.003, expr=0.15, expr_ids=ids)
    start.expr = start.expr.clamp(0, 1)
    cfg = PhotometricConfig(appearance_steps=10, steps=30)
    result = refine_photometric(head, start, ict_scene.cameras, ict_scene.images, ict_scene.masks, None, cfg, "cpu")
    m = result.metrics
    assert m["albedo"] == "uv texture 48x240"  # 5 atlas tiles of half the render width
    assert m["photometric_l1_after"] < 0.6 * m["photometric_l1_before"], m
    assert m["psnr_db_after"] > m["psnr_db_before"] + 2
    before, after = _reprojection_px(ict_scene, start, "face"), _reprojection_px(ict_scene, result.params, "face")
    assert after < 0.6 * before, (before, after)  # measured 1.76 px -> 0.48 px at 96 px
    assert torch.equal(result.params.shape, start.shape)  # identity fixed
    assert result.errors_px is None and "landmark_error_mean_px_after" not in m
    assert ((result.params.expr >= 0) & (result.params.expr <= 1)).all()  # ICT blendshape bounds kept


def test_vertex_albedo_refinement_moves_toward_the_truth():
    """Models without UVs (FLAME pickles, here the toy head) get per-vertex albedo."""
    scene = _toy_scene()
    start = _perturb(scene.truth, 1, rot_deg=3.0, trans_m=0.003, expr=0.2)
    cfg = PhotometricConfig(appearance_steps=10, steps=30)
    result = refine_photometric(scene.head, start, scene.cameras, scene.images, scene.masks, None, cfg, "cpu")
    assert result.metrics["albedo"] == "per vertex" and result.albedo.shape == (scene.head.num_vertices, 3)
    before, after = _reprojection_px(scene, start), _reprojection_px(scene, result.params)
    assert after < 0.6 * before, (before, after)
    err = lambda p: float((p.rotation - scene.truth.rotation).norm(dim=-1).mean())  # noqa: E731
    assert err(result.params) < 0.7 * err(start)


def test_landmark_term_holds_the_fit_to_the_detections():
    """Landmarks detected at the perturbed pose: a strong landmark weight keeps the fit there, without
    the term the pixels pull it away (toward the truth)."""
    scene = _toy_scene(frames=4)
    start = _perturb(scene.truth, 2, rot_deg=3.0, trans_m=0.003, expr=0.2)
    with torch.no_grad():
        detected, _ = scene.cameras.project(scene.head.landmark_points(scene.head(start)))
    detected[1, :10] = float("nan")  # missed points carry no term
    runs = {}
    for name, weight in (("held", 1.0), ("free", None)):
        cfg = PhotometricConfig(appearance_steps=5, steps=20, w=PhotometricWeights(landmarks=weight))
        runs[name] = refine_photometric(scene.head, start, scene.cameras, scene.images, scene.masks, detected,
                                        cfg, "cpu")
    held, free = runs["held"], runs["free"]
    assert held.errors_px.shape == (4, 478) and torch.isnan(held.errors_px[1, :10]).all()
    assert held.metrics["landmark_error_mean_px_before"] == 0.0
    assert held.metrics["landmark_error_mean_px_after"] < 0.3
    assert free.metrics["landmark_error_mean_px_after"] > 3 * held.metrics["landmark_error_mean_px_after"]
    assert _reprojection_px(scene, free.params) < _reprojection_px(scene, held.params)


def test_per_frame_lighting_explains_exposure_changes():
    gain = torch.tensor([0.75, 1.0, 1.25, 0.9])
    scene = _toy_scene(frames=4, gain=gain)
    l1 = {}
    for per_frame in (False, True):
        cfg = PhotometricConfig(appearance_steps=40, steps=0, per_frame_light=per_frame)
        result = refine_photometric(scene.head, scene.truth, scene.cameras, scene.images, scene.masks, None, cfg,
                                    "cpu")
        assert torch.equal(result.params.rotation, scene.truth.rotation)  # steps=0: parameters untouched
        l1[per_frame] = result.metrics["photometric_l1_after"]
        if per_frame:
            # The frame offsets follow the gain: the darkest frame gets the lowest ambient (DC) term.
            dc = result.light_frame[:, 0].mean(-1)
            assert int(dc.argmin()) == 0 and int(dc.argmax()) == 2
    assert l1[True] < 0.6 * l1[False], l1


def test_uv_atlas_gives_eyeballs_their_own_tile():
    """ICT maps its eyeballs onto the face's UV square; the atlas must not let them share texels."""
    head = load_head_model("ict")
    atlas = uv_atlas(head)
    in_eye = torch.zeros(head.num_vertices, dtype=torch.bool)
    in_eye[head.regions["eyes"]] = True
    eye_tri = in_eye[head.faces].all(1)
    u = atlas.uv[atlas.faces][..., 0] * atlas.tiles  # [F, 3] in tile units
    eye_tiles = set(u[eye_tri].floor().long().unique().tolist())
    other_tiles = set(u[~eye_tri].floor().long().unique().tolist())
    assert atlas.tiles == 5 and not eye_tiles & other_tiles
    assert float(atlas.uv.min()) >= 0 and float(atlas.uv.max()) <= 1


def test_fill_holes_keeps_observed_texels_and_extrapolates_the_rest():
    total, weight = torch.zeros(8, 8, 3), torch.zeros(8, 8)
    total[1, 1], weight[1, 1] = torch.tensor([0.4, 0.2, 0.1]) * 2, 2.0
    total[6, 6], weight[6, 6] = torch.tensor([0.8, 0.8, 0.8]), 1.0
    out = fill_holes(total, weight)
    assert torch.allclose(out[1, 1], torch.tensor([0.4, 0.2, 0.1])) and torch.allclose(out[6, 6], torch.tensor(0.8))
    assert torch.allclose(out[0, 0], torch.tensor([0.4, 0.2, 0.1]))  # nearest observed colour wins nearby
    assert (out > 0).all()  # no black holes


def test_load_frames_downsamples_by_area_and_names_unreadable_files(tmp_path):
    from PIL import Image

    image = np.zeros((8, 8, 3), np.uint8)
    image[:, ::2] = 200  # alternating columns average to 100
    mask = np.full((8, 8), 255, np.uint8)
    mask[:4] = 0
    Image.fromarray(image).save(tmp_path / "i ü.png")
    Image.fromarray(mask).save(tmp_path / "m.png")
    images, masks = load_frames([tmp_path / "i ü.png"], [tmp_path / "m.png"], width=4)
    assert images.shape == (1, 4, 4, 3) and images.dtype == torch.uint8 and (images == 100).all()
    assert (masks[0, :2] == 0).all() and (masks[0, 2:] == 255).all()
    full, _ = load_frames([tmp_path / "i ü.png"], [tmp_path / "m.png"], width=16)  # never upsampled
    assert full.shape == (1, 8, 8, 3)
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(InputError, match="bad.png"):
        load_frames([tmp_path / "i ü.png"], [tmp_path / "bad.png"], width=4)


def test_enabled_resolution_and_bad_settings():
    assert photometric_enabled(PhotometricConfig(), "cuda") and not photometric_enabled(PhotometricConfig(), "cpu")
    assert photometric_enabled(PhotometricConfig(enabled=True), "cpu")
    assert not photometric_enabled(PhotometricConfig(enabled=False), "cuda")
    scene = _toy_scene(frames=2, size=32)
    for bad in (PhotometricConfig(sh_order=3), PhotometricConfig(batch_size=0)):
        with pytest.raises(GafkitError, match="photometric"):
            refine_photometric(scene.head, scene.truth, scene.cameras, scene.images, scene.masks, None, bad, "cpu")


def test_cli_flag_reaches_the_config(monkeypatch, tmp_path):
    import gafkit.trackers.track as track_module

    seen = []
    monkeypatch.setattr(track_module, "run_track", lambda cfg, *a, **k: seen.append(cfg.photometric.enabled))
    for flag in ([], ["--photometric"], ["--no-photometric"]):
        result = runner.invoke(app, ["track", str(EXAMPLE_VIDEO), "-o", str(tmp_path / "o"), *flag])
        assert result.exit_code == 0, result.output
    assert seen == [None, True, False]


def test_track_with_and_without_photometric(tmp_path):
    """The same tiny clip tracked twice: ``--no-photometric`` writes the landmark fit untouched and no
    photometric section; ``--photometric`` (forced on the CPU) refines it and reports before/after."""
    common = ["--device", "cpu", "track", str(EXAMPLE_VIDEO), "--size", "96", "--max-frames", "4", "--preset", "fast",
              "--set", "photometric.steps=8", "--set", "photometric.appearance_steps=4", "--set", "overlay=false"]
    outs = {}
    for flag in ("--no-photometric", "--photometric"):
        outs[flag] = tmp_path / flag.strip("-")
        result = runner.invoke(app, [*common, "-o", str(outs[flag]), flag])
        assert result.exit_code == 0, result.output
    off = json.loads((outs["--no-photometric"] / "tracking.json").read_text())
    on = json.loads((outs["--photometric"] / "tracking.json").read_text())
    assert "photometric" not in off and off["summary"]["photometric"] is False
    assert "photometric" not in off["summary"]["stage_fps"]
    section = on["photometric"]
    assert on["summary"]["photometric"] is True and on["summary"]["stage_fps"]["photometric"] > 0
    assert section["steps"] == 8 and section["render_size"] == 96 and len(section["per_frame_l1_after"]) == 4
    assert section["photometric_l1_after"] < section["photometric_l1_before"]
    # The fit before refinement is the one written without it; the summary describes the refined fit.
    assert section["landmark_error_mean_px_before"] == pytest.approx(off["summary"]["landmark_error_mean_px"], rel=1e-4)
    assert on["summary"]["landmark_error_mean_px"] == pytest.approx(section["landmark_error_mean_px_after"], rel=1e-4)
    p_off, p_on = (np.load(outs[k] / "head_params.npz") for k in ("--no-photometric", "--photometric"))
    assert np.array_equal(p_off["shape"], p_on["shape"])
    assert not np.allclose(p_off["expr"], p_on["expr"]) and not np.allclose(p_off["rotation"], p_on["rotation"])
    from gafkit.artifact import read_manifest

    assert "photometric" in read_manifest(outs["--photometric"]).timings
    assert "photometric" not in read_manifest(outs["--no-photometric"]).timings
