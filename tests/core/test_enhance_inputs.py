"""Enhance refuses what would fail late, before any model loads or runs: 8-bit IMAGE batches, unreadable
prompts, windows that cannot fit the memory free now."""

from __future__ import annotations

import subprocess

import imageio_ffmpeg
import pytest
import torch

from flashvideo_core import config, devices
from flashvideo_core.enhance.plan import EnhanceSettings
from flashvideo_core.enhance.run import enhance_images, enhance_video_file
from flashvideo_core.errors import FlashVideoInputError
from flashvideo_core.model.transformer import build_transformer
from flashvideo_core.sampling.stage2_chain import Stage2Models
from flashvideo_core.vae import build_vae
from flashvideo_core.weights.loaders import find_weights

COND = torch.randn(1, 226, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def models():
    return Stage2Models(build_transformer(config.TINY_STAGE2, seed=0), build_vae(config.TINY_VAE, seed=0), COND)


def _clip(path, frames=5, size="48x32"):
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc=size={size}:rate=8", "-frames:v", str(frames), "-c:v", "libx264", "-pix_fmt",
                    "yuv420p", str(path)], check=True)
    return path


def test_an_8_bit_image_batch_is_read_as_0_to_255(models):
    pixels = torch.randint(0, 256, (2, 16, 32, 3), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    settings = EnhanceSettings(scale=2, window=5, overlap=0, steps=1)
    as_uint8 = enhance_images(pixels, models, settings)
    as_float = enhance_images(pixels.float() / 255.0, models, settings)
    assert torch.equal(as_uint8, as_float)  # was: uint8 taken as 0..1, every pixel clamped to white


def test_a_nan_image_is_refused_naming_the_frame(models):
    images = torch.rand(3, 16, 32, 3)
    images[2, 0, 0, 0] = float("nan")
    with pytest.raises(FlashVideoInputError, match="images frame 2 .* holds NaN or Inf"):
        enhance_images(images, models, EnhanceSettings(scale=2, window=5, overlap=0))


def test_an_unreadable_prompt_is_refused_before_t5_loads(tiny_weights_dir, tmp_path, monkeypatch):
    loads = []
    monkeypatch.setattr("flashvideo_core.weights.loaders.load_text_encoder", lambda *a, **k: loads.append(a))
    src = _clip(tmp_path / "in.mp4")
    with pytest.raises(FlashVideoInputError, match="not valid text at position 1"):
        enhance_video_file(src, tmp_path / "out.mp4", EnhanceSettings(scale=2), weights=find_weights(tiny_weights_dir),
                           prompt="a\udcffb")
    assert not loads and sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_a_window_that_cannot_fit_is_refused_before_any_model_loads(tiny_weights_dir, tmp_path, monkeypatch):
    loads = []
    for name in ("load_text_encoder", "load_stage2", "load_vae"):
        monkeypatch.setattr(f"flashvideo_core.weights.loaders.{name}", lambda *a, **k: loads.append(a))
    monkeypatch.setattr(devices, "free_memory", lambda device: 2**10)  # 1 KiB free
    src = _clip(tmp_path / "in.mp4")
    with pytest.raises(FlashVideoInputError, match=r"Stage II \(one enhance window\) at 96x64 \(WxH\) with 5 frames "
                                                   r"needs at least .* use a smaller size"):
        enhance_video_file(src, tmp_path / "out.mp4", EnhanceSettings(scale=2), weights=find_weights(tiny_weights_dir))
    assert not loads and sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_ready_models_are_checked_against_the_free_memory_too(models, monkeypatch):
    monkeypatch.setattr(devices, "free_memory", lambda device: 2**10)
    with pytest.raises(FlashVideoInputError, match=r"Stage II \(one enhance window\)"):
        enhance_images(torch.rand(1, 16, 32, 3), models, EnhanceSettings(scale=2))
