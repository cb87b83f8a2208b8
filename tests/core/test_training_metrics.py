"""Validation metrics on pixel videos in [-1, 1]: PSNR, low-frequency PSNR, log-spectral distance."""

import math

import pytest
import torch

from flashvideo_core.errors import FlashVideoInputError
from flashvideo_core.rng import cpu_generator
from flashvideo_core.training.metrics import log_spectral_distance, lowfreq_psnr, psnr
from flashvideo_core.training.pixel_degradation import gaussian_blur


def _clip(shape=(2, 3, 3, 32, 32), seed=0):
    """A smooth random clip in about [-0.8, 0.8]: low-frequency structure plus some fine detail."""
    coarse = torch.rand(shape[:-2] + (4, 4), generator=cpu_generator(seed)) * 1.2 - 0.6
    frames = coarse.flatten(0, -3).unsqueeze(1)
    smooth = torch.nn.functional.interpolate(frames, size=shape[-2:], mode="bilinear").reshape(shape)
    return smooth + 0.2 * (torch.rand(shape, generator=cpu_generator(seed + 1)) - 0.5)


def test_identical_videos_give_infinite_psnr_and_zero_distance():
    video = _clip()
    assert psnr(video, video) == math.inf
    assert lowfreq_psnr(video, video) == math.inf
    assert log_spectral_distance(video, video) == 0.0


def test_psnr_of_a_known_error_on_the_0_1_scale():
    target = torch.zeros(1, 3, 2, 8, 8)
    # an error of 0.2 on [-1, 1] is 0.1 on [0, 1]: MSE 0.01 -> 20 dB
    assert psnr(target + 0.2, target) == pytest.approx(20.0, abs=1e-5)  # 0.2 in fp32
    # MSE pooled over the batch: half the elements off by 0.1 on [0, 1] -> MSE 0.005
    pred = target.clone()
    pred[..., :4] += 0.2
    assert psnr(pred, target) == pytest.approx(10 * math.log10(1 / 0.005), abs=1e-5)


def test_psnr_of_gaussian_noise_matches_its_variance():
    target = torch.zeros(1, 3, 4, 64, 64)
    noise = 0.1 * torch.randn(target.shape, generator=cpu_generator(3))  # std 0.05 on [0, 1]
    assert psnr(target + noise, target) == pytest.approx(10 * math.log10(1 / 0.05**2), abs=0.1)


def test_one_clip_and_a_batch_of_one_agree_and_any_dtype_gives_the_same_number():
    a, b = _clip(seed=0), _clip(seed=5)
    assert psnr(a[0], b[0]) == psnr(a[:1], b[:1])
    assert log_spectral_distance(a[0], b[0]) == log_spectral_distance(a[:1], b[:1])
    assert psnr(a.double(), b.double()) == psnr(a, b)


def test_lowfreq_psnr_ignores_a_high_frequency_only_perturbation():
    target = _clip()
    checker = (torch.arange(32).view(-1, 1) + torch.arange(32)) % 2 * 2.0 - 1.0  # +-1 alternating pixels
    pred = target + 0.1 * checker  # pure Nyquist pattern: its 4x4 box averages are 0
    assert psnr(pred, target) == pytest.approx(20 * math.log10(1 / 0.05), abs=1e-6)  # 26.0 dB
    assert lowfreq_psnr(pred, target, factor=4) > psnr(pred, target) + 100  # exactly cancelled (rounding only)
    assert lowfreq_psnr(pred, target, factor=1) == psnr(pred, target)


def test_lowfreq_psnr_still_sees_a_colour_shift():
    target = _clip()
    assert lowfreq_psnr(target + 0.2, target, factor=4) == pytest.approx(20.0, abs=1e-5)  # 0.2 in fp32


def test_log_spectral_distance_grows_with_blur():
    target = _clip()
    frames = target.transpose(1, 2).flatten(0, 1)  # (B*T, 3, H, W)

    def blurred(sigma):
        return gaussian_blur(frames, sigma).reshape(2, 3, 3, 32, 32).transpose(1, 2)

    mild, strong = log_spectral_distance(blurred(0.7), target), log_spectral_distance(blurred(2.0), target)
    assert 0.0 < mild < strong
    assert log_spectral_distance(target, blurred(2.0)) == pytest.approx(strong)  # symmetric


def test_log_spectral_distance_of_a_scaled_copy_is_the_log_of_the_power_ratio():
    target = torch.rand(1, 3, 2, 16, 16, generator=cpu_generator(0)) * 0.5 + 0.25  # [0, 1] values 0.125..0.375
    pred01 = 2.0 * (target + 1) / 2  # twice the [0, 1] values: every power x4
    pred = pred01 * 2 - 1
    assert log_spectral_distance(pred, target, eps=1e-30) == pytest.approx(math.log10(4.0), abs=1e-6)


@pytest.mark.parametrize("pred, target, match", [
    (torch.zeros(1, 3, 2, 8, 8), torch.zeros(1, 3, 2, 8, 9), "one shape"),
    (torch.zeros(1, 4, 2, 8, 8), torch.zeros(1, 4, 2, 8, 8), "pixel video"),
    (torch.zeros(3, 8, 8), torch.zeros(3, 8, 8), "pixel video"),
    (torch.zeros(0, 3, 2, 8, 8), torch.zeros(0, 3, 2, 8, 8), "no values"),
])
def test_bad_inputs_are_named(pred, target, match):
    for metric in (psnr, lowfreq_psnr, log_spectral_distance):
        with pytest.raises(FlashVideoInputError, match=match):
            metric(pred, target)


def test_bad_factor_and_eps_are_named():
    video = torch.zeros(3, 1, 8, 8)
    for factor in (0, 2.0, 9):
        with pytest.raises(FlashVideoInputError, match="factor"):
            lowfreq_psnr(video, video, factor=factor)
    with pytest.raises(FlashVideoInputError, match="eps"):
        log_spectral_distance(video, video, eps=0.0)
