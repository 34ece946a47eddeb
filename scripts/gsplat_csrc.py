"""gsplat's CUDA extension, loaded from a prebuilt shared object ($GSPLAT_PREBUILT) instead of the JIT build.

gsplat.cuda._backend tries `from gsplat import csrc` before compiling; this module answers that import.
"""
import importlib.util
import os

import torch  # noqa: F401  (the extension links against libtorch, which must be loaded first)

_spec = importlib.util.spec_from_file_location("gsplat_cuda", os.environ["GSPLAT_PREBUILT"])
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
globals().update({k: getattr(_mod, k) for k in dir(_mod) if not k.startswith("__")})
