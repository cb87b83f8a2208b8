"""Stage II on any video: any length, size, aspect and frame rate, streaming, window by window.

Per window (windows.py: 4k+1 frames, overlapping): frames are resized to the exact target size and
edge-padded to multiples of 16 (sizing.py), encoded to a Stage II latent (handoff), degraded at the
noise step (degradation), refined by the Stage II ODE (stages), decoded (vae), cropped back to the
exact size, optionally colour-matched to the input window (color.py), trimmed of padded frames and
crossfaded into the output stream (windows.WindowBlender). Only one window of input frames and one
overlap of output frames are held, so memory does not grow with the clip's length.

Entry points:
- `enhance_frames`: any frame iterator -> iterator of uint8 (H, W, 3) frames (the CLI path);
- `enhance_images`: ComfyUI IMAGE (F, H, W, 3) in [0, 1] -> IMAGE (F, H', W', 3);
- `enhance_video_file`: file -> file with the input's fps and audio.
All of them validate every setting (`plan_enhance`) before the first model call.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import config, devices
from ..checkpoint import transformer_width
from ..errors import FlashVideoInputError
from ..layout import checked_images
from ..memory_floor import check_fits, transformer_floor, video_floor
from ..progress import ProgressCallback, report
from ..rng import cpu_generator
from ..text.encoder import check_prompt
from ..video import VideoInfo, check_output_path, iter_frames, probe_video, to_rgb_uint8, write_video
from .color import match_color
from .noise_rule import resolve_noise_step
from .sizing import (
    TargetSize,
    crop_to_target,
    fit_frames,
    format_scale,
    image_frame_bytes,
    resolve_target_size,
)
from .windows import DEFAULT_OVERLAP, DEFAULT_WINDOW, Window, WindowBlender, plan_windows

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnhancePlan:
    """Everything a run will do, resolved and validated before any model is called.

    target: output size (exact and work); windows: the frame windows in order;
    noise_step: the degradation step actually used ("auto" resolved from the window length and size).
    """

    num_frames: int
    in_height: int
    in_width: int
    target: TargetSize
    windows: tuple[Window, ...]
    noise_step: int
    steps: int
    cfg: float
    shift: float
    seed: int
    color_match: bool


def plan_enhance(
    num_frames: int,
    in_height: int,
    in_width: int,
    *,
    target: TargetSize | None = None,
    scale: float | None = None,
    size: str | None = None,
    long_edge: int | None = None,
    noise_step: int | str = "auto",
    steps: int = config.STAGE2_STEPS,
    cfg: float = config.STAGE2_CFG,
    shift: float = config.STAGE2_SHIFT,
    seed: int = 0,
    window: int = DEFAULT_WINDOW,
    overlap: int = DEFAULT_OVERLAP,
    color_match: bool = False,
    allow_large_upscale: bool = False,
) -> EnhancePlan:
    """Validate a run and resolve its target, windows and noise step. Raises FlashVideoInputError.

    Give either `target` or one of scale / size / long_edge (none: the official 1080p, refused when
    that is more than x4 the input's long edge unless allow_large_upscale; see sizing.py).
    """
    if target is None:
        target = resolve_target_size(in_height, in_width, scale=scale, size=size, long_edge=long_edge,
                                     allow_large_upscale=allow_large_upscale)
    elif any(v is not None for v in (scale, size, long_edge)):
        raise FlashVideoInputError("give either target or one of scale / size / long_edge, not both.")
    elif target.height < in_height or target.width < in_width:
        raise FlashVideoInputError(
            f"target {target.width}x{target.height} (WxH) is smaller than the input {in_width}x{in_height}."
        )
    windows = tuple(plan_windows(num_frames, window=window, overlap=overlap))
    step = resolve_noise_step(noise_step, windows[0].length, target.height, target.width)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise FlashVideoInputError(f"steps={steps!r} must be an integer >= 1 (default 4; paper 4-6).")
    for name, value, low in (("cfg", cfg, 0.0), ("shift", shift, 1e-6)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
            raise FlashVideoInputError(f"{name}={value!r} must be a finite number >= {low:g}.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise FlashVideoInputError(f"seed={seed!r} must be an integer.")
    return EnhancePlan(
        num_frames, in_height, in_width, target, windows, step, steps, float(cfg), float(shift), seed,
        bool(color_match),
    )


def describe_plan(plan: EnhancePlan, noise_step: int | str = "auto") -> str:
    """A few lines saying what a run will do: sizes (exact and work, width x height) and the upscale
    factor, windows, noise step and where it came from.

    noise_step: what the user asked for ("auto" or a number), to say whether the step was resolved by
    the automatic rule (noise_rule.py) or given.
    """
    target, windows = plan.target, plan.windows
    work = (f"; the model works at {target.work_width}x{target.work_height} (edge-padded to multiples of 16, "
            "cropped back)" if target.padded else "")
    factor = format_scale(target.scale_from(plan.in_height, plan.in_width))
    lengths = sorted({w.length for w in windows})
    padding = windows[-1].padding  # only a clip shorter than one window is padded (windows.plan_windows)
    cut = (f"{len(windows)} window{'s' if len(windows) > 1 else ''} of {'/'.join(map(str, lengths))} frames"
           + (f", overlaps of {_span(w.overlap_after for w in windows[:-1])} frames blended" if len(windows) > 1
              else "")
           + (f", {padding} padding frame{'s' if padding > 1 else ''} trimmed after" if padding else ""))
    source = (f"auto: {windows[0].length}-frame window at {target.width}x{target.height}, see noise_rule.py"
              if isinstance(noise_step, str) else "given")
    return "\n".join([
        f"size:   {plan.in_width}x{plan.in_height} -> {target.width}x{target.height} (WxH), x{factor} upscale{work}",
        f"frames: {plan.num_frames} in {cut}",
        f"noise:  step {plan.noise_step} ({source}); {plan.steps} Euler step{'s' if plan.steps > 1 else ''}, "
        f"cfg {plan.cfg:g}, shift {plan.shift:g}, seed {plan.seed}, colour match {'on' if plan.color_match else 'off'}",
    ])


def _frame_size(frame: torch.Tensor) -> str:
    """'48x32 (WxH) RGB' for an (H, W, 3) frame, else its shape."""
    if frame.ndim == 3 and frame.shape[-1] == 3:
        return f"{frame.shape[1]}x{frame.shape[0]} (WxH) RGB"
    return f"of shape {tuple(frame.shape)}"


def _span(values) -> str:
    """'8' or '8-9' for the smallest and largest of some integers."""
    values = sorted(set(values))
    return f"{values[0]}" if len(values) == 1 else f"{values[0]}-{values[-1]}"


def window_seed(seed: int, index: int) -> int:
    """Seed of window `index`: seed + 1 + 1,000,003 * index (window 0 uses seed + 1, as `generate` does)."""
    return seed + 1 + 1_000_003 * index


def enhance_frames(
    frames: Iterable,
    num_frames: int,
    *,
    model,
    vae,
    cond: torch.Tensor,
    target: TargetSize | None = None,
    scale: float | None = None,
    size: str | None = None,
    long_edge: int | None = None,
    noise_step: int | str = "auto",
    steps: int = config.STAGE2_STEPS,
    cfg: float = config.STAGE2_CFG,
    shift: float = config.STAGE2_SHIFT,
    seed: int = 0,
    window: int = DEFAULT_WINDOW,
    overlap: int = DEFAULT_OVERLAP,
    color_match: bool = False,
    allow_large_upscale: bool = False,
    slices="auto",
    device=None,
    dtype: torch.dtype | None = None,
    callback: ProgressCallback | None = None,
) -> Iterator[np.ndarray]:
    """Stage II on `num_frames` frames -> an iterator of exactly num_frames uint8 (H', W', 3) frames.

    frames: uint8 (H, W, 3) arrays (gray, RGBA, uint16 or float 0-1 frames are converted, see
    video_io.to_rgb_uint8); only the first num_frames are read. model: Stage II transformer; vae:
    CogVideoX VAE; cond: Stage II prompt embedding (1, 226, text_dim). Settings as in plan_enhance;
    allow_large_upscale: take the default 1080p target even beyond x4 the input's long edge (see
    sizing.resolve_target_size). slices: a vae.SliceSpec for the VAE (None: picked from the free
    memory); device/dtype: where and how Stage II runs
    (None: the model's own). Validation happens on this call (it reads the first frame); the models
    run as the result is iterated. Progress: ("enhance", 0, n) first, then per window the VAE/Stage II
    phases and ("enhance", i, n) when window i is done.
    """
    source = iter(frames)
    first = next(source, None)
    if first is None:
        raise FlashVideoInputError("the video has no frames.")
    first = to_rgb_uint8(first)
    plan = plan_enhance(
        num_frames, first.shape[0], first.shape[1], target=target, scale=scale, size=size, long_edge=long_edge,
        noise_step=noise_step, steps=steps, cfg=cfg, shift=shift, seed=seed, window=window, overlap=overlap,
        color_match=color_match, allow_large_upscale=allow_large_upscale,
    )
    _check_models(plan, model, cond, device, dtype)

    def as_tensors() -> Iterator[torch.Tensor]:
        for frame in _chain(first, source):
            yield torch.from_numpy(to_rgb_uint8(frame))  # uint8 until its window runs: 4x less memory

    def as_uint8() -> Iterator[np.ndarray]:
        for frame in _stream(as_tensors(), plan, model, vae, cond, slices, device, dtype, callback):
            yield (frame * 255.0 + 0.5).clamp(0, 255).to(torch.uint8).numpy()

    return as_uint8()


def enhance_images(
    images: torch.Tensor,
    *,
    model,
    vae,
    cond: torch.Tensor,
    target: TargetSize | None = None,
    scale: float | None = None,
    size: str | None = None,
    long_edge: int | None = None,
    noise_step: int | str = "auto",
    steps: int = config.STAGE2_STEPS,
    cfg: float = config.STAGE2_CFG,
    shift: float = config.STAGE2_SHIFT,
    seed: int = 0,
    window: int = DEFAULT_WINDOW,
    overlap: int = DEFAULT_OVERLAP,
    color_match: bool = False,
    allow_large_upscale: bool = False,
    slices="auto",
    device=None,
    dtype: torch.dtype | None = None,
    callback: ProgressCallback | None = None,
) -> torch.Tensor:
    """ComfyUI IMAGE (F, H, W, C) in [0, 1] (or uint8 0..255) -> IMAGE (F, H', W', 3) float32 in [0, 1].

    C may be 3, 4 (alpha dropped, logged) or 1 (gray expanded); NaN/Inf and values far outside the
    range are refused (layout.checked_images). Settings as in enhance_frames.
    The whole output lives in memory (F x H' x W' x 3 x 4 bytes; see sizing.image_frame_bytes); if
    that is more than OUTPUT_RAM_FRACTION of the RAM free now, FlashVideoInputError says so before
    any model call (on a CPU machine running out of RAM kills the process late in the run).
    """
    images = checked_images(images)  # uint8 0..255 or float 0..1; NaN/Inf and other ranges refused
    num_frames, in_height, in_width = images.shape[:3]
    plan = plan_enhance(
        num_frames, in_height, in_width, target=target, scale=scale, size=size, long_edge=long_edge,
        noise_step=noise_step, steps=steps, cfg=cfg, shift=shift, seed=seed, window=window, overlap=overlap,
        color_match=color_match, allow_large_upscale=allow_large_upscale,
    )
    _check_models(plan, model, cond, device, dtype)
    _check_output_fits(plan)
    out = torch.empty(num_frames, plan.target.height, plan.target.width, 3)
    frames = (images[i] for i in range(num_frames))
    for i, frame in enumerate(_stream(frames, plan, model, vae, cond, slices, device, dtype, callback)):
        out[i] = frame
    return out


def enhance_video_file(
    in_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    weights=None,
    model=None,
    vae=None,
    cond: torch.Tensor | None = None,
    prompt: str = "",
    stage2_prefix: bool = False,
    scale: float | None = None,
    size: str | None = None,
    long_edge: int | None = None,
    noise_step: int | str = "auto",
    steps: int = config.STAGE2_STEPS,
    cfg: float = config.STAGE2_CFG,
    shift: float = config.STAGE2_SHIFT,
    seed: int = 0,
    window: int = DEFAULT_WINDOW,
    overlap: int = DEFAULT_OVERLAP,
    color_match: bool = False,
    allow_large_upscale: bool = False,
    slices="auto",
    overwrite: bool = False,
    device=None,
    precision: str = "auto",
    callback: ProgressCallback | None = None,
    on_plan: Callable[[EnhancePlan, VideoInfo], None] | None = None,
) -> Path:
    """Enhance the video file `in_path` into `out_path` (H.264) with the same frame count, fps and audio.

    Models: either `weights` (loaders.WeightPaths; the T5 encoder encodes `prompt`, then Stage II
    and the VAE are loaded) or ready `model`, `vae` and `cond` (1, 226, text_dim). Frames stream from
    the input to the output; a failure or interruption leaves no output file. Returns out_path.
    With no scale / size / long_edge the target is 1080p, refused (FlashVideoInputError naming the
    sizes and the fixes) when that is more than x4 the input's long edge unless allow_large_upscale.
    on_plan(plan, info) is called once everything is validated, before any model is loaded (the CLI
    prints describe_plan there). Raises FlashVideoInputError / CheckpointError / FileExistsError
    before any model work.
    """
    info = probe_video(in_path)
    target_path = check_output_path(out_path, overwrite)
    if target_path.resolve() == info.path.resolve():
        raise FlashVideoInputError(f"output {target_path} is the input file; choose another output name.")
    plan = plan_enhance(
        info.num_frames, info.height, info.width, scale=scale, size=size, long_edge=long_edge,
        noise_step=noise_step, steps=steps, cfg=cfg, shift=shift, seed=seed, window=window, overlap=overlap,
        color_match=color_match, allow_large_upscale=allow_large_upscale,
    )
    run_device, run_dtype = _device_and_dtype(device, precision)
    needed = [name for name, given in (("stage2", model), ("vae", vae), ("text_encoder", cond)) if given is None]
    if needed:
        if weights is None:
            raise FlashVideoInputError("give either `weights` or all of model, vae and cond.")
        weights.check(*needed)
    if cond is None:
        check_prompt(prompt, required=False)  # before T5 loads (minutes): a lone surrogate is named at once
    width = _model_width(model) if model is not None else transformer_width(weights.stage2)
    if width is not None:
        check_window_fits(plan, width, run_device, run_dtype)
    if on_plan is not None:
        on_plan(plan, info)
    if needed:
        model, vae, cond = _load_models(weights, prompt, stage2_prefix, model, vae, cond, run_device, run_dtype,
                                        callback)
    frames = enhance_frames(
        iter_frames(info.path, info), info.num_frames, model=model, vae=vae, cond=cond, target=plan.target,
        noise_step=plan.noise_step, steps=steps, cfg=cfg, shift=shift, seed=seed, window=window, overlap=overlap,
        color_match=color_match, slices=slices, device=run_device, dtype=run_dtype, callback=callback,
    )
    return write_video(target_path, frames, fps=info.fps, audio_from=info.path if info.has_audio else None,
                       overwrite=overwrite)


def _stream(
    frames: Iterator[torch.Tensor], plan: EnhancePlan, model, vae, cond, slices, device, dtype, callback
) -> Iterator[torch.Tensor]:
    """Frames (H, W, 3), uint8 or float in [0, 1] -> enhanced float frames (H', W', 3) in [0, 1], in order."""
    blender = WindowBlender(plan.windows)
    report(callback, "enhance", 0, len(plan.windows))
    held: list[torch.Tensor] = []  # input frames [held_start, held_start + len(held))
    held_start = 0
    for index, window in enumerate(plan.windows):
        while held_start + len(held) < window.stop:
            frame = next(frames, None)
            if frame is None:
                raise FlashVideoInputError(
                    f"the video ended after {held_start + len(held)} frames; {plan.num_frames} were expected."
                )
            if frame.shape != (plan.in_height, plan.in_width, 3):
                raise FlashVideoInputError(
                    f"frame {held_start + len(held)} is {_frame_size(frame)}; all frames must be "
                    f"{plan.in_width}x{plan.in_height} (WxH) RGB, as the first one."
                )
            held.append(frame)
        clip = torch.stack(held[window.start - held_start : window.stop - held_start])  # (n, H, W, 3)
        clip = clip.float() / 255.0 if clip.dtype == torch.uint8 else clip.float()
        output = _enhance_window(clip, window, index, plan, model, vae, cond, slices, device, dtype, callback)
        report(callback, "enhance", index + 1, len(plan.windows))
        yield from blender.push(output)
        next_start = plan.windows[index + 1].start if index + 1 < len(plan.windows) else window.stop
        del held[: next_start - held_start]
        held_start = next_start


def _enhance_window(
    clip: torch.Tensor, window: Window, index: int, plan: EnhancePlan, model, vae, cond, slices, device, dtype,
    callback,
) -> torch.Tensor:
    """One window: clip (n, H, W, 3) in [0, 1] -> enhanced (n, H', W', 3) in [0, 1]."""
    target = plan.target
    video = clip.permute(3, 0, 1, 2).unsqueeze(0) * 2.0 - 1.0  # (1, 3, n, H, W) in [-1, 1]
    if window.padding:
        video = torch.cat([video, video[:, :, -1:].expand(-1, -1, window.padding, -1, -1)], dim=2)
    fitted = fit_frames(video, target)  # (1, 3, L, work_h, work_w)
    decoded = _stage2_pixels(fitted, index, plan, model, vae, cond, slices, device, dtype, callback)
    del fitted
    if decoded.shape[2] < window.num_frames:
        raise FlashVideoInputError(
            f"the VAE decoded {decoded.shape[2]} frames for a {window.length}-frame window; expected "
            f"{window.length}. Use a window of 8k+1 frames (9, 17, ..., 49)."
        )
    out = crop_to_target(decoded, target)[:, :, : window.num_frames]  # (1, 3, n, H', W')
    if plan.color_match:
        out = match_color(out, video[:, :, : window.num_frames])
    return ((out[0].permute(1, 2, 3, 0) + 1.0) / 2.0).clamp(0.0, 1.0)  # (n, H', W', 3)


def _stage2_pixels(
    fitted: torch.Tensor, index: int, plan: EnhancePlan, model, vae, cond, slices, device, dtype, callback
) -> torch.Tensor:
    """Pixels (1, 3, L, work_h, work_w) in [-1, 1] -> Stage II output pixels, same layout, float32 on CPU."""
    from ..sampling.degradation import degrade_latent
    from ..sampling.handoff import video_to_stage2_latent
    from ..sampling.stages import run_stage2
    from ..vae import decode_latents

    target = plan.target
    generator = cpu_generator(window_seed(plan.seed, index))
    latent = video_to_stage2_latent(
        vae, fitted, target.work_height, target.work_width, generator=generator, slices=slices, callback=callback
    )
    degraded = degrade_latent(latent, plan.noise_step, generator=generator)
    del latent
    refined = run_stage2(
        model, cond, degraded, noise_step=plan.noise_step, steps=plan.steps, cfg=plan.cfg, shift=plan.shift,
        device=device, dtype=dtype, callback=callback,
    )
    return decode_latents(vae, refined, slices=slices, callback=callback).float().cpu()


def _load_models(weights, prompt, stage2_prefix, model, vae, cond, device, dtype, callback=None):
    """Load whatever of (Stage II, VAE, prompt embedding) was not given, from checked `weights` (progress: callback)."""
    import gc

    from ..weights.loaders import load_stage2, load_text_encoder, load_vae

    if cond is None:
        encoder = load_text_encoder(weights.text_encoder, weights.tokenizer, device=device, dtype=dtype,
                                    callback=callback)
        embeds = encoder.encode(prompt, stage2_prefix=stage2_prefix)
        if embeds.stage2_truncated:  # Stage II's text, with the prefix when it is on
            logger.warning("the prompt had %d tokens; %d beyond %d were cut.", embeds.num_tokens,
                           embeds.stage2_truncated, config.TEXT_TOKENS)
        cond = embeds.stage2
        del encoder
        gc.collect()
    model = model if model is not None else load_stage2(weights.stage2, device=device, dtype=dtype, callback=callback)
    vae = vae if vae is not None else load_vae(weights.vae, device=device, dtype=dtype, callback=callback)
    return model, vae, cond


def _device_and_dtype(device, precision):
    from ..devices import parse_device, parse_dtype

    run_device = parse_device(device)
    return run_device, parse_dtype(precision, run_device)


def _check_cond(cond, model) -> None:
    """Raise unless cond is (1, tokens, text_dim), text_dim matching the model's when it declares one."""
    if not isinstance(cond, torch.Tensor) or cond.ndim != 3 or cond.shape[0] != 1:
        shape = tuple(cond.shape) if isinstance(cond, torch.Tensor) else type(cond).__name__
        raise FlashVideoInputError(
            f"cond must be a Stage II prompt embedding (1, {config.TEXT_TOKENS}, text_dim); got {shape}."
        )
    width = getattr(getattr(model, "config", None), "text_dim", None)
    if isinstance(width, int) and cond.shape[-1] != width:
        raise FlashVideoInputError(
            f"cond width is {cond.shape[-1]} but the Stage II model expects {width} (T5 v1.1 XXL gives 4096)."
        )


def check_window_fits(plan: EnhancePlan, hidden: int, device, dtype: torch.dtype) -> None:
    """Raise FlashVideoInputError if one window's Stage II forward (memory_floor.transformer_floor of a
    `hidden`-wide model at the work size, CFG batch) or its decoded window cannot fit the memory free now.

    Called before any model is loaded (enhance_video_file) or run (enhance_frames), so a 4K window on a
    small card is refused at once with sizes that fit, not after minutes with an allocator traceback.
    """
    device = torch.device(device)
    frames, height, width = plan.windows[0].length, plan.target.work_height, plan.target.work_width
    check_fits("Stage II (one enhance window)", transformer_floor(frames, height, width, hidden, dtype),
               devices.free_memory(device), device, frames, height, width)
    check_fits("a decoded enhance window", video_floor(frames, height, width), devices.free_memory("cpu"), "cpu",
               frames, height, width)


def _check_models(plan: EnhancePlan, model, cond, device, dtype) -> None:
    """Raise unless cond fits the model and one window fits the free memory where the model will run."""
    _check_cond(cond, model)
    width = _model_width(model)
    if width is not None:
        check_window_fits(plan, width, device if device is not None else devices.model_device(model),
                          dtype or devices.model_dtype(model))


def _model_width(model) -> int | None:
    """The hidden width a Stage II model declares (model.config.hidden_size), None if it declares none."""
    width = getattr(getattr(model, "config", None), "hidden_size", None)
    return width if isinstance(width, int) else None


OUTPUT_RAM_FRACTION = 0.8
"""Largest share of the free RAM an IMAGE output may take; the rest is for the window's working memory."""


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


def _chain(first, rest: Iterator) -> Iterator:
    yield first
    yield from rest
