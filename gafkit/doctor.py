"""Environment report behind ``gafkit doctor``: what works here, what is missing, what to do."""

from __future__ import annotations

import importlib.metadata as md
import platform
import shutil
import sys
from pathlib import Path
from typing import Any

from gafkit import __version__

MEDIAPIPE_MODELS = (
    "modules/face_landmark/face_landmark_with_attention.tflite",
    "modules/face_detection/face_detection_short_range.tflite",
    "modules/face_detection/face_detection_full_range_sparse.tflite",
    "modules/selfie_segmentation/selfie_segmentation.tflite",
)


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{err.__class__.__name__}: {text[-1] if text else ''}"[:300]


def check_torch() -> dict[str, Any]:
    import torch

    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            prop = torch.cuda.get_device_properties(i)
            gpus.append({"index": i, "name": prop.name, "memory_mb": prop.total_memory // 2**20})
    return {
        "version": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cuda_version": torch.version.cuda,
        "gpus": gpus,
    }


def check_gsplat(cuda: bool) -> dict[str, Any]:
    version = _version("gsplat")
    out: dict[str, Any] = {"installed": version is not None, "version": version, "cuda_extension": None}
    if version is None:
        out["cuda_extension"] = "not installed"
    elif not cuda:
        out["cuda_extension"] = "skipped: no CUDA device"
    else:
        try:  # importing _backend JIT-builds the extension on first use (~1-2 min), then loads it
            from gsplat.cuda._backend import _C

            out["cuda_extension"] = "ok" if _C is not None else "error: extension did not load"
        except Exception as err:  # any build/load failure is reported, not raised
            out["cuda_extension"] = f"error: {_short(err)}"
    return out


def check_nvdiffrast(cuda: bool) -> dict[str, Any]:
    try:
        import nvdiffrast.torch as dr
    except Exception as err:
        return {"installed": False, "rasterize": f"not installed ({_short(err)})"}
    if not cuda:
        return {"installed": True, "rasterize": "skipped: no CUDA device"}
    try:
        import torch

        ctx = dr.RasterizeCudaContext()
        pos = torch.tensor([[[-0.5, -0.5, 0, 1], [0.5, -0.5, 0, 1], [0, 0.5, 0, 1]]], device="cuda")
        tri = torch.tensor([[0, 1, 2]], dtype=torch.int32, device="cuda")
        rast, _ = dr.rasterize(ctx, pos, tri, resolution=[16, 16])
        covered = int((rast[..., 3] > 0).sum())
        return {"installed": True, "rasterize": "ok" if covered > 0 else "error: empty raster"}
    except Exception as err:
        return {"installed": True, "rasterize": f"error: {_short(err)}"}


def check_mediapipe() -> dict[str, Any]:
    version = _version("mediapipe")
    if version is None:
        return {"version": None, "face_models": False, "missing": list(MEDIAPIPE_MODELS)}
    import importlib.util

    spec = importlib.util.find_spec("mediapipe")
    root = Path(spec.origin).parent if spec and spec.origin else None
    missing = [m for m in MEDIAPIPE_MODELS if root is None or not (root / m).is_file()]
    return {"version": version, "face_models": not missing, "missing": missing}


def check_video() -> dict[str, Any]:
    try:
        import av

        encoders = av.codecs_available
        return {"av": av.__version__, "h264_encoder": "libx264" in encoders or "h264" in encoders}
    except Exception as err:
        return {"av": None, "h264_encoder": False, "error": _short(err)}


def check_head_models(flame_model: str | None) -> dict[str, Any]:
    from gafkit.heads import FLAME_ENV, ICT_ASSET, flame_model_path

    flame = flame_model_path(flame_model)
    return {
        "ict": {"available": ICT_ASSET.is_file(), "path": str(ICT_ASSET)},
        "flame": {
            "available": bool(flame and flame.is_file()),
            "path": str(flame) if flame else None,
            "hint": None if flame else f"set {FLAME_ENV} or pass --flame-model to use FLAME",
        },
    }


def diagnose(flame_model: str | None = None, disk_path: str | Path = ".") -> dict[str, Any]:
    """Collect the report. ``cpu_path_ok`` is True when tracking/fitting can run on the CPU here."""
    report: dict[str, Any] = {
        "gafkit": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    warnings: list[str] = []
    try:
        report["torch"] = check_torch()
    except Exception as err:
        report["torch"] = {"version": None, "error": _short(err), "cuda_available": False, "gpus": []}
    cuda = bool(report["torch"].get("cuda_available"))
    report["numpy"] = _version("numpy")
    report["gsplat"] = check_gsplat(cuda)
    report["nvdiffrast"] = check_nvdiffrast(cuda)
    report["mediapipe"] = check_mediapipe()
    report["video"] = check_video()
    report["head_models"] = check_head_models(flame_model)
    usage = shutil.disk_usage(Path(disk_path).resolve())
    report["disk"] = {"path": str(Path(disk_path).resolve()), "free_gb": round(usage.free / 2**30, 1)}
    report["backends"] = {
        "mesh": ["torch"] + (["nvdiffrast"] if report["nvdiffrast"]["rasterize"] == "ok" else []),
        "gaussians": ["torch"] + (["gsplat"] if report["gsplat"]["cuda_extension"] == "ok" else []),
    }
    if not cuda:
        warnings.append("no CUDA device: gsplat and nvdiffrast are unavailable; the slower torch renderers are used")
    else:
        if report["gsplat"]["cuda_extension"] != "ok":
            warnings.append(f"gsplat CUDA extension: {report['gsplat']['cuda_extension']}")
        if report["nvdiffrast"]["rasterize"] != "ok":
            warnings.append("nvdiffrast unavailable: pip install git+https://github.com/NVlabs/nvdiffrast --no-build-isolation")
    if not report["mediapipe"]["face_models"]:
        warnings.append("mediapipe face models missing: install mediapipe==0.10.21 (later releases ship none)")
    if not report["video"].get("h264_encoder"):
        warnings.append("PyAV without an H.264 encoder: videos cannot be written")
    if not report["head_models"]["ict"]["available"]:
        warnings.append("the embedded ICT head asset is missing: build it with `gafkit assets build-ict`")
    if report["disk"]["free_gb"] < 5:
        warnings.append(f"only {report['disk']['free_gb']} GB free on disk")
    report["cpu_path_ok"] = report["torch"].get("version") is not None and report["video"]["av"] is not None
    report["warnings"] = warnings
    return report
