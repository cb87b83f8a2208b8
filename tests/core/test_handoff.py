"""The Stage I -> Stage II hand-off samples the posterior reproducibly, never with a silent seed."""

import pytest
import torch

from flashvideo_core.errors import FlashVideoInputError
from flashvideo_core.rng import cpu_generator
from flashvideo_core.sampling.handoff import video_to_stage2_latent
from flashvideo_core.weights.loaders import load_vae


def test_a_seed_or_generator_is_required_and_either_reproduces(tiny_weights):
    vae = load_vae(tiny_weights["vae"])
    video = torch.rand(1, 3, 5, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with pytest.raises(FlashVideoInputError, match="give a seed or a generator"):
        video_to_stage2_latent(vae, video, 64, 64)
    by_seed = video_to_stage2_latent(vae, video, 64, 64, seed=7)
    by_generator = video_to_stage2_latent(vae, video, 64, 64, generator=cpu_generator(7))
    assert by_seed.shape == (1, 16, 2, 8, 8) and torch.equal(by_seed, by_generator)
    assert not torch.equal(by_seed, video_to_stage2_latent(vae, video, 64, 64, seed=8))
