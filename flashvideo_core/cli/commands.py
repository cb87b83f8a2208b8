"""Command line: `python -m flashvideo_core {generate,enhance,convert,tiny-weights,download} ...`."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from pathlib import Path

from . import config
from .enhance.windows import DEFAULT_OVERLAP, DEFAULT_WINDOW
from .errors import CheckpointError, FlashVideoInputError, NonFiniteError
from .progress import UNITS_PER_WINDOW, ProgressEvent, WindowedProgress
from .weights.hub import DownloadError

TINY_SETTINGS = {"num_frames": 9, "height": 64, "width": 96, "stage2_height": 128, "stage2_width": 192,
                 "stage1_steps": 8}
"""Sizes the embedded tiny default runs at unless overridden: the real sizes would take minutes on a CPU."""


def tiny_generate_settings():
    """pipeline.GenerateSettings at TINY_SETTINGS' sizes (the rest official)."""
    from .pipeline import GenerateSettings
    from .sampling.settings import Stage1Settings

    tiny = TINY_SETTINGS
    stage1 = Stage1Settings(num_frames=tiny["num_frames"], height=tiny["height"], width=tiny["width"],
                            steps=tiny["stage1_steps"])
    return GenerateSettings(stage1=stage1, stage2_height=tiny["stage2_height"], stage2_width=tiny["stage2_width"])

DESCRIPTION = "FlashVideo text-to-video (two stages) and Stage II enhancement of any video, on plain PyTorch."
EPILOG = """commands:
  generate      text -> a Stage I preview (270p) and the Stage II video (1080p), in a folder
                  python -m flashvideo_core generate "A red fox runs through fresh snow at dawn..." \\
                      --weights weights/ -o videos/
  enhance       any video file -> Stage II at a larger size (x2, x4, 720p, 1080p, 2K), same fps and audio
                  python -m flashvideo_core enhance clip.mp4 -o clip_1080p.mp4 --size 1080p --weights weights/
  convert       a published .pt file -> .safetensors (loads faster, nothing unpickled)
                  python -m flashvideo_core convert weights/stage2.pt
  tiny-weights  write tiny random weights in the published layouts (tests, trying the pipeline)
                  python -m flashvideo_core tiny-weights tiny/
  download      fetch the published weights from Hugging Face into a folder (~26 GB)
                  python -m flashvideo_core download weights/ --files stage2 vae t5

Without --weights, generate and enhance run the embedded TINY RANDOM weights (noise out, fast):
a check that everything works. `python -m flashvideo_core COMMAND --help` lists each command's options.
Sizes are written width x height (1920x1080), as ffmpeg and ComfyUI write them."""

BAR_KINDS = (("clip", "clip"), ("stage1", "steps"), ("stage2", "steps"), ("load", "mb"), ("verify", "mb"),
             ("download ", "mb"), ("encode", "share"), ("decode", "share"))
"""Phase name prefix -> how its bar is drawn (first match; anything else: "count")."""
_TIMES = "[{elapsed}<{remaining}"
BAR_FORMATS = {
    "clip": "{desc}: {percentage:3.0f}%|{bar}| " + _TIMES + "]",  # desc: "clip, window 2/3"
    "steps": "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} steps " + _TIMES + ", {rate_inv_fmt}]",
    "mb": "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} MB " + _TIMES + "]",
    "mb_rate": "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} MB " + _TIMES + ", {rate_noinv_fmt}]",
    "share": "{desc}: {percentage:3.0f}%|{bar}| " + _TIMES + "]",  # slice units: only the share means something
    "count": "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} " + _TIMES + "]",
}
"""tqdm bar formats: integer counts, and a rate only where it means something (s/step while sampling,
MB/s for reads of at least RATE_MIN_MB)."""
RATE_MIN_MB = 64
"""Smaller reads finish before a rate settles (a 1 MB tiny file showed 10.7k MB/s)."""


class TqdmProgress:
    """A ProgressEvent callback that shows one tqdm bar per phase on stderr (or `file`)."""

    def __init__(self, enabled: bool = True, file=None):
        self.enabled = enabled
        self.file = file
        self.bar = None
        self.phase = None

    def __call__(self, event: ProgressEvent) -> None:
        if not self.enabled:
            return
        if event.phase != self.phase or self.bar is None or event.step < self.bar.n:
            self.close()
            self.phase = event.phase
            self.bar = self._open(event)
        self.bar.total = event.total
        if self.phase == "clip":
            self.bar.set_description_str(_clip_label(event), refresh=False)
        self.bar.update(event.step - self.bar.n)
        if event.step >= event.total:
            self.close()  # a finished phase stops its clock

    def _open(self, event: ProgressEvent):
        from tqdm import tqdm

        kind = next((kind for prefix, kind in BAR_KINDS if event.phase.startswith(prefix)), "count")
        if kind == "mb" and event.total >= RATE_MIN_MB:
            kind = "mb_rate"
        unit = {"steps": "step", "mb_rate": "MB"}.get(kind, "it")
        desc = _clip_label(event) if kind == "clip" else event.phase
        return tqdm(total=event.total, desc=desc, unit=unit, bar_format=BAR_FORMATS[kind], leave=True,
                    file=self.file or sys.stderr)

    def close(self) -> None:
        """Close the open progress bar, if any."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _clip_label(event: ProgressEvent) -> str:
    """'clip, window 2/3' for a WindowedProgress event (UNITS_PER_WINDOW units per window)."""
    windows = max(1, event.total // UNITS_PER_WINDOW)
    return f"clip, window {min(windows, event.step // UNITS_PER_WINDOW + 1)}/{windows}"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of all subcommands."""
    parser = argparse.ArgumentParser(prog="python -m flashvideo_core", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_generate(sub)
    _add_enhance(sub)

    conv = sub.add_parser("convert", help="published .pt -> .safetensors (faster, no unpickling)")
    conv.add_argument("source", help="stage1.pt, stage2.pt or 3d-vae.pt (or a safetensors / folder)")
    conv.add_argument("-o", "--output", help="output .safetensors (default: beside the source)")
    conv.add_argument("--force", action="store_true", help="overwrite an existing output")

    tiny = sub.add_parser("tiny-weights", help="write tiny random weights in the published layouts")
    tiny.add_argument("output_dir", help="folder to write stage1.pt, stage2.pt, 3d-vae.pt, text_encoder/, "
                      "tokenizer/ into (created; existing files are never overwritten)")
    tiny.add_argument("--seed", type=int, default=0, help="seed of the random weights (default %(default)s)")

    dl = sub.add_parser("download", help="download the published weights from Hugging Face (explicit)")
    dl.add_argument("output_dir", help="folder to download into (created); pass it to --weights afterwards")
    dl.add_argument("--files", nargs="+", choices=("stage1", "stage2", "vae", "t5"),
                    help="which weights: stage1 (11.8 GB), stage2 (3.4 GB), vae (1.2 GB), t5 (9.5 GB) "
                    "(default: all)")
    return parser


def _add_generate(sub) -> None:
    gen = sub.add_parser("generate", help="text -> Stage I preview mp4 and Stage II mp4")
    gen.add_argument("prompt", help="long, detailed description (both stages were trained on long captions)")
    gen.add_argument("-o", "--output-dir", default=".", help="folder for the mp4 files (default: %(default)s, "
                     "the current folder; created when the first video is written)")
    gen.add_argument("--preview-only", action="store_true", help="stop after Stage I (the cheap 270p preview)")
    _add_weight_args(gen)
    tiny = TINY_SETTINGS
    gen.add_argument("--frames", type=int, help=f"frame count, 4k+1 (default {config.DEFAULT_NUM_FRAMES}; "
                     f"{tiny['num_frames']} with the tiny default weights)")
    gen.add_argument("--height", type=int, help=f"Stage I height, multiple of 16 (default {config.STAGE1_HEIGHT}; "
                     f"{tiny['height']} with the tiny default weights)")
    gen.add_argument("--width", type=int, help=f"Stage I width, multiple of 16 (default {config.STAGE1_WIDTH}; "
                     f"{tiny['width']} with the tiny default weights)")
    gen.add_argument("--steps", type=int, help=f"Stage I DPM++ steps (default {config.STAGE1_STEPS}, official; "
                     f"{tiny['stage1_steps']} with the tiny default weights)")
    gen.add_argument("--cfg", type=float, help=f"Stage I CFG scale (default {config.STAGE1_CFG:g}, official, dynamic)")
    gen.add_argument("--cfg-exponent", type=float,
                     help=f"dynamic-CFG exponent (default {config.STAGE1_CFG_EXPONENT:g}, official)")
    gen.add_argument("--stage2-height", type=int, help="Stage II height, multiple of 16 "
                     f"(default {config.STAGE2_HEIGHT}; {tiny['stage2_height']} with the tiny default weights)")
    gen.add_argument("--stage2-width", type=int, help="Stage II width, multiple of 16 "
                     f"(default {config.STAGE2_WIDTH}; {tiny['stage2_width']} with the tiny default weights)")
    gen.add_argument("--noise-step", type=int,
                     help=f"latent degradation step 0-999 (default {config.DEFAULT_NOISE_STEP}; paper 650-750)")
    gen.add_argument("--stage2-steps", type=int,
                     help=f"Stage II Euler steps / NFE (default {config.STAGE2_STEPS}; paper 4-6)")
    gen.add_argument("--stage2-cfg", type=float, help=f"Stage II CFG (default {config.STAGE2_CFG:g}; paper 10-13)")
    gen.add_argument("--shift", type=float, help=f"Stage II time shift (default {config.STAGE2_SHIFT:g})")
    gen.add_argument("--stage2-prefix", action="store_true", help='prefix the Stage II prompt with "medium motion,"')
    gen.add_argument("--seed", type=int, default=0, help="seed of Stage I's noise (Stage II uses seed + 1); "
                     "the same seed and settings give the same video (default %(default)s)")
    gen.add_argument("--fps", type=float, help=f"output frame rate (default {config.DEFAULT_FPS})")


def _add_enhance(sub) -> None:
    enh = sub.add_parser("enhance", help="any video file -> Stage II")
    enh.add_argument("input", help="video file to enhance")
    enh.add_argument("-o", "--output", required=True, help="output mp4 path (not overwritten unless --force)")
    enh.add_argument("--prompt", default="", help="description of the video (helps Stage II; default: none)")
    target = enh.add_mutually_exclusive_group()
    target.add_argument("--scale", type=int, choices=(2, 4), help="upscale factor")
    target.add_argument("--size", help="named size: 720p, 1080p (default) or 2K; it sets the LONG edge "
                        "(1280/1920/2560), aspect kept: a square 1080x1080 clip at 1080p becomes 1920x1920. "
                        "With no target given, a 1080p that is more than x4 the input's long edge is refused "
                        "unless --force")
    target.add_argument("--long-edge", type=int, help="long edge length in pixels")
    enh.add_argument("--noise-step", default="auto", help="0-999, or 'auto' (default): from the window's frames "
                     "and size, 675 + 127 log2(T/13) + 63 log2(pixels/1920x1080) clamped to 500-750 (49 frames at "
                     "1080p -> 675, 17 -> 500; see flashvideo_core/noise_rule.py). The step used is printed "
                     "before the run, with the sizes and windows")
    enh.add_argument("--steps", type=int, default=config.STAGE2_STEPS,
                     help="Stage II Euler steps = NFE (default %(default)s; paper 4-6)")
    enh.add_argument("--cfg", type=float, default=config.STAGE2_CFG,
                     help="Stage II CFG scale (default %(default)g; paper 10-13)")
    enh.add_argument("--shift", type=float, default=config.STAGE2_SHIFT,
                     help="Stage II flow time shift (default %(default)g; official range 2-3.5)")
    enh.add_argument("--window", type=int, default=DEFAULT_WINDOW,
                     help="frames per window, 4k+1: a longer clip runs in overlapping windows; memory grows "
                     "with it (default %(default)s, as trained)")
    enh.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP,
                     help="frames shared by neighbouring windows and crossfaded, so no jump shows (default "
                     "%(default)s)")
    enh.add_argument("--color-match", action="store_true", help="match output colours to the input per window")
    enh.add_argument("--stage2-prefix", action="store_true", help='prefix the prompt with "medium motion,"')
    enh.add_argument("--seed", type=int, default=0, help="seed of the encode and noise draws (window i uses its "
                     "own seed derived from it); same seed, same output (default %(default)s)")
    enh.add_argument("--force", action="store_true", help="overwrite the output file if it exists, and allow "
                     "the default 1080p target beyond x4 the input's long edge")
    _add_weight_args(enh)


def _add_weight_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", help="folder with stage1.pt, stage2.pt, 3d-vae.pt, text_encoder/, tokenizer/ "
                        "(default: the embedded tiny random weights)")
    for name in ("stage1", "stage2", "vae", "text-encoder", "tokenizer"):
        parser.add_argument(f"--{name}", help=f"path of the {name} weights (overrides --weights)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                        help="default %(default)s: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _resolve_weights(args) -> tuple:
    """(WeightPaths, is_tiny_default)."""
    from dataclasses import replace

    from .weights.loaders import WeightPaths, find_weights
    from .weights.tiny import ensure_tiny_weights

    tiny = args.weights is None and not any(
        getattr(args, n) for n in ("stage1", "stage2", "vae", "text_encoder", "tokenizer")
    )
    if tiny:
        print("No --weights given: using the embedded TINY RANDOM weights (output is noise; this checks the "
              "pipeline). Get the real ones with `python -m flashvideo_core download DIR`.", file=sys.stderr)
        paths = find_weights(ensure_tiny_weights())
    else:
        paths = find_weights(args.weights) if args.weights else WeightPaths()
    overrides = {n: Path(getattr(args, n)) for n in ("stage1", "stage2", "vae", "text_encoder", "tokenizer")
                 if getattr(args, n)}
    return replace(paths, **overrides), tiny


def _cmd_generate(args) -> int:
    from .pipeline import GenerateSettings, generate, with_overrides

    weights, tiny = _resolve_weights(args)
    base = tiny_generate_settings() if tiny else GenerateSettings()
    with _named_stage("Stage I (--frames, --height, --width, --steps, --cfg, --cfg-exponent)"):
        stage1 = with_overrides(base.stage1, num_frames=args.frames, height=args.height, width=args.width,
                                steps=args.steps, cfg=args.cfg, cfg_exponent=args.cfg_exponent)
    with _named_stage("Stage II (--noise-step, --stage2-steps, --stage2-cfg, --shift)"):
        stage2 = with_overrides(base.stage2, noise_step=args.noise_step, steps=args.stage2_steps,
                                cfg=args.stage2_cfg, shift=args.shift)
    settings = with_overrides(
        base, stage1=stage1, stage2=stage2, stage2_height=args.stage2_height, stage2_width=args.stage2_width,
        seed=args.seed, fps=args.fps, device=args.device, precision=args.precision,
        stage2_prefix=args.stage2_prefix or None, preview_only=args.preview_only or None,
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
    from .devices import DTYPES, parse_device, parse_dtype
    from .sampling.settings import clip_stage2_seed

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
    if tiny:
        lines.append("(the tiny weights' small defaults; --frames, --height, --width, --steps, --stage2-height, "
                     "--stage2-width override them)")
    return "\n".join(lines)


def _cmd_enhance(args) -> int:
    from .enhance.plan import EnhanceSettings, describe_plan
    from .enhance.run import enhance_video_file

    weights, _ = _resolve_weights(args)
    noise = args.noise_step if args.noise_step == "auto" else _int_arg(args.noise_step, "--noise-step")
    settings = EnhanceSettings(
        scale=args.scale, size=args.size, long_edge=args.long_edge, noise_step=noise, steps=args.steps, cfg=args.cfg,
        shift=args.shift, seed=args.seed, window=args.window, overlap=args.overlap, color_match=args.color_match,
        allow_large_upscale=args.force,
    )
    progress = TqdmProgress(enabled=not args.quiet)

    def show_plan(plan, info) -> None:
        if not args.quiet:
            print(f"{info.path}: {info.num_frames} frames at {float(info.fps):g} fps"
                  f"{', audio kept' if info.has_audio else ''}\n{describe_plan(plan)}", file=sys.stderr)
    try:
        out = enhance_video_file(
            args.input, args.output, settings, weights=weights, prompt=args.prompt, stage2_prefix=args.stage2_prefix,
            overwrite=args.force, device=args.device, precision=args.precision,
            callback=WindowedProgress(progress), on_plan=show_plan,
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
    from .weights.convert import convert_checkpoint

    progress = TqdmProgress()
    try:
        out = convert_checkpoint(args.source, args.output, overwrite=args.force, callback=progress)
    finally:
        progress.close()
    print(f"wrote {out}")
    return 0


def _cmd_tiny(args) -> int:
    from .weights.tiny import write_tiny_weights

    for name, path in write_tiny_weights(args.output_dir, seed=args.seed).items():
        print(f"{name}: {path}")
    return 0


def _cmd_download(args) -> int:
    from .weights.hub import download_weights

    # huggingface_hub draws its own byte bar per file; our events would only draw it twice
    for path in download_weights(args.output_dir, args.files, callback=None):
        print(path)
    return 0


COMMANDS = {"generate": _cmd_generate, "enhance": _cmd_enhance, "convert": _cmd_convert,
            "tiny-weights": _cmd_tiny, "download": _cmd_download}


def _interrupt_on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; returns the exit code (0 ok, 2 bad input or files, 1 disk, system or network
    failure (a download offline), 130 interrupted).

    Ctrl-C and SIGTERM (e.g. `kill`, a job scheduler) both stop the run with the partial output
    files removed.
    """
    args = build_parser().parse_args(argv)
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    try:
        return COMMANDS[args.command](args)
    except (FlashVideoInputError, CheckpointError, NonFiniteError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, DownloadError) as exc:  # disk full, permissions, offline: the message names the file
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: the file being written was removed (files already finished are kept).", file=sys.stderr)
        return 130
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)
