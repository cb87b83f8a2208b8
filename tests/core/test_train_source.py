"""The streaming source of training samples (real media files) and the loop over it: pools per phase, batches
that never mix images and clips, the hold-out, resume bit for bit, LoRA training that touches only the adapter."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from flashvideo_core import config
from flashvideo_core.errors import CheckpointError, FlashVideoInputError
from flashvideo_core.model.lora_adapter import LoraSettings, read_lora
from flashvideo_core.model.transformer import build_transformer
from flashvideo_core.rng import cpu_generator
from flashvideo_core.training.checkpoints import LORA_NAME, WEIGHTS_NAME
from flashvideo_core.training.codec import PixelUnshuffleCodec
from flashvideo_core.training.data import scan_media
from flashvideo_core.training.loop import train_stage2
from flashvideo_core.training.lora import apply_lora
from flashvideo_core.training.schedule import Phase, Schedule
from flashvideo_core.training.settings import TrainSettings
from flashvideo_core.training.source import (
    MediaSource,
    held_out_clips,
    plan_media,
    plan_phase,
    read_media,
    split_holdout,
)
from flashvideo_core.video import write_video


def _clip(path, count, height=48, width=64, value=0):
    write_video(path, [np.full((height, width, 3), value + 10 * i, np.uint8) for i in range(count)], fps=8)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    _clip(root / "long_a.mp4", 9)
    _clip(root / "long_b.mp4", 9, value=100)
    (root / "long_b.txt").write_text("a grey clip")
    _clip(root / "short.mp4", 3)
    Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(root / "photo.png")
    Image.fromarray(np.full((16, 16, 3), 50, np.uint8)).save(root / "tiny.png")
    return root


def _usable(media, *phases):
    return read_media(scan_media(media), Schedule(phases))


def _texts(caption: str) -> torch.Tensor:
    """A fixed embedding per caption (a stand-in for the T5 cache), (1, 3, text_dim)."""
    generator = torch.Generator().manual_seed(len(caption) + 1)
    return torch.randn(1, 3, config.TINY_STAGE2.text_dim, generator=generator)


def test_each_phase_draws_from_the_files_that_fit_it(media):
    phase = Phase(4, 32, 32, 5)  # image share: as found
    usable, notes = _usable(media, phase)
    assert sorted(i.path.name for i in usable) == ["long_a.mp4", "long_b.mp4", "photo.png", "short.mp4"]
    assert any("tiny.png: 16x16 is smaller than the 32x32 crop" in n for n in notes)
    pool, phase_notes = plan_phase(usable, phase, 0)
    assert sorted(i.path.name for i in pool.videos) == ["long_a.mp4", "long_b.mp4"]
    assert [i.path.name for i in pool.images] == ["photo.png"] and pool.image_share == 0.25  # 1 image in 4 files
    assert any("1 video(s) shorter than 5 frames" in n and "short.mp4" in n for n in phase_notes)


def test_a_phase_without_usable_clips_or_images_is_an_error_naming_it(media):
    usable, _ = _usable(media, Phase(1, 16, 16, 1))
    with pytest.raises(FlashVideoInputError, match=r"phase 2 \('video'\) trains on 13-frame 32x32 clips .*"
                                                   r"long_a.mp4: 9 frames, 64x48.*short.mp4: 3 frames"):
        plan_media(usable, Schedule((Phase(1, 32, 32, 5), Phase(1, 32, 32, 13, image_share=0.0, name="video"))))
    # images only, larger than every image: the videos' frames stand in, said in a note
    pool, notes = plan_phase(usable, Phase(1, 48, 48, 5, image_share=1.0), 0)
    assert {i.kind for i in pool.images} == {"video"} and "single frames of the videos" in notes[0]
    with pytest.raises(FlashVideoInputError, match="phase 1 trains on 64x64 images .* no image or video frame"):
        plan_phase(usable, Phase(1, 64, 64, 5, image_share=1.0), 0)


def test_a_batch_is_all_images_or_all_clips_in_the_phase_share(media):
    phase = Phase(40, 32, 32, 5, image_share=0.5)
    usable, _ = _usable(media, phase)
    pools, _ = plan_media(usable, Schedule((phase,)))
    source = MediaSource(Schedule((phase,)), pools, _texts)
    generator = cpu_generator(0)
    kinds = []
    for _ in range(12):
        batch = source.draw(phase, 3, generator)
        frames = {sample.pixels.shape for sample in batch}
        assert len(frames) == 1, "a batch never mixes 1-frame and 5-frame samples"
        kinds.append(frames.pop()[1])
    assert set(kinds) == {1, 5}
    sample = source.draw(phase, 1, cpu_generator(3))[0]
    assert sample.pixels.shape[0] == 3 and sample.text.shape == (1, 3, config.TINY_STAGE2.text_dim)


def test_the_hold_out_is_chosen_by_the_seed_and_never_trained_on(media):
    phase = Phase(1, 32, 32, 5, image_share=0.0)
    usable, _ = _usable(media, phase)
    train, held = split_holdout(usable, 1, phase, seed=3)
    assert split_holdout(usable, 1, phase, seed=3) == (train, held)
    assert len(held) == 1 and held[0].kind == "video" and held[0] not in train and len(train) == len(usable) - 1
    clips = held_out_clips(held, phase, 2, seed=0, texts=_texts)
    assert [c.pixels.shape for c in clips] == [(3, 5, 32, 32)] * 2
    with pytest.raises(FlashVideoInputError, match="holdout=2: hold out from 1 to 1 of the 2 files"):
        split_holdout(usable, 2, phase, seed=3)


def _run(media, out_dir, steps, lora=None, resume=None):
    schedule = Schedule((Phase(2, 16, 16, 5, image_share=1.0, batch=2), Phase(steps - 2, 16, 16, 5)))
    usable, _ = _usable(media, *schedule.phases)
    pools, _ = plan_media(usable, schedule)
    settings = TrainSettings(steps=steps, batch=1, lr=1e-3, checkpoint_every=2, uncond_fraction=0.5, lora=lora,
                             schedule=schedule)
    model = build_transformer(dataclasses.replace(config.TINY_STAGE2, in_channels=12, out_channels=12), seed=4)
    result = train_stage2(model, PixelUnshuffleCodec(), MediaSource(schedule, pools, _texts), settings, out_dir,
                          resume=resume)
    return model, result


@pytest.mark.parametrize("lora", [None, LoraSettings(rank=2)], ids=["full", "lora"])
def test_resume_over_media_files_continues_bit_identically(media, tmp_path, lora):
    straight, whole = _run(media, tmp_path / "a", 3, lora)  # checkpoints at steps 2 and 3
    resumed, rest = _run(media, tmp_path / "b", 3, lora, resume=tmp_path / "a" / "step-0000002")
    assert len(rest.losses) == 1 and whole.losses[2:] == rest.losses
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert (whole.checkpoint / (LORA_NAME if lora else WEIGHTS_NAME)).is_file()


def test_lora_training_changes_only_the_adapter_and_its_file_reproduces_the_model(media, tmp_path):
    base = build_transformer(dataclasses.replace(config.TINY_STAGE2, in_channels=12, out_channels=12), seed=4)
    trained, result = _run(media, tmp_path, 3, LoraSettings(rank=2, alpha=4.0))
    weights = {k.replace(".base_layer", ""): v for k, v in trained.state_dict().items() if "lora_" not in k}
    assert len(weights) < len(trained.state_dict()) and weights.keys() == base.state_dict().keys()
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in weights.items()), "the base weights stay frozen"
    lora = read_lora(result.checkpoint / LORA_NAME)
    assert lora.settings.rank == 2 and lora.metadata["steps"] == "3"
    latents, text = torch.randn(1, 2, 12, 4, 4), torch.randn(1, 3, config.TINY_STAGE2.text_dim)
    with torch.no_grad():
        expected = trained(latents, text, torch.tensor([500.0]), noise_step=torch.tensor([675.0]))
        applied = apply_lora(base, lora, 1.0, "base")(latents, text, torch.tensor([500.0]),
                                                      noise_step=torch.tensor([675.0]))
        plain = base(latents, text, torch.tensor([500.0]), noise_step=torch.tensor([675.0]))
    assert torch.allclose(applied, expected, atol=1e-5) and not torch.allclose(plain, expected, atol=1e-5)


def test_resuming_a_lora_checkpoint_with_other_settings_is_refused(media, tmp_path):
    _, result = _run(media, tmp_path, 3, LoraSettings(rank=2))
    with pytest.raises(CheckpointError, match="rank 2, alpha 2 on .*this run trains rank 3"):
        _run(media, tmp_path / "again", 4, LoraSettings(rank=3), resume=result.checkpoint)
    with pytest.raises(CheckpointError, match="is a LoRA run's checkpoint"):
        _run(media, tmp_path / "again", 4, None, resume=result.checkpoint)
