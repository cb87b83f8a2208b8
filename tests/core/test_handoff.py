"""The Stage I -> Stage II hand-off samples the posterior reproducibly from its seed, and does not resize
a video already at the Stage II size."""

import pytest
import torch

from flashvideo_core.errors import FlashVideoInputError
from flashvideo_core.sampling import stage2_chain
from flashvideo_core.sampling.stage2_chain import resize_video, video_to_stage2_latent
from flashvideo_core.weights.loaders import load_vae


def test_the_encode_seed_reproduces_the_posterior_sample(tiny_weights):
    vae = load_vae(tiny_weights["vae"])
    video = torch.rand(1, 3, 5, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with pytest.raises(FlashVideoInputError, match="seed=None must be an integer"):
        video_to_stage2_latent(vae, video, 64, 64, None)
    first = video_to_stage2_latent(vae, video, 64, 64, 7)
    assert first.shape == (1, 16, 2, 8, 8) and torch.equal(first, video_to_stage2_latent(vae, video, 64, 64, 7))
    assert not torch.equal(first, video_to_stage2_latent(vae, video, 64, 64, 8))


def test_a_video_at_the_target_size_is_not_interpolated_again(monkeypatch):
    calls = []
    real = stage2_chain.F.interpolate
    monkeypatch.setattr(stage2_chain.F, "interpolate", lambda *a, **k: calls.append(a[0].shape) or real(*a, **k))
    video = torch.rand(1, 3, 9, 32, 48)
    same = resize_video(video, 32, 48)
    assert calls == [] and same is video  # was: a full float32 copy per 1080p window (~1.2 GB)
    assert resize_video(video, 64, 96).shape == (1, 3, 9, 64, 96) and calls
