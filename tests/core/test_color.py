"""Oklab conversion and per-window colour matching."""

from __future__ import annotations

import pytest
import torch

from flashvideo_core.enhance.color import match_color, oklab_to_srgb, srgb_to_oklab
from flashvideo_core.errors import FlashVideoInputError


def test_oklab_of_white_black_and_gray_is_neutral():
    rgb = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.5, 0.5, 0.5]]).T.reshape(1, 3, 3)
    lab = srgb_to_oklab(rgb)
    assert torch.allclose(lab[0, 0, :2], torch.tensor([1.0, 0.0]), atol=1e-4)  # L of white, black
    assert torch.allclose(lab[0, 1:], torch.zeros(2, 3), atol=1e-4)  # a = b = 0 for grays


def test_oklab_round_trip_is_identity():
    rgb = torch.rand(2, 3, 4, 5, 6)
    assert torch.allclose(oklab_to_srgb(srgb_to_oklab(rgb)), rgb, atol=1e-4)


def test_match_color_sets_the_reference_statistics():
    torch.manual_seed(0)
    reference = (torch.rand(1, 3, 3, 16, 16) * 0.5 + 0.1) * 2 - 1  # darker, different spread
    output = torch.rand(1, 3, 5, 32, 32) * 0.6 - 0.2
    matched = match_color(output, reference)
    lab_m, lab_r = srgb_to_oklab((matched + 1) / 2), srgb_to_oklab((reference + 1) / 2)
    dims = (2, 3, 4)
    assert matched.shape == output.shape
    assert torch.allclose(lab_m.mean(dims), lab_r.mean(dims), atol=2e-3)
    assert torch.allclose(lab_m.std(dims), lab_r.std(dims), atol=5e-3)


def test_matching_a_video_to_itself_changes_nothing():
    video = torch.rand(1, 3, 2, 8, 8) * 2 - 1
    assert torch.allclose(match_color(video, video), video, atol=1e-4)


def test_match_color_rejects_non_video_tensors():
    with pytest.raises(FlashVideoInputError, match="reference"):
        match_color(torch.zeros(1, 3, 1, 4, 4), torch.zeros(4, 4, 3))
