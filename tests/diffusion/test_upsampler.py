"""The prior's 2x upsampler: model, training command, prior folders that carry it, and its use by the
pipeline and the fit when pseudo views are larger than the prior's size."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from gafkit.cli import app
from gafkit.diffusion.dataset import load_split
from gafkit.diffusion.pipeline import MultiViewPrior, build_prior
from gafkit.diffusion.upsampler import ImageUpsampler, upsample_to
from gafkit.diffusion.upsampler_train import random_crops, training_images
from gafkit.errors import GafkitError

runner = CliRunner()
S, V = 64, 2
TINY = {"block_out_channels": (32, 32), "attention_head_dim": 16, "cross_attention_dim": 32}


def test_a_fresh_upsampler_is_bicubic_and_the_guide_reaches_every_output_pixel():
    torch.manual_seed(0)
    up = ImageUpsampler(channels=8, blocks=1)
    low, guide = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 32, 32)
    out = up(low, guide)
    assert out.shape == (2, 3, 32, 32)
    assert torch.allclose(out, F.interpolate(low, scale_factor=2, mode="bicubic", align_corners=False), atol=1e-6)
    torch.nn.init.normal_(up.tail.weight, std=0.1)
    guide.requires_grad_(True)
    up(low, guide)[:, :, 5, 9].sum().backward()
    assert guide.grad[:, :, 4:6, 8:10].abs().sum() > 0  # its own 2x2 block of the guide
    # A guide of another size is resized to 2x, and upsample_to falls back to bilinear without a model.
    assert up(low, guide[:, :, :24, :24].detach()).shape == (2, 3, 32, 32)
    plain = upsample_to(low, (40, 40))
    assert plain.shape == (2, 3, 40, 40) and plain.min() >= 0 and plain.max() <= 1
    assert upsample_to(low, (40, 40), upsampler=up, guide=guide.detach()).shape == (2, 3, 40, 40)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("upsampler") / "data"
    result = runner.invoke(app, ["--device", "cpu", "prior", "data", "synth", "-o", str(out), "--size", str(2 * S),
                                 "--views", str(V), "--subjects", "3", "--heldout", "1",
                                 "--examples-per-subject", "2"])
    assert result.exit_code == 0, result.output
    return out


def test_training_images_and_crops_line_up(data):
    images = training_images(load_split([data], "train"), through_autoencoder=False, device=torch.device("cpu"))
    assert images["high"].shape == (4 * V, 3, 2 * S, 2 * S) and images["low"].shape == (4 * V, 3, S, S)
    g = torch.Generator().manual_seed(0)
    low, guide, high = random_crops(images, 5, 32, g)
    assert low.shape == (5, 3, 16, 16) and guide.shape == high.shape == (5, 3, 32, 32)
    # Low crops are the downsampled high crops (without the autoencoder): aligned, not shifted.
    down = F.interpolate(high, size=(16, 16), mode="bilinear", antialias=True, align_corners=False)
    assert (low - down)[:, :, 2:-2, 2:-2].abs().mean() < 0.02


def test_training_lowers_the_loss_on_a_fixed_batch(data):
    images = training_images(load_split([data], "train"), through_autoencoder=True, device=torch.device("cpu"))
    low, guide, high = random_crops(images, 8, 64, torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    up = ImageUpsampler(channels=16, blocks=2)
    opt = torch.optim.Adam(up.parameters(), lr=2e-3)
    with torch.no_grad():
        before = float(F.l1_loss(up(low, guide), high))
    for _ in range(80):
        loss = F.l1_loss(up(low, guide), high)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert float(F.l1_loss(up(low, guide), high)) < before * 0.95


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("upsampler") / "up"
    result = runner.invoke(app, ["--device", "cpu", "prior", "train-upsampler", "--data", str(data), "-o", str(out),
                                 "--steps", "40", "--set", "channels=8", "--set", "blocks=1", "--set", "crop=64",
                                 "--set", "batch_size=4", "--set", "log_every=20", "--set", "checkpoint_every=20"])
    assert result.exit_code == 0, result.output
    return out


def test_train_upsampler_writes_a_model_scored_against_bicubic(trained):
    for name in ("config.json", "diffusion_pytorch_model.safetensors", "metrics.json", "train_log.jsonl",
                 "manifest.json", "config.yaml"):
        assert (trained / name).is_file(), name
    assert not (trained / "checkpoints").exists()
    m = json.loads((trained / "metrics.json").read_text())
    assert m["split"] == "heldout" and m["steps"] == 40 and m["images"] == 2 * V and m["train_images"] == 4 * V
    for key in ("psnr_upsampler", "psnr_bicubic", "psnr_bilinear", "psnr_masked_upsampler"):
        assert 5 < m[key] < 60, key
    assert [json.loads(x)["step"] for x in (trained / "train_log.jsonl").read_text().splitlines()] == [20, 40]


def test_train_upsampler_resumes_to_the_same_weights(data, trained, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from gafkit.diffusion import upsampler_train

    args = ["--device", "cpu", "prior", "train-upsampler", "--data", str(data), "-o", str(tmp_path / "up"),
            "--steps", "40", "--set", "channels=8", "--set", "blocks=1", "--set", "crop=64", "--set", "batch_size=4",
            "--set", "log_every=20", "--set", "checkpoint_every=20"]
    real = upsampler_train.random_crops
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 25:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(upsampler_train, "random_crops", flaky)
    runner.invoke(app, args)
    assert torch.load(tmp_path / "up.partial" / "checkpoints" / "latest.pt", weights_only=False)["step"] == 24
    monkeypatch.setattr(upsampler_train, "random_crops", real)
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    name = "diffusion_pytorch_model.safetensors"
    a, b = load_file(str(tmp_path / "up" / name)), load_file(str(trained / name))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_train_upsampler_rejects_bad_settings_and_data(data, tmp_path):
    bad = runner.invoke(app, ["--device", "cpu", "prior", "train-upsampler", "--data", str(data), "-o",
                              str(tmp_path / "u"), "--set", "crop=30"])
    assert bad.exit_code == 2 and "crop" in bad.output and not (tmp_path / "u.partial").exists()
    missing = runner.invoke(app, ["--device", "cpu", "prior", "train-upsampler", "--data", str(tmp_path / "none"),
                                  "-o", str(tmp_path / "u")])
    assert missing.exit_code == 2 and "none" in missing.output and not (tmp_path / "u").exists()


def test_a_prior_folder_carries_its_upsampler_and_the_pipeline_uses_it(trained, tmp_path):
    torch.manual_seed(0)
    prior = build_prior(size=S, views=V, **TINY)
    prior.upsampler = ImageUpsampler.from_pretrained(trained)
    prior.save_pretrained(tmp_path / "p")
    assert (tmp_path / "p" / "upsampler" / "config.json").is_file()
    loaded = MultiViewPrior.from_pretrained(tmp_path / "p")
    assert loaded.upsampler is not None
    assert MultiViewPrior.from_pretrained(tmp_path / "p", upsampler="none").upsampler is None
    other = MultiViewPrior.from_pretrained(tmp_path / "p", upsampler=trained)
    assert other.upsampler is not None
    with pytest.raises(GafkitError, match="not an upsampler folder"):
        MultiViewPrior.from_pretrained(tmp_path / "p", upsampler=tmp_path / "nowhere")
    # Renders at 2S: the upsampler's output, not the bilinear one.
    ref, normals, init = torch.rand(1, 3, S, S), torch.rand(1, V, 3, 2 * S, 2 * S), torch.rand(1, V, 3, 2 * S, 2 * S)
    kw = dict(init=init, strength=0.3, num_inference_steps=4)
    up = loaded(ref, normals, generator=torch.Generator().manual_seed(0), **kw)
    plain = MultiViewPrior.from_pretrained(tmp_path / "p", upsampler="none")(
        ref, normals, generator=torch.Generator().manual_seed(0), **kw)
    assert up.shape == plain.shape == (1, V, 3, 2 * S, 2 * S)
    assert (up - plain).abs().mean() > 1e-3
    # At the prior's own size the upsampler is not involved.
    small = torch.rand(1, V, 3, S, S)
    a = loaded(ref, small, generator=torch.Generator().manual_seed(0), num_inference_steps=2)
    b = MultiViewPrior.from_pretrained(tmp_path / "p", upsampler="none")(
        ref, small, generator=torch.Generator().manual_seed(0), num_inference_steps=2)
    assert torch.equal(a, b)


def test_fit_with_larger_pseudo_views_goes_through_the_upsampler(trained, tmp_path):
    from fit_setup import make_trainer

    from gafkit.recon.config import FitConfig
    from gafkit.synth import SynthConfig
    from gafkit.synth.generate import run_synth

    subject = tmp_path / "subject"
    run_synth(SynthConfig(frames=6, size=96), subject)
    torch.manual_seed(0)
    prior = build_prior(size=S, views=V, **TINY)
    prior.upsampler = ImageUpsampler.from_pretrained(trained)
    prior.save_pretrained(tmp_path / "p")
    cfg = FitConfig(iters=4, eval_every=0, preview=False)
    cfg.init.max_gaussians = 300
    cfg.prior.path, cfg.prior.views, cfg.prior.steps, cfg.prior.size = str(tmp_path / "p"), V, 2, 2 * S
    trainer = make_trainer(subject, cfg)
    assert trainer.pseudo.prior.upsampler is not None
    batch = trainer.pseudo.regenerate(trainer.avatar, 0, cfg.backend, 0)
    assert batch.targets.shape == (V, 3, 2 * S, 2 * S) and batch.weight.shape == (V, 1, 2 * S, 2 * S)
    loss = trainer.pseudo.loss(trainer.avatar, 0, cfg.backend, 0, cfg.loss.ssim)
    assert torch.isfinite(loss) and loss > 0
    bad = runner.invoke(app, ["--device", "cpu", "fit", str(subject), "-o", str(tmp_path / "f"), "--iters", "2",
                              "--prior", str(tmp_path / "p"), "--set", f"prior.upsampler={tmp_path / 'nowhere'}"])
    assert bad.exit_code == 2 and "prior.upsampler" in bad.output and not (tmp_path / "f").exists()
