"""FlameHead on synthetic FLAME files: LBS against an independent reference, joints, gradients, cache."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from flame_fixture import write_flame_pickle
from scipy.spatial.transform import Rotation

from gafkit.errors import GafkitError, InputError
from gafkit.heads import load_head_model
from gafkit.heads.base import LandmarkEmbedding
from gafkit.heads.flame import FlameHead
from gafkit.heads.landmark_cache import cache_path, load_cached_embedding, save_cached_embedding

N_EXPR = 100


@pytest.fixture(scope="module")
def flame_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("flame") / "generic_model.pkl"
    arrays = write_flame_pickle(path, layout="2020", n_expr=N_EXPR, seed=1)
    return path, arrays


@pytest.fixture(scope="module")
def head(flame_file):
    return FlameHead.from_pickle(flame_file[0])


def random_params(head: FlameHead, batch: int, seed: int, scale: float = 0.4):
    g = torch.Generator().manual_seed(seed)
    p = head.zero_params(batch)
    for name in ("shape", "expr", "rotation", "translation", "neck", "jaw", "eyes"):
        value = getattr(p, name)
        setattr(p, name, (torch.rand(value.shape, generator=g) - 0.5) * 2 * scale)
    p.offsets = (torch.rand(batch, head.num_vertices, 3, generator=g) - 0.5) * 2e-3
    return p


def reference_vertices(arrays: dict, params) -> np.ndarray:
    """FLAME forward written independently: float64 numpy, 4x4 homogeneous chain, per-joint loop."""
    parents = [-1, 0, 1, 1, 1]
    out = []
    for b in range(params.batch_size):
        coeffs = np.concatenate([params.shape[b].double().numpy(), params.expr[b].double().numpy()])
        dirs = np.concatenate([arrays["shapedirs"][..., :300][..., : params.shape.shape[1]],
                               arrays["shapedirs"][..., 300:][..., : params.expr.shape[1]]], axis=-1)
        v = arrays["v_template"] + np.tensordot(dirs, coeffs, axes=([2], [0]))
        v = v + params.offsets[b].double().numpy()
        joints = arrays["J_regressor"] @ v
        eyes = params.eyes[b].double().numpy()
        rotvecs = [np.zeros(3), params.neck[b].double().numpy(), params.jaw[b].double().numpy(), eyes[:3], eyes[3:]]
        rots = [Rotation.from_rotvec(r).as_matrix() for r in rotvecs]
        feature = np.concatenate([(r - np.eye(3)).reshape(-1) for r in rots[1:]])
        v = v + arrays["posedirs"] @ feature
        world = []
        for j, parent in enumerate(parents):
            local = np.eye(4)
            local[:3, :3] = rots[j]
            local[:3, 3] = joints[j] - (joints[parent] if parent >= 0 else 0)
            world.append(local if parent < 0 else world[parent] @ local)
        skinned = np.zeros_like(v)
        homog = np.concatenate([v, np.ones((len(v), 1))], axis=1)
        for j in range(5):
            unshift = np.eye(4)
            unshift[:3, 3] = -joints[j]
            skinned += arrays["weights"][:, j : j + 1] * (homog @ (world[j] @ unshift).T)[:, :3]
        pivot = (arrays["J_regressor"] @ arrays["v_template"])[0]
        rot = Rotation.from_rotvec(params.rotation[b].double().numpy()).as_matrix()
        out.append((skinned - pivot) @ rot.T + pivot + params.translation[b].double().numpy())
    return np.stack(out)


def test_loads_with_flame_layout(head, flame_file):
    _, arrays = flame_file
    assert head.n_shape == 300 and head.n_expr == N_EXPR
    assert head.expression_names[:3] == ["0", "1", "2"] and len(head.expression_names) == N_EXPR
    assert head.has_jaw_joint and head.has_eye_joints and head.uvs is None and head.landmarks is None
    assert head.faces.dtype == torch.long and tuple(head.faces.shape) == arrays["f"].shape
    torch.testing.assert_close(head.pivot, torch.tensor((arrays["J_regressor"] @ arrays["v_template"])[0]).float())
    torch.testing.assert_close(head(head.zero_params(2)), head.template.expand(2, -1, -1))


def test_forward_matches_independent_reference(head, flame_file):
    params = random_params(head, batch=3, seed=0)
    ours = head(params).double().numpy()
    ref = reference_vertices(flame_file[1], params)
    assert np.abs(ours - ref).max() < 1e-5


def test_2023_layout_and_clipped_sizes(tmp_path):
    path = tmp_path / "flame2023.pkl"
    arrays = write_flame_pickle(path, layout="2023", n_expr=50, seed=2)
    head = FlameHead.from_pickle(path, n_shape=20, n_expr=400)
    assert head.n_shape == 20 and head.n_expr == 50
    params = random_params(head, batch=2, seed=3)
    assert np.abs(head(params).double().numpy() - reference_vertices(arrays, params)).max() < 1e-5


def test_jaw_moves_only_jaw_weighted_vertices(head):
    params = head.zero_params(1)
    params.jaw = torch.tensor([[0.35, 0.05, -0.02]])
    moved = (head(params) - head.template).norm(dim=-1)[0]
    jaw_weighted = head.weights[:, 2] > 0
    assert moved[~jaw_weighted].max() < 1e-7
    assert moved[jaw_weighted].max() > 1e-3


def test_eyes_turn_about_their_joints(head):
    params = head.zero_params(1)
    params.eyes = torch.tensor([[0.0, 0.4, 0.0, 0.0, 0.0, 0.0]])
    moved = (head(params) - head.template).norm(dim=-1)[0]
    left = head.weights[:, 3] > 0.5
    assert moved[left].min() > 1e-4 and moved[~left].max() < 1e-7
    # Without pose correctives an eyeball turns rigidly about its joint (the regressed centre).
    rigid = copy.deepcopy(head)
    rigid.posedirs.zero_()
    centre = (head.j_regressor @ head.template)[3]
    posed = rigid(params)[0, left]
    torch.testing.assert_close((posed - centre).norm(dim=-1), (head.template[left] - centre).norm(dim=-1))


def test_gradients_reach_every_parameter(head):
    params = random_params(head, batch=2, seed=5, scale=0.2)
    for value in params.tensors().values():
        value.requires_grad_(True)
    weights = torch.randn(2, head.num_vertices, 3, generator=torch.Generator().manual_seed(0))
    (head(params) * weights).sum().backward()
    for name, value in params.tensors().items():
        assert value.grad is not None and value.grad.abs().sum() > 0, name
        assert torch.isfinite(value.grad).all(), name


def test_regions_follow_skinning(head, flame_file):
    regions = head.regions
    assert set(regions) >= {"face", "scalp", "neck", "eyes", "mouth"}
    assert all(len(idx) > 0 for idx in regions.values())
    eyes = set(regions["eyes"].tolist())
    assert eyes == set(torch.nonzero(head.weights[:, 3:].sum(1) > 0.5).flatten().tolist())
    assert set(regions["mouth"].tolist()) <= set(regions["face"].tolist())
    covered = set().union(*(set(v.tolist()) for k, v in regions.items() if k != "mouth"))
    assert covered == set(range(head.num_vertices))
    assert (head.template[regions["neck"], 1].max() < head.template[regions["mouth"], 1].min())


def test_load_head_model_flame(flame_file, monkeypatch):
    model = load_head_model("flame", flame_file[0])
    assert isinstance(model, FlameHead) and model.num_vertices == flame_file[1]["v_template"].shape[0]
    monkeypatch.setenv("GAFKIT_FLAME_MODEL", str(flame_file[0]))
    assert isinstance(load_head_model("flame"), FlameHead)


def test_wrong_parameter_sizes_are_named(head):
    params = head.zero_params(1)
    params.expr = torch.zeros(1, 7)
    with pytest.raises(GafkitError, match="7"):
        head(params)


def test_not_a_flame_file_gives_one_line_error(tmp_path):
    np.savez(tmp_path / "x.npz", v_template=np.zeros((4, 3)))
    with pytest.raises(InputError) as info:
        FlameHead.from_pickle(tmp_path / "x.npz")
    assert "missing" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(GafkitError) as info:
        load_head_model("flame", tmp_path / "absent.pkl")
    assert "no such file" in str(info.value)


def test_wrong_skeleton_is_refused(tmp_path, flame_file):
    arrays = dict(flame_file[1])
    arrays["kintree_table"] = np.array([[-1, 0, 0, 0, 0], [0, 1, 2, 3, 4]])
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(InputError, match="parents"):
        FlameHead.from_pickle(tmp_path / "bad.npz")


def test_landmark_cache_round_trip(tmp_path, flame_file, monkeypatch):
    monkeypatch.setenv("GAFKIT_CACHE", str(tmp_path / "cache"))
    path = flame_file[0]
    assert load_cached_embedding(path) is None
    emb = LandmarkEmbedding(faces=torch.tensor([0, 5, 9]), bary=torch.tensor([[0.2, 0.3, 0.5]] * 3))
    stored = save_cached_embedding(path, emb)
    assert stored == cache_path(path) and stored.is_relative_to(tmp_path / "cache")
    assert not list(stored.parent.glob("*.tmp-*"))
    loaded = load_cached_embedding(path)
    torch.testing.assert_close(loaded.faces, emb.faces)
    torch.testing.assert_close(loaded.bary, emb.bary)
    head = FlameHead.from_pickle(path)
    assert head.landmarks is not None
    assert head.landmark_points(head(head.zero_params(2))).shape == (2, 3, 3)
    # Keyed by content: another FLAME file does not see this embedding.
    other = tmp_path / "other.pkl"
    other.write_bytes(path.read_bytes() + b"\0")
    assert cache_path(other) != cache_path(path) and load_cached_embedding(other) is None


def test_corrupt_cache_entry_is_named(tmp_path, flame_file, monkeypatch):
    monkeypatch.setenv("GAFKIT_CACHE", str(tmp_path))
    entry = cache_path(flame_file[0])
    entry.parent.mkdir(parents=True)
    entry.write_bytes(b"truncated")
    with pytest.raises(InputError, match="delete it"):
        load_cached_embedding(flame_file[0])


def test_double_precision_moves_everything(head, flame_file):
    # .double() must also convert the plain-attribute landmarks, so landmark_points works after it.
    model = copy.deepcopy(head)
    model.landmarks = LandmarkEmbedding(faces=torch.tensor([1, 2]), bary=torch.full((2, 3), 1 / 3))
    model = model.double()
    assert model.landmarks.bary.dtype == torch.float64 and model.regions["eyes"].dtype == torch.long
    params = random_params(head, batch=2, seed=7)
    params = type(params)(**{k: v.double() for k, v in params.tensors().items()})
    verts = model(params)
    assert verts.dtype == torch.float64 and model.landmark_points(verts).shape == (2, 2, 3)
    # float64 buffers came from float32 ones, so compare to the reference at float32 resolution.
    assert np.abs(verts.numpy() - reference_vertices(flame_file[1], params)).max() < 1e-5


def test_texture_coordinates_when_present(tmp_path, flame_file):
    arrays = dict(flame_file[1])
    arrays["vt"] = np.random.default_rng(0).random((len(arrays["f"]) * 3, 2))
    arrays["ft"] = np.arange(len(arrays["f"]) * 3).reshape(-1, 3)
    np.savez(tmp_path / "with_uv.npz", **arrays)
    model = FlameHead.from_pickle(tmp_path / "with_uv.npz", n_shape=10, n_expr=10)
    assert model.uvs.shape == (len(arrays["vt"]), 2) and model.face_uvs.dtype == torch.long
    torch.testing.assert_close(model.uvs, torch.from_numpy(arrays["vt"]).float())


def test_ensure_landmark_embedding_builds_once(tmp_path, flame_file, monkeypatch):
    import gafkit.heads.landmark_embedding as builder
    from gafkit.heads.landmark_cache import ensure_landmark_embedding

    monkeypatch.setenv("GAFKIT_CACHE", str(tmp_path))
    calls = []

    def fake_embed(vertices, faces, **kw):  # stands in for the mediapipe renders, which need a real face
        calls.append((vertices.shape, faces.shape))
        return LandmarkEmbedding(faces=torch.tensor([3, 4]), bary=torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]))

    monkeypatch.setattr(builder, "embed_landmarks", fake_embed)
    model = FlameHead.from_pickle(flame_file[0])
    first = ensure_landmark_embedding(model, flame_file[0])
    assert calls == [(model.template.shape, model.faces.shape)] and model.landmarks is first
    again = FlameHead.from_pickle(flame_file[0])
    assert again.landmarks is not None  # from_pickle picks up the cached entry
    ensure_landmark_embedding(again, flame_file[0])
    assert len(calls) == 1
    torch.testing.assert_close(again.landmarks.faces, torch.tensor([3, 4]))
