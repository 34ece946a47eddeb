"""``gafkit fit`` / ``gafkit eval`` on a tiny synthetic subject with the torch reference renderer."""

from __future__ import annotations

import errno
import json
import shutil

import numpy as np
import pytest
import torch
from fit_setup import make_trainer
from typer.testing import CliRunner

from gafkit.cli import app
from gafkit.recon import train as train_mod
from gafkit.recon.config import FitConfig
from gafkit.recon.train import run_fit
from gafkit.synth import SynthConfig
from gafkit.synth.generate import run_synth

# Small enough for CI on 2 cores, large enough that the fit must learn something.
SETS = ["--set", "init.max_gaussians=1000", "--set", "densify.start=50", "--set", "densify.every=30",
        "--set", "checkpoint_every=50", "--set", "eval_every=120"]


def small_config(iters: int = 150) -> FitConfig:
    cfg = FitConfig(iters=iters, checkpoint_every=50, eval_every=iters)
    cfg.init.max_gaussians = 1200
    cfg.densify.start, cfg.densify.every = 60, 40
    return cfg


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    root = tmp_path_factory.mktemp("fit") / "subject"
    cfg = SynthConfig(frames=16, size=64)
    cfg.novel.every = 8
    run_synth(cfg, root)
    return root


@pytest.fixture(scope="module")
def fitted(subject, tmp_path_factory):
    out = tmp_path_factory.mktemp("fit") / "avatar"
    result = CliRunner().invoke(app, ["--device", "cpu", "fit", str(subject), "-o", str(out), "--iters", "120", *SETS])
    assert result.exit_code == 0, result.output
    return out


def test_fit_learns_the_subject(fitted):
    for name in ("manifest.json", "config.yaml", "avatar.json", "gaussians.safetensors", "head_params.npz",
                 "canonical_params.npz", "cameras.npz", "splits.json", "metrics.json", "preview.mp4",
                 "checkpoints/latest.pt", "train_log.jsonl"):
        assert (fitted / name).is_file(), name
    metrics = json.loads((fitted / "metrics.json").read_text())
    for key in ("split", "psnr", "ssim", "l1", "lpips", "psnr_masked", "num_gaussians", "iters", "train_time_s",
                "peak_vram_mb", "fps_render"):
        assert key in metrics, key
    assert metrics["split"] == "test" and metrics["iters"] == 120 and metrics["lpips"] is None
    start = metrics["history"][0]
    assert start["iteration"] == 0
    # Held-out frames (the end of the clip: unseen expressions) improve well beyond the initialization.
    assert metrics["psnr"] > start["psnr"] + 3, (start["psnr"], metrics["psnr"])
    assert metrics["psnr_masked"] > start["psnr_masked"] + 3
    assert metrics["num_gaussians"] != 1000  # densification ran
    assert metrics["fps_render"] > 0


def test_eval_cli_matches_fit_metrics_and_scores_novel_views(fitted, subject):
    result = CliRunner().invoke(app, ["--device", "cpu", "eval", str(fitted), "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    metrics = json.loads((fitted / "metrics.json").read_text())
    assert scores["psnr"] == pytest.approx(metrics["psnr"], abs=1e-3)
    assert scores["novel_views"]["frames"] == 12
    assert 5 < scores["novel_views"]["psnr"] < 60
    table = CliRunner().invoke(app, ["--device", "cpu", "eval", str(fitted), "--split", "val"])
    assert table.exit_code == 0 and "novel" in table.output


def test_interrupted_fit_resumes_to_the_same_avatar(subject, tmp_path, monkeypatch):
    cfg = small_config(iters=30)
    cfg.eval_every, cfg.preview, cfg.checkpoint_every = 0, False, 10
    cfg.init.max_gaussians = 300
    cfg.densify.start, cfg.densify.every = 10, 8
    full = run_fit(cfg, subject, tmp_path / "full", device="cpu")

    calls = {"n": 0}
    real_step = train_mod.Trainer.step

    def flaky_step(self):
        calls["n"] += 1
        if calls["n"] == 18:
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(train_mod.Trainer, "step", flaky_step)
    with pytest.raises(KeyboardInterrupt):
        run_fit(cfg, subject, tmp_path / "cut", device="cpu")
    partial = tmp_path / "cut.partial"
    assert (partial / "checkpoints" / "latest.pt").is_file() and not (tmp_path / "cut").exists()
    state = torch.load(partial / "checkpoints" / "latest.pt", weights_only=False)
    assert state["iteration"] == 17
    monkeypatch.setattr(train_mod.Trainer, "step", real_step)
    run_fit(cfg, subject, tmp_path / "cut", device="cpu")
    a = np.load(full / "head_params.npz")
    b = np.load(tmp_path / "cut" / "head_params.npz")
    assert all(np.allclose(a[k], b[k], atol=1e-6) for k in a.files)
    from safetensors.numpy import load_file

    ga, gb = load_file(str(full / "gaussians.safetensors")), load_file(str(tmp_path / "cut" / "gaussians.safetensors"))
    assert ga.keys() == gb.keys() and all(np.allclose(ga[k], gb[k], atol=1e-5) for k in ga)


def test_nan_stops_with_a_checkpoint_and_a_clear_message(subject, tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod.Trainer, "step", _poisoned(train_mod.Trainer.step, after=2))
    runner = CliRunner()
    out = tmp_path / "nan"
    result = runner.invoke(app, ["--device", "cpu", "fit", str(subject), "-o", str(out), "--iters", "40",
                                 "--set", "init.max_gaussians=300", "--set", "preview=false"])
    assert result.exit_code == 1, result.output
    assert "diverged" in result.output
    assert not out.exists() and (tmp_path / "nan.partial" / "checkpoints" / "latest.pt").is_file()
    state = torch.load(tmp_path / "nan.partial" / "checkpoints" / "latest.pt", weights_only=False)
    assert all(torch.isfinite(v).all() for v in state["avatar"].values())


def _poisoned(step, after: int):
    """Trainer.step whose targets turn to NaN after ``after`` calls (a blown-up loss)."""
    calls = {"n": 0}

    def poisoned(self):
        calls["n"] += 1
        if calls["n"] == after + 1:
            original = self.frames.target
            self.frames.target = lambda index, bg, **kw: (original(index, bg, **kw)[0] * float("nan"),
                                                          original(index, bg, **kw)[1])
        return step(self)

    return poisoned


def test_disk_full_keeps_the_previous_checkpoint(subject, tmp_path, monkeypatch):
    cfg = small_config(iters=20)
    cfg.eval_every, cfg.preview, cfg.checkpoint_every = 0, False, 10
    cfg.init.max_gaussians = 300
    real_write = train_mod.write_checkpoint
    calls = {"n": 0}

    def full_disk(path, state):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, state)

    monkeypatch.setattr(train_mod, "write_checkpoint", full_disk)
    from gafkit.errors import StoppedError

    with pytest.raises(StoppedError, match="could not write the checkpoint"):
        run_fit(cfg, subject, tmp_path / "full", device="cpu")
    state = torch.load(tmp_path / "full.partial" / "checkpoints" / "latest.pt", weights_only=False)
    assert state["iteration"] == 10
    assert not [p for p in (tmp_path / "full.partial" / "checkpoints").iterdir() if p.name != "latest.pt"]
    # With space again, the same command resumes and finishes.
    monkeypatch.setattr(train_mod, "write_checkpoint", real_write)
    run_fit(cfg, subject, tmp_path / "full", device="cpu")
    assert json.loads((tmp_path / "full" / "metrics.json").read_text())["iters"] == 20


def test_bad_inputs_exit_2_without_output(subject, tmp_path):
    runner = CliRunner()

    def run(src, name, *extra):
        out = tmp_path / name
        result = runner.invoke(app, ["--device", "cpu", "fit", str(src), "-o", str(out), "--iters", "5", *extra])
        assert result.exit_code == 2, result.output
        assert not out.exists() and not (tmp_path / f"{name}.partial").exists()
        return result.output

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "x.txt").write_text("hi")
    assert "not a tracked artifact" in run(plain, "a")
    empty = tmp_path / "empty"
    shutil.copytree(subject, empty)
    data = json.loads((empty / "transforms.json").read_text())
    data["frames"] = []
    (empty / "transforms.json").write_text(json.dumps(data))
    assert "no usable frames" in run(empty, "b")
    missing = tmp_path / "missing_mask"
    shutil.copytree(subject, missing)
    next((missing / "fg_masks").iterdir()).unlink()
    assert "missing" in run(missing, "c")
    wrong = tmp_path / "wrong_size"
    shutil.copytree(subject, wrong)
    from PIL import Image

    first = sorted((wrong / "fg_masks").iterdir())[0]
    Image.new("L", (32, 32)).save(first)
    assert "32x32" in run(wrong, "d")
    assert "lr.final_factor" in run(subject, "e", "--set", "lr.final_factor=0")
    assert "prior.min_yaw_deg" in run(subject, "f", "--set", "prior.min_yaw_deg=180")
    assert "prior.seen_cos" in run(subject, "g", "--set", "prior.seen_cos=1.5")
    assert "prior.foreground_faces" in run(subject, "h", "--set", "prior.foreground_faces=-0.1")


def test_refine_tracking_moves_only_training_frames(subject, tmp_path):
    cfg = small_config(iters=15)
    cfg.eval_every, cfg.preview, cfg.refine_tracking = 0, False, True
    cfg.init.max_gaussians = 300
    run_fit(cfg, subject, tmp_path / "refined", device="cpu")
    tracked = np.load(subject / "head_params.npz")
    refined = np.load(tmp_path / "refined" / "head_params.npz")
    splits = json.loads((tmp_path / "refined" / "splits.json").read_text())
    moved = np.abs(refined["rotation"] - tracked["rotation"]).max(axis=1)
    assert (moved[splits["train"]] > 0).sum() >= 10  # 15 steps visit ~12 training frames
    assert np.array_equal(refined["rotation"][splits["test"]], tracked["rotation"][splits["test"]])
    assert np.array_equal(refined["shape"], tracked["shape"])


def test_learning_rates_decay_to_their_final_values(subject):
    cfg = small_config(iters=100)
    cfg.lr.final_factor = 0.1
    trainer = make_trainer(subject, cfg)
    rates = {}
    for it in (0, 50, 100):
        trainer.iteration = it
        trainer._schedule()
        rates[it] = {g["name"]: g["lr"] for g in trainer.optimizer.param_groups}
    assert rates[0]["opacity_logit"] == pytest.approx(cfg.lr.opacity)
    assert rates[50]["sh_dc"] == pytest.approx(cfg.lr.sh_dc * 0.1**0.5)
    assert rates[100]["log_scale"] == pytest.approx(cfg.lr.scale * 0.1)
    assert rates[100]["xyz"] == pytest.approx(cfg.lr.xyz_final)


def test_outside_opacity_pulls_down_floaters_only(subject):
    cfg = small_config()
    cfg.loss.outside, cfg.loss.outside_size = 1.0, 48
    trainer = make_trainer(subject, cfg)
    a = trainer.avatar
    with torch.no_grad():
        a.xyz[0] = torch.tensor([0.0, 0.0, 8.0])  # 8 triangle sizes (centimetres) off its triangle: a floater
        a.opacity_logit[0] = 2.0
    loss = sum(trainer.outside.loss(a, "torch") for _ in range(8))
    loss.backward()
    grad = a.opacity_logit.grad
    assert float(loss.detach()) > 0 and float(grad[0]) > 0  # less opacity there, less loss
    # Gaussians on the surface sit inside the silhouette and its margin: (almost) none is pushed.
    assert float((grad[1:].abs() > 1e-3 * float(grad[0])).float().mean()) < 0.05


def test_fit_with_the_outside_term_runs_and_checks_its_settings(subject, tmp_path):
    base = ["--device", "cpu", "fit", str(subject), "--iters", "20", *SETS, "--set", "preview=false"]
    ok = CliRunner().invoke(app, [*base, "-o", str(tmp_path / "a"), "--set", "loss.outside=0.5",
                                  "--set", "loss.outside_size=32"])
    assert ok.exit_code == 0, ok.output
    bad = CliRunner().invoke(app, [*base, "-o", str(tmp_path / "b"), "--set", "loss.outside_margin=1.5"])
    assert bad.exit_code == 2 and "loss.outside" in bad.output and not (tmp_path / "b").exists()


def test_foreground_colour_trains_on_the_estimate_and_scores_on_the_frame(subject):
    from gafkit.recon.data import FrameSet
    from gafkit.recon.evaluate import evaluate_frames

    cfg = small_config()
    cfg.foreground_colour = True
    trainer = make_trainer(subject, cfg)
    seq, frames = trainer.seq, trainer.frames
    assert frames.foreground is not None and frames.foreground.shape == frames.images.shape
    # Only the training frames are estimated; held-out frames keep the frame itself.
    held_out = [i for i in range(len(frames)) if i not in set(trainer.train_ids)]
    assert held_out and all(torch.equal(frames.foreground[i], frames.images[i]) for i in held_out)
    assert any(not torch.equal(frames.foreground[i], frames.images[i]) for i in trainer.train_ids)
    trainer.step()
    # Evaluation composites the frame itself, so scores stay comparable with fits that train on it.
    metrics = evaluate_frames(trainer.avatar, trainer.model, seq.params, frames, [0], trainer.bg)
    plain = FrameSet(images=frames.images, masks=frames.masks, cameras=frames.cameras)
    again = evaluate_frames(trainer.avatar, trainer.model, seq.params, plain, [0], trainer.bg)
    assert json.dumps(metrics, sort_keys=True) == json.dumps(again, sort_keys=True)  # NaN-safe equality
