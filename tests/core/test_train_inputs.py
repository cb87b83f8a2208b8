"""Inputs a user gets wrong with train-stage2, and what the run shows: --init given a run folder, a LoRA run's
step folder or another model (each named with the flag and the fix, before anything loads), model files
readable like every other output, validation at cfg 1 in one model call per step, and a bar whose steps/s
leaves out the validation passes."""

import os
from types import SimpleNamespace

import pytest
import torch

from flashvideo_core import config
from flashvideo_core.errors import CheckpointError
from flashvideo_core.model.lora_adapter import LoraSettings
from flashvideo_core.model.transformer import build_transformer
from flashvideo_core.training.checkpoints import (
    LORA_NAME,
    STATE_NAME,
    WEIGHTS_NAME,
    save_checkpoint,
    save_training_state,
)
from flashvideo_core.training.codec import PixelUnshuffleCodec
from flashvideo_core.training.lora import attach_lora
from flashvideo_core.training.pixel_degradation import PixelDegradation
from flashvideo_core.training.settings import TrainSettings
from flashvideo_core.training.setup import check_init, check_resume_fits
from flashvideo_core.training.validation import validate


@pytest.fixture
def runs(tmp_path):
    """A full run's folder (step-0000001, step-0000002) and a LoRA run's (step-0000001), as train-stage2 writes."""
    full = tmp_path / "full"
    model = build_transformer(config.TINY_STAGE2, seed=0)
    for step in (1, 2):
        save_checkpoint(full, model, {"step": step})
    lora = tmp_path / "lora"
    attach_lora(model, LoraSettings(rank=2))
    save_checkpoint(lora, model, {"step": 1})
    return full, lora


def test_init_takes_a_full_runs_step_folder(runs):
    check_init(runs[0] / "step-0000002", None, None)
    check_init(runs[0] / "step-0000002" / WEIGHTS_NAME, None, None)


def test_init_of_a_run_folder_names_its_latest_checkpoint_and_resume(runs):
    full = runs[0]
    with pytest.raises(CheckpointError) as caught:
        check_init(full, None, None)
    assert str(caught.value) == (f"--init {full} is a train-stage2 run folder; give one of its checkpoints, e.g. "
                                 f"--init {full / 'step-0000002'} (its latest), or continue that run with "
                                 f"--resume {full}.")


def test_init_of_a_lora_runs_step_folder_is_named_a_lora(runs):
    folder = runs[1] / "step-0000001"
    assert (folder / LORA_NAME).is_file()
    with pytest.raises(CheckpointError, match=r"is a LoRA \(an adapter, not a model\)"):
        check_init(folder, None, None)  # was: "looks like FlashVideo Stage I transformer"


def test_init_of_a_half_written_step_folder_is_named(tmp_path):
    folder = tmp_path / "run" / "step-0000003"
    folder.mkdir(parents=True)
    save_training_state(folder / STATE_NAME, {"step": 3})
    with pytest.raises(CheckpointError, match="checkpoint folder without its model file"):
        check_init(folder, None, None)


def test_init_of_another_model_names_the_flag_and_what_to_give(tiny_weights):
    with pytest.raises(CheckpointError) as caught:
        check_init(tiny_weights["stage1"], None, None)
    text = str(caught.value)
    assert text.startswith(f"--init {tiny_weights['stage1']}: stage1.pt looks like FlashVideo Stage I transformer")
    assert "connected to the right loader" not in text and text.endswith(
        "Give the Stage II model to start from: stage2.pt, a converted .safetensors, a diffusers transformer folder "
        "or a step folder of an earlier run.")


def test_resume_without_init_is_checked_against_the_from_scratch_architecture(runs):
    folder = runs[0] / "step-0000002"
    check_resume_fits(folder, TrainSettings(), None, config.TINY_STAGE2)  # the architecture it was trained with
    with pytest.raises(CheckpointError, match=r"holds Stage II, 2 layers x 32 wide, .* but the from-scratch model "
                                              r"\(no --init\) is Stage II, 30 layers x 1920 wide \(30 heads\)"):
        check_resume_fits(folder, TrainSettings(), None, config.STAGE2_2B)


def test_resume_of_a_lora_run_with_another_rank_is_refused_before_loading(runs):
    full, lora = runs
    init = full / "step-0000001" / WEIGHTS_NAME
    check_resume_fits(lora / "step-0000001", TrainSettings(lora=LoraSettings(rank=2)), init, config.TINY_STAGE2)
    with pytest.raises(CheckpointError, match=r"^--resume .*step-0000001: stage2-lora.safetensors is a LoRA of rank 2, "
                                              r"alpha 2 on .*; this run trains rank 4, alpha 4 on "):
        check_resume_fits(lora / "step-0000001", TrainSettings(lora=LoraSettings(rank=4)), init, config.TINY_STAGE2)


def test_model_files_get_the_mode_the_umask_gives(runs):
    mask = os.umask(0o022)
    os.umask(mask)
    expected = 0o666 & ~mask
    for path in (runs[0] / "step-0000001" / WEIGHTS_NAME, runs[1] / "step-0000001" / LORA_NAME):
        assert path.stat().st_mode & 0o777 == expected, f"{path.name}: {oct(path.stat().st_mode & 0o777)}"


def _calls(model):
    """Record the batch size of every model call."""
    sizes = []
    model.register_forward_hook(lambda module, args, kwargs, out: sizes.append(args[0].shape[0]), with_kwargs=True)
    return sizes


def test_validation_at_cfg_1_calls_the_model_once_per_step_with_the_guided_result():
    toy = config.TINY_STAGE2.__class__(**{**config.TINY_STAGE2.__dict__, "in_channels": 12, "out_channels": 12})
    model = build_transformer(toy, seed=2)
    generator = torch.Generator().manual_seed(1)
    clips = torch.rand(1, 3, 5, 16, 16, generator=generator) * 2 - 1
    text = torch.randn(1, 3, toy.text_dim, generator=generator)
    sizes = _calls(model)
    single = validate(model, PixelUnshuffleCodec(), clips, text, PixelDegradation(), 650, steps=3, cfg=1.0)
    assert sizes == [1, 1, 1], "one batch-1 call per Euler step (the unconditional half is not needed at cfg 1)"
    sizes.clear()
    guided = validate(model, PixelUnshuffleCodec(), clips, text, PixelDegradation(), 650, steps=3, cfg=1.0 + 1e-9)
    assert sizes == [2, 2, 2], "any other cfg: the guided pair, as inference runs it"
    assert single.psnr == pytest.approx(guided.psnr, abs=1e-4) and single.lsd == pytest.approx(guided.lsd, abs=1e-5)


def test_the_bar_leaves_validation_out_of_steps_per_second(tmp_path):
    import io

    from flashvideo_core.cli.train_progress import TrainBar
    from flashvideo_core.progress import ProgressEvent
    from flashvideo_core.training.settings import TrainSettings

    run = SimpleNamespace(settings=TrainSettings(steps=4, checkpoint_every=10), out_dir=tmp_path)
    bar, clock = TrainBar(run, file=io.StringIO()), [100.0]
    bar(ProgressEvent("train", 0, 4))
    bar.bar._time = lambda: clock[0]
    bar.bar.start_t = bar.bar.last_print_t = clock[0]
    for step in (1, 2):
        clock[0] += 1.0  # a step takes 1 s
        bar(ProgressEvent("train", step, 4, values={"loss": 1.0}))
    clock[0] += 50.0  # a 50 s validation pass
    bar(ProgressEvent("validate", 2, 4, values={"psnr": 20.0, "lowfreq_psnr": 25.0, "lsd": 1.0}))
    clock[0] += 1.0
    bar(ProgressEvent("train", 3, 4, values={"loss": 1.0}))
    shown = bar.bar.format_dict
    assert shown["elapsed"] == pytest.approx(3.0) and shown["rate"] == pytest.approx(1.0)
    bar.close()
