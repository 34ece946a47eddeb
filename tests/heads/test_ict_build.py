"""The ICT converter on a tiny synthetic folder in ICT-FaceKit's layout."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gafkit.cli import app
from gafkit.errors import InputError
from gafkit.heads.ict import ICTHead
from gafkit.heads.ict_build import ICTLayout, build_ict_asset, read_obj_vertices

# Parts of 4 vertices (one quad) each, eyeballs as octahedra (6 vertices), then a dropped helper mesh.
PART_NAMES = ["face", "head_neck", "mouth_socket", "eye_socket_left", "eye_socket_right", "gums_tongue", "teeth"]


def _quad(x0: float, y0: float, z: float, size: float) -> np.ndarray:
    return np.array([[x0, y0, z], [x0 + size, y0, z], [x0 + size, y0 + size, z], [x0, y0 + size, z]])


def _octahedron(c: np.ndarray, r: float) -> np.ndarray:
    return c + r * np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1.0]])


OCTA_FACES = [(0, 2, 4), (2, 1, 4), (1, 3, 4), (3, 0, 4), (2, 0, 5), (1, 2, 5), (3, 1, 5), (0, 3, 5)]


def make_ict_folder(root: Path) -> ICTLayout:
    """Write generic_neutral_mesh, 3 identities, 2 expressions and vertex_indices.json (centimetres)."""
    folder = root / "FaceXModel"
    folder.mkdir(parents=True)
    blocks, polys, parts = [], [], {}
    start = 0
    for i, name in enumerate(PART_NAMES):
        z = 10.0 if name == "face" else -5.0 if name == "head_neck" else 5.0
        y0 = -15.0 if name == "head_neck" else -10.0 + i
        blocks.append(_quad(-5.0, y0, z, {"face": 10.0, "head_neck": 20.0}.get(name, 1.0)))
        polys.append([start, start + 1, start + 2, start + 3])
        parts[name] = (start, start + 3)
        start += 4
    for name, cx in (("eyeball_left", 3.0), ("eyeball_right", -3.0)):
        blocks.append(_octahedron(np.array([cx, 3.0, 8.0]), 1.2))
        polys += [[start + a, start + b, start + c] for a, b, c in OCTA_FACES]
        parts[name] = (start, start + 5)
        start += 6
    blocks.append(_quad(0.0, 0.0, 9.0, 0.5)[:3])  # "lacrimal fluid": dropped
    polys.append([start, start + 1, start + 2])
    neutral = np.concatenate(blocks)

    def write(name: str, verts: np.ndarray) -> None:
        lines = ["# synthetic ICT-like mesh", "mtllib x.mtl"]
        lines += [f"v {x:g} {y:g} {z:g}" for x, y, z in verts]
        lines += [f"vt {u:g} {v:g}" for u, v in verts[:, :2] / 20 + 0.5]
        lines += ["usemtl M_Face"] + ["f " + " ".join(f"{k + 1}/{k + 1}" for k in p) for p in polys]
        (folder / f"{name}.obj").write_text("\n".join(lines) + "\n")

    rng = np.random.default_rng(0)
    write("generic_neutral_mesh", neutral)
    for i in range(3):
        write(f"identity{i:03d}", neutral + rng.normal(0, 0.3, neutral.shape))
    moved = neutral.copy()
    moved[0:2, 1] -= 2.0  # "jawOpen": the face quad's lower edge goes down 2 cm
    write("jawOpen", moved)
    write("eyeBlink_L", neutral)  # moves nothing: stored as zero sparse rows
    (folder / "vertex_indices.json").write_text(json.dumps({"expressions": ["jawOpen", "eyeBlink_L"]}))
    lm = tuple([1] * 8 + [0] + [2] * 24 + [3] + [2] * 34)  # chin = vertex 0, nose base = vertex 3
    return ICTLayout(parts=parts, landmarks68=lm, sclera_left=parts["eyeball_left"],
                     sclera_right=parts["eyeball_right"])


@pytest.fixture()
def ict_folder(tmp_path) -> tuple[Path, ICTLayout]:
    return tmp_path / "ICT-FaceKit", make_ict_folder(tmp_path / "ICT-FaceKit")


def test_read_obj_vertices(ict_folder):
    verts = read_obj_vertices(ict_folder[0] / "FaceXModel" / "generic_neutral_mesh.obj")
    assert verts.shape == (7 * 4 + 12 + 3, 3) and verts[0].tolist() == [-5.0, -10.0, 10.0]


def test_converter_is_byte_reproducible_and_loads(ict_folder, tmp_path):
    src, layout = ict_folder
    a = build_ict_asset(src, tmp_path / "a.safetensors", landmarks=False, layout=layout)
    b = build_ict_asset(src / "FaceXModel", tmp_path / "b.safetensors", landmarks=False, layout=layout)
    assert hashlib.sha256(a.read_bytes()).hexdigest() == hashlib.sha256(b.read_bytes()).hexdigest()

    head = ICTHead.from_asset(a)
    assert head.num_vertices == 40 and head.n_shape == 3 and head.expression_names == ["jawOpen", "eyeBlink_L"]
    assert head.faces.shape == (7 * 2 + 16, 3)  # quads split in two, the dropped triangle gone
    assert head.landmarks is None
    assert np.allclose(head.template[0].numpy(), [-0.05, -0.1, 0.1])
    # identity: int8 modes reproduce the delta within half a quantisation step
    neutral = read_obj_vertices(src / "FaceXModel" / "generic_neutral_mesh.obj")[:40]
    ident = read_obj_vertices(src / "FaceXModel" / "identity001.obj")[:40]
    step = float(np.abs(ident - neutral).max()) * 0.01 / 127
    got = head.identity_basis[1].reshape(40, 3).numpy()
    assert np.abs(got - (ident - neutral) * 0.01).max() <= step / 2 + 1e-9
    # expressions: only the two moved vertices, 2 cm down
    jaw = head.expr_basis[0].reshape(40, 3).numpy()
    assert np.allclose(jaw[:2, 1], -0.02, atol=1e-5) and np.abs(jaw[2:]).max() == 0
    assert np.abs(head.expr_basis[1].numpy()).max() == 0
    # regions: the face quad and the split head quad (bottom edge = neck)
    assert head.regions["face"].tolist() == [0, 1, 2, 3]
    assert sorted(head.regions["neck"].tolist() + head.regions["scalp"].tolist()) == [4, 5, 6, 7]
    assert head.regions["neck"].tolist() == [4, 5]
    assert np.allclose(head.eyeball_centers.numpy(), [[0.03, 0.03, 0.08], [-0.03, 0.03, 0.08]], atol=1e-6)
    assert np.allclose(head.pivot.numpy(), [0.0, -0.15, -0.05])


def test_cli_build_ict_without_ict_folder(tmp_path):
    result = CliRunner().invoke(app, ["assets", "build-ict", str(tmp_path), "-o", str(tmp_path / "x.safetensors")])
    assert result.exit_code == 2 and "not an ICT-FaceKit FaceXModel folder" in result.output


def test_vertex_count_mismatch(ict_folder, tmp_path):
    src, layout = ict_folder
    path = src / "FaceXModel" / "identity002.obj"
    path.write_text("v 0 0 0\nvt 0 0\n")
    with pytest.raises(InputError, match="identity002.obj: has 1 vertices"):
        build_ict_asset(src, tmp_path / "c.safetensors", landmarks=False, layout=layout)
