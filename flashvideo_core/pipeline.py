"""The whole text-to-video run, one model in memory at a time: T5 -> Stage I -> preview -> Stage II -> video.

Used by the CLI. The ComfyUI nodes call the same stage functions one node at a time.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from . import config
from .atomic import Reservation, reserved_output
from .devices import parse_device, parse_dtype
from .errors import FlashVideoInputError
from .layout import check_num_frames, check_pixel_size
from .progress import ProgressCallback
from .rng import cpu_generator
from .weights.loaders import WeightPaths


@dataclass(frozen=True)
class GenerateSettings:
    """Every knob of a text-to-video run; defaults are the official ones (SPEC.md)."""

    num_frames: int = config.DEFAULT_NUM_FRAMES
    height: int = config.STAGE1_HEIGHT
    width: int = config.STAGE1_WIDTH
    stage1_steps: int = config.STAGE1_STEPS
    stage1_cfg: float = config.STAGE1_CFG
    cfg_exponent: float = config.STAGE1_CFG_EXPONENT
    stage2_height: int = config.STAGE2_HEIGHT
    stage2_width: int = config.STAGE2_WIDTH
    noise_step: int = config.DEFAULT_NOISE_STEP
    stage2_steps: int = config.STAGE2_STEPS
    stage2_cfg: float = config.STAGE2_CFG
    shift: float = config.STAGE2_SHIFT
    stage2_prefix: bool = False
    seed: int = 0
    fps: float = config.DEFAULT_FPS
    preview_only: bool = False
    device: str | None = None
    precision: str = "auto"

    def validate(self) -> None:
        """Raise FlashVideoInputError for any invalid setting, before anything is loaded."""
        from .sampling.degradation import check_noise_step
        from .sampling.schedule import check_stage1_steps, stage2_time_grid
        from .sampling.stages import check_cfg

        check_num_frames(self.num_frames, "frames")
        check_pixel_size(self.height, self.width, "Stage I size")
        check_pixel_size(self.stage2_height, self.stage2_width, "Stage II size")
        check_stage1_steps(self.stage1_steps)
        check_cfg(self.stage1_cfg, "cfg")
        check_cfg(self.cfg_exponent, "cfg_exponent")
        check_noise_step(self.noise_step)
        if isinstance(self.stage2_steps, bool) or not isinstance(self.stage2_steps, int) or self.stage2_steps < 1:
            raise FlashVideoInputError(f"stage2_steps={self.stage2_steps!r} must be an integer >= 1 (paper: 4).")
        stage2_time_grid(self.stage2_steps, self.shift)  # checks shift
        check_cfg(self.stage2_cfg, "stage2_cfg")
        if not (isinstance(self.fps, (int, float)) and math.isfinite(self.fps)):
            raise FlashVideoInputError(f"fps={self.fps!r} must be a number.")
        from .video import check_fps

        check_fps(self.fps)  # the writer's own rule, checked before Stage I


@dataclass
class GenerateResult:
    """Files written by `generate` (final is None with preview_only)."""

    preview_path: Path
    final_path: Path | None = None
    prompt_tokens: int = 0
    truncated_tokens: int = 0
    stage2_truncated_tokens: int = 0
    extra: dict = field(default_factory=dict)


def generate(
    prompt: str,
    weights: WeightPaths,
    out_dir: str | Path,
    settings: GenerateSettings | None = None,
    callback: ProgressCallback | None = None,
) -> GenerateResult:
    """Text -> Stage I preview mp4 (and, unless preview_only, the Stage II mp4) in `out_dir`.

    Models are loaded when needed and released after, so peak memory is one model plus activations.
    Output names never overwrite existing files: they are claimed before any work, so a concurrent
    run with the same prompt and seed takes the next free names. A run that fails before the preview
    is written leaves nothing behind (not even the folder it made).
    """
    from .text.encoder import check_prompt

    settings = settings or GenerateSettings()
    settings.validate()
    check_prompt(prompt)
    needed = ["text_encoder", "stage1", "vae"] + ([] if settings.preview_only else ["stage2"])
    weights.check(*needed)
    device = parse_device(settings.device)
    dtype = parse_dtype(settings.precision, device)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FlashVideoInputError(
            f"output folder {out} is a file; generate writes two videos (preview and final) into a folder."
        )
    from .video import check_writable_folder

    check_writable_folder(out, "output folder")
    _check_memory_floor(settings, weights, device, dtype)
    stages = ("stage1",) if settings.preview_only else ("stage1", "stage2")
    with _claimed_names(out, _slug(prompt), settings.seed, stages) as claims:
        return _generate(prompt, weights, settings, device, dtype, claims, callback)


def _generate(prompt, weights, settings, device, dtype, claims: dict, callback) -> GenerateResult:
    """generate's work once everything is checked and the output names are claimed (atomic.Reservation)."""
    from .sampling.degradation import degrade_latent
    from .sampling.handoff import resize_video
    from .sampling.stages import run_stage1, run_stage2
    from .vae import decode_latents, encode_video
    from .weights.loaders import load_stage1, load_stage2, load_text_encoder, load_vae

    text_encoder = load_text_encoder(weights.text_encoder, weights.tokenizer, device=device, dtype=dtype,
                                     callback=callback)
    embeds = text_encoder.encode(prompt, stage2_prefix=settings.stage2_prefix)
    del text_encoder
    _release(device)

    stage1 = load_stage1(weights.stage1, device=device, dtype=dtype, callback=callback)
    latent1 = run_stage1(
        stage1, embeds.stage1, num_frames=settings.num_frames, height=settings.height, width=settings.width,
        steps=settings.stage1_steps, cfg=settings.stage1_cfg, cfg_exponent=settings.cfg_exponent,
        seed=settings.seed, device=device, dtype=dtype, callback=callback,
    )
    del stage1
    _release(device)

    vae = load_vae(weights.vae, device=device, dtype=dtype, callback=callback)
    video1 = decode_latents(vae, latent1, callback=callback)
    preview_path = _write(claims["stage1"], video1, settings.fps)
    result = GenerateResult(preview_path, None, embeds.num_tokens, embeds.num_truncated, embeds.stage2_truncated)
    if settings.preview_only:
        return result

    generator = cpu_generator(settings.seed + 1)
    resized = resize_video(video1, settings.stage2_height, settings.stage2_width)
    del video1
    latent2 = encode_video(vae, resized, generator=generator, callback=callback)
    del resized
    degraded = degrade_latent(latent2, settings.noise_step, generator=generator)
    vae.to("cpu")
    _release(device)

    stage2 = load_stage2(weights.stage2, device=device, dtype=dtype, callback=callback)
    final_latent = run_stage2(
        stage2, embeds.stage2, degraded, noise_step=settings.noise_step, steps=settings.stage2_steps,
        cfg=settings.stage2_cfg, shift=settings.shift, device=device, dtype=dtype, callback=callback,
    )
    del stage2
    _release(device)

    vae.to(device)
    video2 = decode_latents(vae, final_latent, callback=callback)
    result.final_path = _write(claims["stage2"], video2, settings.fps)
    return result


def _check_memory_floor(settings: GenerateSettings, weights, device: torch.device, dtype: torch.dtype) -> None:
    """Refuse, before any model loads, sizes whose least memory (memory_floor) exceeds what is free."""
    from .checkpoint import transformer_width
    from .devices import free_memory
    from .memory_floor import check_fits, transformer_floor, video_floor

    free_device, free_ram = free_memory(device), free_memory("cpu")
    frames = settings.num_frames
    sizes = [("Stage I", weights.stage1, settings.height, settings.width)]
    if not settings.preview_only:
        sizes.append(("Stage II", weights.stage2, settings.stage2_height, settings.stage2_width))
    for stage, path, height, width in sizes:
        need = transformer_floor(frames, height, width, transformer_width(path), dtype)
        check_fits(stage, need, free_device, device, frames, height, width)
        check_fits(f"{stage}'s decoded video", video_floor(frames, height, width), free_ram, "cpu", frames, height,
                   width)


def with_overrides(settings: GenerateSettings, **overrides) -> GenerateSettings:
    """Copy of `settings` with the non-None overrides applied."""
    return replace(settings, **{k: v for k, v in overrides.items() if v is not None})


def _write(claim: Reservation, video: torch.Tensor, fps: float) -> Path:
    from .video import write_video

    frames = ((video[0].permute(1, 2, 3, 0).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    return write_video(claim.target, iter(frames), fps=fps, overwrite=False, reservation=claim)


def _slug(prompt: str, length: int = 40) -> str:
    words = re.sub(r"[^a-zA-Z0-9]+", "_", prompt.strip().lower()).strip("_")
    return (words[:length].rstrip("_") or "flashvideo")


@contextlib.contextmanager
def _claimed_names(folder: Path, slug: str, seed: int, stages: tuple[str, ...]) -> Iterator[dict[str, Reservation]]:
    """Claims on `<slug>_<seed>[_<n>]_<stage>.mp4` for every stage, with the first n whose names are free of
    files and of live runs (atomic.reserved_output); held until the block ends."""
    base = f"{slug}_{seed}"
    for counter in itertools.count(1):
        stem = base if counter == 1 else f"{base}_{counter}"
        if any(folder.glob(f"{stem}_stage*.mp4")):
            continue
        with contextlib.ExitStack() as stack:
            try:
                claims = {stage: stack.enter_context(reserved_output(folder / f"{stem}_{stage}.mp4"))
                          for stage in stages}
            except FileExistsError:  # appeared, or being written by a run that got here first
                continue
            yield claims
            return


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
