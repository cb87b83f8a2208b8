"""Stage II on any video: frame counts, exact sizes, seamless windows, fps/audio, validation first.

Most tests give enhance a stand-in Refine (the public per-window seam) that returns its input pixels,
so they check the plumbing (windows, padding, sizing, blending, files) exactly and fast; the tests
marked "tiny models" run the real encode -> degrade -> Stage II -> decode chain on tiny random models.
"""

from __future__ import annotations

import subprocess
from fractions import Fraction

import imageio_ffmpeg
import numpy as np
import pytest
import torch

from flashvideo_core.enhance.plan import WINDOW_SEED_STRIDE, EnhanceSettings, describe_plan, plan_enhance, window_seed
from flashvideo_core.enhance.run import enhance_frames, enhance_images, enhance_video_file
from flashvideo_core.errors import FlashVideoInputError
from flashvideo_core.progress import ProgressEvent
from flashvideo_core.video import probe_video

COND = torch.zeros(1, 226, 32)


class FakeStage2:
    """A Refine standing in for encode -> Stage II -> decode: the pixels it gets, plus a per-window offset."""

    def __init__(self, offsets=None):
        self.calls = []
        self.offsets = offsets or {}

    def __call__(self, video, seed, plan):
        length, height, width = video.shape[2:]
        assert (length - 1) % 4 == 0, f"window length {length} is not 4k+1"
        assert height % 16 == 0 and width % 16 == 0
        index = (seed - plan.seed - 1) // WINDOW_SEED_STRIDE
        self.calls.append((index, length, height, width))
        return (video + self.offsets.get(index, 0.0)).clamp(-1, 1)


@pytest.fixture
def fake():
    return FakeStage2()


def _settings(**kwargs):
    return EnhanceSettings(**({"scale": 2, "window": 9, "overlap": 2} | kwargs))


def _smooth_clip(num_frames, height=32, width=48):
    """uint8 frames whose brightness rises slowly and evenly over the clip."""
    levels = np.linspace(40, 200, num_frames)
    for level in levels:
        frame = np.empty((height, width, 3), np.uint8)
        frame[...] = int(round(level))
        frame[:, : width // 2, 1] = 90
        yield frame


def _run(refine, num_frames, callback=None, **kwargs):
    return list(enhance_frames(_smooth_clip(num_frames), num_frames, refine, _settings(**kwargs), callback=callback))


@pytest.mark.parametrize("num_frames", [1, 17, 49, 50, 130])
def test_any_frame_count_comes_back_unchanged(fake, num_frames):
    out = _run(fake, num_frames, window=49, overlap=8)
    assert len(out) == num_frames
    assert all(f.shape == (64, 96, 3) and f.dtype == np.uint8 for f in out)


def test_short_clips_are_padded_to_4k_plus_1_and_trimmed(fake):
    assert len(_run(fake, 2)) == 2
    assert fake.calls[0][1] == 5  # 2 frames run as 5


@pytest.mark.parametrize(
    ("in_size", "kwargs", "exact"),
    [
        ((270, 480), {"size": "1080p"}, (1080, 1920)),
        ((720, 1280), {"size": "1080p"}, (1080, 1920)),
        ((1080, 1080), {"size": "1080p"}, (1920, 1920)),
        ((405, 720), {"scale": 2}, (810, 1440)),
        ((34, 50), {"scale": 2}, (68, 100)),
    ],
)
def test_odd_sizes_come_back_at_exactly_the_requested_size(fake, in_size, kwargs, exact):
    images = torch.rand(1, *in_size, 3)
    out = enhance_images(images, fake, EnhanceSettings(**kwargs))
    assert out.shape == (1, *exact, 3)
    (_, _, work_h, work_w) = fake.calls[0]
    assert (work_h, work_w) == (-(-exact[0] // 16) * 16, -(-exact[1] // 16) * 16)


def test_window_blending_leaves_no_step_at_window_edges():
    # Each window comes back brighter or darker by a constant, as independent generations would.
    stand_in = FakeStage2(offsets={0: 0.0, 1: 0.3, 2: -0.2, 3: 0.25, 4: 0.0})
    num_frames, overlap = 41, 4
    out = np.stack(_run(stand_in, num_frames, window=13, overlap=overlap)).astype(np.float64)
    means = out[..., 0].mean(axis=(1, 2))  # one brightness per frame
    steps = np.abs(np.diff(means))
    ramp = (200 - 40) / (num_frames - 1)
    worst_offset_jump = 0.5 * 255 / 2  # 0.5 in [-1, 1] units is 63.75 levels
    assert len(stand_in.calls) >= 3
    assert steps.max() <= ramp + worst_offset_jump / (overlap + 1) + 2
    assert steps.max() < worst_offset_jump / 2


def test_identity_model_returns_the_clip_upscaled(fake):
    frames = list(_smooth_clip(20))
    out = list(enhance_frames(iter(frames), 20, fake, _settings()))
    for a, b in zip(frames, out, strict=True):
        assert abs(float(a.mean()) - float(b.mean())) < 1.0


def test_color_match_pulls_a_colour_cast_back():
    cast = FakeStage2(offsets={0: 0.4})
    plain = np.stack(_run(cast, 9, window=9))
    matched = np.stack(_run(cast, 9, window=9, color_match=True))
    reference = np.stack(list(_smooth_clip(9)))
    assert abs(plain.mean() - reference.mean()) > 30
    assert abs(matched.mean() - reference.mean()) < 3


def test_progress_reports_each_window(fake):
    events: list[ProgressEvent] = []
    _run(fake, 20, callback=events.append)
    windows = plan_enhance(20, 32, 48, _settings()).windows
    assert [(e.step, e.total) for e in events if e.phase == "enhance"] == [
        (i, len(windows)) for i in range(len(windows) + 1)
    ]
    assert events[0].phase == "enhance", "the window count comes first, so a caller can size one bar for the clip"


def test_a_callback_exception_propagates(fake):
    def cancel(event):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(fake, 20, callback=cancel)


def test_a_prompt_embedding_of_the_wrong_shape_is_refused_before_any_model_call(tiny_models):
    from dataclasses import replace

    with pytest.raises(FlashVideoInputError, match="Stage II prompt embedding must be"):
        enhance_frames(_smooth_clip(5), 5, replace(tiny_models, cond=torch.zeros(226, 32)), _settings())


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"window": 48}, "window"),
        ({"window": 9, "overlap": 9}, "overlap"),
        ({"noise_step": 1000}, "noise_step"),
        ({"scale": 0.5}, "scale"),
        ({"size": "720p", "scale": 2}, "Choose one"),
        ({"steps": 0}, "steps"),
        ({"cfg": float("nan")}, "cfg=nan"),
        ({"shift": float("inf")}, "shift=inf"),
        ({"seed": -1}, "seed=-1"),
    ],
)
def test_bad_settings_fail_before_any_model_call(fake, kwargs, fragment):
    with pytest.raises(FlashVideoInputError, match=fragment):
        enhance_frames(_smooth_clip(5), 5, fake, EnhanceSettings(**({"scale": 2} | kwargs)))
    assert fake.calls == []


def test_target_smaller_than_input_and_tiny_inputs_are_rejected(fake):
    with pytest.raises(FlashVideoInputError, match="smaller than the input"):
        enhance_images(torch.rand(1, 1080, 1920, 3), fake, EnhanceSettings(size="720p"))
    with pytest.raises(FlashVideoInputError, match="too small"):
        enhance_images(torch.rand(1, 8, 48, 3), fake, EnhanceSettings(scale=2))
    assert fake.calls == []


def test_an_image_output_larger_than_the_free_ram_is_refused_before_any_model_call(fake, monkeypatch):
    from flashvideo_core import devices

    monkeypatch.setattr(devices, "free_memory", lambda device: 50 * 2**20)  # 50 MB free
    images = torch.rand(30, 270, 480, 3)  # -> 30 frames of 1080x1920: 0.7 GB
    message = r"images: 30 enhanced frames of 1920x1080 take 712 MB .* 50 MB of RAM is free \(about 1 frame fit"
    with pytest.raises(FlashVideoInputError, match=message):
        enhance_images(images, fake, EnhanceSettings(size="1080p"))
    assert fake.calls == []


def test_images_with_alpha_or_gray_are_handled(fake):
    rgba = enhance_images(torch.rand(2, 32, 48, 4), fake, _settings(window=5, overlap=0))
    gray = enhance_images(torch.rand(2, 32, 48, 1), fake, _settings(window=5, overlap=0))
    assert rgba.shape == gray.shape == (2, 64, 96, 3)
    assert torch.allclose(gray[..., 0], gray[..., 2])


def test_window_seeds_are_deterministic_and_distinct():
    assert window_seed(0, 0) == window_seed(0, 0) == 1
    assert len({window_seed(s, i) for s in range(3) for i in range(5)}) == 15


def test_auto_noise_step_follows_the_window_length():
    def step(frames, **kwargs):
        return plan_enhance(frames, 270, 480, EnhanceSettings(size="1080p", **kwargs)).stage2.noise_step

    assert step(17, window=49) == 500
    assert step(130, window=49) == 675
    assert step(130, noise_step=700) == 700


def _clip_file(path, frames=20, rate="12.5", audio=True, size="48x32"):
    args = ["-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}"]
    if audio:
        args += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-c:a", "aac"]
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", *args, "-frames:v", str(frames), "-shortest",
         "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )
    return path


def test_video_file_keeps_frame_count_fps_and_audio(fake, tmp_path):
    src = _clip_file(tmp_path / "in.mp4", frames=20, rate="12.5")
    out = enhance_video_file(src, tmp_path / "out.mp4", _settings(), models=fake)
    a, b = probe_video(src), probe_video(out)
    assert (b.num_frames, b.fps, b.height, b.width) == (a.num_frames, Fraction(25, 2), 64, 96)
    assert b.has_audio and b.audio_codec == "aac"


def test_video_file_with_non_square_pixels_keeps_its_displayed_shape(fake, tmp_path):
    """48x36 stored with 4:3 pixels shows as 64x36: x2 must give 128x72 with square pixels, not 96x72."""
    src = tmp_path / "anamorphic.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc=size=48x36:rate=8",
                    "-frames:v", "5", "-vf", "setsar=4/3", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(src)],
                   check=True)
    out = probe_video(enhance_video_file(src, tmp_path / "out.mp4", _settings(), models=fake))
    assert (out.num_frames, out.width, out.height, out.pixel_aspect) == (5, 128, 72, 1)


def test_video_file_errors_come_before_any_model_work(fake, tmp_path):
    src = _clip_file(tmp_path / "in.mp4", frames=5, audio=False)
    (tmp_path / "taken.mp4").write_bytes(b"x")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    common = {"settings": EnhanceSettings(scale=2), "models": fake}
    with pytest.raises(FileExistsError):
        enhance_video_file(src, tmp_path / "taken.mp4", **common)
    with pytest.raises(FlashVideoInputError, match="is the input"):
        enhance_video_file(src, src, overwrite=True, **common)
    with pytest.raises(FlashVideoInputError, match="empty.mp4"):
        enhance_video_file(empty, tmp_path / "o.mp4", **common)
    with pytest.raises(FlashVideoInputError, match="must end in"):
        enhance_video_file(src, tmp_path / "o.avi", **common)
    assert fake.calls == []


def test_a_failing_model_leaves_no_output_file(tmp_path):
    def broken(*args):
        raise RuntimeError("out of memory")

    src = _clip_file(tmp_path / "in.mp4", frames=5, audio=False)
    with pytest.raises(RuntimeError, match="out of memory"):
        enhance_video_file(src, tmp_path / "out.mp4", EnhanceSettings(scale=2), models=broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


# --- tiny models: the real encode -> degrade -> Stage II -> decode chain ----------------------------------


@pytest.fixture(scope="module")
def tiny_models():
    """Stage2Models of a Stage II transformer and a VAE with tiny random weights."""
    from flashvideo_core import config
    from flashvideo_core.model.transformer import build_transformer
    from flashvideo_core.sampling.stage2_chain import Stage2Models
    from flashvideo_core.vae import build_vae

    cond = torch.randn(1, 226, 32, generator=torch.Generator().manual_seed(0))
    return Stage2Models(build_transformer(config.TINY_STAGE2, seed=0), build_vae(config.TINY_VAE, seed=0), cond)


def _tiny_run(models, num_frames, height=16, width=32, slices="auto", callback=None, **kwargs):
    clip = _smooth_clip(num_frames, height, width)
    settings = EnhanceSettings(**({"scale": 2, "window": 9, "overlap": 2, "steps": 2} | kwargs))
    return list(enhance_frames(clip, num_frames, models, settings, slices=slices, callback=callback))


@pytest.mark.parametrize("num_frames", [1, 17, 49, 50, 130])
def test_tiny_models_keep_any_frame_count(tiny_models, num_frames):
    window = {49: 49, 130: 49}.get(num_frames, 9)
    out = _tiny_run(tiny_models, num_frames, window=window, overlap=8 if window == 49 else 2)
    assert len(out) == num_frames and all(f.shape == (32, 64, 3) for f in out)


@pytest.mark.parametrize(
    ("in_size", "choice", "exact"),
    [
        ((18, 34), {"scale": 2}, (36, 68)),  # work 48x80
        ((27, 48), {"scale": 2}, (54, 96)),  # 270x480 / 10: work 64x96
        ((45, 80), {"long_edge": 160}, (90, 160)),  # 405x720 / 9 (16:9 with an odd edge): work 96x160
        ((54, 54), {"long_edge": 108}, (108, 108)),  # square, 1080x1080 / 20: work 112x112
        ((48, 27), {"scale": 2}, (96, 54)),  # portrait
    ],
)
def test_tiny_models_give_the_exact_size_for_odd_inputs(tiny_models, in_size, choice, exact):
    out = _tiny_run(tiny_models, 2, height=in_size[0], width=in_size[1], **({"scale": None} | choice))
    assert len(out) == 2 and out[0].shape == (*exact, 3)


def test_tiny_models_are_deterministic_in_the_seed(tiny_models):
    a, b = _tiny_run(tiny_models, 5, seed=3), _tiny_run(tiny_models, 5, seed=3)
    c = _tiny_run(tiny_models, 5, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_tiny_models_file_round_trip_keeps_fps_and_audio(tiny_models, tmp_path):
    src = _clip_file(tmp_path / "in.mp4", frames=11, rate="30000/1001", size="32x16")
    out = enhance_video_file(src, tmp_path / "out.mp4", _settings(steps=1), models=tiny_models)
    info = probe_video(out)
    assert (info.num_frames, info.fps, info.height, info.width) == (11, Fraction(30000, 1001), 32, 64)
    assert info.has_audio


def test_a_default_target_beyond_x4_is_refused_before_any_model_work_unless_allowed(fake, tmp_path):
    src = _clip_file(tmp_path / "in.mp4", frames=5, audio=False)  # 48x32: 1080p would be x40
    with pytest.raises(FlashVideoInputError, match=r"48x32 \(WxH\) input to 1920x1280, a x40 upscale"):
        enhance_video_file(src, tmp_path / "out.mp4", EnhanceSettings(), models=fake)
    assert fake.calls == [] and sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]
    assert plan_enhance(5, 32, 48, EnhanceSettings(allow_large_upscale=True)).target.width == 1920
    images = enhance_images(torch.rand(1, 32, 48, 3), fake, EnhanceSettings(size="1080p"))  # explicit, as the node
    assert images.shape == (1, 1280, 1920, 3)


def test_the_plan_names_sizes_width_x_height_and_the_scale_factor():
    plan = plan_enhance(14, 27, 48, _settings())  # 48x27 -> 96x54, work 96x64
    text = describe_plan(plan)
    assert text.startswith("size:   48x27 -> 96x54 (WxH), x2 upscale; the model works at 96x64 (edge-padded")
    assert "auto: 9-frame window at 96x54" in text
    assert "x4.8 upscale" in describe_plan(plan_enhance(5, 270, 400, EnhanceSettings(size="1080p")))  # 400 -> 1920


def test_frames_of_another_size_are_named_width_x_height(fake):
    frames = [np.zeros((32, 48, 3), np.uint8), np.zeros((32, 40, 3), np.uint8)]
    with pytest.raises(FlashVideoInputError, match=r"frame 1 is 40x32 \(WxH\) RGB; all frames must be 48x32"):
        list(enhance_frames(iter(frames), 2, fake, _settings(window=5, overlap=0)))


def test_tiny_models_decode_ticks_several_times_within_one_slice(tiny_models):
    from flashvideo_core.progress import WindowedProgress
    from flashvideo_core.vae import SliceSpec

    events, clip = [], []
    fold = WindowedProgress(clip.append)

    def record(event):
        events.append(event)
        fold(event)

    _tiny_run(tiny_models, 5, slices=SliceSpec(chunk_frames=None), callback=record)  # one decode slice
    decode = [(e.step, e.total) for e in events if e.phase == "decode"]
    assert len(decode) >= 4 and decode[-1][0] == decode[-1][1], decode
    assert [s for s, _ in decode] == sorted(set(s for s, _ in decode)), "each value once, rising"
    shares = [e.step for e in clip if 700 < e.step <= 1000]  # the decode's 30% of the window's bar
    assert len(shares) >= 4


def test_a_file_run_is_planned_once(fake, tmp_path, monkeypatch):
    from flashvideo_core.enhance import run

    plans = []
    real = run.plan_enhance
    monkeypatch.setattr(run, "plan_enhance", lambda *a: plans.append(a) or real(*a))
    src = _clip_file(tmp_path / "in.mp4", frames=5, audio=False)
    enhance_video_file(src, tmp_path / "out.mp4", _settings(), models=fake)
    assert len(plans) == 1  # was 2: enhance_video_file and again in enhance_frames
