"""Expression edits, slider edits and driver checks with a FLAME-format model (synthetic test file)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from gafkit.errors import GafkitError, InputError
from gafkit.heads.base import axis_angle_to_matrix
from gafkit.recon.animate import apply_expr_edits
from gafkit.recon.retarget import check_driver_params
from gafkit.recon.viewer import PoseEdit, edited_params


@pytest.fixture(scope="module")
def flame(tmp_path_factory):
    from heads.flame_fixture import write_flame_pickle

    from gafkit.heads.flame import FlameHead

    path = tmp_path_factory.mktemp("flame") / "flame.pkl"
    write_flame_pickle(path, n_expr=4)
    return FlameHead.from_pickle(path, n_shape=5, n_expr=4)


def test_flame_expressions_are_edited_by_index(flame):
    params = flame.zero_params(3)
    edited = apply_expr_edits(params, flame, {"2": 2.5, "0": -1.0})  # FLAME coefficients are unbounded
    assert edited.expr[:, 2].eq(2.5).all() and edited.expr[:, 0].eq(-1.0).all() and edited.expr[:, 1].eq(0).all()
    with pytest.raises(GafkitError, match="valid names: 0, 1, 2, 3"):
        apply_expr_edits(params, flame, {"jawOpen": 1.0})


def test_jaw_slider_turns_the_flame_jaw(flame):
    assert flame.has_jaw_joint
    base = flame.zero_params(1)
    p = edited_params(base, PoseEdit(jaw=(12.0, 0.0, 0.0)), flame)
    angle = math.degrees(math.acos((axis_angle_to_matrix(p.jaw[0]).trace().item() - 1) / 2))
    assert angle == pytest.approx(12.0, abs=1e-3) and p.jaw[0, 0] > 0
    with torch.no_grad():
        assert (flame(p) - flame(base)).abs().max() > 1e-3  # the mesh opens


def test_driver_of_another_flame_size_is_refused(flame):
    params = flame.zero_params(2)
    check_driver_params(Path("ok.npz"), params, flame)
    wrong = flame.zero_params(2)
    wrong.expr = torch.zeros(2, 100)
    with pytest.raises(InputError, match="100 expression coefficients, but the avatar's flame model has 4"):
        check_driver_params(Path("d.npz"), wrong, flame)
