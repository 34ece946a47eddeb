"""Artifacts: the directories that stages read and write.

Every artifact is a directory holding a ``manifest.json`` (kind, format version, gafkit version, the
effective config, the inputs with content hashes, per-step timings). A directory without a manifest,
or with a manifest of another kind, is not an artifact of that kind.

Writes are atomic: a stage writes into ``OUT.partial/`` and only renames it to ``OUT`` after the
manifest is written, so a crash never leaves a directory at ``OUT`` that looks complete. A stage that
can resume (``resumable=True``) keeps ``OUT.partial/`` after an interruption or crash so its next run
continues from the checkpoints inside; user errors always remove it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from gafkit import __version__
from gafkit.config import to_dict
from gafkit.errors import ArtifactError, GafkitError

MANIFEST = "manifest.json"
PARTIAL_SUFFIX = ".partial"


@dataclasses.dataclass
class Manifest:
    """The content of ``manifest.json``."""

    kind: str
    """Artifact kind, e.g. ``tracked``, ``avatar``, ``prior``, ``synth``."""
    format_version: int = 1
    """Version of this kind's on-disk layout; bumped when readers must change."""
    gafkit_version: str = __version__
    created: str = ""
    """UTC timestamp (ISO 8601) of completion."""
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    inputs: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    """Input name -> ``{"path", "sha256", "kind"}``."""
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    """Step name -> seconds."""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Kind-specific summary (frame counts, metrics...)."""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=False)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fingerprint(path: str | Path) -> dict[str, Any]:
    """Describe an input by content: a file's sha256, an artifact's manifest sha256, or for a plain
    folder the sha256 over its files' names and hashes."""
    path = Path(path)
    if path.is_file():
        return {"path": str(path), "kind": "file", "sha256": sha256_file(path)}
    if (path / MANIFEST).is_file():
        manifest = read_manifest(path)
        return {"path": str(path), "kind": manifest.kind, "sha256": sha256_file(path / MANIFEST)}
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(f.relative_to(path)).encode())
            h.update(sha256_file(f).encode())
        return {"path": str(path), "kind": "folder", "sha256": h.hexdigest()}
    raise ArtifactError(f"{path}: no such file or directory")


def read_manifest(path: str | Path, kind: str | None = None) -> Manifest:
    """Read ``path/manifest.json``; with ``kind``, also check that the artifact is of that kind."""
    path = Path(path)
    mpath = path / MANIFEST
    partial = Path(str(path) + PARTIAL_SUFFIX)
    hint = f" (an unfinished run is in {partial}; rerun its command to resume)" if partial.exists() else ""
    if not path.exists():
        raise ArtifactError(f"{path}: no such directory{hint}")
    if not mpath.is_file():
        what = f"a {kind} artifact" if kind else "an artifact"
        raise ArtifactError(f"{path}: not {what} (no {MANIFEST}){hint}")
    try:
        data = json.loads(mpath.read_text(encoding="utf-8"))
        manifest = Manifest(**data)
    except (ValueError, TypeError) as err:
        raise ArtifactError(f"{mpath}: unreadable manifest ({err.__class__.__name__})") from err
    if kind is not None and manifest.kind != kind:
        raise ArtifactError(f"{path}: is a {manifest.kind!r} artifact, expected {kind!r}")
    return manifest


class ArtifactBuilder:
    """Handed out by :func:`write_artifact`: the staging directory plus timing and summary fields."""

    def __init__(self, staging: Path, manifest: Manifest, resumed: bool):
        self.dir = staging
        self.manifest = manifest
        self.resumed = resumed
        """True when ``dir`` was left by an earlier, interrupted run of the same stage."""

    @contextlib.contextmanager
    def timed(self, step: str) -> Iterator[None]:
        """Add the wall time of the ``with`` block to ``manifest.timings[step]``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            took = time.perf_counter() - start
            self.manifest.timings[step] = round(self.manifest.timings.get(step, 0.0) + took, 4)


def _is_replaceable(out: Path) -> bool:
    return not out.exists() or (out.is_dir() and (not any(out.iterdir()) or (out / MANIFEST).is_file()))


@contextlib.contextmanager
def write_artifact(
    out: str | Path,
    kind: str,
    *,
    config: Any = None,
    inputs: Mapping[str, str | Path] | None = None,
    overwrite: bool = False,
    resumable: bool = False,
    format_version: int = 1,
) -> Iterator[ArtifactBuilder]:
    """Stage an artifact in ``OUT.partial/`` and move it to ``OUT`` when the block succeeds.

    Args:
        out: final artifact directory.
        kind: artifact kind written to the manifest.
        config: the effective config dataclass (or dict); also saved as ``config.yaml``.
        inputs: name -> path of each input, fingerprinted into the manifest.
        overwrite: replace an existing artifact at ``out`` (never a non-artifact, non-empty folder).
        resumable: keep ``OUT.partial/`` when the block is interrupted or crashes (not on user
            errors), and reuse it on the next call with the same inputs and config.

    Example::

        with write_artifact(out, "tracked", config=cfg, inputs={"video": path}) as art:
            with art.timed("decode"):
                decode(path, art.dir / "images")
    """
    out = Path(out)
    if out.exists() and not overwrite:
        if (out / MANIFEST).is_file():
            raise ArtifactError(f"{out}: already exists (use --overwrite to replace it)")
        if out.is_file() or any(out.iterdir()):
            raise ArtifactError(f"{out}: exists and is not a gafkit artifact; choose another output path")
    if overwrite and not _is_replaceable(out):
        raise ArtifactError(f"{out}: exists and is not a gafkit artifact; refusing to replace it")
    cfg_dict = to_dict(config) if dataclasses.is_dataclass(config) else dict(config or {})
    manifest = Manifest(
        kind=kind,
        format_version=format_version,
        config=cfg_dict,
        inputs={name: fingerprint(p) for name, p in (inputs or {}).items()},
    )
    staging = Path(str(out) + PARTIAL_SUFFIX)
    resumed = False
    if staging.exists():
        # A leftover staging folder is reused only when it belongs to the same job.
        stamp = staging / ".job.json"
        same = stamp.is_file() and json.loads(stamp.read_text()) == _job_key(manifest)
        if resumable and same:
            resumed = True
        else:
            shutil.rmtree(staging)
    staging.mkdir(parents=True, exist_ok=True)
    (staging / ".job.json").write_text(json.dumps(_job_key(manifest)))
    if config is not None:
        from gafkit.config import save_config

        if dataclasses.is_dataclass(config):
            save_config(config, staging / "config.yaml")
    builder = ArtifactBuilder(staging, manifest, resumed)
    try:
        yield builder
    except GafkitError as err:
        if not (resumable and err.keep_partial):
            shutil.rmtree(staging, ignore_errors=True)
        raise
    except BaseException:
        if not resumable:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    _finalize(builder, out)


def _job_key(manifest: Manifest) -> dict[str, Any]:
    return {"kind": manifest.kind, "config": manifest.config, "inputs": manifest.inputs}


def _finalize(builder: ArtifactBuilder, out: Path) -> None:
    manifest = builder.manifest
    manifest.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    (builder.dir / ".job.json").unlink(missing_ok=True)
    tmp = builder.dir / (MANIFEST + ".tmp")
    tmp.write_text(manifest.to_json(), encoding="utf-8")
    os.replace(tmp, builder.dir / MANIFEST)
    old = None
    if out.exists():
        old = out.with_name(out.name + f".old-{os.getpid()}")
        os.replace(out, old)
    os.replace(builder.dir, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def is_complete(path: str | Path, kind: str) -> bool:
    """True when ``path`` holds a finished artifact of ``kind``."""
    try:
        read_manifest(path, kind)
    except ArtifactError:
        return False
    return True


def write_checkpoint(path: str | Path, state: Any) -> None:
    """``torch.save`` ``state`` to ``path`` atomically (creating its folder): a crash mid-write leaves
    the previous checkpoint intact."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a file so that readers see the old or the new content, never half of it (checkpoints)."""
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
