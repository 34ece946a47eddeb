"""Synthetic FLAME-format model files for the tests (no FLAME data is, or may be, in this repository).

The files mimic the real ones where the loader cares: a dict pickled with protocol 2 holding
``chumpy.ch.Ch`` objects (made from a stand-in class registered under that name only while pickling),
a scipy CSC ``J_regressor``, FLAME's 5-joint ``kintree_table`` and 300 identity + ``n_expr`` expression
columns in ``shapedirs``. Two layouts:

- ``"2020"``: written like Python 2 did (``generic_model.pkl``): byte strings as ``BINSTRING`` so numpy
  buffers need ``encoding="latin1"``, ``scipy.sparse.csc.csc_matrix``, root parent ``2**32 - 1``;
- ``"2023"``: a Python-3 protocol-2 pickle (bytes through ``_codecs.encode``), scipy's current
  ``scipy.sparse._csc`` module, root parent ``-1``, ``posedirs`` also wrapped in ``Ch``.

The mesh is a rough head: an ellipsoid (skin) with two small eyeball spheres, skinned plausibly: the
lower front is on the jaw, the bottom on the root/neck, the eyeballs on the eye joints. Pose
correctives of a joint are nonzero only where that joint has weight, as in FLAME.
"""

from __future__ import annotations

import contextlib
import pickle
import struct
import sys
import types
from pathlib import Path

import numpy as np
import scipy.sparse

N_SHAPE_FILE = 300  # FLAME's identity columns
JOINTS = np.array([[0.0, -0.10, -0.02], [0.0, -0.05, -0.02], [0.0, -0.01, 0.0], [0.03, 0.03, 0.06],
                   [-0.03, 0.03, 0.06]])
PARENTS = [-1, 0, 1, 1, 1]


def _sphere(center, radii, n_lat: int, n_lon: int) -> tuple[np.ndarray, np.ndarray]:
    """A closed UV sphere: vertices and outward counter-clockwise triangles."""
    verts = [[0.0, 1.0, 0.0]]
    for i in range(1, n_lat):
        theta = np.pi * i / n_lat
        for j in range(n_lon):
            phi = 2 * np.pi * j / n_lon
            verts.append([np.sin(theta) * np.sin(phi), np.cos(theta), np.sin(theta) * np.cos(phi)])
    verts.append([0.0, -1.0, 0.0])
    verts = np.asarray(verts) * np.asarray(radii) + np.asarray(center)
    ring = lambda i, j: 1 + (i - 1) * n_lon + (j % n_lon)  # noqa: E731
    tris = []
    for j in range(n_lon):
        tris.append([0, ring(1, j), ring(1, j + 1)])
        last = len(verts) - 1
        tris.append([last, ring(n_lat - 1, j + 1), ring(n_lat - 1, j)])
        for i in range(1, n_lat - 1):
            a, b, c, d = ring(i, j), ring(i, j + 1), ring(i + 1, j), ring(i + 1, j + 1)
            tris += [[a, c, b], [b, c, d]]
    return verts, np.asarray(tris)


def head_mesh() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertices [V,3], triangles [F,3] and part labels [V] (0 skin, 1 left eye, 2 right eye)."""
    skin_v, skin_f = _sphere((0.0, 0.0, 0.0), (0.08, 0.11, 0.10), 14, 18)
    parts_v, parts_f, labels = [skin_v], [skin_f], [np.zeros(len(skin_v), int)]
    offset = len(skin_v)
    for label, centre in ((1, JOINTS[3]), (2, JOINTS[4])):
        ev, ef = _sphere(centre, (0.012,) * 3, 4, 6)
        parts_v.append(ev)
        parts_f.append(ef + offset)
        labels.append(np.full(len(ev), label))
        offset += len(ev)
    return np.concatenate(parts_v), np.concatenate(parts_f), np.concatenate(labels)


def skinning_weights(verts: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """[V, 5] rows summing to 1: eyes rigid, lower front on the jaw, lower skin on the root."""
    w = np.zeros((len(verts), 5))
    y, z = verts[:, 1], verts[:, 2]
    jaw = np.clip((-0.02 - y) / 0.03, 0, 1) * np.clip(z / 0.03, 0, 1)
    root = np.clip((-0.06 - y) / 0.04, 0, 1) * (1 - jaw)
    w[:, 2] = jaw
    w[:, 0] = root
    w[:, 1] = 1 - jaw - root
    eye = labels > 0
    w[eye] = 0
    w[labels == 1, 3] = 1
    w[labels == 2, 4] = 1
    return w


def joint_regressor(verts: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """[5, V] sparse-ish rows summing to 1 whose regressed joints land near ``JOINTS``."""
    reg = np.zeros((5, len(verts)))
    for j in range(5):
        if j >= 3:
            idx = np.nonzero(labels == j - 2)[0]  # eyeball centre = mean of its vertices
        else:
            # Joints sit inside the head: combine the two skin vertices above and below it.
            skin = np.nonzero(labels == 0)[0]
            dist = np.linalg.norm(verts[skin] - JOINTS[j], axis=1)
            idx = skin[np.argsort(dist)[:6]]
        reg[j, idx] = 1.0 / len(idx)
    return reg


def flame_arrays(n_expr: int = 100, seed: int = 0) -> dict[str, np.ndarray]:
    """The arrays a FLAME file holds, synthetic, float64 like the real files."""
    rng = np.random.default_rng(seed)
    verts, faces, labels = head_mesh()
    weights = skinning_weights(verts, labels)
    n_v = len(verts)
    shapedirs = rng.normal(scale=1e-3, size=(n_v, 3, N_SHAPE_FILE + n_expr))
    # A pose corrective belongs to a joint: zero it where that joint has no weight.
    posedirs = rng.normal(scale=1e-3, size=(n_v, 3, 4, 9)) * (weights[:, None, 1:, None] > 0)
    return {
        "v_template": verts,
        "f": faces.astype(np.uint32),
        "shapedirs": shapedirs,
        "posedirs": posedirs.reshape(n_v, 3, 36),
        "J_regressor": joint_regressor(verts, labels),
        "weights": weights,
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
        "J": joint_regressor(verts, labels) @ verts,
    }


@contextlib.contextmanager
def fake_chumpy():
    """Register a ``chumpy.ch.Ch`` stand-in so pickles name that global, then remove every trace."""

    class Ch:
        def __init__(self, x):
            self.x = x
            self._dirty_vars = set()
            self._itr = None

        def __getstate__(self):  # what chumpy pickles: its __dict__ minus the weak caches
            return dict(self.__dict__)

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    chumpy, ch = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")
    ch.Ch = Ch
    chumpy.ch = ch
    saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch")}
    sys.modules.update({"chumpy": chumpy, "chumpy.ch": ch})
    try:
        yield Ch
    finally:
        for key, value in saved.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value


class _Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` (BINSTRING) and names old scipy modules, as FLAME 2020 files do."""

    dispatch = dict(pickle._Pickler.dispatch)
    renames: dict[object, tuple[str, str]] = {scipy.sparse.csc_matrix: ("scipy.sparse.csc", "csc_matrix")}

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str

    def save_global(self, obj, name=None):
        if obj in self.renames:
            module, qualname = self.renames[obj]
            self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode())
            self.memoize(obj)
            return
        super().save_global(obj, name)


def write_flame_pickle(path: str | Path, layout: str = "2020", n_expr: int = 100, seed: int = 0) -> dict:
    """Write a synthetic FLAME file of ``layout`` ``"2020"`` or ``"2023"``; returns its arrays (dense)."""
    arrays = flame_arrays(n_expr=n_expr, seed=seed)
    wrapped_keys = ("v_template", "shapedirs", "J") if layout == "2020" else ("shapedirs", "posedirs")
    if layout == "2023":
        arrays["kintree_table"] = np.array([[-1, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64)
    with fake_chumpy() as Ch:
        content: dict[str, object] = {k: Ch(v) if k in wrapped_keys else v for k, v in arrays.items()}
        content["J_regressor"] = scipy.sparse.csc_matrix(arrays["J_regressor"])
        content["bs_style"] = "lbs"
        content["bs_type"] = "lrotmin"
        with open(path, "wb") as fh:
            if layout == "2020":
                _Py2Pickler(fh, protocol=2).dump(content)
            else:
                pickle.Pickler(fh, protocol=2).dump(content)
    return arrays


def write_malicious_pickle(path: str | Path, target: str, marker: Path) -> None:
    """A pickle whose loading would call ``target`` (``os.system``, ``builtins.eval`` or
    ``subprocess.Popen``) to create ``marker``, the side effect the tests check never happens."""
    module, name = target.rsplit(".", 1)
    if target == "builtins.eval":
        arg: tuple = (f"open({str(marker)!r}, 'w').close()",)
    elif target == "subprocess.Popen":
        arg = (["touch", str(marker)],)
    else:
        arg = (f"touch {marker}",)
    # GLOBAL module\nname\n, then the argument tuple, then REDUCE: the classic code-execution pickle,
    # nested in a dict like a model file.
    body = pickle.dumps(arg, protocol=2)[2:-1]  # the tuple's opcodes without PROTO and STOP
    data = (pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + pickle.SHORT_BINUNICODE + b"\x01" + b"f"
            + pickle.GLOBAL + f"{module}\n{name}\n".encode() + body + pickle.REDUCE + pickle.SETITEM
            + pickle.STOP)
    Path(path).write_bytes(data)
