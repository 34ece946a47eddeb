"""Read FLAME model files (2020 ``generic_model.pkl``, 2023 ``flame2023*.pkl``) without chumpy.

FLAME ships as a Python-2 pickle whose blendshape bases are ``chumpy.ch.Ch`` objects and whose joint
regressor is a ``scipy.sparse.csc_matrix``. chumpy does not import on current Python/numpy, and a
pickle can run arbitrary code, so :func:`load_flame_file` unpickles with a restricted
:class:`pickle.Unpickler`: ``find_class`` hands out only numpy's array/dtype/scalar reconstructors
and inert stand-ins for the chumpy and scipy classes; every other global (``os.system``,
``builtins.eval``, ``subprocess.Popen``, ...) is refused before it can be called.

How the two foreign kinds of object are pickled (and therefore what the stand-ins must accept):

- ``chumpy.ch.Ch`` has no ``__reduce__``; protocol 2 stores ``NEWOBJ(Ch, ())`` then ``BUILD`` with
  ``Ch.__getstate__()``, a copy of ``__dict__`` whose ``"x"`` entry is the wrapped ndarray (plus
  bookkeeping such as ``_dirty_vars``, a ``set``). Protocols 0/1 use ``copy_reg._reconstructor(Ch,
  object, None)`` instead of ``NEWOBJ``.
- scipy sparse matrices are plain objects too: ``BUILD`` restores a dict with ``data``, ``indices``,
  ``indptr`` and ``_shape`` (older scipy) or ``shape``.

Both become plain numpy arrays in the returned dict (``J_regressor`` dense: it is only 5 x V).

A ``.npz`` export of the same keys (``np.savez(path, **arrays)``) is read with ``allow_pickle=False``,
so it cannot carry code either.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from gafkit.errors import InputError

__all__ = ["load_flame_file", "FlameUnpickler"]


class _ChumpyValue:
    """Inert stand-in for ``chumpy.ch.Ch``: keeps the pickled ``__dict__`` (the array is ``"x"``)."""

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _SparseValue:
    """Inert stand-in for a scipy ``csc_matrix``/``csr_matrix``: keeps the pickled ``__dict__``."""

    fmt = "csc"

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _CsrValue(_SparseValue):
    fmt = "csr"


def _safe_reconstructor(cls: type, base: type, state: Any) -> object:
    """``copy_reg._reconstructor`` limited to our stand-ins (protocol 0/1 pickles create objects with it)."""
    if cls not in (_ChumpyValue, _SparseValue, _CsrValue) or base is not object or state is not None:
        raise pickle.UnpicklingError(f"refused copy_reg._reconstructor({cls!r}, {base!r})")
    return object.__new__(cls)


# numpy's array and scalar reconstructors, taken from numpy itself so the mapping holds whether the
# installed numpy calls its core module ``numpy.core`` (1.x) or ``numpy._core`` (2.x).
_NP_RECONSTRUCT = np.zeros(1).__reduce__()[0]
_NP_SCALAR = np.float64(0).__reduce__()[0]

_ALLOWED: dict[tuple[str, str], Any] = {}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_mod, "_reconstruct")] = _NP_RECONSTRUCT
    _ALLOWED[(_mod, "scalar")] = _NP_SCALAR
_ALLOWED[("numpy", "ndarray")] = np.ndarray
_ALLOWED[("numpy", "dtype")] = np.dtype
for _mod in ("chumpy.ch", "chumpy"):
    _ALLOWED[(_mod, "Ch")] = _ChumpyValue
# scipy has moved its sparse classes between modules over the years; real FLAME files name the old ones.
for _mod in ("scipy.sparse.csc", "scipy.sparse._csc", "scipy.sparse"):
    _ALLOWED[(_mod, "csc_matrix")] = _SparseValue
for _mod in ("scipy.sparse.csr", "scipy.sparse._csr", "scipy.sparse"):
    _ALLOWED[(_mod, "csr_matrix")] = _CsrValue
# Python-2 names arrive untranslated in find_class; the Python-3 spellings cover re-saved files.
for _mod in ("__builtin__", "builtins"):
    _ALLOWED[(_mod, "set")] = set
    _ALLOWED[(_mod, "frozenset")] = frozenset
    _ALLOWED[(_mod, "object")] = object
def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as Python 3 uses it in protocol-2 pickles of ``bytes``, and nothing more."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("refused _codecs.encode with anything but a latin1 str")
    return text.encode("latin1")


_ALLOWED[("_codecs", "encode")] = _latin1_bytes
for _mod in ("copy_reg", "copyreg"):
    _ALLOWED[(_mod, "_reconstructor")] = _safe_reconstructor


class _RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, module: str, name: str):
        self.qualname = f"{module}.{name}"
        super().__init__(self.qualname)


class FlameUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals FLAME files use (see the module docstring)."""

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is None and module == "numpy.dtypes":
            # numpy >= 1.25 may name a concrete dtype class (e.g. Float64DType) for re-saved files.
            import numpy.dtypes as np_dtypes

            cand = getattr(np_dtypes, name, None)
            found = cand if isinstance(cand, type) and issubclass(cand, np.dtype) else None
        if found is None:
            raise _RefusedGlobal(module, name)
        return found


def _sparse_to_dense(value: _SparseValue, path: Path, key: str) -> np.ndarray:
    state = value.state if isinstance(value.state, dict) else {}
    try:
        data = np.asarray(state["data"], dtype=np.float64)
        indices = np.asarray(state["indices"], dtype=np.int64)
        indptr = np.asarray(state["indptr"], dtype=np.int64)
        shape = tuple(int(s) for s in state.get("_shape", state.get("shape")))
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(path, f"{key!r}: unreadable sparse matrix ({err})") from None
    major = shape[1] if value.fmt == "csc" else shape[0]
    if len(shape) != 2 or indptr.shape != (major + 1,) or indices.shape != data.shape:
        raise InputError(path, f"{key!r}: inconsistent sparse matrix of shape {shape}")
    dense = np.zeros(shape, dtype=np.float64)
    # Row/column index of every stored entry, expanded from the compressed pointer array.
    outer = np.repeat(np.arange(major), np.diff(indptr))
    if value.fmt == "csc":
        np.add.at(dense, (indices, outer), data)
    else:
        np.add.at(dense, (outer, indices), data)
    return dense


def _to_plain(value: Any, path: Path, key: str) -> Any:
    """A chumpy/sparse stand-in as an ndarray; numbers and strings as 0-d arrays; arrays unchanged."""
    if isinstance(value, _ChumpyValue):
        state = value.state if isinstance(value.state, dict) else {}
        inner = state.get("x")
        if isinstance(inner, _ChumpyValue):  # a Ch wrapping a Ch: unwrap to the stored array
            return _to_plain(inner, path, key)
        if not isinstance(inner, np.ndarray):
            raise InputError(path, f"{key!r}: chumpy object without a stored array")
        return inner
    if isinstance(value, _SparseValue):
        return _sparse_to_dense(value, path, key)
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (int, float, str, bytes, np.generic)):
        return np.asarray(value)
    if isinstance(value, (list, tuple)):
        return np.asarray([_to_plain(v, path, key) for v in value])
    raise InputError(path, f"{key!r}: unsupported value of type {type(value).__name__}")


def load_flame_file(path: str | Path) -> dict[str, np.ndarray]:
    """Read a FLAME model file into plain numpy arrays, never executing code from it.

    Args:
        path: ``generic_model.pkl`` (FLAME 2020), ``flame2023.pkl`` / ``flame2023_Open.pkl``, or a
            ``.npz`` holding the same keys.

    Returns:
        The file's top-level dict with every value an ndarray (chumpy arrays unwrapped, the sparse
        ``J_regressor`` made dense, strings such as ``bs_style`` as 0-d str arrays). For FLAME:
        ``v_template [V,3]``, ``f [F,3]``, ``shapedirs [V,3,K]``, ``posedirs [V,3,36]``,
        ``J_regressor [5,V]``, ``weights [V,5]``, ``kintree_table [2,5]``.

    Raises:
        InputError: missing/unreadable file, a refused global, or content that is not a dict.

    >>> load_flame_file("missing.pkl")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    gafkit.errors.InputError: missing.pkl: no such file
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    if path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: np.asarray(data[k]) for k in data.files}
        except (OSError, ValueError) as err:
            raise InputError(path, f"not a readable .npz FLAME export ({err})") from None
    try:
        with open(path, "rb") as fh:
            # Python-2 pickles store numpy's raw buffers as byte strings: latin1 maps them 1:1.
            raw = FlameUnpickler(fh, encoding="latin1").load()
    except _RefusedGlobal as err:
        raise InputError(path, f"refused to load: the pickle asks for {err.qualname}, "
                               "which a FLAME model file never contains") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, MemoryError, UnicodeDecodeError, OSError) as err:
        raise InputError(path, f"not a FLAME model pickle ({type(err).__name__}: {err})") from None
    if not isinstance(raw, dict):
        raise InputError(path, f"not a FLAME model pickle (holds a {type(raw).__name__}, not a dict)")
    return {str(k): _to_plain(v, path, str(k)) for k, v in raw.items()}
