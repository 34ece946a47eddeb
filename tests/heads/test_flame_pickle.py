"""The restricted FLAME pickle loader: real-file layouts load, code-carrying pickles are refused."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from flame_fixture import write_flame_pickle, write_malicious_pickle

from gafkit.errors import InputError
from gafkit.heads.flame_pickle import load_flame_file


@pytest.mark.parametrize("layout", ["2020", "2023"])
def test_synthetic_flame_pickle_round_trips(tmp_path, layout):
    path = tmp_path / "model.pkl"
    arrays = write_flame_pickle(path, layout=layout, n_expr=20)
    loaded = load_flame_file(path)
    assert set(arrays) <= set(loaded)
    for key, value in arrays.items():
        assert isinstance(loaded[key], np.ndarray), key
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)
    assert str(loaded["bs_style"]) == "lbs"


def test_npz_export_loads(tmp_path):
    arrays = write_flame_pickle(tmp_path / "m.pkl", n_expr=5)
    np.savez(tmp_path / "m.npz", **arrays)
    loaded = load_flame_file(tmp_path / "m.npz")
    for key, value in arrays.items():
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)


@pytest.mark.parametrize("target", ["os.system", "builtins.eval", "subprocess.Popen", "posix.system"])
def test_code_in_pickle_is_refused_and_never_runs(tmp_path, target):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    write_malicious_pickle(path, target, marker)
    # The crafted file really is dangerous: plain pickle would create the marker.
    if target == "builtins.eval":
        with open(path, "rb") as fh:
            pickle.load(fh)
        assert marker.exists()
        marker.unlink()
    with pytest.raises(InputError) as info:
        load_flame_file(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and target in message
    assert not marker.exists()


def test_reconstructor_is_limited_to_stand_ins(tmp_path):
    # copy_reg._reconstructor(set, object, None) resolves only allowed globals, yet must still be refused:
    # the reconstructor may only build the chumpy/sparse stand-ins.
    data = (pickle.PROTO + b"\x02" + pickle.GLOBAL + b"copy_reg\n_reconstructor\n"
            + pickle.GLOBAL + b"__builtin__\nset\n" + pickle.GLOBAL + b"__builtin__\nobject\n"
            + pickle.NONE + pickle.TUPLE3 + pickle.REDUCE + pickle.STOP)
    path = tmp_path / "odd.pkl"
    path.write_bytes(data)
    with pytest.raises(InputError, match="not a FLAME model pickle"):
        load_flame_file(path)


def test_protocol0_chumpy_objects_load(tmp_path):
    # Protocol 0/1 create Ch objects through copy_reg._reconstructor rather than NEWOBJ.
    from flame_fixture import fake_chumpy

    with fake_chumpy() as Ch:
        payload = pickle.dumps({"shapedirs": Ch(np.arange(6.0).reshape(2, 3))}, protocol=0)
    assert b"copy_reg\n_reconstructor" in payload
    path = tmp_path / "p0.pkl"
    path.write_bytes(payload)
    np.testing.assert_array_equal(load_flame_file(path)["shapedirs"], np.arange(6.0).reshape(2, 3))


@pytest.mark.parametrize("content", [None, b"", b"not a pickle at all", pickle.dumps([1, 2, 3], protocol=2)])
def test_missing_or_garbage_file_is_one_line_error(tmp_path, content):
    path = tmp_path / "generic_model.pkl"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError) as info:
        load_flame_file(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))
