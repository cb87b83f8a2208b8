"""Stage II training: the codecs and the checkpoints (weights the Stage II loader loads as they are)."""

from __future__ import annotations

import dataclasses
import datetime
import errno

import pytest
import safetensors.torch
import torch

from flashvideo_core import config
from flashvideo_core.errors import FlashVideoInputError
from flashvideo_core.model.transformer import build_transformer
from flashvideo_core.rng import cpu_generator
from flashvideo_core.sampling.stage2_chain import video_to_stage2_latent
from flashvideo_core.training.checkpoints import (
    STATE_NAME,
    WEIGHTS_NAME,
    latest_checkpoint,
    load_training_state,
    save_checkpoint,
)
from flashvideo_core.training.codec import PixelUnshuffleCodec, VaeCodec
from flashvideo_core.vae import UNSLICED, build_vae
from flashvideo_core.weights.loaders import load_stage2


def test_pixel_unshuffle_codec_is_a_lossless_2x2_unshuffle():
    pixels = torch.rand(2, 3, 5, 16, 32) * 2 - 1
    codec = PixelUnshuffleCodec()
    latent = codec.encode(pixels, None)
    assert latent.shape == (2, 12, 5, 8, 16)
    assert torch.equal(latent[:, 1, :, 0, 0], pixels[:, 0, :, 0, 1])  # channel 1 = red, pixel (0, 1) of each 2x2
    assert torch.equal(codec.decode(latent), pixels)


def test_vae_codec_samples_the_posterior_as_inference_and_scales():
    vae = build_vae(config.TINY_VAE, seed=0).eval()
    pixels = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    codec = VaeCodec(vae, UNSLICED)
    latent = codec.encode(pixels, cpu_generator(7))
    expected = video_to_stage2_latent(vae, pixels, 16, 16, 7, UNSLICED) * config.STAGE2_SCALE_FACTOR
    assert torch.equal(latent, expected)
    assert codec.decode(latent).shape == (1, 3, 5, 16, 16)


def _outputs(model) -> torch.Tensor:
    generator = cpu_generator(3)
    latents = torch.randn(1, 2, 16, 4, 4, generator=generator)
    text = torch.randn(1, 3, config.TINY_STAGE2.text_dim, generator=generator)
    with torch.no_grad():
        return model(latents, text, torch.tensor([700.0]), noise_step=torch.tensor([650.0]))


def test_checkpoint_loads_in_load_stage2_and_state_is_weights_only(tmp_path):
    model = build_transformer(config.TINY_STAGE2, seed=1)
    optimizer = torch.optim.AdamW(model.parameters())
    state = {"step": 2, "optimizer": optimizer.state_dict(), "rng": cpu_generator(5).get_state(), "settings": "{}"}
    folder = save_checkpoint(tmp_path, model, state)
    loaded = load_stage2(folder / WEIGHTS_NAME)
    assert torch.equal(_outputs(loaded), _outputs(model))
    back = load_training_state(folder / STATE_NAME)
    assert back["step"] == 2 and torch.equal(back["rng"], state["rng"])
    assert latest_checkpoint(tmp_path) == folder


def test_disk_full_at_a_save_names_it_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    model = build_transformer(config.TINY_STAGE2, seed=1)
    good = save_checkpoint(tmp_path, model, {"step": 1})

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(OSError, match="disk is full"):
        save_checkpoint(tmp_path, model, {"step": 2})
    assert latest_checkpoint(tmp_path) == good
    assert sorted(p.name for p in tmp_path.iterdir()) == [good.name]  # no half folder, no temp file
    assert torch.equal(_outputs(load_stage2(good / WEIGHTS_NAME)), _outputs(model))


def test_disk_full_at_the_state_file_removes_the_model_file_just_written(tmp_path, monkeypatch):
    model = build_transformer(config.TINY_STAGE2, seed=1)
    good = save_checkpoint(tmp_path, model, {"step": 1})

    def full(*args, **kwargs):  # the weights fit, the training state does not
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match=r"training-state.pt: the disk is full.*nothing was left behind"):
        save_checkpoint(tmp_path, model, {"step": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == [good.name], "no half checkpoint holding the disk space"
    assert latest_checkpoint(tmp_path) == good


def test_a_training_state_holding_code_is_refused(tmp_path):
    path = tmp_path / STATE_NAME
    torch.save({"step": 1, "bad": datetime.date(2020, 1, 1)}, path)  # a Python object: refused
    with pytest.raises(Exception, match="not a readable training state"):
        load_training_state(path)


def _toy_model():
    return build_transformer(dataclasses.replace(config.TINY_STAGE2, in_channels=12, out_channels=12), seed=4)


def _toy_run(out_dir, steps: int, resume=None, callback=None, model=None, **lr_curve):
    from flashvideo_core.training.loop import TrainingSample, train_stage2
    from flashvideo_core.training.settings import TrainSettings

    model = _toy_model() if model is None else model
    generator = cpu_generator(0)
    samples = [TrainingSample(torch.rand(3, 1, 16, 16, generator=generator) * 2 - 1,
                              torch.randn(1, 3, config.TINY_STAGE2.text_dim, generator=generator)) for _ in range(3)]
    settings = TrainSettings(steps=steps, batch=2, lr=1e-3, checkpoint_every=2, uncond_fraction=0.5, **lr_curve)
    result = train_stage2(model, PixelUnshuffleCodec(), samples, settings, out_dir, resume=resume, callback=callback)
    return model, result


def test_resume_continues_bit_identically(tmp_path):
    straight, whole = _toy_run(tmp_path / "a", 4)
    _, first = _toy_run(tmp_path / "b", 2)
    resumed, rest = _toy_run(tmp_path / "b", 4, resume=first.checkpoint)
    assert whole.losses == first.losses + rest.losses
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert whole.losses[0] != whole.losses[-1]  # it trained


class _Stop(Exception):
    pass


def _stop_after(last: int):
    def callback(event):
        if event.phase == "train" and event.step == last:
            raise _Stop

    return callback


def test_a_warm_up_and_cosine_run_resumes_bit_identically(tmp_path):
    curve = {"lr_warmup": 1, "lr_decay": "cosine"}
    straight, whole = _toy_run(tmp_path / "a", 4, **curve)
    with pytest.raises(_Stop):  # stopped after step 2's checkpoint, as a killed run
        _toy_run(tmp_path / "b", 4, callback=_stop_after(2), **curve)
    resumed, rest = _toy_run(tmp_path / "b", 4, resume=tmp_path / "b" / "step-0000002", **curve)
    assert whole.losses[2:] == rest.losses
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_the_warm_up_scales_the_first_update_and_the_curve_is_the_documented_one(tmp_path):
    from flashvideo_core.training.settings import TrainSettings

    def first_update(**curve) -> torch.Tensor:
        model = _toy_model()
        before = [p.detach().clone() for p in model.parameters()]
        with pytest.raises(_Stop):
            _toy_run(tmp_path / str(len(list(tmp_path.iterdir()))), 4, callback=_stop_after(1), model=model, **curve)
        return torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before, strict=True)])

    plain, warm = first_update(), first_update(lr_warmup=1)
    assert plain.abs().max() > 0
    # AdamW's step is proportional to lr (up to the fp32 rounding of each weight plus its update)
    torch.testing.assert_close(warm, plain / 2, rtol=1e-3, atol=1e-7)
    assert abs(float(warm.norm() / plain.norm()) - 0.5) < 1e-4
    settings = TrainSettings(steps=10, lr=1.0, lr_warmup=3, lr_decay="cosine")
    curve = [settings.lr_at(step) for step in range(1, 11)]
    assert curve[:3] == [0.25, 0.5, 0.75] and curve[3] == 1.0
    assert all(a > b for a, b in zip(curve[3:], curve[4:], strict=False)) and 0 < curve[-1] < 0.05
    assert [TrainSettings(steps=10, lr=1.0, lr_warmup=3).lr_at(step) for step in (4, 10)] == [1.0, 1.0]
    with pytest.raises(FlashVideoInputError, match="lr_warmup=10 must be an integer from 0 to steps - 1"):
        TrainSettings(steps=10, lr_warmup=10)


class _ZeroVelocity(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, latents, text, timestep, noise_step=None):
        return torch.zeros_like(latents)


def test_validation_scores_the_sampler_output_against_the_hq_clip():
    from flashvideo_core.training.metrics import psnr
    from flashvideo_core.training.pixel_degradation import PixelDegradation, degrade_pixels
    from flashvideo_core.training.validation import validate

    clips = torch.rand(2, 3, 1, 16, 16, generator=cpu_generator(1)) * 2 - 1
    pixel = PixelDegradation(blur_sigma=(1.0, 1.0), downscale=(2.0, 2.0))
    # a zero velocity leaves the input: at noise step 0 that is the DEG_pixel clip (sqrt(a_0) ~ 1)
    scores = validate(_ZeroVelocity(), PixelUnshuffleCodec(), clips, torch.zeros(1, 2, 8), pixel, noise_step=0)
    degraded = degrade_pixels(clips, pixel, torch.Generator().manual_seed(0))
    assert abs(scores.psnr - psnr(degraded, clips)) < 0.1
    assert scores.lsd > 0
