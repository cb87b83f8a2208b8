"""Automatic noise step: the paper's anchors, monotone in frames and pixels, clamped to the paper's range."""

from __future__ import annotations

import pytest

from flashvideo_core.enhance.noise_rule import auto_noise_step, resolve_noise_step
from flashvideo_core.errors import FlashVideoInputError


def test_paper_anchors_are_met_exactly():
    assert auto_noise_step(49, 1080, 1920) == 675  # official setting
    assert auto_noise_step(17, 1080, 1920) == 500  # paper 6.1: 17 frames at 500


def test_more_frames_or_pixels_never_mean_less_noise():
    by_frames = [auto_noise_step(f, 1080, 1920) for f in (17, 25, 33, 41, 49, 65)]
    by_pixels = [auto_noise_step(49, h, w) for h, w in ((720, 1280), (1080, 1920), (1440, 2560))]
    assert by_frames == sorted(by_frames) and by_pixels == sorted(by_pixels)
    assert by_pixels[0] < 675 < by_pixels[2]


def test_result_stays_in_the_paper_range():
    assert auto_noise_step(1, 32, 32) == 500
    assert auto_noise_step(401, 4320, 7680) == 750


def test_resolve_noise_step_accepts_auto_or_an_int():
    assert resolve_noise_step("auto", 49, 1080, 1920) == 675
    assert resolve_noise_step("AUTO", 17, 1080, 1920) == 500
    assert resolve_noise_step(600, 17, 1080, 1920) == 600


@pytest.mark.parametrize("value", [-1, 1000, "loud", 650.5, True])
def test_resolve_noise_step_rejects_other_values(value):
    with pytest.raises(FlashVideoInputError, match="noise_step"):
        resolve_noise_step(value, 49, 1080, 1920)
