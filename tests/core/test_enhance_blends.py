"""enhance's window blends (EnhanceSettings.blend): pixel crossfade, shared noise, co-denoise.

Tiny real models (a random Stage II transformer and VAE: the real chain, 4-frame causal latents) check
shapes, frame counts and seeds of every blend end to end; a stand-in codec with one pixel frame per latent
frame (every overlapping frame shared) and a constant-velocity sampler check the latent maths exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import pytest
import torch

from flashvideo_core import config
from flashvideo_core.enhance.latent_windows import (
    LatentLayout,
    averaged_velocity,
    check_clip_latent_fits,
    frame_noise,
    latent_frames_of,
    planned_clip_latent_values,
)
from flashvideo_core.enhance.plan import BLENDS, EnhanceSettings, plan_enhance
from flashvideo_core.enhance.run import enhance_frames, enhance_images
from flashvideo_core.enhance.stream import stage2_refiner
from flashvideo_core.enhance.windows import Window, plan_windows
from flashvideo_core.errors import FlashVideoInputError
from flashvideo_core.sampling.degradation import add_degradation_noise
from flashvideo_core.sampling.schedule import stage2_time_grid
from flashvideo_core.sampling.stage2_chain import Stage2Chain, Stage2Models, refine_latent_chain
from flashvideo_core.sampling.stage2_sampler import sample_euler_flow


@pytest.fixture(scope="module")
def tiny_models():
    from flashvideo_core.model.transformer import build_transformer
    from flashvideo_core.vae import build_vae

    cond = torch.randn(1, 226, 32, generator=torch.Generator().manual_seed(0))
    return Stage2Models(build_transformer(config.TINY_STAGE2, seed=0), build_vae(config.TINY_VAE, seed=0), cond)


def _clip(num_frames, height=16, width=16, seed=0):
    """IMAGE (F, H, W, 3) in [0, 1]: smooth random content drifting over time."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, height // 4, width // 4, generator=g)
    frames = [torch.nn.functional.interpolate(base + 0.02 * i, size=(height, width), mode="bilinear")[0]
              for i in range(num_frames)]
    return torch.stack(frames).permute(0, 2, 3, 1).clamp(0, 1)


def _tiny(models, images, **kwargs):
    """enhance_images at the input's size (16 px), windows of 9 frames overlapping by 5: a 13-frame clip is
    windows 0-8 and 4-12, which share the latent frame of pixel frames 5-8."""
    settings = EnhanceSettings(**({"long_edge": 16, "window": 9, "overlap": 5, "steps": 2} | kwargs))
    return enhance_images(images, models, settings)


# --- settings and planning ------------------------------------------------------------------------------


def test_bad_blend_values_are_refused_with_the_choices():
    with pytest.raises(FlashVideoInputError, match=r"blend='crossfade' must be one of pixel, shared_noise, co_denoise"):
        EnhanceSettings(blend="crossfade")
    with pytest.raises(FlashVideoInputError, match="blend=None"):
        EnhanceSettings(blend=None)
    with pytest.raises(FlashVideoInputError, match=r"latent grid.*use overlap <= 5"):
        EnhanceSettings(window=9, overlap=6, blend="co_denoise")
    assert EnhanceSettings(window=9, overlap=6).blend == "pixel"  # the pixel blend keeps its rule


@pytest.mark.parametrize("num_frames", [50, 100, 130, 131, 200, 490])
def test_latent_blends_start_windows_on_the_vae_latent_grid(num_frames):
    windows = plan_windows(num_frames, 49, 8, align=4)
    assert windows[0].start == 0 and windows[-1].stop == num_frames
    assert all(w.start % 4 == 0 and w.length == 49 for w in windows)
    assert all(w.padding == 0 for w in windows[:-1])
    for a, b in zip(windows, windows[1:], strict=False):
        assert a.stop - b.start >= 8 and a.overlap_after == b.overlap_before == a.stop - b.start
    plan = plan_enhance(num_frames, 16, 16, EnhanceSettings(scale=2, blend="shared_noise"))
    assert plan.windows == tuple(windows) and plan.blend == "shared_noise"


def test_the_same_latent_frame_means_the_same_pixel_frames():
    a, b = Window(0, 49, 49), Window(40, 89, 49)
    assert latent_frames_of(a, 4)[:2] == ((0, 0), (1, 4)) and latent_frames_of(a, 4)[-1] == (45, 48)
    assert latent_frames_of(b, 4)[:3] == ((40, 40), (41, 44), (45, 48))
    layout = LatentLayout.of([a, b], 4)
    assert len(layout.frames) == 13 + 13 - 2  # A's frames 11, 12 are B's 1, 2; B's frame 0 (one frame) is its own
    assert layout.indices[1][1:3].tolist() == layout.indices[0][11:13].tolist()
    assert layout.indices[1][0].item() not in layout.indices[0].tolist()
    assert torch.allclose(layout.weights[0][11:], torch.tensor([2 / 3, 1 / 3]))
    assert torch.allclose(layout.weights[1][:4], torch.tensor([1.0, 1 / 3, 2 / 3, 1.0]))
    assert torch.allclose(layout.total, torch.ones(24))
    with pytest.raises(FlashVideoInputError, match="not on the 4-frame latent grid"):
        latent_frames_of(Window(3, 52, 49), 4)


def test_keyed_noise_is_the_same_wherever_a_latent_frame_appears():
    shape = (1, 16, 13, 2, 2)
    a, b = (latent_frames_of(w, 4) for w in (Window(0, 49, 49), Window(40, 89, 49)))
    noise_a, noise_b = frame_noise(7, a, shape), frame_noise(7, b, shape)
    assert torch.equal(noise_a[:, :, 11:], noise_b[:, :, 1:3])
    assert not torch.allclose(noise_b[:, :, :1], noise_a[:, :, 10:11])  # B's lone frame 0 has noise of its own
    assert not torch.allclose(frame_noise(8, a, shape), noise_a)


# --- the latent maths, exactly, on a stand-in codec ------------------------------------------------------


def test_averaged_constant_velocities_land_where_the_weighted_mean_says():
    windows = plan_windows(29, 17, 5, align=4)  # frames 0-16 and 12-28: 5 shared frames
    layout = LatentLayout.of(windows, 1)
    z0 = torch.randn(1, 2, 29, 2, 2, generator=torch.Generator().manual_seed(0))

    def velocity(z, t):  # a constant field that depends on the window's local frame: windows disagree
        return torch.arange(1, z.shape[2] + 1, dtype=z.dtype).view(1, 1, -1, 1, 1).expand_as(z) / 10

    z1 = sample_euler_flow(averaged_velocity(layout)(velocity, torch.device("cpu")), z0, stage2_time_grid(4, 2.5))
    shift = torch.cat([torch.arange(1, 13), torch.zeros(5), torch.arange(6, 18)]).float() / 10
    for k, a_local, b_local in zip(range(5), range(13, 18), range(1, 6), strict=True):  # the crossfade
        wa, wb = (5 - k) / 6, (k + 1) / 6
        shift[12 + k] = (wa * a_local + wb * b_local) / (wa + wb) / 10
    assert torch.allclose(z1 - z0, shift.view(1, 1, -1, 1, 1).expand_as(z0), atol=1e-6)


class UnshuffleChain:
    """A LatentStage2 on a stand-in codec (2x2 pixel-unshuffle: one latent frame per pixel frame, so two
    windows encode a shared frame identically) with the tiny transformer; records what it samples."""

    frames_per_latent, scale = 1, 1.0

    def __init__(self, transformer, cond):
        self.transformer, self.cond, self.sampled, self.model_frames = transformer, cond, [], []

    def encode(self, video, size, seed):
        return torch.nn.functional.pixel_unshuffle(video[0].transpose(0, 1), 2).transpose(0, 1)[None].float()

    def sample(self, latent, settings, velocity_wrap=None):
        from flashvideo_core.sampling.guidance import stage2_velocity

        self.sampled.append(latent.clone())
        model = stage2_velocity(self.transformer, self.cond, settings.cfg, settings.noise_step, torch.float32)

        def velocity(z, t):
            self.model_frames.append(z.shape[2])
            return model(z, t)

        if velocity_wrap is not None:
            velocity = velocity_wrap(velocity, torch.device("cpu"))
        with torch.no_grad():
            return sample_euler_flow(velocity, latent, stage2_time_grid(settings.steps, settings.shift))

    def decode(self, latent):
        return torch.nn.functional.pixel_shuffle(latent[0].transpose(0, 1), 2).transpose(0, 1)[None]


@pytest.fixture
def unshuffle_chain():
    from flashvideo_core.model.transformer import build_transformer

    cfg = config.TransformerConfig(num_layers=1, num_heads=2, head_dim=16, time_embed_dim=32, text_dim=32,
                                   in_channels=12, out_channels=12, patch_size=2, stage2_extras=True)
    return UnshuffleChain(build_transformer(cfg, seed=0), torch.zeros(1, 8, 32))


@pytest.mark.parametrize(("blend", "shared"), [("shared_noise", True), ("pixel", False)])
def test_shared_noise_starts_overlapping_windows_from_the_same_latent(unshuffle_chain, blend, shared):
    out = enhance_images(_clip(29), unshuffle_chain, EnhanceSettings(long_edge=16, window=17, overlap=5, steps=1,
                                                                      blend=blend))
    first, second = unshuffle_chain.sampled  # windows 0-16 and 12-28
    assert out.shape == (29, 16, 16, 3)
    assert torch.equal(first[:, :, 12:], second[:, :, :5]) == shared
    assert not torch.allclose(first[:, :, :12], second[:, :, 5:17])


def test_co_denoise_integrates_one_clip_latent(unshuffle_chain):
    settings = EnhanceSettings(long_edge=16, window=17, overlap=5, steps=2, blend="co_denoise")
    out = enhance_images(_clip(29), unshuffle_chain, settings)
    (clip_latent,) = unshuffle_chain.sampled
    assert out.shape == (29, 16, 16, 3) and clip_latent.shape == (1, 12, 29, 8, 8)
    assert unshuffle_chain.model_frames == [17, 17] * 2  # each step: the model sees each window, never the clip
    start = unshuffle_chain.encode(_clip(29).permute(3, 0, 1, 2)[None] * 2 - 1, None, 0)
    layout = LatentLayout.of(plan_windows(29, 17, 5, align=4), 1)
    noise = frame_noise(settings.seed, layout.frames, tuple(start.shape))
    expected = add_degradation_noise(start, plan_enhance(29, 16, 16, settings).stage2.noise_step, None, 1.0, noise)
    assert torch.allclose(clip_latent, expected, atol=1e-6)


# --- tiny real models (the VAE's 4-frame causal latents) -------------------------------------------------


@pytest.mark.parametrize("blend", BLENDS)
@pytest.mark.parametrize("num_frames", [1, 13])
def test_every_blend_keeps_frames_and_size_and_follows_the_seed(tiny_models, blend, num_frames):
    images = _clip(num_frames)
    a, b = _tiny(tiny_models, images, blend=blend, seed=3), _tiny(tiny_models, images, blend=blend, seed=3)
    assert a.shape == (num_frames, 16, 16, 3) and torch.equal(a, b)
    assert not torch.equal(a, _tiny(tiny_models, images, blend=blend, seed=4))


def test_co_denoise_of_one_window_is_the_plain_chain_with_the_same_noise(tiny_models):
    images = _clip(9)
    settings = EnhanceSettings(long_edge=16, window=9, overlap=5, steps=2, seed=5)
    plan = plan_enhance(9, 16, 16, settings)
    keys = latent_frames_of(plan.windows[0], 4)

    def plain(video, seed, plan):  # refine_video's steps, with the keyed noise given
        size = (plan.target.work_height, plan.target.work_width)
        return refine_latent_chain(Stage2Chain(tiny_models), video, size, plan.stage2, seed,
                                   lambda shape: frame_noise(plan.seed, keys, shape)).video

    expected = enhance_images(images, plain, settings)
    for blend in ("co_denoise", "shared_noise"):
        assert torch.equal(_tiny(tiny_models, images, blend=blend, seed=5), expected)


def test_the_blends_differ_once_windows_overlap(tiny_models):
    images = _clip(13)
    outs = {blend: _tiny(tiny_models, images, blend=blend) for blend in BLENDS}
    assert not torch.equal(outs["pixel"], outs["shared_noise"])
    assert not torch.equal(outs["shared_noise"], outs["co_denoise"])


def test_the_pixel_blend_is_the_stage2_chain_as_before(tiny_models):
    images = _clip(13)
    from flashvideo_core.sampling.stage2_chain import refine_video

    def before(video, seed, plan):
        size = (plan.target.work_height, plan.target.work_width)
        return refine_video(tiny_models, video, size, plan.stage2, seed).video

    assert torch.equal(_tiny(tiny_models, images), _tiny(tiny_models, images, blend="pixel"))
    assert torch.equal(_tiny(tiny_models, images), _tiny(before, images))
    refine = stage2_refiner(tiny_models)
    assert torch.equal(_tiny(refine, images, blend="co_denoise"), _tiny(tiny_models, images, blend="co_denoise"))


def test_latent_blends_need_the_chain_not_a_bare_refine():
    def refine(video, seed, plan):
        return video

    images = _clip(9)
    assert _tiny(refine, images).shape == (9, 16, 16, 3)
    with pytest.raises(FlashVideoInputError, match="blend='shared_noise' works on the latent"):
        _tiny(refine, images, blend="shared_noise")
    with pytest.raises(FlashVideoInputError, match="blend='co_denoise' works on the latent"):
        enhance_frames((np.zeros((16, 16, 3), np.uint8) for _ in range(9)), 9, refine,
                       EnhanceSettings(long_edge=16, window=9, overlap=5, blend="co_denoise"))


def test_co_denoise_refuses_a_clip_latent_larger_than_the_free_ram(tiny_models, monkeypatch):
    layout = LatentLayout.of(plan_windows(2000, 49, 8, align=4), 4)
    latent = torch.zeros(1, 16, 13, 136, 240)  # 1080p work size
    with pytest.raises(FlashVideoInputError, match=r"co_denoise' holds the whole clip's latent.*'shared_noise'"):
        check_clip_latent_fits(layout, latent, free_bytes=4 * 2**30)
    check_clip_latent_fits(layout, latent, free_bytes=64 * 2**30)
    monkeypatch.setattr("flashvideo_core.enhance.latent_windows.free_memory", lambda device: 1000)
    with pytest.raises(FlashVideoInputError, match="holds the whole clip's latent"):
        _tiny(tiny_models, _clip(13), blend="co_denoise")


def test_co_denoise_ram_is_checked_at_plan_time_before_any_model_work(tiny_models, monkeypatch):
    """The plan's count is the clip latent the real chain makes (the VAE's: 4 frames, 16 channels, 8x smaller),
    and a clip too big for the free RAM is refused before the first window is encoded."""
    settings = EnhanceSettings(long_edge=16, window=9, overlap=5, steps=2, blend="co_denoise")
    plan = plan_enhance(29, 16, 16, settings)
    layout = LatentLayout.of(plan.windows, 4)
    latent = Stage2Chain(tiny_models).encode(torch.zeros(1, 3, 9, 16, 16), (16, 16), 0)
    assert planned_clip_latent_values(plan.windows, 16, 16) == (len(layout.frames), latent[:, :, :1].numel())
    used = []

    @contextlib.contextmanager
    def use(module):
        used.append(type(module).__name__)
        yield module

    monkeypatch.setattr("flashvideo_core.enhance.latent_windows.free_memory", lambda device: 1000)
    with pytest.raises(FlashVideoInputError, match=f"latent in RAM: {len(layout.frames)} latent frames take"):
        _tiny(dataclasses.replace(tiny_models, use=use), _clip(29), blend="co_denoise")
    assert used == [], "no model may run before the refusal"


# --- the command line -------------------------------------------------------------------------------------


def test_the_cli_takes_blend_and_refuses_other_values(tiny_weights_dir, tmp_path, capsys):
    from flashvideo_core.cli import main
    from flashvideo_core.video import probe_video, write_video

    clip = tmp_path / "clip.mp4"
    write_video(clip, [np.full((16, 16, 3), 10 * i, dtype=np.uint8) for i in range(13)], fps=12)
    args = ["enhance", str(clip), "--long-edge", "16", "--window", "9", "--overlap", "5", "--steps", "1",
            "--weights", str(tiny_weights_dir), "--device", "cpu"]
    assert main([*args, "-o", str(tmp_path / "out.mp4"), "--blend", "co_denoise"]) == 0
    assert "13 in 2 windows of 9 frames, overlaps of 5 frames blended (co_denoise)" in capsys.readouterr().err
    assert probe_video(tmp_path / "out.mp4").num_frames == 13
    with pytest.raises(SystemExit):
        main([*args, "-o", str(tmp_path / "other.mp4"), "--blend", "latent"])
    err = capsys.readouterr().err
    assert "--blend: invalid choice: 'latent'" in err and all(blend in err for blend in BLENDS)
    with pytest.raises(SystemExit):
        main(["enhance", "--help"])
    assert "pixel (default)" in capsys.readouterr().out
