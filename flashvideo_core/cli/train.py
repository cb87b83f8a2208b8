"""`train-stage2`: flags -> training.run.TrainRun (every bad flag named), the plan printed, then the run."""

from __future__ import annotations

import contextlib
import sys
from dataclasses import replace
from pathlib import Path

from .. import config
from ..errors import FlashVideoInputError
from ..model.lora_adapter import LoraSettings
from ..training.latent_degradation import LatentDegradation
from ..training.pixel_degradation import PixelDegradation
from ..training.schedule import PRESETS, Schedule, coarse_to_fine, load_schedule, parse_size
from ..training.settings import TrainSettings
from ..weights.loaders import WeightPaths
from .train_parser import DEFAULT_FRAMES, DEFAULT_SIZE, DEFAULT_VAL_CLIPS
from .train_progress import TrainBar, describe_run
from .weights_args import resolve_weights

FLAGS = {"steps": "--steps", "batch": "--batch", "lr": "--lr", "lr_warmup": "--lr-warmup", "lr_decay": "--lr-decay",
         "weight_decay": "--weight-decay",
         "grad_clip": "--grad-clip", "uncond_fraction": "--uncond-fraction", "checkpoint_every": "--checkpoint-every",
         "seed": "--seed", "validate_every": "--validate-every", "blur_sigma": "--blur-sigma",
         "blur_probability": "--blur-probability", "downscale": "--downscale", "noise_steps": "--noise-steps",
         "LoRA rank": "--lora", "LoRA alpha": "--lora-alpha", "size": "--size", "frames": "--frames",
         "image_share": "--image-share", "training crop": "--size", "holdout": "--holdout"}
"""Field names in the library's messages -> the flag that sets them."""


@contextlib.contextmanager
def _flags():
    """Prefix a settings error with the flag it came from (the library names its fields)."""
    try:
        yield
    except FlashVideoInputError as exc:
        text = str(exc)
        flag = next((f for key, f in FLAGS.items() if text.startswith((f"{key}=", f"{key} "))), None)
        if flag is None or text.startswith(flag):
            raise
        raise FlashVideoInputError(f"{flag}: {text}") from None


def _pair(text: str | None, flag: str, kind=float):
    """'LOW,HIGH' or one number -> (low, high) of `kind`; None stays None."""
    if text is None:
        return None
    try:
        values = [kind(part) for part in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (1, 2):
        raise FlashVideoInputError(f"{flag} {text!r} must be LOW,HIGH (e.g. {'600,900' if kind is int else '2,4'}) "
                                   "or one number.")
    return (values[0], values[-1])


def build_schedule(args, steps: int) -> Schedule:
    """--schedule (a file or a preset) or one phase from --size, --frames, --image-share."""
    width, height = parse_size(args.size or DEFAULT_SIZE, "--size")
    frames = args.frames if args.frames is not None else DEFAULT_FRAMES
    if args.schedule is None:
        with _flags():
            return Schedule.single(steps, width, height, frames, args.image_share)
    if args.image_share is not None:
        raise FlashVideoInputError("--image-share sets the one phase of a run without --schedule; in a schedule "
                                   "each phase sets its image_share.")
    if args.schedule in PRESETS:
        with _flags():
            return coarse_to_fine(steps, width, height, frames)
    schedule = load_schedule(Path(args.schedule), width, height, frames)
    if args.steps is not None and args.steps != schedule.total_steps:
        raise FlashVideoInputError(f"--steps {args.steps}: the schedule {args.schedule} has {schedule.total_steps} "
                                   "steps; leave --steps out or change the file.")
    return schedule


def train_settings(args) -> TrainSettings:
    """All training flags -> one checked TrainSettings (schedule included)."""
    base = TrainSettings()
    with _flags():
        probability = base.pixel.blur_probability if args.blur_probability is None else args.blur_probability
        pixel = PixelDegradation(_pair(args.blur_sigma, "--blur-sigma") or base.pixel.blur_sigma, probability,
                                 _pair(args.downscale, "--downscale") or base.pixel.downscale)
        latent = LatentDegradation(_pair(args.noise_steps, "--noise-steps", int) or base.latent.noise_steps)
        lora = None if args.lora is None else LoraSettings(rank=args.lora, alpha=args.lora_alpha)
    if lora is None and args.lora_alpha is not None:
        raise FlashVideoInputError("--lora-alpha needs --lora RANK (the LoRA it scales).")
    steps = args.steps if args.steps is not None else base.steps
    schedule = build_schedule(args, steps)
    given = {key: getattr(args, key) for key in ("batch", "lr", "lr_warmup", "lr_decay", "weight_decay",
                                                 "grad_clip", "uncond_fraction", "checkpoint_every", "seed",
                                                 "validate_every")
             if getattr(args, key) is not None}
    with _flags():
        return replace(base, **given, steps=schedule.total_steps, pixel=pixel, latent=latent, lora=lora,
                       schedule=schedule, gradient_checkpointing=args.gradient_checkpointing,
                       precision=args.precision)


def train_weights(args) -> tuple[WeightPaths, bool]:
    """(VAE, T5 and tokenizer paths, is_tiny_default): --weights and the per-file flags, else the tiny default."""
    return resolve_weights(args, ("vae", "text_encoder", "tokenizer"), "No --weights given: using the embedded TINY "
                           "RANDOM VAE and T5 (this checks the command; a real run needs the published 3d-vae.pt and "
                           "text_encoder/).")


def _out_dir(args) -> Path:
    if args.output_dir:
        return Path(args.output_dir)
    if args.resume:
        resume = Path(args.resume)
        return resume.parent if resume.name.startswith("step-") else resume
    raise FlashVideoInputError("-o OUT_DIR is needed: the folder the checkpoints go to (or --resume RUN_FOLDER).")


def build_run(args):
    """(training.run.TrainRun, weights, is_tiny_default) from the parsed flags; nothing is loaded."""
    from ..training.run import TrainRun

    settings = train_settings(args)
    weights, tiny = train_weights(args)
    return TrainRun(
        data=Path(args.data), out_dir=_out_dir(args), settings=settings, weights=weights,
        init=Path(args.init) if args.init else None, scratch=config.TINY_STAGE2 if tiny else config.STAGE2_2B,
        resume=Path(args.resume) if args.resume else None, val=Path(args.val) if args.val else None,
        holdout=args.holdout, val_clips=DEFAULT_VAL_CLIPS if args.val_clips is None else args.val_clips,
        device=args.device, caption_cache=Path(args.caption_cache) if args.caption_cache else None), tiny


def cmd_train_stage2(args) -> int:
    """Check everything, print the plan and the notes, train, print where the result is."""
    from ..training.run import execute, prepare  # loaders and diffusers: only when a run starts

    run, tiny = build_run(args)
    with _flags():
        prepared = prepare(run)
    if not args.quiet:
        print(describe_run(run, prepared, tiny), file=sys.stderr)
    for note in prepared.notes[:20]:
        print(f"note: {note}", file=sys.stderr)
    if len(prepared.notes) > 20:
        print(f"note: ... and {len(prepared.notes) - 20} more like these", file=sys.stderr)
    bar = TrainBar(run, enabled=not args.quiet)
    try:
        result = execute(run, prepared, callback=bar, log=bar.write)
    except KeyboardInterrupt:
        bar.close()
        print(f"stopped: complete checkpoints are kept in {run.out_dir}; continue with --resume {run.out_dir}.",
              file=sys.stderr)
        raise
    finally:
        bar.close()
    print(bar.summary(result))
    return 0
