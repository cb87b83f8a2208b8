"""Window planning and blending: full coverage, 4k+1 lengths, crossfades without jumps."""

from __future__ import annotations

import pytest
import torch

from flashvideo_core.enhance.windows import Window, WindowBlender, blend_weights, plan_windows
from flashvideo_core.errors import FlashVideoInputError


@pytest.mark.parametrize("num_frames", [1, 2, 17, 48, 49, 50, 91, 130, 490])
def test_windows_cover_every_frame_in_order_with_4k_plus_1_lengths(num_frames):
    windows = plan_windows(num_frames, window=49, overlap=8)
    assert windows[0].start == 0 and windows[-1].stop == num_frames
    for w in windows:
        assert (w.length - 1) % 4 == 0 and w.num_frames <= w.length <= 49
    for a, b in zip(windows, windows[1:], strict=False):
        assert a.start < b.start < a.stop  # overlapping, advancing
        assert a.stop - b.start >= 8 and a.overlap_after == b.overlap_before == a.stop - b.start


def test_short_clip_is_one_window_padded_to_4k_plus_1():
    assert plan_windows(1) == [Window(0, 1, 1)]
    (w,) = plan_windows(18, window=49)
    assert (w.num_frames, w.length, w.padding) == (18, 21, 3)


def test_long_clip_uses_the_fewest_full_windows():
    windows = plan_windows(130, window=49, overlap=8)
    assert len(windows) == 3 and all(w.length == 49 and w.padding == 0 for w in windows)
    assert [w.start for w in windows] == [0, 40, 81]


@pytest.mark.parametrize(("window", "overlap"), [(48, 8), (9, 9), (9, -1), (0, 0)])
def test_invalid_window_or_overlap_raises(window, overlap):
    with pytest.raises(FlashVideoInputError):
        plan_windows(100, window=window, overlap=overlap)


def test_zero_frames_raise():
    with pytest.raises(FlashVideoInputError, match="no frames"):
        plan_windows(0)


def test_crossfade_weights_of_neighbours_sum_to_one_over_the_overlap():
    a, b = plan_windows(17, window=9, overlap=1)[:2]
    shared = a.stop - b.start
    tail, head = blend_weights(a)[-shared:], blend_weights(b)[:shared]
    assert torch.allclose(tail + head, torch.ones(shared))
    assert torch.all(tail[:-1] > tail[1:]) and torch.all(head[:-1] < head[1:])


def _blend_all(windows, per_window):
    blender = WindowBlender(windows)
    assert len(per_window) == len(windows)
    out = []
    for frames in per_window:
        out.extend(blender.push(frames))
    assert blender.done
    return torch.stack(out)


@pytest.mark.parametrize("num_frames", [30, 50, 91])
def test_blending_identical_windows_returns_the_clip(num_frames):
    clip = torch.randn(num_frames, 2, 3)
    windows = plan_windows(num_frames, window=17, overlap=4)
    out = _blend_all(windows, [clip[w.start : w.stop] for w in windows])
    assert out.shape == clip.shape and torch.allclose(out, clip, atol=1e-6)


def test_blending_spreads_a_per_window_offset_over_the_overlap():
    # a smooth ramp clip; every window's output is off by a different constant (as independent
    # generations would be): the blend must turn each jump into overlap + 1 small steps.
    num_frames, overlap = 60, 8
    ramp = torch.linspace(0, 1, num_frames)
    windows = plan_windows(num_frames, window=25, overlap=overlap)
    offsets = [0.0, 0.5, -0.3, 0.2][: len(windows)]
    out = _blend_all(windows, [ramp[w.start : w.stop] + off for w, off in zip(windows, offsets, strict=True)])
    steps = (out[1:] - out[:-1]).abs()
    slope = 1 / (num_frames - 1)
    worst_jump = max(abs(b - a) for a, b in zip(offsets, offsets[1:], strict=False))
    assert steps.max() <= slope + worst_jump / (overlap + 1) + 1e-6
    assert steps.max() < worst_jump / 2  # a hard cut would step by the full offset difference


def test_blender_holds_at_most_one_overlap():
    windows = plan_windows(130, window=49, overlap=8)
    blender = WindowBlender(windows)
    for w in windows:
        blender.push(torch.zeros(w.num_frames, 1))
        assert blender._weights.shape[0] <= max(w.overlap_after, 0)


def test_blender_rejects_a_window_of_the_wrong_length():
    blender = WindowBlender(plan_windows(20, window=9, overlap=2))
    with pytest.raises(FlashVideoInputError, match="needs 9 frames"):
        blender.push(torch.zeros(5, 1))
