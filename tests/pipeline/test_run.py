"""`gafkit run`: the whole pipeline on a few frames of the example clip, skipping, resuming, errors."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import gafkit.recon.train as train_mod
from gafkit.artifact import read_manifest
from gafkit.cli import app
from gafkit.config import build_config, select_preset
from gafkit.errors import ConfigError
from gafkit.pipeline import PRESETS, RunConfig, read_run, run_is_current
from paths import EXAMPLE_VIDEO

runner = CliRunner()


def run(out, *extra, video=EXAMPLE_VIDEO, config=None):
    args = ["--device", "cpu", "run", str(video), "-o", str(out), "--preset", "fast"]
    if config is not None:
        args += ["--config", str(config)]
    return runner.invoke(app, [*args, *extra])


def statuses(out):
    return {name: s["status"] for name, s in read_run(out)["stages"].items()}


def layout(out):
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if "checkpoints" not in p.parts)


@pytest.fixture(scope="module")
def finished(tiny_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "d20 run"
    result = run(out, config=tiny_config)
    assert result.exit_code == 0, result.output
    return out


def test_run_writes_every_stage(finished):
    out = finished
    assert statuses(out) == {"track": "done", "fit": "done", "animate": "done", "eval": "done"}
    record = read_run(out)
    assert record["status"] == "complete" and record["error"] is None and record["stage"] is None
    assert all(s["seconds"] > 0 for s in record["stages"].values())
    assert read_manifest(out / "tracked", "tracked").config["preprocess"]["crop"]["size"] == 64
    fit = read_manifest(out / "avatar", "avatar")
    assert fit.config["iters"] == 20 and fit.extra["num_gaussians"] == 300
    for name in ("animate_self.mp4", "animate_orbit.mp4"):
        assert (out / name).stat().st_size > 500
    metrics = json.loads((out / "eval.json").read_text())
    assert metrics["split"] == "test" and metrics["psnr"] > 5
    assert record["metrics"]["psnr"] == metrics["psnr"]
    assert (out / "config.yaml").is_file() and not list(out.glob("*.partial"))


def test_rerun_skips_what_is_up_to_date(finished, tiny_config):
    out = finished
    before = {p: p.stat().st_mtime_ns for p in (out / "avatar" / "manifest.json", out / "animate_self.mp4")}
    result = run(out, config=tiny_config)
    assert result.exit_code == 0, result.output
    assert set(statuses(out).values()) == {"skipped"}
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    cfg = build_config(select_preset(PRESETS, "fast", "default"), file=tiny_config)
    assert run_is_current(out, EXAMPLE_VIDEO, cfg)
    assert not run_is_current(out, EXAMPLE_VIDEO, build_config(cfg, sets=["fit.iters=21"]))

    # A preview setting redoes only the videos; a fit setting the fit and everything after it.
    result = run(out, "--set", "animate.orbit_frames=4", config=tiny_config)
    assert result.exit_code == 0, result.output
    assert statuses(out) == {"track": "skipped", "fit": "skipped", "animate": "done", "eval": "skipped"}
    result = run(out, "--set", "animate.orbit_frames=4", "--set", "fit.iters=12", config=tiny_config)
    assert result.exit_code == 0, result.output
    assert statuses(out) == {"track": "skipped", "fit": "done", "animate": "done", "eval": "done"}
    assert read_manifest(out / "avatar", "avatar").config["iters"] == 12

    # --prior reaches the fit: 'none' is the default (nothing to redo), a missing folder fails the fit stage.
    result = run(out, "--set", "animate.orbit_frames=4", "--set", "fit.iters=12", "--prior", "none", config=tiny_config)
    assert result.exit_code == 0 and set(statuses(out).values()) == {"skipped"}, result.output
    result = run(out, "--set", "animate.orbit_frames=4", "--set", "fit.iters=12", "--prior", str(out / "no prior"),
                 config=tiny_config)
    assert result.exit_code == 2 and "no prior" in result.output, result.output


def test_interrupted_run_resumes_the_fit(tiny_config, finished, tmp_path, monkeypatch):
    out = tmp_path / "cut"
    real_step = train_mod.Trainer.step
    calls = {"n": 0}

    def step(self):
        calls["n"] += 1
        if calls["n"] == 14:
            raise KeyboardInterrupt  # Ctrl-C in the 14th step: iterations 0-12 are done
        return real_step(self)

    monkeypatch.setattr(train_mod.Trainer, "step", step)
    result = run(out, config=tiny_config)
    assert result.exit_code == 130, result.output
    record = read_run(out)
    assert record["status"] == "interrupted" and record["stage"] == "fit"
    assert statuses(out)["track"] == "done" and statuses(out)["fit"] == "interrupted"
    ckpt = out / "avatar.partial" / "checkpoints" / "latest.pt"
    assert torch.load(ckpt, weights_only=False)["iteration"] == 13 and not (out / "avatar").exists()

    result = run(out, config=tiny_config)
    assert result.exit_code == 0, result.output
    assert calls["n"] == 14 + 20 - 13  # only the missing iterations ran
    assert statuses(out) == {"track": "skipped", "fit": "done", "animate": "done", "eval": "done"}
    assert layout(out) == layout(finished)


def test_bad_inputs(tiny_config, tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video")
    out = tmp_path / "bad"
    result = run(out, video=bad, config=tiny_config)
    assert result.exit_code == 2, result.output
    assert result.output.strip().startswith("error:") and len(result.output.strip().splitlines()) == 1
    record = read_run(out)
    assert record["status"] == "failed" and record["stage"] == "track" and "notes.mp4" in record["error"]
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "run.json"]  # no partial artifact

    # The folder holds the run of another video: refused, unless --overwrite.
    result = run(out, config=tiny_config)
    assert result.exit_code == 2 and "holds the run of another video" in result.output
    result = run(out, "--overwrite", config=tiny_config)
    assert result.exit_code == 0, result.output
    assert read_run(out)["video"] == str(EXAMPLE_VIDEO)

    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "thesis.tex").write_text("keep me")
    result = run(stranger, config=tiny_config)
    assert result.exit_code == 2 and "not a gafkit run folder" in result.output
    assert [p.name for p in stranger.iterdir()] == ["thesis.tex"]

    result = run(tmp_path / "x", "--set", "fit.iterz=3")
    assert result.exit_code == 2 and "unknown setting 'fit.iterz'" in result.output
    assert not (tmp_path / "x").exists()


def test_presets_set_the_stages_together():
    demo = PRESETS["demo"]()
    assert demo.track.preprocess.crop.size == 256 and demo.fit.resolution == 128
    assert demo.fit.init.max_gaussians is not None and demo.fit.iters < 1000
    assert PRESETS["quality"]().fit.iters > PRESETS["default"]().fit.iters > PRESETS["fast"]().fit.iters
    assert isinstance(PRESETS["default"](), RunConfig)
    with pytest.raises(ConfigError, match="demo"):
        select_preset(PRESETS, "turbo", "default")
