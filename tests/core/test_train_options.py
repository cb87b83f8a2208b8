"""Loop options of train_stage2: gradient checkpointing, precision, validation passes and the events it reports."""

import dataclasses

import pytest
import torch

from flashvideo_core import config
from flashvideo_core.model.lora_adapter import LoraSettings
from flashvideo_core.model.transformer import build_transformer
from flashvideo_core.training.codec import PixelUnshuffleCodec
from flashvideo_core.training.loop import TrainingSample, train_stage2
from flashvideo_core.training.pixel_degradation import PixelDegradation
from flashvideo_core.training.settings import TrainSettings
from flashvideo_core.training.validation import HeldOut, validate

TOY = dataclasses.replace(config.TINY_STAGE2, in_channels=12, out_channels=12)


def _samples(count=2, frames=1):
    generator = torch.Generator().manual_seed(0)
    return [TrainingSample(torch.rand(3, frames, 16, 16, generator=generator) * 2 - 1,
                           torch.randn(1, 3, TOY.text_dim, generator=generator)) for _ in range(count)]


def _train(tmp_path, callback=None, validator=None, **settings):
    model = build_transformer(TOY, seed=4)
    result = train_stage2(model, PixelUnshuffleCodec(), _samples(), TrainSettings(lr=1e-3, **settings), tmp_path,
                          callback=callback, validator=validator)
    return model, result


@pytest.mark.parametrize("lora", [None, LoraSettings(rank=2)], ids=["full", "lora"])
def test_gradient_checkpointing_trains_the_same_model(tmp_path, lora):
    _, plain = _train(tmp_path / "a", steps=3, checkpoint_every=3, lora=lora)
    model, recomputed = _train(tmp_path / "b", steps=3, checkpoint_every=3, lora=lora, gradient_checkpointing=True)
    assert model.inner.gradient_checkpointing
    assert recomputed.losses == pytest.approx(plain.losses, rel=1e-4)
    assert recomputed.losses[0] != recomputed.losses[-1]


def test_bf16_precision_autocasts_on_the_cpu_too(tmp_path):
    _, fp32 = _train(tmp_path / "a", steps=2, checkpoint_every=2)
    model, bf16 = _train(tmp_path / "b", steps=2, checkpoint_every=2, precision="bf16")
    assert next(model.parameters()).dtype == torch.float32, "the weights stay fp32"
    assert bf16.losses[0] != fp32.losses[0] and bf16.losses[0] == pytest.approx(fp32.losses[0], rel=0.05)


def test_validation_runs_every_n_steps_and_at_the_end_and_is_reported(tmp_path):
    clips = _samples(count=2, frames=5)
    pixel = PixelDegradation(blur_sigma=(1.0, 1.0), downscale=(2.0, 2.0))
    held = HeldOut(clips, PixelUnshuffleCodec(), pixel, noise_step=600, steps=1, seed=3)
    events = []
    model, result = _train(tmp_path, events.append, held, steps=5, checkpoint_every=5, validate_every=2)
    assert [step for step, _ in result.validations] == [2, 4, 5]
    reported = [e for e in events if e.phase == "validate"]
    assert [e.step for e in reported] == [2, 4, 5] and set(reported[0].values) == {"psnr", "lowfreq_psnr", "lsd"}
    assert [e.step for e in events if e.phase == "train"] == [1, 2, 3, 4, 5]
    assert all(e.values["loss"] > 0 for e in events if e.phase == "train")
    # the pass is the mean of validate() over the clips, each with its own seed
    alone = [validate(model, PixelUnshuffleCodec(), c.pixels[None], c.text, pixel, 600, 1, seed=3 + i)
             for i, c in enumerate(clips)]
    scores = held(model)
    assert scores.psnr == pytest.approx(sum(s.psnr for s in alone) / 2)
    assert scores.lsd == pytest.approx(sum(s.lsd for s in alone) / 2)


def test_the_train_bar_shows_loss_and_steps_per_second_and_logs_every_value(tmp_path):
    import io
    import json
    from types import SimpleNamespace

    from flashvideo_core.cli.train_progress import TrainBar
    from flashvideo_core.progress import ProgressEvent

    run = SimpleNamespace(settings=TrainSettings(steps=4, checkpoint_every=2), out_dir=tmp_path)
    out = io.StringIO()
    bar = TrainBar(run, file=out)
    bar(ProgressEvent("train", 0, 4))  # the start: opens the bar
    for step in range(1, 5):
        bar(ProgressEvent("train", step, 4, values={"loss": 0.5 / step}))
    bar(ProgressEvent("validate", 4, 4, values={"psnr": 30.0, "lowfreq_psnr": 35.5, "lsd": 0.25}))
    bar.close()
    text = out.getvalue()
    assert "4/4 steps" in text and "step/s" in text and "loss 0.1250, mean 0.2604" in text
    assert f"checkpoint: {tmp_path / 'step-0000002'}" in text and f"checkpoint: {tmp_path / 'step-0000004'}" in text
    assert ("step 4: validation PSNR 30.00 dB, low-frequency PSNR 35.50 dB, log-spectral distance 0.2500" in text)
    log = [json.loads(line) for line in (tmp_path / "train-log.jsonl").read_text().splitlines()]
    assert [(r["event"], r["step"]) for r in log] == [("start", 0)] + [("train", s) for s in range(1, 5)] + [
        ("validate", 4)]
    assert log[1]["loss"] == 0.5 and log[-1]["lsd"] == 0.25


def test_settings_say_when_a_step_checkpoints_validates_and_autocasts():
    """The loop and the CLI's bar and plan ask the settings the same questions (one rule each)."""
    settings = TrainSettings(steps=10, checkpoint_every=4, validate_every=3)
    assert [s for s in range(1, 11) if settings.checkpoint_due(s)] == [4, 8, 10]
    assert [s for s in range(1, 11) if settings.validation_due(s)] == [3, 6, 9, 10]
    assert [s for s in range(1, 11) if TrainSettings(steps=10).validation_due(s)] == [10]
    rule = {p: [TrainSettings(precision=p).bf16_autocast(d) for d in ("cuda", "cpu")] for p in ("auto", "fp32", "bf16")}
    assert rule == {"auto": [True, False], "fp32": [False, False], "bf16": [True, True]}
