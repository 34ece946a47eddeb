"""``gafkit import vhap``: VHAP monocular exports -> tracked sequences; conventions; user errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from gafkit.artifact import read_manifest, write_artifact
from gafkit.cli import app
from gafkit.heads.base import HeadParams
from gafkit.heads.lbs import lbs
from gafkit.render.camera import Cameras
from gafkit.trackers.sequence import contiguous_splits, load_sequence, write_sequence

runner = CliRunner()
SIZE = 32


@pytest.fixture(autouse=True)
def _no_flame_env(monkeypatch):
    monkeypatch.delenv("GAFKIT_FLAME_MODEL", raising=False)


def c2w_matrix(t: int) -> np.ndarray:
    """OpenGL camera-to-world: the camera 1 m in front of the head, turning slightly per frame."""
    angle = 0.05 * t
    m = np.eye(4)
    m[0, 0], m[0, 2], m[2, 0], m[2, 2] = math.cos(angle), math.sin(angle), -math.sin(angle), math.cos(angle)
    m[:3, 3] = [0.01 * t, -0.02, 1.0]
    return m


def make_export(root: Path, n: int = 4, n_shape: int = 300, n_expr: int = 100, offset_rows: int | None = None,
                dynamic: bool = False, seed: int = 0) -> dict:
    """A VHAP monocular export as export_as_nerf_dataset.py lays it out; returns what it wrote."""
    rng = np.random.default_rng(seed)
    for d in ("images", "fg_masks", "flame_param"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shape = rng.normal(size=n_shape).astype(np.float32)
    static = rng.normal(scale=1e-3, size=(1, offset_rows, 3)).astype(np.float32) if offset_rows else None
    frames, params = [], []
    for t in range(n):
        name = f"{t:05d}_00.png"
        Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(root / "images" / name)
        Image.fromarray((rng.random((SIZE, SIZE)) > 0.5).astype(np.uint8) * 255).save(root / "fg_masks" / name)
        p = {"translation": rng.normal(scale=0.01, size=(1, 3)), "rotation": rng.normal(scale=0.2, size=(1, 3)),
             "neck_pose": rng.normal(scale=0.1, size=(1, 3)), "jaw_pose": rng.normal(scale=0.1, size=(1, 3)),
             "eyes_pose": rng.normal(scale=0.1, size=(1, 6)), "shape": shape,
             "expr": rng.normal(size=(1, n_expr))}
        p = {k: np.asarray(v, np.float32) for k, v in p.items()}
        if static is not None:
            p["static_offset"] = static
        if dynamic:
            p["dynamic_offset"] = rng.normal(scale=1e-3, size=(1, offset_rows, 3)).astype(np.float32)
        np.savez(root / "flame_param" / f"{t:05d}.npz", **p)
        params.append(p)
        frames.append({
            "timestep_index": t, "timestep_index_original": 10 + 2 * t, "timestep_id": f"frame_{10 + 2 * t:05d}",
            "camera_index": 0, "camera_id": "0", "cx": 16.5, "cy": 15.0, "fl_x": 40.0, "fl_y": 41.0, "h": SIZE,
            "w": SIZE, "camera_angle_x": 0.7, "camera_angle_y": 0.7, "transform_matrix": c2w_matrix(t).tolist(),
            "file_path": f"images/{name}", "fg_mask_path": f"fg_masks/{name}",
            "flame_param_path": f"flame_param/{t:05d}.npz",
        })
    top = {"cx": 16.5, "cy": 15.0, "fl_x": 40.0, "fl_y": 41.0, "h": SIZE, "w": SIZE,
           "timestep_indices": list(range(n)), "camera_indices": [0]}
    write_json(root / "transforms.json", {**top, "frames": frames})
    # VHAP's monocular split: the first 70 % of the timesteps train, the rest test, val is empty.
    n_train = math.ceil(0.7 * n)
    for name, part in (("train", frames[:n_train]), ("val", []), ("test", frames[n_train:])):
        write_json(root / f"transforms_{name}.json", {**top, "frames": part})
    canonical = {"translation": np.zeros((1, 3)), "rotation": np.zeros((1, 3)), "neck_pose": np.zeros((1, 3)),
                 "jaw_pose": np.array([[0.3, 0, 0]]), "eyes_pose": np.zeros((1, 6)), "shape": shape,
                 "expr": np.zeros((1, n_expr))}
    if static is not None:
        canonical["static_offset"] = static
    np.savez(root / "canonical_flame_param.npz", **canonical)
    return {"frames": frames, "params": params, "n_train": n_train}


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")


def run_import(*args: str):
    return runner.invoke(app, ["import", "vhap", *map(str, args)])


def test_import_monocular_export(tmp_path):
    src = tmp_path / "export obama é"  # spaces and non-ASCII
    made = make_export(src, n=5, offset_rows=50)
    out = tmp_path / "seq"
    result = run_import(src, "-o", out, "--fps", "30")
    assert result.exit_code == 0, result.output
    assert "translations are kept in VHAP's convention" in result.output  # no model: said so
    assert read_manifest(out, "tracked").extra["translation"] == "as exported"
    seq = load_sequence(out)
    assert len(seq) == 5 and seq.head_model == "flame"
    exported = made["params"]
    for field, key in (("rotation", "rotation"), ("translation", "translation"), ("neck", "neck_pose"),
                       ("jaw", "jaw_pose"), ("eyes", "eyes_pose"), ("expr", "expr")):
        assert torch.equal(getattr(seq.params, field), torch.from_numpy(np.concatenate([p[key] for p in exported])))
    assert seq.params.shape.shape == (5, 300) and torch.equal(seq.params.shape[3], torch.from_numpy(exported[0]["shape"]))
    assert seq.params.offsets.shape == (5, 50, 3)
    assert torch.equal(seq.params.offsets[2], torch.from_numpy(exported[2]["static_offset"][0]))
    # Cameras: per-frame intrinsics and OpenGL c2w, exactly as exported.
    assert seq.cameras.K[0].tolist() == [[40.0, 0.0, 16.5], [0.0, 41.0, 15.0], [0.0, 0.0, 1.0]]
    c2w = torch.tensor(np.stack([c2w_matrix(t) for t in range(5)]), dtype=torch.float32)
    assert torch.allclose(seq.cameras.to_opengl_c2w(), c2w, atol=1e-6)
    assert (seq.cameras.width, seq.cameras.height) == (SIZE, SIZE)
    # Files keep their names and bytes; splits and times come from the export.
    assert [p.name for p in seq.images] == [f"{t:05d}_00.png" for t in range(5)]
    assert (out / "images/00003_00.png").read_bytes() == (src / "images/00003_00.png").read_bytes()
    assert (out / "fg_masks/00001_00.png").read_bytes() == (src / "fg_masks/00001_00.png").read_bytes()
    assert seq.splits == {"train": [0, 1, 2, 3], "val": [], "test": [4]}
    assert seq.frames[2] == {"index": 14, "timestamp": pytest.approx(14 / 30)}
    flame = np.load(out / "flame_param/00004.npz")
    assert np.array_equal(flame["expr"], exported[4]["expr"])


def test_dynamic_offsets_add_to_the_static_ones(tmp_path):
    made = make_export(tmp_path / "src", n=3, n_shape=20, n_expr=10, offset_rows=12, dynamic=True)
    assert run_import(tmp_path / "src", "-o", tmp_path / "seq").exit_code == 0
    seq = load_sequence(tmp_path / "seq")
    p = made["params"][1]
    assert torch.allclose(seq.params.offsets[1], torch.from_numpy(p["static_offset"][0] + p["dynamic_offset"][0]))


def test_gafkit_flame_sequence_imports_back_equal(tmp_path):
    n = 6
    g = torch.Generator().manual_seed(1)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    params = HeadParams(shape=r(1, 8).expand(n, 8).clone(), expr=r(n, 5), rotation=r(n, 3) * 0.1,
                        translation=r(n, 3), neck=r(n, 3), jaw=r(n, 3), eyes=r(n, 6),
                        offsets=(r(1, 40, 3) * 1e-3).expand(n, 40, 3).clone())
    cams = Cameras.look_at(torch.tensor([[0.1, 0.0, 1.0]]).expand(n, 3), torch.zeros(n, 3), fov_deg=20,
                           width=16, height=16)
    frames = [{"index": 3 * i, "timestamp": 0.12 * i} for i in range(n)]
    with write_artifact(tmp_path / "orig", "tracked", config={"head": "flame"}) as art:
        for d in ("images", "fg_masks"):
            (art.dir / d).mkdir()
        for i in range(n):
            Image.fromarray(np.full((16, 16, 3), 20 * i, np.uint8)).save(art.dir / f"images/{i:05d}.png")
            Image.fromarray(np.full((16, 16), 255, np.uint8)).save(art.dir / f"fg_masks/{i:05d}.png")
        write_sequence(art.dir, head_model="flame", params=params, cameras=cams,
                       image_files=[f"images/{i:05d}.png" for i in range(n)],
                       mask_files=[f"fg_masks/{i:05d}.png" for i in range(n)], frames=frames,
                       splits=contiguous_splits(n))
    result = run_import(tmp_path / "orig", "-o", tmp_path / "back")
    assert result.exit_code == 0, result.output
    orig, back = load_sequence(tmp_path / "orig"), load_sequence(tmp_path / "back")
    for key, value in orig.params.tensors().items():
        assert torch.equal(back.params.tensors()[key], value), key
    assert torch.allclose(back.cameras.w2c, orig.cameras.w2c, atol=1e-6) and torch.equal(back.cameras.K, orig.cameras.K)
    assert back.splits == orig.splits and back.frames == orig.frames
    assert [p.name for p in back.images] == [p.name for p in orig.images]


def vhap_flame_vertices(model, params: HeadParams) -> torch.Tensor:
    """VHAP's FLAME: the head rotation in the root joint (about the shaped mesh's root), then translation."""
    coeffs = torch.cat([params.shape, params.expr], dim=-1)
    pose = torch.stack([params.rotation, params.neck, params.jaw, params.eyes[:, :3], params.eyes[:, 3:]], 1)
    verts, _ = lbs(coeffs, pose, model.template, model.dirs, model.posedirs, model.j_regressor, model.parents,
                   model.weights, params.offsets)
    return verts + params.translation[:, None]


def test_flame_model_checks_sizes_and_converts_the_rotation_centre(tmp_path):
    from heads.flame_fixture import write_flame_pickle

    from gafkit.heads.flame import FlameHead

    pkl = tmp_path / "flame.pkl"
    write_flame_pickle(pkl, n_expr=20)
    n_verts = FlameHead.from_pickle(pkl).num_vertices
    # Offsets with 120 extra rows, as VHAP's FLAME with teeth writes them.
    made = make_export(tmp_path / "src", n=3, n_shape=300, n_expr=20, offset_rows=n_verts + 120)
    result = run_import(tmp_path / "src", "-o", tmp_path / "seq", "--flame-model", pkl)
    assert result.exit_code == 0, result.output
    seq = load_sequence(tmp_path / "seq")
    assert seq.params.offsets.shape == (3, n_verts, 3)
    assert read_manifest(tmp_path / "seq", "tracked").extra["translation"] == "converted to gafkit's pivot"
    model = FlameHead.from_pickle(pkl, n_shape=300, n_expr=20)
    exported = made["params"]
    as_vhap = dataclass_params(exported, n_verts)
    with torch.no_grad():
        expected = vhap_flame_vertices(model, as_vhap)
        got = model(seq.params)
    assert (got - expected).abs().max() < 1e-6
    # The conversion is not a no-op: the rotation centre moved with identity and expression.
    assert (seq.params.translation - as_vhap.translation).abs().max() > 1e-4
    assert torch.equal(seq.params.expr, as_vhap.expr) and torch.equal(seq.params.rotation, as_vhap.rotation)

    # More expression coefficients than the model has, and offsets for fewer vertices: refused.
    make_export(tmp_path / "big", n=2, n_shape=300, n_expr=30)
    result = run_import(tmp_path / "big", "-o", tmp_path / "o2", "--flame-model", pkl)
    assert result.exit_code == 2 and "30 expression coefficients" in result.output and "20" in result.output
    make_export(tmp_path / "few", n=2, n_shape=300, n_expr=20, offset_rows=n_verts - 1)
    result = run_import(tmp_path / "few", "-o", tmp_path / "o3", "--flame-model", pkl)
    assert result.exit_code == 2 and f"{n_verts - 1} vertices" in result.output
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()


def test_gafkit_flame_sequence_round_trips_through_the_model(tmp_path):
    """Written with the model (flame_param in VHAP's convention), imported with it: gafkit's params back."""
    from heads.flame_fixture import write_flame_pickle

    from gafkit.heads.flame import FlameHead

    pkl = tmp_path / "flame.pkl"
    write_flame_pickle(pkl, n_expr=5)
    model = FlameHead.from_pickle(pkl, n_shape=8, n_expr=5)
    n = 4
    g = torch.Generator().manual_seed(2)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    params = HeadParams(shape=r(1, 8).expand(n, 8).clone(), expr=r(n, 5), rotation=r(n, 3) * 0.4,
                        translation=r(n, 3) * 0.1, neck=r(n, 3) * 0.2, jaw=r(n, 3) * 0.2, eyes=r(n, 6) * 0.2,
                        offsets=(r(1, model.num_vertices, 3) * 1e-2).expand(n, -1, -1).clone())
    cams = Cameras.look_at(torch.tensor([[0.0, 0.0, 1.0]]).expand(n, 3), torch.zeros(n, 3), fov_deg=20,
                           width=16, height=16)
    with write_artifact(tmp_path / "orig", "tracked", config={"head": "flame"}) as art:
        for d in ("images", "fg_masks"):
            (art.dir / d).mkdir()
        for i in range(n):
            Image.fromarray(np.full((16, 16, 3), 30 * i, np.uint8)).save(art.dir / f"images/{i:05d}.png")
            Image.fromarray(np.full((16, 16), 255, np.uint8)).save(art.dir / f"fg_masks/{i:05d}.png")
        write_sequence(art.dir, head_model="flame", params=params, cameras=cams,
                       image_files=[f"images/{i:05d}.png" for i in range(n)],
                       mask_files=[f"fg_masks/{i:05d}.png" for i in range(n)],
                       frames=[{"index": i, "timestamp": 0.04 * i} for i in range(n)], splits=contiguous_splits(n),
                       model=model)
    # The written files drive VHAP's FLAME (rotation in the root joint) to gafkit's vertices.
    exported = [dict(np.load(tmp_path / f"orig/flame_param/{i:05d}.npz")) for i in range(n)]
    with torch.no_grad():
        as_vhap = dataclass_params(exported, model.num_vertices)
        assert (vhap_flame_vertices(model, as_vhap) - model(params)).abs().max() < 1e-5
    assert (as_vhap.translation - params.translation).abs().max() > 1e-3

    result = run_import(tmp_path / "orig", "-o", tmp_path / "back", "--flame-model", pkl)
    assert result.exit_code == 0, result.output
    back = load_sequence(tmp_path / "back")
    for key, value in params.tensors().items():
        assert torch.allclose(back.params.tensors()[key], value, atol=1e-6), key
    # Exported again, the VHAP files come out as they went in.
    for i in range(n):
        again = np.load(tmp_path / f"back/flame_param/{i:05d}.npz")
        assert np.allclose(again["translation"], exported[i]["translation"], atol=1e-6)


def dataclass_params(exported: list[dict], rows: int) -> HeadParams:
    cat = lambda k: torch.from_numpy(np.concatenate([p[k] for p in exported]))  # noqa: E731
    return HeadParams(shape=torch.from_numpy(np.stack([p["shape"] for p in exported])), expr=cat("expr"),
                      rotation=cat("rotation"), translation=cat("translation"), neck=cat("neck_pose"),
                      jaw=cat("jaw_pose"), eyes=cat("eyes_pose"), offsets=cat("static_offset")[:, :rows])


def _edit_json(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    write_json(path, data)


def _drop_key(path: Path, key: str) -> None:
    data = dict(np.load(path))
    del data[key]
    np.savez(path, **data)


def _set_key(path: Path, key: str, value) -> None:
    data = dict(np.load(path))
    data[key] = value
    np.savez(path, **data)


BAD = {
    # name: (how to break a fresh export, file the error names, words in it)
    "not_a_folder": (lambda s: None, "transforms.json", "not a folder"),
    "no_transforms": (lambda s: (s / "transforms.json").unlink(), "src", "not a VHAP export"),
    "bad_json": (lambda s: (s / "transforms.json").write_text("{frames"), "transforms.json", "unreadable json"),
    "no_frames": (lambda s: _edit_json(s / "transforms.json", lambda d: d.update(frames=[])), "transforms.json",
                  "no frames"),
    "mesh_mode": (lambda s: _edit_json(s / "transforms.json", lambda d: [f.pop("flame_param_path") for f in d["frames"]]),
                  "transforms.json", "flame_param_path"),
    "two_cameras": (lambda s: _edit_json(s / "transforms.json", lambda d: d["frames"][1].update(camera_index=1)),
                    "transforms.json", "2 cameras"),
    "missing_image": (lambda s: (s / "images/00002_00.png").unlink(), "00002_00.png", "missing"),
    "missing_mask_entry": (lambda s: _edit_json(s / "transforms.json", lambda d: d["frames"][1].pop("fg_mask_path")),
                           "transforms.json", "frame 1 has no fg_mask_path"),
    "missing_params": (lambda s: (s / "flame_param/00001.npz").unlink(), "00001.npz", "missing"),
    "npz_without_expr": (lambda s: _drop_key(s / "flame_param/00002.npz", "expr"), "00002.npz", "missing expr"),
    "npz_bad_shape": (lambda s: _set_key(s / "flame_param/00000.npz", "eyes_pose", np.zeros((1, 3))), "00000.npz",
                      "eyes_pose has shape (1, 3)"),
    "npz_other_expr_size": (lambda s: _set_key(s / "flame_param/00003.npz", "expr", np.zeros((1, 50))), "00003.npz",
                            "expr has shape (50,)"),
    "npz_nan": (lambda s: _set_key(s / "flame_param/00001.npz", "jaw_pose", np.full((1, 3), np.nan)), "00001.npz",
                "NaN"),
    "npz_corrupt": (lambda s: (s / "flame_param/00001.npz").write_text("not a zip"), "00001.npz", "not a readable .npz"),
    "image_size": (lambda s: Image.new("RGB", (40, 32)).save(s / "images/00001_00.png"), "00001_00.png",
                   "is 40x32 but transforms.json says 32x32"),
    "unknown_split_frame": (lambda s: _edit_json(s / "transforms_test.json",
                                                 lambda d: d["frames"][0].update(file_path="images/x.png")),
                            "transforms_test.json", "not in transforms.json"),
    "duplicate_timestep": (lambda s: _edit_json(s / "transforms.json", lambda d: d["frames"][2].update(timestep_index=1)),
                           "transforms.json", "timestep_index 1 appears more than once"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_exports_exit_2_without_output(tmp_path, case):
    src = tmp_path / "src"
    make_export(src, n=4, n_shape=10, n_expr=6)
    breaker, names, words = BAD[case]
    if case == "not_a_folder":
        src = src / "transforms.json"
    breaker(src)
    out = tmp_path / "out"
    result = run_import(src, "-o", out)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and result.output.strip().endswith(errors[0]), result.output  # one line, last
    assert names in errors[0] and words in errors[0], errors[0]
    assert not out.exists() and not (tmp_path / "out.partial").exists()
