from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass

import pytest

from gafkit.artifact import (
    MANIFEST,
    atomic_write_bytes,
    fingerprint,
    is_complete,
    read_manifest,
    write_artifact,
)
from gafkit.errors import ArtifactError, InputError


@dataclass
class Cfg:
    iters: int = 3


def test_complete_artifact_has_manifest_config_and_inputs(tmp_path):
    src = tmp_path / "in.bin"
    src.write_bytes(b"abc")
    out = tmp_path / "out"
    with write_artifact(out, "demo", config=Cfg(), inputs={"src": src}) as art:
        with art.timed("work"):
            (art.dir / "data.txt").write_text("x")
        art.manifest.extra["frames"] = 1
        assert not out.exists()  # nothing at OUT until the block succeeds
    manifest = read_manifest(out, "demo")
    assert manifest.config == {"iters": 3}
    assert manifest.inputs["src"]["sha256"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert manifest.timings["work"] >= 0 and manifest.extra == {"frames": 1}
    assert (out / "config.yaml").is_file() and (out / "data.txt").read_text() == "x"
    assert not (tmp_path / "out.partial").exists()
    assert is_complete(out, "demo") and not is_complete(out, "other")


def test_exception_mid_write_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with write_artifact(out, "demo") as art:
            (art.dir / "half.txt").write_text("x")
            raise RuntimeError("crash")
    assert not out.exists() and not (tmp_path / "out.partial").exists()


def test_user_error_removes_even_resumable_staging(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(InputError):
        with write_artifact(out, "demo", resumable=True):
            raise InputError("video.mp4", "no frames")
    assert not (tmp_path / "out.partial").exists()


def test_resumable_interrupt_keeps_staging_and_resumes(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        with write_artifact(out, "demo", config=Cfg(), resumable=True) as art:
            assert not art.resumed
            (art.dir / "ckpt").write_text("step 5")
            raise KeyboardInterrupt
    assert (tmp_path / "out.partial" / "ckpt").is_file() and not out.exists()
    with pytest.raises(ArtifactError, match="unfinished run"):
        read_manifest(out, "demo")
    with write_artifact(out, "demo", config=Cfg(), resumable=True) as art:
        assert art.resumed and (art.dir / "ckpt").read_text() == "step 5"
    assert is_complete(out, "demo")


def test_staging_of_another_job_is_not_resumed(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        with write_artifact(out, "demo", config=Cfg(iters=3), resumable=True) as art:
            (art.dir / "ckpt").write_text("old")
            raise KeyboardInterrupt
    with write_artifact(out, "demo", config=Cfg(iters=4), resumable=True) as art:
        assert not art.resumed and not (art.dir / "ckpt").exists()


def test_existing_outputs(tmp_path):
    out = tmp_path / "out"
    with write_artifact(out, "demo"):
        pass
    with pytest.raises(ArtifactError, match="already exists"):
        with write_artifact(out, "demo"):
            pass
    with write_artifact(out, "demo", overwrite=True) as art:
        (art.dir / "new").write_text("1")
    assert (out / "new").is_file()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(ArtifactError, match="not a gafkit artifact"):
            with write_artifact(mine, "demo", overwrite=overwrite):
                pass
    assert (mine / "thesis.tex").read_text() == "precious"


def test_read_manifest_errors(tmp_path):
    with pytest.raises(ArtifactError, match="no such directory"):
        read_manifest(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ArtifactError, match="not a tracked artifact"):
        read_manifest(tmp_path / "plain", "tracked")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / MANIFEST).write_text("{not json")
    with pytest.raises(ArtifactError, match="unreadable manifest"):
        read_manifest(tmp_path / "broken")


def test_fingerprint_of_folder_changes_with_content(tmp_path):
    d = tmp_path / "frames"
    d.mkdir()
    (d / "a.png").write_bytes(b"1")
    before = fingerprint(d)["sha256"]
    (d / "a.png").write_bytes(b"2")
    assert fingerprint(d)["sha256"] != before


def test_killed_process_leaves_no_complete_looking_output(tmp_path):
    """A hard kill (no cleanup code runs) mid-write must not leave anything at OUT."""
    out = tmp_path / "out"
    script = textwrap.dedent(
        f"""
        import time
        from gafkit.artifact import write_artifact
        with write_artifact({str(out)!r}, "demo") as art:
            (art.dir / "frame.png").write_text("x")
            print("writing", flush=True)
            time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert not out.exists()
    assert not is_complete(out, "demo")
    # the next run starts clean over the leftover staging folder
    with write_artifact(out, "demo") as art:
        assert not (art.dir / "frame.png").exists()
    assert is_complete(out, "demo")


def test_atomic_write_bytes(tmp_path):
    target = tmp_path / "ckpt.bin"
    atomic_write_bytes(target, b"v1")
    atomic_write_bytes(target, b"v2")
    assert target.read_bytes() == b"v2"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.bin"]
    json.dumps(fingerprint(target))
    time.sleep(0)
