"""DEG_latent: Z0 = sqrt(a_k) Z + sqrt(1 - a_k) eps on the Stage II scaled latent, returned in RAW space."""

import numpy as np
import pytest
import torch

from flashvideo_core import config
from flashvideo_core.errors import FlashVideoInputError
from flashvideo_core.rng import cpu_generator
from flashvideo_core.sampling.degradation import degrade_latent
from flashvideo_core.sampling.schedule import zero_snr_alphas_cumprod

SCALE = config.STAGE2_SCALE_FACTOR


def test_degradation_is_the_formula_with_noise_from_the_seeded_cpu_generator():
    latent = torch.randn(1, 16, 2, 4, 6, generator=torch.Generator().manual_seed(0))
    out = degrade_latent(latent, 675, seed=11)
    eps = torch.randn(latent.shape, generator=cpu_generator(11))
    expected = (0.263959 * latent * SCALE + 0.964534 * eps) / SCALE  # SPEC's sqrt(a_675), sqrt(1 - a_675)
    assert torch.allclose(out, expected, atol=1e-5)


def test_seed_and_generator_are_reproducible_and_distinct():
    latent = torch.zeros(1, 16, 1, 4, 4)
    a = degrade_latent(latent, 675, seed=3)
    assert torch.equal(a, degrade_latent(latent, 675, seed=3))
    assert torch.equal(a, degrade_latent(latent, 675, generator=cpu_generator(3)))
    assert not torch.equal(a, degrade_latent(latent, 675, seed=4))


def test_degraded_statistics_follow_the_schedule():
    latent = torch.full((1, 16, 8, 64, 64), 0.5)
    scaled = degrade_latent(latent, 675, seed=3) * SCALE
    alpha = zero_snr_alphas_cumprod()[675].item()
    assert scaled.mean().item() == pytest.approx(alpha**0.5 * 0.5 * SCALE, abs=0.006)
    assert scaled.var().item() == pytest.approx(1 - alpha, abs=0.01)


def test_noise_step_zero_barely_changes_and_999_is_pure_noise():
    latent = torch.randn(1, 16, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(degrade_latent(latent, 0, seed=0), latent, atol=0.15)
    noise_only = degrade_latent(latent, 999, seed=0) * SCALE  # alpha_999 = 0: zero terminal SNR
    assert torch.allclose(noise_only, torch.randn(latent.shape, generator=cpu_generator(0)), atol=1e-5)


def test_dtype_shape_and_device_are_kept():
    latent = torch.randn(2, 16, 3, 4, 6).to(torch.bfloat16)
    out = degrade_latent(latent, 650, seed=0)
    assert out.dtype == torch.bfloat16 and out.shape == latent.shape and out.device == latent.device


def test_numpy_integer_noise_steps_are_accepted():
    latent = torch.zeros(1, 16, 1, 2, 2)
    assert torch.equal(degrade_latent(latent, np.int64(700), seed=1), degrade_latent(latent, 700, seed=1))


@pytest.mark.parametrize("bad", [-1, 1000, 675.0, "675", True, None])
def test_noise_step_outside_0_999_is_named(bad):
    with pytest.raises(FlashVideoInputError, match="noise_step="):
        degrade_latent(torch.zeros(1, 16, 1, 2, 2), bad, seed=0)


def test_a_seed_or_generator_is_required_and_the_latent_is_checked():
    with pytest.raises(FlashVideoInputError, match="seed or a generator"):
        degrade_latent(torch.zeros(1, 16, 1, 2, 2), 675)
    with pytest.raises(FlashVideoInputError, match="channels"):
        degrade_latent(torch.zeros(1, 4, 1, 2, 2), 675, seed=0)
    with pytest.raises(FlashVideoInputError, match="video latent"):
        degrade_latent(torch.zeros(1, 16, 2, 2), 675, seed=0)
