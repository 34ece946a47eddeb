"""The prior's autoencoder: shapes and scaling, the packaged taef2 weights, save/load, the taesd converter."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from gafkit.cli import app
from gafkit.diffusion import autoencoder as ae_module
from gafkit.diffusion import autoencoder_build
from gafkit.diffusion.autoencoder import TinyAutoencoder, load_default_autoencoder
from gafkit.diffusion.autoencoder_build import build_taef2_asset, convert_taesd_state, video_frames
from gafkit.errors import GafkitError, InputError
from gafkit.recon.metrics import psnr
from paths import EXAMPLE_VIDEO

# 256x256 centre crops of examples/d20.mp4 measured 37.5-38.9 dB (docs/PRIOR.md); a broken mapping,
# scaling or weight file gives < 20 dB.
PSNR_FLOOR = 35.0


def small_model(**kw) -> TinyAutoencoder:
    torch.manual_seed(0)
    return TinyAutoencoder(channels=8, blocks_per_stage=1, latent_channels=4, **kw).eval()


# --- taesd's checkpoint layout: nn.Sequential models keyed by layer index -------------------------------------


def _c(n_in: int, n_out: int, **kw) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kw)


class RefBlock(nn.Module):
    def __init__(self, c: int, gn: bool):
        super().__init__()
        self.conv = nn.Sequential(_c(c, c), nn.ReLU(), _c(c, c), nn.ReLU(), _c(c, c))
        self.skip, self.fuse = nn.Identity(), nn.ReLU()
        self.pool = nn.Sequential(nn.Conv2d(c, 4 * c, 1, bias=False), nn.GroupNorm(4, 4 * c), nn.ReLU(),
                                  nn.Conv2d(4 * c, c, 1, bias=False)) if gn else None

    def forward(self, x):
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


class RefClamp(nn.Module):
    def forward(self, x):
        return torch.tanh(x / 3) * 3


def ref_encoder(lc: int, c: int = 64) -> nn.Sequential:
    layers = [_c(3, c), RefBlock(c, False)]
    for s in range(3):
        layers += [_c(c, c, stride=2, bias=False)] + [RefBlock(c, s == 2) for _ in range(3)]
    return nn.Sequential(*layers, _c(c, lc))


def ref_decoder(lc: int, c: int = 64) -> nn.Sequential:
    layers = [RefClamp(), _c(lc, c), nn.ReLU()]
    for s in range(3):
        layers += [RefBlock(c, s == 0) for _ in range(3)] + [nn.Upsample(scale_factor=2), _c(c, c, bias=False)]
    return nn.Sequential(*layers, RefBlock(c, False), _c(c, 3))


@pytest.fixture(scope="module")
def taesd_dir(tmp_path_factory):
    """A folder holding random float16 taef2-layout checkpoints, and the reference modules."""
    root = tmp_path_factory.mktemp("taesd")
    torch.manual_seed(1)
    enc, dec = ref_encoder(32), ref_decoder(32)
    with torch.no_grad():
        for p in [*enc.parameters(), *dec.parameters()]:
            p.add_(torch.randn_like(p) * 0.02)  # non-trivial biases and GroupNorm affines
    for name, mod in (("encoder", enc), ("decoder", dec)):
        mod.half().float()  # the values the float16 checkpoints hold
        torch.save({k: v.half() for k, v in mod.state_dict().items()}, root / f"taef2_{name}.pth")
    return root, enc.eval(), dec.eval()


# --- the model ---------------------------------------------------------------------------------------------


def test_shapes_range_and_gradients():
    ae = small_model()
    x = torch.rand(2, 3, 64, 48, requires_grad=True)
    z = ae.encode(x)
    assert z.shape == (2, 4, 8, 6) and ae.downscale == 8 and ae.latent_channels == 4
    y = ae.decode(z)
    assert y.shape == (2, 3, 64, 48) and 0 <= y.min() and y.max() <= 1
    (z.square().sum() + y.sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_scaling_is_applied_and_inverted():
    ae = small_model(scaling_factor=2.5, shift_factor=0.3)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        raw = ae.encode_raw(x)
        z = ae.encode(x)
        torch.testing.assert_close(z, (raw - 0.3) * 2.5)
        torch.testing.assert_close(ae.decode(z), ae.decoder(raw).clamp(0, 1))


@pytest.mark.parametrize("shape", [(1, 4, 32, 32), (3, 32, 32), (1, 3, 30, 32)])
def test_encode_rejects_bad_shapes(shape):
    with pytest.raises(GafkitError, match="TinyAutoencoder.encode"):
        small_model().encode(torch.rand(shape))


def test_decode_rejects_wrong_channels():
    with pytest.raises(GafkitError, match=r"expected \[B, 4, H, W\]"):
        small_model().decode(torch.rand(1, 5, 4, 4))


def test_save_and_load_round_trip(tmp_path):
    ae = small_model(scaling_factor=1.5, shift_factor=-0.1)
    ae.save_pretrained(tmp_path / "ae")
    assert sorted(p.name for p in (tmp_path / "ae").iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    loaded = TinyAutoencoder.from_pretrained(tmp_path / "ae").eval()
    public = lambda cfg: {k: v for k, v in cfg.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.config) == public(ae.config)
    for (k, a), (_, b) in zip(ae.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(ae(x), loaded(x))


# --- the packaged weights ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_ae():
    return load_default_autoencoder()


def test_default_autoencoder_reconstructs_a_real_frame(default_ae):
    x = video_frames(EXAMPLE_VIDEO, 3)[1:2]  # 256x256 centre crop of the middle frame
    with torch.no_grad():
        z = default_ae.encode(x)
        y = default_ae.decode(z)
    assert z.shape == (1, 32, 32, 32)
    assert abs(z.mean()) < 0.3 and 0.7 < z.std() < 1.4  # scale/shift fitted to face images
    assert psnr(y, x) > PSNR_FLOOR
    assert not default_ae.training and not any(p.requires_grad for p in default_ae.parameters())


def test_default_asset_is_small_float16():
    from safetensors import safe_open

    files = {p.name: p for p in ae_module.TAEF2_ASSET.iterdir()}
    assert set(files) == {"config.json", "diffusion_pytorch_model.safetensors"}
    assert sum(p.stat().st_size for p in files.values()) < 6e6
    with safe_open(files["diffusion_pytorch_model.safetensors"], "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    assert json.loads(files["config.json"].read_text())["latent_channels"] == 32


def test_missing_asset_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(ae_module, "TAEF2_ASSET", tmp_path / "taef2")
    with pytest.raises(GafkitError, match=r"taef2: the packaged taef2 autoencoder is missing.*build-taef2"):
        load_default_autoencoder()


# --- the converter -------------------------------------------------------------------------------------------


def test_converted_weights_match_the_reference_layout(taesd_dir):
    root, enc, dec = taesd_dir
    ae = TinyAutoencoder().eval()
    for part in ("encoder", "decoder"):
        path = root / f"taef2_{part}.pth"
        state = torch.load(path, weights_only=True)
        getattr(ae, part).load_state_dict(convert_taesd_state(ae, part, state, path))
    x = torch.rand(2, 3, 48, 64)
    with torch.no_grad():
        raw = ae.encode_raw(x)
        torch.testing.assert_close(raw, enc(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ae.decoder(raw), dec(raw), rtol=1e-5, atol=1e-5)


def test_converter_rejects_a_foreign_checkpoint(tmp_path, taesd_dir):
    root, enc, _ = taesd_dir
    bad = tmp_path / "taesd"
    bad.mkdir()
    torch.save(ref_encoder(16).state_dict(), bad / "taef2_encoder.pth")  # taef1-sized latents
    (bad / "taef2_decoder.pth").write_bytes((root / "taef2_decoder.pth").read_bytes())
    with pytest.raises(InputError, match=r"taef2_encoder.pth: tensor '14.weight' has shape \(16, 64, 3, 3\)"):
        build_taef2_asset(bad, tmp_path / "out")
    torch.save({"foo.weight": torch.zeros(1)}, bad / "taef2_encoder.pth")
    with pytest.raises(InputError, match=r"taef2_encoder.pth: unexpected tensor 'foo.weight'"):
        build_taef2_asset(bad, tmp_path / "out")
    (bad / "taef2_encoder.pth").write_bytes(b"not a pickle")
    with pytest.raises(InputError, match=r"taef2_encoder.pth: unreadable checkpoint"):
        build_taef2_asset(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
    with pytest.raises(InputError, match=r"missing: no such folder"):
        build_taef2_asset(tmp_path / "missing", tmp_path / "out")


def _digest(folder) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.iterdir()))).hexdigest()


def test_build_is_reproducible_and_atomic(tmp_path, taesd_dir, monkeypatch):
    root, enc, dec = taesd_dir
    torch.manual_seed(2)
    calib = torch.rand(3, 3, 32, 32)
    monkeypatch.setattr(autoencoder_build, "calibration_images", lambda video: calib)
    a = build_taef2_asset(root, tmp_path / "a")
    b = build_taef2_asset(root, tmp_path / "b")
    assert _digest(a) == _digest(b)
    rebuilt = build_taef2_asset(root, tmp_path / "a")  # replaces an existing folder
    assert _digest(rebuilt) == _digest(b) and not list(tmp_path.glob("a.*"))
    ae = TinyAutoencoder.from_pretrained(a)
    with torch.no_grad():
        z = ae.encode(calib)
    assert abs(z.mean().item()) < 1e-3 and abs(z.std().item() - 1) < 1e-3
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("keep")
    with pytest.raises(GafkitError, match="c: exists and is not an autoencoder folder"):
        build_taef2_asset(root, tmp_path / "c")


def test_calibration_images_are_real_frames_then_synthetic_renders():
    x = autoencoder_build.calibration_images(EXAMPLE_VIDEO)
    assert x.shape == (24, 3, 256, 256) and 0 <= x.min() and x.max() <= 1
    real, synth = x[:16], x[16:]
    assert torch.equal(real[:1], video_frames(EXAMPLE_VIDEO, 1))
    # synthetic renders sit on a white background; the clip's frames do not
    assert (synth[:, :, :8, :8] == 1).all() and not (real[:, :, :8, :8] == 1).all()


def test_cli_build_taef2(tmp_path, taesd_dir, monkeypatch):
    root, enc, _ = taesd_dir
    torch.manual_seed(3)
    calib = torch.rand(2, 3, 32, 32)
    monkeypatch.setattr(autoencoder_build, "calibration_images", lambda video: calib)
    result = CliRunner().invoke(app, ["assets", "build-taef2", str(root), "-o", str(tmp_path / "taef2")])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "sha256" in result.output
    ae = TinyAutoencoder.from_pretrained(tmp_path / "taef2").eval()
    with torch.no_grad():
        torch.testing.assert_close(ae.encode_raw(calib), enc(calib), rtol=1e-5, atol=1e-5)

    missing = CliRunner().invoke(app, ["assets", "build-taef2", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "nope: no such folder" in missing.output
