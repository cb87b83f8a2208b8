"""The subcommands of `python -m flashvideo_core`: each takes the parsed arguments and returns an exit code.

The pipeline and enhance modules (torch models, transformers, diffusers: seconds to import) are
imported inside the commands that run them, so `--help` and a bad flag answer at once.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from .. import config
from ..devices import DTYPES, parse_device, parse_dtype
from ..enhance.plan import EnhanceSettings, describe_plan
from ..errors import FlashVideoInputError
from ..modes.settings import AUTO, ModelModes
from ..planning.auto import AS_SET
from ..planning.auto import AUTO as AUTO_MEMORY
from ..progress import WindowedProgress
from ..sampling.settings import Stage1Settings, clip_stage2_seed
from ..weights import tiny as tiny_files
from ..weights.convert import convert_checkpoint
from ..weights.hub import download_weights
from .bars import TqdmProgress
from .parser import TINY_SETTINGS
from .train import cmd_train_stage2
from .weights_args import resolve_weights


def tiny_generate_settings():
    """pipeline.GenerateSettings at TINY_SETTINGS' sizes (the rest official)."""
    from ..pipeline import GenerateSettings  # heavy: see the module docstring

    tiny = TINY_SETTINGS
    stage1 = Stage1Settings(num_frames=tiny["num_frames"], height=tiny["height"], width=tiny["width"],
                            steps=tiny["stage1_steps"])
    return GenerateSettings(stage1=stage1, stage2_height=tiny["stage2_height"], stage2_width=tiny["stage2_width"])


def _resolve_weights(args) -> tuple:
    """(WeightPaths, is_tiny_default)."""
    return resolve_weights(args, ("stage1", "stage2", "vae", "text_encoder", "tokenizer"),
                           "No --weights given: using the embedded TINY RANDOM weights (output is noise; this checks "
                           "the pipeline). Get the real ones with `python -m flashvideo_core download DIR`.")


def _cmd_generate(args) -> int:
    from ..pipeline import GenerateSettings, generate, with_overrides  # heavy: see the module docstring

    weights, tiny = _resolve_weights(args)
    base = tiny_generate_settings() if tiny else GenerateSettings()
    with _named_stage("Stage I (--frames, --height, --width, --steps, --cfg, --cfg-exponent)"):
        stage1 = with_overrides(base.stage1, num_frames=args.frames, height=args.height, width=args.width,
                                steps=args.steps, cfg=args.cfg, cfg_exponent=args.cfg_exponent,
                                sequential_cfg=args.sequential_cfg or None)
    with _named_stage("Stage II (--noise-step, --stage2-steps, --stage2-cfg, --shift)"):
        stage2 = with_overrides(base.stage2, noise_step=args.noise_step, steps=args.stage2_steps,
                                cfg=args.stage2_cfg, shift=args.shift, sequential_cfg=args.sequential_cfg or None)
    settings = with_overrides(
        base, stage1=stage1, stage2=stage2, stage2_height=args.stage2_height, stage2_width=args.stage2_width,
        seed=args.seed, fps=args.fps, device=args.device, precision=args.precision,
        stage2_prefix=args.stage2_prefix or None, preview_only=args.preview_only or None,
        stage2_lora=_lora_choice(args), modes=model_modes(args), memory=memory_choice(args),
    )  # each settings object checks itself: a bad flag is named before anything is printed or loaded
    if not args.quiet:
        print(describe_generate(settings, tiny), file=sys.stderr)
    progress = TqdmProgress(enabled=not args.quiet)
    try:
        result = generate(args.prompt, weights, args.output_dir, settings, callback=progress)
    finally:
        progress.close()
    if result.truncated_tokens or result.stage2_truncated_tokens:
        stage2 = ("" if result.stage2_truncated_tokens == result.truncated_tokens else
                  f" ({result.stage2_truncated_tokens} from Stage II's prefixed prompt)")
        print(f"note: the prompt had {result.prompt_tokens} tokens; {result.truncated_tokens} beyond "
              f"{config.TEXT_TOKENS} were cut{stage2}.", file=sys.stderr)
    print(f"preview: {result.preview_path}")
    if result.final_path:
        print(f"final:   {result.final_path}")
    return 0


def model_modes(args) -> ModelModes:
    """--fp8, --block-swap, --attention, --compile -> ModelModes (checked as it is made)."""
    blocks = args.block_swap
    if blocks not in (None, AUTO):
        try:
            blocks = int(blocks)
        except ValueError:
            raise FlashVideoInputError(f"--block-swap {blocks!r} must be a block count or 'auto'.") from None
    return ModelModes(weights="fp8_e4m3fn" if args.fp8 else "default", resident_blocks=blocks,
                      attention=args.attention, compile=args.compile)


def memory_choice(args) -> str:
    """--memory -> the library's memory setting ("as set" or "auto"), refusing auto beside a memory flag."""
    if args.memory != "auto":
        return AS_SET
    given = [flag for flag, on in (("--fp8", args.fp8), ("--block-swap", args.block_swap is not None),
                                   ("--sequential-cfg", args.sequential_cfg)) if on]
    if given:
        raise FlashVideoInputError(f"--memory auto chooses --fp8, --sequential-cfg and --block-swap itself; "
                                   f"{' and '.join(given)} set {'them' if len(given) > 1 else 'it'} too: drop "
                                   f"{' and '.join(given)}, or drop --memory auto.")
    return AUTO_MEMORY


def _lora_choice(args):
    """--stage2-lora FILE and --stage2-lora-strength -> a checked model.lora_adapter.LoraChoice, or None."""
    if args.stage2_lora is None:
        if args.stage2_lora_strength is not None:
            raise FlashVideoInputError("--stage2-lora-strength needs --stage2-lora FILE (the LoRA to apply).")
        return None
    from ..model.lora_adapter import LoraChoice

    strength = 1.0 if args.stage2_lora_strength is None else args.stage2_lora_strength
    return LoraChoice(Path(args.stage2_lora), strength)


@contextlib.contextmanager
def _named_stage(stage: str):
    """Prefix a settings error with the stage and its flags: both stages have a `steps` and a `cfg`."""
    try:
        yield
    except FlashVideoInputError as exc:
        raise FlashVideoInputError(f"{stage}: {exc}") from None


def describe_generate(settings, tiny: bool = False) -> str:
    """What a generate run will use (pipeline.GenerateSettings), sizes width x height, device and precision resolved.

    tiny: the settings are the embedded tiny default's (TINY_SETTINGS), not the official ones.
    """
    device = parse_device(settings.device)
    dtype = parse_dtype(settings.precision, device)
    precision = next((name for name, value in DTYPES.items() if value == dtype), str(dtype))
    one, two = settings.stage1, settings.stage2
    stage2 = ("skipped (--preview-only)" if settings.preview_only else
              f"{settings.stage2_width}x{settings.stage2_height}, {two.steps} Euler step"
              f"{'s' if two.steps > 1 else ''}, noise step {two.noise_step}, "
              f"cfg {two.cfg:g}, shift {two.shift:g}, seed {clip_stage2_seed(settings.seed)}")
    lines = [
        f"frames:   {one.num_frames} at {settings.fps:g} fps, seed {settings.seed}",
        f"Stage I:  {one.width}x{one.height} (WxH), {one.steps} DPM++ steps, "
        f"cfg {one.cfg:g} (exponent {one.cfg_exponent:g})",
        f"Stage II: {stage2}",
        f"device:   {device}, {precision}",
    ]
    if settings.stage2_lora is not None and not settings.preview_only:
        lines.insert(3, f"LoRA:     {settings.stage2_lora.path.name} on Stage II at strength "
                        f"{settings.stage2_lora.strength:g}")
    if tiny:
        lines.append("(the tiny weights' small defaults; --frames, --height, --width, --steps, --stage2-height, "
                     "--stage2-width override them)")
    return "\n".join(lines)


def _cmd_enhance(args) -> int:
    from ..enhance.run import enhance_video_file  # heavy: see the module docstring

    weights, _ = _resolve_weights(args)
    noise = args.noise_step if args.noise_step == "auto" else _int_arg(args.noise_step, "--noise-step")
    settings = EnhanceSettings(
        scale=args.scale, size=args.size, long_edge=args.long_edge, noise_step=noise, steps=args.steps, cfg=args.cfg,
        shift=args.shift, seed=args.seed, window=args.window, overlap=args.overlap, color_match=args.color_match,
        allow_large_upscale=args.force, sequential_cfg=args.sequential_cfg, blend=args.blend,
    )
    lora = _lora_choice(args)
    progress = TqdmProgress(enabled=not args.quiet)

    def show_plan(plan, info) -> None:
        if not args.quiet:
            print(f"{info.path}: {info.num_frames} frames at {float(info.fps):g} fps"
                  f"{', audio kept' if info.has_audio else ''}\n{describe_plan(plan)}", file=sys.stderr)
    try:
        out = enhance_video_file(
            args.input, args.output, settings, weights=weights, prompt=args.prompt, stage2_prefix=args.stage2_prefix,
            overwrite=args.force, device=args.device, precision=args.precision,
            callback=WindowedProgress(progress), on_plan=show_plan, stage2_lora=lora, modes=model_modes(args),
            memory=memory_choice(args),
        )
    except FileExistsError as exc:  # the core says "allow overwriting"; name the flag that does
        text = str(exc)
        core = " (or allow overwriting)."
        raise FileExistsError(f"{text.removesuffix(core)}, or pass --force to overwrite it." if text.endswith(core)
                              else f"{text} Pass --force to overwrite it.") from None
    finally:
        progress.close()
    print(f"enhanced: {out}")
    return 0


def _int_arg(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise FlashVideoInputError(f"{name}={value!r} must be an integer 0-999 or 'auto'.") from None


def _cmd_convert(args) -> int:
    progress = TqdmProgress()
    try:
        out = convert_checkpoint(args.source, args.output, overwrite=args.force, callback=progress)
    finally:
        progress.close()
    print(f"wrote {out}")
    return 0


def _cmd_tiny(args) -> int:
    for name, path in tiny_files.write_tiny_weights(args.output_dir, seed=args.seed).items():
        print(f"{name}: {path}")
    return 0


def _cmd_download(args) -> int:
    # huggingface_hub draws its own byte bar per file; our events would only draw it twice
    for path in download_weights(args.output_dir, args.files, callback=None):
        print(path)
    return 0


COMMANDS = {"generate": _cmd_generate, "enhance": _cmd_enhance, "convert": _cmd_convert,
            "tiny-weights": _cmd_tiny, "download": _cmd_download, "train-stage2": cmd_train_stage2}
