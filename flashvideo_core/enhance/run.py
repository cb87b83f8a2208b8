"""Stage II on any video: any length, size, aspect and frame rate, streaming, window by window.

Entry points (each takes one EnhanceSettings, plans the run with plan_enhance and checks everything
before the first model call; the windows run in stream.py):
- `enhance_frames`: any frame iterator -> iterator of uint8 (H, W, 3) frames (the CLI path);
- `enhance_images`: ComfyUI IMAGE (F, H, W, 3) in [0, 1] (or uint8) -> IMAGE (F, H', W', 3);
- `enhance_video_file`: file -> file with the input's fps and audio.
The models come as a sampling.stage2_chain.Stage2Models bundle, or as any `Refine` callable.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .. import devices
from ..config import TransformerConfig
from ..errors import FlashVideoInputError
from ..layout import checked_images, to_uint8
from ..memory_floor import check_fits, video_floor
from ..model.lora_adapter import LoraChoice
from ..modes.settings import ModelModes
from ..planning import lower_bound
from ..planning.auto import AS_SET, RunMemory, check_auto_alone, choose_run
from ..planning.auto import AUTO as AUTO_MEMORY
from ..planning.call import DeviceRoom, StageCall
from ..planning.out_of_memory import MemoryWatch
from ..planning.room import CLI_WORDS, ModeWords, ran_modes, smaller_mode_hint
from ..planning.use import check_modes_device
from ..progress import ProgressCallback
from ..sampling.stage2_chain import Stage2Models
from ..text.encoder import check_prompt
from ..vae import AUTO, Slices
from ..video import VideoInfo, check_output_path, iter_frames, probe_video, to_rgb_uint8, write_video
from ..weights import loaders
from .models import load_stage2_models
from .plan import EnhancePlan, EnhanceSettings, plan_enhance
from .sizing import image_frame_bytes
from .stream import Refine, enhance_stream, stage2_refiner

OUTPUT_RAM_FRACTION = 0.8
"""Largest share of the free RAM an IMAGE output may take; the rest is for the window's working memory."""


def enhance_frames(frames: Iterable, num_frames: int, models: Stage2Models | Refine, settings: EnhanceSettings,
                   *, slices: Slices = AUTO, device=None, dtype: torch.dtype | None = None,
                   callback: ProgressCallback | None = None) -> Iterator[np.ndarray]:
    """Stage II on `num_frames` frames -> an iterator of exactly num_frames uint8 (H', W', 3) frames.

    frames: uint8 (H, W, 3) arrays (gray, RGBA, uint16 or float 0-1 frames are converted, see
    video.to_rgb_uint8); only the first num_frames are read. models: the Stage II bundle (its prompt
    embedding and the window's memory are checked here), or a Refine. slices: vae.Slices;
    device/dtype: where and how Stage II runs (None: the model's own). The plan is made and checked
    on this call (it reads the first frame); the models run as the result is iterated.
    """
    source = iter(frames)
    first = next(source, None)
    if first is None:
        raise FlashVideoInputError("the video has no frames.")
    first = to_rgb_uint8(first)
    plan = plan_enhance(num_frames, first.shape[0], first.shape[1], settings)
    watch = MemoryWatch()
    callback = watch.track(callback)
    refine = _refiner(models, plan, slices, device, dtype, callback, watch=watch)
    return _guarded(_uint8_stream(itertools.chain([first], source), plan, refine, callback), watch)


def _guarded(frames: Iterator, watch: MemoryWatch) -> Iterator:
    """`frames` with an out-of-memory raised while they are made turned into watch's clear message."""
    with watch.guard():
        yield from frames


def _uint8_stream(frames: Iterator, plan: EnhancePlan, refine: Refine, callback) -> Iterator[np.ndarray]:
    """enhance_stream over any frames (converted to uint8 RGB as they are read: 4x less memory held than
    float until their window runs) -> uint8 (H', W', 3) frames."""
    tensors = (torch.from_numpy(to_rgb_uint8(frame)) for frame in frames)
    return (to_uint8(frame).numpy() for frame in enhance_stream(tensors, plan, refine, callback))


def enhance_images(images: torch.Tensor, models: Stage2Models | Refine, settings: EnhanceSettings, *,
                   slices: Slices = AUTO, device=None, dtype: torch.dtype | None = None,
                   callback: ProgressCallback | None = None, mode_words: ModeWords = CLI_WORDS) -> torch.Tensor:
    """ComfyUI IMAGE (F, H, W, C) in [0, 1] (or uint8 0..255) -> IMAGE (F, H', W', 3) float32 in [0, 1].

    C may be 3, 4 (alpha dropped, logged) or 1 (gray expanded); NaN/Inf and values far outside the
    range are refused (layout.checked_images). Models and the rest as in enhance_frames; mode_words:
    how a too-small-memory message names the settings of the mode that would fit (the nodes' inputs).
    The whole output lives in memory (F x H' x W' x 3 x 4 bytes; see sizing.image_frame_bytes); if
    that is more than OUTPUT_RAM_FRACTION of the RAM free now, FlashVideoInputError says so before
    any model call (on a CPU machine running out of RAM kills the process late in the run).
    """
    images = checked_images(images)
    num_frames, in_height, in_width = images.shape[:3]
    plan = plan_enhance(num_frames, in_height, in_width, settings)
    watch = MemoryWatch()
    callback = watch.track(callback)
    refine = _refiner(models, plan, slices, device, dtype, callback, mode_words, watch)
    _check_output_fits(plan)
    out = torch.empty(num_frames, plan.target.height, plan.target.width, 3)
    frames = (images[i] for i in range(num_frames))
    for i, frame in enumerate(_guarded(enhance_stream(frames, plan, refine, callback), watch)):
        out[i] = frame
    return out


def enhance_video_file(
    in_path: str | os.PathLike,
    out_path: str | os.PathLike,
    settings: EnhanceSettings,
    *,
    weights: loaders.WeightPaths | None = None,
    models: Stage2Models | Refine | None = None,
    prompt: str = "",
    stage2_prefix: bool = False,
    slices: Slices = AUTO,
    overwrite: bool = False,
    device=None,
    precision: str = "auto",
    callback: ProgressCallback | None = None,
    on_plan: Callable[[EnhancePlan, VideoInfo], None] | None = None,
    stage2_lora: LoraChoice | None = None,
    modes: ModelModes = ModelModes(),
    memory: str = AS_SET,
) -> Path:
    """Enhance the video file `in_path` into `out_path` (H.264) with the same frame count, fps and audio.

    Models: either `weights` (the T5 encoder encodes `prompt`, then Stage II and the VAE are loaded)
    or ready `models`. Frames stream from the input to the output; a failure or interruption leaves
    no output file. Returns out_path. on_plan(plan, info) is called once everything is checked, before
    any model is loaded (the CLI prints describe_plan there). stage2_lora: a LoRA applied to Stage II
    as it loads from `weights` (with ready `models`, apply it yourself); modes: how Stage II (and T5 for fp8)
    is stored and run (modes.settings), resolved for one window; memory "auto": chosen by planning.auto
    for one window (with `weights` only; `settings` and `modes` then leave them unset). Raises FlashVideoInputError /
    CheckpointError / FileExistsError before any model work: bad settings, an input that cannot be
    read, an output that exists, a prompt that is not text, a window (or T5) that cannot fit the free
    memory. An out-of-memory error mid-run becomes planning.out_of_memory.DeviceMemoryError.
    """
    info = probe_video(in_path)
    target_path = check_output_path(out_path, overwrite)
    if target_path.resolve() == info.path.resolve():
        raise FlashVideoInputError(f"output {target_path} is the input file; choose another output name.")
    plan = plan_enhance(info.num_frames, info.height, info.width, settings)
    run_device = devices.parse_device(device)
    run_dtype = devices.parse_dtype(precision, run_device)
    check_modes_device(modes, run_device)
    check_auto_alone(memory, modes, {"settings.sequential_cfg": settings.sequential_cfg})
    watch = MemoryWatch(run_device)
    callback = watch.track(callback)
    chosen, free_before = None, 0
    if _loads_from_weights(models, stage2_lora, memory):
        chosen, plan, free_before = _check_before_loading(weights, stage2_lora, prompt, plan, (run_device, run_dtype),
                                                          (modes, memory), watch)
    if on_plan is not None:
        on_plan(plan, info)
    with watch.guard():
        if models is None:
            size = (plan.windows[0].length, plan.target.work_height, plan.target.work_width, chosen.sequential_cfg(2))
            models = load_stage2_models(weights, prompt, stage2_prefix, run_device, run_dtype, callback, stage2_lora,
                                        chosen.modes(2), size, t5_weights=chosen.t5_weights)
        refine = _refiner(models, plan, slices, run_device, run_dtype, callback, watch=watch)
        if chosen is not None:  # loaded from weights here: the run started with free_before free, nothing held
            watch.free_at_start, watch.held = free_before, 0
        frames = _uint8_stream(iter_frames(info.path, info), plan, refine, callback)
        return write_video(target_path, frames, fps=info.fps, audio_from=info.path if info.has_audio else None,
                           overwrite=overwrite)


def _loads_from_weights(models, stage2_lora: LoraChoice | None, memory: str) -> bool:
    """True when the models load from weights (models None); refuses a LoRA or memory 'auto' with ready models."""
    if models is None:
        return True
    if stage2_lora is not None:
        raise FlashVideoInputError("stage2_lora is applied as Stage II loads from `weights`; with ready `models`, "
                                   "apply it to the transformer yourself (model.lora_adapter.apply_lora).")
    if memory == AUTO_MEMORY:
        raise FlashVideoInputError("memory='auto' chooses the modes the models load with: give `weights`, not "
                                   "ready `models`.")
    return False


def _check_before_loading(weights: loaders.WeightPaths | None, stage2_lora: LoraChoice | None, prompt: str,
                          plan: EnhancePlan, where: tuple, asked: tuple[ModelModes, str],
                          watch: MemoryWatch) -> tuple[RunMemory, EnhancePlan, int]:
    """enhance_video_file's checks before any model loads from `weights`: the files, the LoRA, the prompt, the
    modes (asked = (modes, memory): as set, or chosen by planning.auto for one window), then T5's weights alone
    and one window's Stage II (its weights in those modes, the VAE's beside it: the CLI keeps both on the
    device) against the free device memory (planning.lower_bound); sets `watch` for the loading. Returns (the
    modes the models load with, `plan` with their sequential CFG, the free device bytes counted)."""
    (device, dtype), (modes, memory) = where, asked
    if weights is None:
        raise FlashVideoInputError("give either `weights` or ready `models`.")
    weights.check("stage2", "vae", "text_encoder")
    if stage2_lora is not None:
        stage2_lora.check_weights(weights.stage2)
    check_prompt(prompt, required=False)  # before T5 loads (minutes): a lone surrogate is named at once
    free = devices.free_memory(device)
    vae = (lower_bound.vae_weight_bytes(weights.vae, dtype) or 0) if lower_bound.on_accelerator(device) else 0
    window = (plan.windows[0].length, plan.target.work_height, plan.target.work_width)
    chosen = (choose_run(weights.text_encoder, [(2, "Stage II (one window)", weights.stage2, window)], dtype,
                         device, free, modes, beside=vae) if memory == AUTO_MEMORY
              else RunMemory.as_set(modes, {2: plan.stage2.sequential_cfg}))
    t5 = lower_bound.check_t5(weights.text_encoder, dtype, chosen.t5_weights, device, free)
    watch.at("loading the models (T5 encodes the prompt first)", t5, lower_bound.t5_hint(chosen.t5_weights))
    plan = replace(plan, stage2=replace(plan.stage2, sequential_cfg=chosen.sequential_cfg(2)))
    call = window_call(plan, lower_bound.file_config(weights.stage2), device, dtype, chosen.modes(2))
    check_window_fits(call, lower_bound.planned_room(call, free, beside=vae))
    watch.free_at_start = free
    return chosen, plan, free


def window_call(plan: EnhancePlan, network: TransformerConfig, device, dtype: torch.dtype,
                modes: ModelModes = ModelModes()) -> StageCall:
    """The StageCall of one of plan's windows: the `network` Stage II transformer at the work size (the first
    window's length, the largest), with plan's sequential CFG, in `dtype` on `device` with `modes`."""
    return StageCall(2, plan.windows[0].length, plan.target.work_height, plan.target.work_width, dtype, device,
                     modes, plan.stage2.sequential_cfg, network)


def check_window_fits(call: StageCall, room: DeviceRoom, words: ModeWords = CLI_WORDS,
                      watch: MemoryWatch | None = None) -> None:
    """Raise FlashVideoInputError if one window's Stage II `call` (window_call) or its decoded window cannot
    fit: planning.lower_bound.check_stage against `room` (its weights on the device: planned_room's, or a
    loaded model's own with `held` of them already there; `beside`: the VAE's in the CLI), then the decoded
    window against the RAM free now.

    Called before any model is loaded (enhance_video_file) or run (enhance_frames/images), so a 4K
    window on a small card is refused at once with sizes that fit, not after minutes with an
    allocator traceback, and with the memory mode that would fit (planning.room, in `words`).
    watch: given the window's stage, the free memory, its least need and the hint for an out-of-memory
    mid-run (planning.out_of_memory).
    """
    need = lower_bound.check_stage("Stage II (one enhance window)", call, room, words)
    check_fits("a decoded enhance window", video_floor(*call.size), devices.free_memory("cpu"), "cpu", *call.size)
    if watch is not None:
        watch.device, watch.free_at_start, watch.held = call.device, room.free, room.held
        watch.at("Stage II (an enhance window)", need, smaller_mode_hint(call, room, words))


def _refiner(models: Stage2Models | Refine, plan: EnhancePlan, slices: Slices, device, dtype, callback,
             words: ModeWords = CLI_WORDS, watch: MemoryWatch | None = None) -> Refine:
    """The Refine to run: a given one as it is; for a Stage2Models bundle, checked first (prompt
    embedding against the transformer, one window against the free memory where it will run: the weights
    it takes there when it runs, planning.lower_bound.loaded_weights), `watch` set for that window."""
    if not isinstance(models, Stage2Models):
        if watch is not None:
            watch.at("Stage II (an enhance window)")
            watch.device = torch.device(device) if device is not None else watch.device
        return models
    models.check()
    model = models.transformer
    run_device = torch.device(device) if device is not None else devices.model_device(model)
    weights, held = lower_bound.loaded_weights(model, run_device)
    free = models.free_bytes(run_device)
    call = window_call(plan, model.config, run_device, dtype or devices.model_dtype(model), ran_modes(model))
    check_window_fits(call, DeviceRoom(free, weights, held), words, watch)
    return stage2_refiner(models, slices=slices, device=device, dtype=dtype, callback=callback)


def _check_output_fits(plan: EnhancePlan) -> None:
    """Raise FlashVideoInputError if plan's output IMAGE batch would not fit in the RAM free now."""
    per_frame = image_frame_bytes(plan.target.height, plan.target.width)
    need = plan.num_frames * per_frame
    free = devices.free_memory("cpu")
    if need > OUTPUT_RAM_FRACTION * free:
        fits = max(0, int(OUTPUT_RAM_FRACTION * free // per_frame))
        raise FlashVideoInputError(
            f"images: {plan.num_frames} enhanced frames of {plan.target.width}x{plan.target.height} take "
            f"{_size(need)} as an IMAGE batch, but {_size(free)} of RAM is free (about {fits} "
            f"frame{'s' if fits != 1 else ''} fit). "
            "Enhance the clip in parts (fewer frames per run), choose a smaller target, or use "
            "the CLI `python -m flashvideo_core enhance`, which streams frames to a file."
        )


def _size(num_bytes: float) -> str:
    """'1.2 GB' or '340 MB'."""
    return f"{num_bytes / 2**30:.1f} GB" if num_bytes >= 2**30 else f"{num_bytes / 2**20:.0f} MB"
