"""Training degradations: DEG_pixel (blur + area downscale, per clip, same for all frames) and DEG_latent
(the inference formula per sample, noise step drawn from a range)."""

import math

import pytest
import torch

from flashvideo_core import config
from flashvideo_core.errors import FlashVideoInputError
from flashvideo_core.rng import cpu_generator
from flashvideo_core.sampling.degradation import add_degradation_noise
from flashvideo_core.sampling.schedule import zero_snr_alphas_cumprod
from flashvideo_core.training.latent_degradation import LatentDegradation, degrade_latents, sample_noise_steps
from flashvideo_core.training.pixel_degradation import (
    PixelDegradation,
    apply_pixel_degradation,
    degrade_pixels,
    gaussian_blur,
    sample_pixel_strengths,
)


def _textured(batch=2, frames=3, size=32, seed=0):
    """Clips (B, 3, T, H, W) in [-1, 1] with detail at every frequency (uniform noise)."""
    return torch.rand(batch, 3, frames, size, size, generator=cpu_generator(seed)) * 2 - 1


def _high_energy(video):
    """Energy of the finest details: mean squared difference of horizontal neighbours."""
    return (video[..., 1:] - video[..., :-1]).pow(2).mean().item()


# --- DEG_pixel -----------------------------------------------------------------------------------------


def test_pixel_degradation_lowers_high_frequency_energy_and_keeps_shape_dtype_range():
    video = _textured().to(torch.float64)
    out = degrade_pixels(video, PixelDegradation(), cpu_generator(1))
    assert out.shape == video.shape and out.dtype == video.dtype and out.device == video.device
    assert out.min() >= -1 and out.max() <= 1
    assert _high_energy(out) < 0.1 * _high_energy(video)
    assert abs(out.mean() - video.mean()) < 0.01  # a low-pass: the mean (DC) stays


def test_pixel_degradation_is_reproducible_and_each_clip_draws_its_own_strengths():
    video = _textured(batch=3)
    settings = PixelDegradation()
    a = degrade_pixels(video, settings, cpu_generator(5))
    assert torch.equal(a, degrade_pixels(video, settings, cpu_generator(5)))
    assert not torch.equal(a, degrade_pixels(video, settings, cpu_generator(6)))
    strengths = sample_pixel_strengths(3, settings, cpu_generator(5))
    assert len(set(strengths.sigma.tolist())) == 3 and len(set(strengths.factor.tolist())) == 3
    assert all(0.2 <= s <= 2.0 for s in strengths.sigma.tolist())
    assert all(2.0 <= f <= 4.0 for f in strengths.factor.tolist())
    again = apply_pixel_degradation(video, strengths.sigma.tolist(), strengths.factor.tolist())
    assert torch.equal(a, again)  # degrade_pixels = the strengths drawn, then applied


def test_every_frame_of_a_clip_is_degraded_alike():
    frame = _textured(batch=1, frames=1)
    clip = frame.expand(1, 3, 5, 32, 32).contiguous()  # five copies of one frame
    out = degrade_pixels(clip, PixelDegradation(), cpu_generator(2))
    for t in range(1, 5):
        assert torch.equal(out[:, :, t], out[:, :, 0])


def test_stronger_settings_remove_more_detail():
    video = _textured(batch=1)
    mild = apply_pixel_degradation(video, [0.0], [2.0])
    strong = apply_pixel_degradation(video, [2.0], [4.0])
    assert _high_energy(strong) < _high_energy(mild) < _high_energy(video)
    assert torch.equal(apply_pixel_degradation(video, [0.0], [1.0]), video)  # no blur, no downscale


def test_gaussian_blur_keeps_a_constant_and_spreads_an_impulse_by_sigma():
    flat = torch.full((1, 3, 16, 16), 0.3)
    assert torch.allclose(gaussian_blur(flat, 1.5), flat, atol=1e-6)
    impulse = torch.zeros(1, 1, 33, 33, dtype=torch.float64)
    impulse[0, 0, 16, 16] = 1.0
    blurred = gaussian_blur(impulse, 2.0)[0, 0, 16]
    offsets = torch.arange(33, dtype=torch.float64) - 16
    variance = (blurred * offsets**2).sum() / blurred.sum()
    assert variance.item() == pytest.approx(4.0, rel=0.02)  # sigma^2 along one axis


def test_blur_probability_zero_never_blurs():
    strengths = sample_pixel_strengths(8, PixelDegradation(blur_probability=0.0), cpu_generator(0))
    assert strengths.sigma.tolist() == [0.0] * 8


@pytest.mark.parametrize("kwargs", [
    {"blur_sigma": (2.0, 1.0)}, {"blur_sigma": (-1.0, 1.0)}, {"blur_sigma": 1.0}, {"downscale": (0.5, 2.0)},
    {"downscale": (2.0, math.inf)}, {"blur_probability": 1.5}, {"upscale_mode": "nearest"},
])
def test_bad_pixel_settings_are_named(kwargs):
    with pytest.raises(FlashVideoInputError, match=next(iter(kwargs))):
        PixelDegradation(**kwargs)


def test_pixel_settings_take_a_list_as_the_pair_and_bad_videos_are_named():
    assert PixelDegradation(downscale=[2, 3]).downscale == (2, 3)
    with pytest.raises(FlashVideoInputError, match="batch, 3, frames"):
        degrade_pixels(torch.zeros(3, 2, 8, 8), PixelDegradation(), cpu_generator(0))


# --- DEG_latent ----------------------------------------------------------------------------------------


def test_latent_degradation_equals_the_inference_formula_at_675():
    raw = torch.randn(1, 16, 2, 4, 6, generator=cpu_generator(0))
    scale = config.STAGE2_SCALE_FACTOR
    inference = add_degradation_noise(raw, 675, cpu_generator(9)) * scale  # raw space -> scaled
    training = degrade_latents(raw * scale, torch.tensor([675]), cpu_generator(9))
    assert torch.allclose(training, inference, atol=1e-5, rtol=0)


def test_each_sample_gets_its_own_noise_step():
    z = torch.randn(3, 4, 2, 4, 4, generator=cpu_generator(1))
    steps = torch.tensor([0, 675, 999])
    out = degrade_latents(z, steps, cpu_generator(2))
    eps = torch.randn(z.shape, generator=cpu_generator(2))
    alphas = zero_snr_alphas_cumprod()
    for b, k in enumerate(steps.tolist()):
        a = alphas[k].item()
        assert torch.allclose(out[b], a**0.5 * z[b] + (1 - a) ** 0.5 * eps[b], atol=1e-6)
    assert torch.allclose(out[2], eps[2], atol=1e-6)  # k = 999: zero terminal SNR, pure noise


def test_latent_degradation_keeps_dtype_and_is_reproducible():
    z = torch.randn(2, 16, 1, 4, 4).to(torch.bfloat16)
    out = degrade_latents(z, [700, 650], cpu_generator(3))
    assert out.dtype == torch.bfloat16 and out.shape == z.shape
    assert torch.equal(out, degrade_latents(z, [700, 650], cpu_generator(3)))


def test_noise_steps_are_uniform_over_the_inclusive_range_and_reproducible():
    settings = LatentDegradation((650, 653))
    steps = sample_noise_steps(4000, settings, cpu_generator(0))
    assert steps.dtype == torch.long and steps.shape == (4000,)
    counts = torch.bincount(steps - 650, minlength=4)
    assert counts.shape == (4,) and counts.min() > 900  # 650, 651, 652 and 653 each about 1000 times
    assert torch.equal(steps, sample_noise_steps(4000, settings, cpu_generator(0)))
    assert LatentDegradation().noise_steps == (600, 900)
    assert sample_noise_steps(3, LatentDegradation((675, 675)), cpu_generator(0)).tolist() == [675] * 3


@pytest.mark.parametrize("steps", [(900, 600), (-1, 10), (10, 1000), (1.5, 10), 675, (1, 2, 3)])
def test_bad_noise_step_ranges_are_named(steps):
    with pytest.raises(FlashVideoInputError, match="noise_steps"):
        LatentDegradation(steps)


def test_bad_noise_steps_for_a_batch_are_named():
    z = torch.zeros(2, 16, 1, 2, 2)
    for bad in ([675], [675.0, 700.0], [675, 1000]):
        with pytest.raises(FlashVideoInputError, match="noise_steps"):
            degrade_latents(z, bad, cpu_generator(0))
    with pytest.raises(FlashVideoInputError, match="latent"):
        degrade_latents(torch.zeros(2, 16, 2, 2), [1, 2], cpu_generator(0))
