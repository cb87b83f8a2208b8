"""Target sizes: exact requested size, multiple-of-16 work size, never stretched, clear errors."""

from __future__ import annotations

import pytest
import torch

from flashvideo_core.enhance.sizing import (
    TargetSize,
    crop_to_target,
    fit_frames,
    image_frame_bytes,
    resolve_target_size,
)
from flashvideo_core.errors import FlashVideoInputError


@pytest.mark.parametrize(
    ("in_size", "kwargs", "exact"),
    [
        ((270, 480), {}, (1080, 1920)),  # default: the official 1080p
        ((270, 480), {"size": "720p"}, (720, 1280)),
        ((270, 480), {"size": "2k"}, (1440, 2560)),  # names are case-insensitive
        ((720, 1280), {"size": "1080p"}, (1080, 1920)),
        ((1080, 1080), {"size": "2K"}, (2560, 2560)),  # square: the long edge is fixed
        ((405, 720), {"size": "1080p"}, (1080, 1920)),
        ((720, 405), {"size": "1080p"}, (1920, 1080)),  # portrait keeps its orientation
        ((405, 720), {"scale": 2}, (810, 1440)),
        ((270, 480), {"scale": 4}, (1080, 1920)),
        ((32, 48), {"scale": 2}, (64, 96)),
        ((480, 640), {"long_edge": 1000}, (750, 1000)),
    ],
)
def test_resolve_target_size_gives_the_exact_requested_size(in_size, kwargs, exact):
    target = resolve_target_size(*in_size, **kwargs)
    assert (target.height, target.width) == exact


@pytest.mark.parametrize(("in_size", "kwargs"), [((270, 480), {}), ((405, 720), {"scale": 2}), ((333, 500), {})])
def test_work_size_is_the_next_multiple_of_16(in_size, kwargs):
    target = resolve_target_size(*in_size, **kwargs)
    for exact, work in ((target.height, target.work_height), (target.width, target.work_width)):
        assert work % 16 == 0 and exact <= work < exact + 16


def test_derived_edge_is_even_and_keeps_the_aspect_within_a_pixel():
    target = resolve_target_size(333, 500, size="1080p")  # 333 * 1920 / 500 = 1278.7
    assert (target.height, target.width) == (1278, 1920)
    assert abs(target.height / target.width - 333 / 500) * target.width <= 1.0


@pytest.mark.parametrize(
    ("in_size", "kwargs", "fragment"),
    [
        ((12, 480), {}, "too small"),
        ((270, 15), {}, "too small"),
        ((1080, 1920), {"size": "720p"}, "smaller than the input"),
        ((270, 480), {"scale": 2, "size": "1080p"}, "Choose one"),
        ((270, 480), {"size": "4k"}, "720p, 1080p, 2K"),
        ((270, 480), {"scale": 0.5}, "scale"),
        ((270, 480), {"long_edge": 1001}, "even"),
    ],
)
def test_bad_sizes_raise_a_clear_message(in_size, kwargs, fragment):
    with pytest.raises(FlashVideoInputError, match=fragment):
        resolve_target_size(*in_size, **kwargs)


def test_fit_frames_pads_with_edge_pixels_and_crop_restores_the_exact_frames():
    target = TargetSize(height=20, width=40, work_height=32, work_width=48)
    video = torch.rand(1, 3, 2, 20, 40) * 2 - 1
    fitted = fit_frames(video, target)
    assert fitted.shape == (1, 3, 2, 32, 48)
    assert torch.equal(fitted[..., 20:, :40], video[..., 19:20, :].expand(-1, -1, -1, 12, -1))
    assert torch.equal(fitted[..., :20, 40:], video[..., :, 39:40].expand(-1, -1, -1, -1, 8))
    assert torch.equal(crop_to_target(fitted, target), video)


def test_fit_frames_resizes_without_stretching():
    # a centred bright square stays square after an aspect-preserving x2 resize
    video = -torch.ones(1, 3, 1, 32, 48)
    video[..., 8:24, 16:32] = 1.0
    target = resolve_target_size(32, 48, scale=2)
    fitted = fit_frames(video, target)
    bright = fitted[0, 0, 0] > 0
    rows, cols = bright.any(1).sum().item(), bright.any(0).sum().item()
    assert rows == cols == 32


def test_crop_rejects_a_video_of_the_wrong_size():
    target = resolve_target_size(32, 48, scale=2)
    with pytest.raises(FlashVideoInputError, match="work size"):
        crop_to_target(torch.zeros(1, 3, 1, 64, 64), target)


def test_image_frame_bytes_counts_float32_rgb():
    assert image_frame_bytes(1080, 1920) == 1080 * 1920 * 3 * 4


def test_the_default_target_beyond_x4_the_input_is_refused_naming_sizes_factor_and_fixes():
    message = (r"the default 1080p would take the 160x96 \(WxH\) input to 1920x1152, a x12 upscale .*"
               r"--scale 2/4, --size 720p/1080p/2K or --long-edge N.*allow_large_upscale=True")
    with pytest.raises(FlashVideoInputError, match=message):
        resolve_target_size(96, 160)


@pytest.mark.parametrize(
    ("in_size", "kwargs", "exact"),
    [
        ((96, 160), {"allow_large_upscale": True}, (1152, 1920)),  # allowed
        ((96, 160), {"size": "1080p"}, (1152, 1920)),  # explicit: the Enhance node always is
        ((32, 48), {"long_edge": 1920}, (1280, 1920)),
        ((270, 480), {}, (1080, 1920)),  # exactly x4: the default still applies
    ],
)
def test_an_explicit_or_allowed_target_beyond_x4_is_taken(in_size, kwargs, exact):
    target = resolve_target_size(*in_size, **kwargs)
    assert (target.height, target.width) == exact


def test_size_messages_are_width_x_height():
    with pytest.raises(FlashVideoInputError, match=r"target 1280x720 \(WxH\) is smaller than the input 1920x1080"):
        resolve_target_size(1080, 1920, size="720p")
    with pytest.raises(FlashVideoInputError, match=r"64x64 \(WxH\) does not match the work size 96x64"):
        crop_to_target(torch.zeros(1, 3, 1, 64, 64), resolve_target_size(32, 48, scale=2))
