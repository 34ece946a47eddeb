"""Per-user cache of the mediapipe landmark embedding computed for a FLAME file.

FLAME's own landmark embeddings are not in the model file and the third-party ones carry
non-commercial licences, so gafkit derives a mediapipe embedding from the user's own FLAME template
(:func:`ensure_landmark_embedding`, through :func:`gafkit.heads.landmark_embedding.embed_landmarks`)
once and keeps it here:
``$GAFKIT_CACHE`` (default ``~/.cache/gafkit``) ``/landmarks/flame-<recipe>-<sha256 of the model file>.npz``
holding ``faces [L]`` (int64) and ``bary [L, 3]`` (float32). Keying on the file's content means a
different FLAME release (2020, 2023, 2023 Open) never reuses another's embedding.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch

from gafkit.artifact import atomic_write_bytes, sha256_file
from gafkit.errors import InputError
from gafkit.heads.base import HeadModel, LandmarkEmbedding

__all__ = ["cache_root", "cache_path", "load_cached_embedding", "save_cached_embedding",
           "ensure_landmark_embedding"]

CACHE_ENV = "GAFKIT_CACHE"
# Part of the cache name: a new embedding recipe (v2: iris points on the eyeballs, the rest off them)
# must not reuse entries of an old one.
RECIPE = "v2"


def cache_root() -> Path:
    """``$GAFKIT_CACHE`` if set, else ``~/.cache/gafkit``."""
    value = os.environ.get(CACHE_ENV)
    return Path(value).expanduser() if value else Path.home() / ".cache" / "gafkit"


def cache_path(model_file: str | Path) -> Path:
    """Where the embedding for ``model_file`` is (or would be) cached; reads the file to hash it."""
    model_file = Path(model_file)
    if not model_file.is_file():
        raise InputError(model_file, "no such file")
    return cache_root() / "landmarks" / f"flame-{RECIPE}-{sha256_file(model_file)}.npz"


def load_cached_embedding(model_file: str | Path) -> LandmarkEmbedding | None:
    """The cached embedding for ``model_file``, or None when none was built yet.

    A cache entry that cannot be read (truncated by a full disk, written by a future format) raises
    :class:`InputError` naming it, so the user can delete it rather than silently losing landmarks.
    """
    path = cache_path(model_file)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            faces = np.asarray(data["faces"], dtype=np.int64)
            bary = np.asarray(data["bary"], dtype=np.float32)
    except (OSError, ValueError, KeyError) as err:
        raise InputError(path, f"unreadable cached landmark embedding, delete it to rebuild ({err})") from None
    if faces.ndim != 1 or bary.shape != (faces.shape[0], 3):
        raise InputError(path, f"cached landmark embedding has shapes {faces.shape} and {bary.shape}; "
                               "delete it to rebuild")
    return LandmarkEmbedding(faces=torch.from_numpy(faces), bary=torch.from_numpy(bary))


def save_cached_embedding(model_file: str | Path, embedding: LandmarkEmbedding) -> Path:
    """Store ``embedding`` for ``model_file`` atomically (readers never see half a file); returns its path."""
    path = cache_path(model_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, faces=embedding.faces.detach().cpu().numpy().astype(np.int64),
             bary=embedding.bary.detach().cpu().numpy().astype(np.float32))
    atomic_write_bytes(path, buffer.getvalue())
    return path


def ensure_landmark_embedding(model: HeadModel, model_file: str | Path) -> LandmarkEmbedding:
    """Attach the landmark embedding of ``model`` (loaded from ``model_file``), building it on first use.

    The cached entry is used when there is one; otherwise the neutral template is rendered and
    mediapipe run on it (:func:`~gafkit.heads.landmark_embedding.embed_landmarks`, a few seconds on a
    CPU), and the result is cached for next time. All of FLAME is rendered: it has no mouth interior
    or teeth that would need hiding.
    """
    embedding = load_cached_embedding(model_file)
    if embedding is None:
        from gafkit.heads.landmark_embedding import embed_landmarks  # mediapipe: imported only to build

        eyes = model.regions.get("eyes")
        embedding = embed_landmarks(model.template.detach().cpu(), model.faces.detach().cpu(),
                                    eyeball_vertices=None if eyes is None else eyes.detach().cpu())
        save_cached_embedding(model_file, embedding)
    model.landmarks = LandmarkEmbedding(faces=embedding.faces.to(model.faces.device),
                                        bary=embedding.bary.to(model.template))
    return model.landmarks
