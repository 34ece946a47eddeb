"""The prior end to end on CPU with tiny models: denoiser, folder, training, sampling, pseudo ground truth
and a fit step that uses it."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from gafkit.cli import app
from gafkit.diffusion.dataset import load_split
from gafkit.diffusion.model import MultiViewDenoiser
from gafkit.diffusion.pipeline import MultiViewPrior, build_prior
from gafkit.diffusion.train import PriorTrainer, loss_on_batch
from gafkit.diffusion.train_config import PRESETS
from gafkit.errors import GafkitError

runner = CliRunner()
S, V = 64, 2
TINY = {"block_out_channels": (32, 32), "attention_head_dim": 16, "cross_attention_dim": 32}


def tiny_prior(seed: int = 0) -> MultiViewPrior:
    torch.manual_seed(seed)
    return build_prior(size=S, views=V, **TINY)


def test_cross_view_attention_mixes_the_views_of_one_example_only():
    torch.manual_seed(0)
    model = MultiViewDenoiser(latent_channels=4, sample_size=8, **TINY).eval()
    x, n = torch.randn(2, 3, 4, 8, 8), torch.randn(2, 3, 4, 8, 8)
    ref, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 500])
    with torch.no_grad():
        out = model(x, t, n, ref)
        x2 = x.clone()
        x2[0, 0] += 1
        changed = (model(x2, t, n, ref) - out).abs().amax(dim=(2, 3, 4))
        dropped = model(x, t, n, ref, torch.tensor([True, False]))
        other_ref = model(x, t, n, torch.randn(2, 4, 8, 8), torch.tensor([True, False]))
    assert out.shape == (2, 3, 4, 8, 8)
    assert (changed[0, 1:] > 1e-4).all()  # the other views of example 0 see view 0
    assert (changed[1] == 0).all()  # example 1 does not
    # A dropped reference is the null token: the reference's content no longer matters.
    assert torch.allclose(dropped[0], other_ref[0]) and not torch.allclose(dropped[1], other_ref[1])


def test_reference_view_carries_the_reference_through_self_attention():
    torch.manual_seed(0)
    x, n = torch.randn(2, 3, 4, 8, 8), torch.randn(2, 3, 4, 8, 8)
    ref, other, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([10, 500])
    outs = {}
    for on in (False, True):
        model = MultiViewDenoiser(latent_channels=4, sample_size=8, global_embedding=False, reference_view=on,
                                  **TINY).eval()
        with torch.no_grad():
            # Constant cross-attention tokens: only the reference view can carry the reference's content.
            model.reference_in.weight.zero_()
            model.reference_in.bias.zero_()
            a, b = model(x, t, n, ref), model(x, t, n, other)
            dropped = torch.tensor([True, False])
            da, db = model(x, t, n, ref, dropped), model(x, t, n, other, dropped)
        assert a.shape == (2, 3, 4, 8, 8)
        outs[on] = (a - b).abs().amax(dim=(1, 2, 3, 4))
        assert torch.allclose(da[0], db[0])  # a dropped reference is the zero latent: content gone
    assert (outs[False] == 0).all() and (outs[True] > 1e-4).all()


def test_a_training_step_with_the_reference_view_lowers_the_loss(data):
    cfg = PRESETS["tiny"]()
    cfg.reference_drop, cfg.model.reference_view = 0.0, True
    trainer = PriorTrainer(cfg, torch.device("cpu"))
    assert trainer.prior.denoiser.config.reference_view
    trainer.load_examples(load_split([data], "train"))
    before = loss_on_batch(trainer, seed=3)
    for _ in range(8):
        trainer.train_step(torch.Generator().manual_seed(3))
    assert loss_on_batch(trainer, seed=3) < before


def test_prior_folder_round_trip_and_seeded_sampling(tmp_path):
    prior = tiny_prior()
    ref, normals = torch.rand(1, 3, S, S), torch.rand(1, V, 3, S, S)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    a = prior(ref, normals, num_inference_steps=3, generator=g())
    assert a.shape == (1, V, 3, S, S) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, prior(ref, normals, num_inference_steps=3, generator=g()))
    prior.save_pretrained(tmp_path / "p")
    index = json.loads((tmp_path / "p" / "model_index.json").read_text())
    assert index["autoencoder"] == "default" and index["size"] == S and index["views"] == V
    assert not (tmp_path / "p" / "autoencoder").exists()  # the packaged autoencoder is referenced, not copied
    loaded = MultiViewPrior.from_pretrained(tmp_path / "p")
    assert torch.allclose(loaded(ref, normals, num_inference_steps=3, generator=g()), a, atol=1e-5)
    # Other sizes are resized in and out; strength < 1 starts from the given images.
    out = loaded.pseudo_ground_truth(torch.rand(1, V, 3, 48, 48), torch.rand(1, V, 3, 48, 48),
                                     torch.rand(1, 3, 48, 48), 0.3, num_inference_steps=4, generator=g())
    assert out.shape == (1, V, 3, 48, 48)
    half = loaded.save_pretrained(tmp_path / "half", dtype=torch.float16)
    weights = half / "denoiser" / "diffusion_pytorch_model.safetensors"
    assert weights.stat().st_size < (tmp_path / "p" / "denoiser" / "diffusion_pytorch_model.safetensors").stat().st_size * 0.6


def test_int8_folder_is_a_quarter_of_float32_and_samples_alike(tmp_path):
    prior = tiny_prior()
    prior.save_pretrained(tmp_path / "f32")
    prior.save_pretrained(tmp_path / "q8", dtype="int8")
    f32 = (tmp_path / "f32" / "denoiser" / "diffusion_pytorch_model.safetensors").stat().st_size
    q8 = (tmp_path / "q8" / "denoiser" / "diffusion_pytorch_model.int8.safetensors").stat().st_size
    assert q8 < f32 * 0.3
    loaded = MultiViewPrior.from_pretrained(tmp_path / "q8")
    for name, w in prior.denoiser.state_dict().items():
        err = (loaded.denoiser.state_dict()[name] - w).abs().max()
        assert err <= w.abs().max() / 127 * 0.51 + 1e-3, name  # half a quantization step (+ fp16 of 1-D)
    ref, normals = torch.rand(1, 3, S, S), torch.rand(1, V, 3, S, S)
    a = prior(ref, normals, num_inference_steps=3, generator=torch.Generator().manual_seed(0))
    b = loaded(ref, normals, num_inference_steps=3, generator=torch.Generator().manual_seed(0))
    assert (a - b).abs().mean() < 0.02


def test_packaged_default_prior_loads():
    prior = MultiViewPrior.from_pretrained("default")
    assert prior.size == 256 and prior.views == 4
    assert sum(p.numel() for p in prior.denoiser.parameters()) > 1_000_000


def test_prior_errors(tmp_path):
    with pytest.raises(GafkitError, match="not a gafkit prior folder"):
        MultiViewPrior.from_pretrained(tmp_path)
    with pytest.raises(GafkitError, match="strength"):
        tiny_prior()(torch.rand(1, 3, S, S), torch.rand(1, V, 3, S, S), init=torch.rand(1, V, 3, S, S), strength=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("prior") / "data"
    result = runner.invoke(app, ["--device", "cpu", "prior", "data", "synth", "-o", str(out), "--size", str(S),
                                 "--views", str(V), "--subjects", "3", "--heldout", "1",
                                 "--examples-per-subject", "2"])
    assert result.exit_code == 0, result.output
    return out


def test_a_training_step_lowers_the_loss_on_a_fixed_batch(data):
    cfg = PRESETS["tiny"]()
    cfg.reference_drop = 0.0
    trainer = PriorTrainer(cfg, torch.device("cpu"))
    trainer.load_examples(load_split([data], "train"))
    assert trainer.latents["images"].shape[:2] == (4, V)
    before = loss_on_batch(trainer, seed=5)
    assert loss_on_batch(trainer, seed=5) == before  # fixed batch, fixed noise
    trainer.train_step(torch.Generator().manual_seed(5))
    assert loss_on_batch(trainer, seed=5) < before


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("prior") / "prior"
    result = runner.invoke(app, ["--device", "cpu", "prior", "train", "--data", str(data), "-o", str(out),
                                 "--preset", "tiny", "--steps", "12"])
    assert result.exit_code == 0, result.output
    return out


def test_prior_train_writes_a_loadable_prior_with_logs_grids_and_metrics(trained):
    for name in ("model_index.json", "denoiser/config.json", "denoiser/diffusion_pytorch_model.safetensors",
                 "scheduler/scheduler_config.json", "metrics.json", "train_log.jsonl", "samples/step_000012.jpg",
                 "samples/step_000010.jpg", "manifest.json", "config.yaml"):
        assert (trained / name).is_file(), name
    assert not (trained / "checkpoints" / "latest.pt").exists()
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["split"] == "heldout" and metrics["steps"] == 12 and metrics["examples"] == 4
    assert 0 < metrics["psnr"] < 60 and "refine_gain_db" in metrics
    log = [json.loads(line) for line in (trained / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [5, 10, 12]
    prior = MultiViewPrior.from_pretrained(trained)
    assert next(prior.denoiser.parameters()).dtype == torch.float32  # saved fp16, loaded as asked


def test_prior_train_resumes_after_a_time_limit(data, trained, tmp_path, monkeypatch):
    import gafkit.diffusion.train as train_mod

    out = tmp_path / "prior"
    args = ["--device", "cpu", "prior", "train", "--data", str(data), "-o", str(out), "--preset", "tiny",
            "--steps", "12"]
    stopped = runner.invoke(app, [*args, "--time-limit", "0"])
    assert stopped.exit_code == 1 and "time limit" in stopped.output
    ckpt = tmp_path / "prior.partial" / "checkpoints" / "latest.pt"
    cache = ckpt.with_name("latents.pt")
    assert torch.load(ckpt, weights_only=False)["step"] == 1 and cache.is_file()

    def no_encoding(*a, **k):
        raise AssertionError("a resumed run re-encoded its data")

    with monkeypatch.context() as m:  # the resumed run reads the cached latents instead of encoding
        m.setattr(train_mod, "encode_examples", no_encoding)
        again = runner.invoke(app, [*args, "--time-limit", "0"])
    assert again.exit_code == 1 and torch.load(ckpt, weights_only=False)["step"] == 2  # continued, not restarted
    done = runner.invoke(app, args)  # the limit is not part of the job: the run continues to the end
    assert done.exit_code == 0, done.output
    assert not (out / "checkpoints" / "latents.pt").exists()
    # Same weights as the uninterrupted run of the `trained` fixture (same data, config and seed).
    from safetensors.torch import load_file

    name = "denoiser/diffusion_pytorch_model.safetensors"
    a, b = load_file(str(out / name)), load_file(str(trained / name))
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-3) for k in a)


def test_prior_train_fine_tunes_an_existing_prior(data, trained, tmp_path):
    import yaml

    cfg = PRESETS["tiny"]()
    cfg.init = str(trained)
    trainer = PriorTrainer(cfg, torch.device("cpu"))
    start = MultiViewPrior.from_pretrained(trained).denoiser.state_dict()
    assert all(torch.equal(v, start[k]) for k, v in trainer.prior.denoiser.state_dict().items())
    out = tmp_path / "ft"
    # The architecture comes from the prior it starts from, whatever the preset says.
    result = runner.invoke(app, ["--device", "cpu", "prior", "train", "--data", str(data), "-o", str(out),
                                 "--init", str(trained), "--steps", "3", "--set", "model.block_out_channels=[64,64]",
                                 "--set", "eval_examples=2", "--set", "sample_steps=2", "--set", "sample_every=0"])
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["init"] == str(trained) and saved["model"]["block_out_channels"] == [32, 32]
    assert MultiViewPrior.from_pretrained(out).denoiser.config.block_out_channels == MultiViewPrior.from_pretrained(
        trained).denoiser.config.block_out_channels
    bad = runner.invoke(app, ["--device", "cpu", "prior", "train", "--data", str(data), "-o", str(tmp_path / "x"),
                              "--init", str(tmp_path / "nowhere")])
    assert bad.exit_code == 2 and "nowhere" in bad.output and not (tmp_path / "x").exists()


def test_prior_train_rejects_mismatched_data(data, tmp_path):
    result = runner.invoke(app, ["--device", "cpu", "prior", "train", "--data", str(data), "-o", str(tmp_path / "p"),
                                 "--set", "model.views=4"])
    assert result.exit_code == 2 and "views" in result.output
    assert not (tmp_path / "p").exists() and not (tmp_path / "p.partial").exists()


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    from gafkit.synth import SynthConfig
    from gafkit.synth.generate import run_synth

    root = tmp_path_factory.mktemp("prior") / "subject"
    cfg = SynthConfig(frames=8, size=64)
    cfg.novel.every = 8
    run_synth(cfg, root)
    return root


def test_prior_sample_writes_views_next_to_normals(trained, subject, tmp_path):
    out = tmp_path / "views"
    result = runner.invoke(app, ["--device", "cpu", "prior", "sample", str(trained), "--tracked", str(subject),
                                 "-o", str(out), "--views", "0,120,240", "--steps", "2"])
    assert result.exit_code == 0, result.output
    for i in range(3):
        assert (out / f"view_{i:02d}.png").is_file() and (out / f"normal_{i:02d}.png").is_file()
    info = json.loads((out / "views.json").read_text())
    assert info["yaw_deg"] == [0, 120, 240] and (out / "sheet.jpg").is_file() and (out / "reference.png").is_file()
    bad = runner.invoke(app, ["--device", "cpu", "prior", "sample", str(trained), "--tracked", str(subject),
                              "-o", str(tmp_path / "bad"), "--ref", str(tmp_path / "missing.png")])
    assert bad.exit_code == 2 and "missing.png" in bad.output and not (tmp_path / "bad").exists()
    big = runner.invoke(app, ["--device", "cpu", "prior", "sample", str(trained), "--tracked", str(subject),
                              "-o", str(tmp_path / "big"), "--views", "0,180", "--steps", "2", "--size", str(2 * S)])
    assert big.exit_code == 0, big.output
    from PIL import Image

    assert Image.open(tmp_path / "big" / "view_01.png").size == (2 * S, 2 * S)
    info = json.loads((tmp_path / "big" / "views.json").read_text())
    assert info["size"] == 2 * S and info["upsampler"] is False  # this prior has none: bilinear
    tiny = runner.invoke(app, ["--device", "cpu", "prior", "sample", str(trained), "--tracked", str(subject),
                               "-o", str(tmp_path / "tiny"), "--size", "8"])
    assert tiny.exit_code == 2 and "size 8" in tiny.output and not (tmp_path / "tiny").exists()
    share = runner.invoke(app, ["--device", "cpu", "prior", "sample", str(trained), "--tracked", str(subject),
                                "-o", str(tmp_path / "share"), "--foreground-faces", "2"])
    assert share.exit_code == 2 and "--foreground-faces 2" in share.output and not (tmp_path / "share").exists()


def test_prior_sample_normals_leave_out_what_the_masks_cut(trained, subject, tmp_path):
    import shutil

    import numpy as np
    from PIL import Image

    cut = tmp_path / "cut"
    shutil.copytree(subject, cut)
    for png in sorted((cut / "fg_masks").glob("*.png")):
        m = np.asarray(Image.open(png)).copy()
        m[m.shape[0] // 2:] = 0
        Image.fromarray(m).save(png)

    def coverage(share):
        out = tmp_path / f"s{share}"
        r = runner.invoke(app, ["--device", "cpu", "prior", "sample", str(trained), "--tracked", str(cut), "-o", str(out),
                                "--views", "0", "--steps", "1", "--foreground-faces", str(share)])
        assert r.exit_code == 0, r.output
        return (np.asarray(Image.open(out / "normal_00.png")).sum(-1) > 0).mean()

    assert coverage(0.5) < 0.8 * coverage(0)


def test_fit_with_the_prior_generates_pseudo_views_and_resumes_identically(trained, subject, tmp_path):
    from gafkit.recon.config import FitConfig
    from gafkit.recon.train import run_fit

    def cfg(iters):
        c = FitConfig(iters=iters, checkpoint_every=6, eval_every=0, preview=False)
        c.init.max_gaussians = 300
        c.densify.enabled = False
        c.prior.path, c.prior.views, c.prior.steps = str(trained), V, 2
        c.prior.start, c.prior.regenerate_every = 0.25, 4
        return c

    run_fit(cfg(12), subject, tmp_path / "a", device="cpu")
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["prior"]["generations"] == 3  # iterations 3, 7, 11
    # An interrupted run resumes with the pseudo views it had.
    from gafkit.recon import train as train_mod

    calls = {"n": 0}
    real_step = train_mod.Trainer.step

    def flaky(self):
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt
        return real_step(self)

    train_mod.Trainer.step = flaky
    try:
        with pytest.raises(KeyboardInterrupt):
            run_fit(cfg(12), subject, tmp_path / "b", device="cpu")
    finally:
        train_mod.Trainer.step = real_step
    run_fit(cfg(12), subject, tmp_path / "b", device="cpu")
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert b["psnr"] == pytest.approx(a["psnr"], abs=1e-4)
    bad = runner.invoke(app, ["--device", "cpu", "fit", str(subject), "-o", str(tmp_path / "c"), "--iters", "2",
                              "--prior", str(tmp_path / "nowhere")])
    assert bad.exit_code == 2 and "nowhere" in bad.output and not (tmp_path / "c").exists()


def test_pseudo_views_leave_what_the_frames_saw_to_the_frames(trained, subject):
    from fit_setup import make_trainer

    from gafkit.recon.config import FitConfig
    from gafkit.render.mesh import rasterize_mesh

    cfg = FitConfig(iters=4, eval_every=0, preview=False)
    cfg.init.max_gaussians = 300
    cfg.prior.path, cfg.prior.views, cfg.prior.steps, cfg.prior.seen_cos = str(trained), V, 2, 0.5
    trainer = make_trainer(subject, cfg)
    pseudo = trainer.pseudo
    cams, verts, _ = pseudo._cameras(pseudo.ref_frame, torch.tensor([0.0, 180.0]), torch.zeros(2))
    w = pseudo._weight(cams, verts)[:, 0]
    on = rasterize_mesh(verts.expand(2, -1, -1), trainer.model.faces, cams).mask
    assert w.shape == (2, S, S) and (w[~on] == 1).all()
    # The synthetic subject's frames face the camera: the face is theirs, the back of the head the prior's.
    assert w[0][on[0]].mean() < 0.3 and w[1][on[1]].mean() > 0.75

    def loss(weight):
        pseudo.batch.weight = weight
        trainer.avatar.xyz.grad = None
        out = pseudo.loss(trainer.avatar, 0, cfg.backend, 0, cfg.loss.ssim)
        out.backward()
        return float(out.detach()), trainer.avatar.xyz.grad.abs().sum()

    batch = pseudo.regenerate(trainer.avatar, 0, cfg.backend, 0)
    weight = batch.weight
    assert weight.shape == (V, 1, S, S)
    everywhere, grad = loss(None)
    assert loss(torch.ones_like(weight))[0] == pytest.approx(everywhere, abs=1e-6) and grad > 0
    nowhere, no_grad = loss(torch.zeros_like(weight))
    assert nowhere == pytest.approx(0.0, abs=1e-6) and no_grad < 1e-6 * grad
    # A resumed batch gets the same weights back.
    pseudo.batch.weight = pseudo._weight(batch.cameras, pseudo._cameras(batch.frame, batch.yaw, batch.pitch)[1])
    before = pseudo.batch.weight
    pseudo.load_state_dict(pseudo.state_dict())
    assert torch.equal(pseudo.batch.weight, before)


def test_prior_train_can_save_int8(data, tmp_path):
    result = runner.invoke(app, ["--device", "cpu", "prior", "train", "--data", str(data), "-o", str(tmp_path / "p"),
                                 "--preset", "tiny", "--steps", "2", "--set", "save_dtype=int8",
                                 "--set", "sample_every=0", "--set", "eval_examples=1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "p" / "denoiser" / "diffusion_pytorch_model.int8.safetensors").is_file()
    assert MultiViewPrior.from_pretrained(tmp_path / "p").views == V


def test_orbit_samples_spread_over_the_circle_and_can_skip_the_front():
    from gafkit.diffusion.views import sample_orbit

    yaw, pitch = sample_orbit(8, torch.Generator().manual_seed(0), pitch_deg=20)
    gaps = torch.diff(torch.sort(yaw).values)
    assert torch.allclose(gaps, torch.full_like(gaps, 45.0), atol=1e-4) and pitch.abs().max() <= 20
    for seed in range(20):
        yaw, _ = sample_orbit(4, torch.Generator().manual_seed(seed), min_yaw_deg=50)
        assert ((yaw >= 50) & (yaw <= 310)).all()


def _torchrun(*args, processes=2):
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={processes}", "-m", "gafkit", "-q", "--device", "cpu", *args],
                          capture_output=True, text=True, env=env, timeout=600)


def test_prior_train_on_two_processes_averages_their_gradients_and_resumes(data, tmp_path):
    """`accelerate launch` / torchrun with 2 CPU processes (gloo): the same code path as several GPUs."""
    from safetensors.torch import load_file

    args = ["prior", "train", "--data", str(data), "--preset", "tiny", "--steps", "6", "--set", "sample_every=0"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert runner.invoke(app, ["--device", "cpu", *args, "-o", str(one)]).exit_code == 0
    # A time limit stops both processes after the same step, the main one checkpoints, a rerun finishes.
    stopped = _torchrun(*args, "-o", str(two), "--time-limit", "0.000001")
    assert stopped.returncode != 0 and "time limit" in stopped.stderr + stopped.stdout
    assert (tmp_path / "two.partial" / "checkpoints" / "latest.pt").is_file() and not two.exists()
    done = _torchrun(*args, "-o", str(two))
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((two / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["global_batch"] == 2 * PRESETS["tiny"]().batch_size
    assert metrics["steps"] == 6 and not (tmp_path / "two.partial").exists()
    # Process 0 draws the single-process run's batches; only the second process's gradients, averaged
    # in, can make the weights differ.
    w1 = load_file(one / "denoiser" / "diffusion_pytorch_model.safetensors")
    w2 = load_file(two / "denoiser" / "diffusion_pytorch_model.safetensors")
    assert w1.keys() == w2.keys()
    assert max(float((w1[k].float() - w2[k].float()).abs().max()) for k in w1) > 1e-4


def test_pseudo_views_leave_out_triangles_outside_the_masks(trained, subject):
    """Masks cut below the head (the tracker's neck cut): the pseudo views' normal maps and weights use
    only the triangles inside them, so off-mesh pixels (weight 1, the prior's background) grow."""
    from fit_setup import make_trainer

    from gafkit.recon.config import FitConfig
    from gafkit.recon.prior_guidance import PseudoViews, mask_faces
    from gafkit.render.silhouette import bust_faces

    cfg = FitConfig(iters=4, eval_every=0, preview=False)
    cfg.init.max_gaussians = 300
    cfg.prior.path, cfg.prior.views, cfg.prior.steps, cfg.prior.seen_cos = str(trained), V, 2, 0.5
    trainer = make_trainer(subject, cfg)
    frames, model = trainer.frames, trainer.model
    # Synthetic masks hold the whole mesh (but for a triangle or so on the 64-px masks' edge).
    assert mask_faces(model, trainer.base, frames, trainer.train_ids, 0.5).float().mean() > 0.999
    frames.masks[:, int(frames.masks.shape[1] * 0.65):] = 0  # below the chin, as the tracker cuts
    keep = mask_faces(model, trainer.base, frames, trainer.train_ids, 0.5)
    bust = bust_faces(model)
    assert not (~keep & ~bust).any() and (~keep).sum() > 0.8 * bust.sum()  # most of the bust, nothing else

    def views(share):
        cfg.prior.foreground_faces = share
        p = PseudoViews(cfg.prior, trainer.pseudo.prior, model, trainer.base, frames, trainer.train_ids, 4,
                        torch.device("cpu"), 0)
        cams, verts, _ = p._cameras(p.ref_frame, torch.tensor([0.0, 90.0]), torch.zeros(2))
        return p, p._weight(cams, verts)

    carved, w_carved = views(0.5)
    whole, w_whole = views(0.0)
    assert carved.faces.shape[0] == int(keep.sum()) and whole.faces.shape[0] == model.faces.shape[0]
    assert carved.seen.shape[0] == carved.faces.shape[0]
    assert (w_carved == 1).float().mean() > (w_whole == 1).float().mean() + 0.05
