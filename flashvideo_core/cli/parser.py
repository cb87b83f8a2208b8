"""The argument parser of `python -m flashvideo_core`: subcommands, flags and their help texts."""

from __future__ import annotations

import argparse

from .. import config
from ..enhance.plan import BLENDS, DEFAULT_BLEND
from ..enhance.windows import DEFAULT_OVERLAP, DEFAULT_WINDOW
from ..modes.settings import ATTENTION_BACKENDS
from .train_parser import add_train_stage2

MEMORY_FLAGS = ("flags", "auto")
"""--memory: the explicit memory flags (default), or the planner's choice (planning.auto)."""

TINY_SETTINGS = {"num_frames": 9, "height": 64, "width": 96, "stage2_height": 128, "stage2_width": 192,
                 "stage1_steps": 8}
"""Sizes the embedded tiny default runs at unless overridden: the real sizes would take minutes on a CPU."""


DESCRIPTION = "FlashVideo text-to-video (two stages) and Stage II enhancement of any video, on plain PyTorch."
EPILOG = """commands:
  generate      text -> a Stage I preview (270p) and the Stage II video (1080p), in a folder
                  python -m flashvideo_core generate "A red fox runs through fresh snow at dawn..." \\
                      --weights weights/ -o videos/
  enhance       any video file -> Stage II at a larger size (x2, x4, 720p, 1080p, 2K), same fps and audio
                  python -m flashvideo_core enhance clip.mp4 -o clip_1080p.mp4 --size 1080p --weights weights/
  train-stage2  train or fine-tune Stage II (every weight, or a LoRA) on a folder of videos and images
                  python -m flashvideo_core train-stage2 clips/ -o runs/my-style --init weights/stage2.pt \\
                      --weights weights/ --lora 64
  convert       a published .pt file -> .safetensors (loads faster, nothing unpickled)
                  python -m flashvideo_core convert weights/stage2.pt
  tiny-weights  write tiny random weights in the published layouts (tests, trying the pipeline)
                  python -m flashvideo_core tiny-weights tiny/
  download      fetch the published weights from Hugging Face into a folder (~26 GB)
                  python -m flashvideo_core download weights/ --files stage2 vae t5

Without --weights, generate and enhance run the embedded TINY RANDOM weights (noise out, fast):
a check that everything works. `python -m flashvideo_core COMMAND --help` lists each command's options.
Sizes are written width x height (1920x1080), as ffmpeg and ComfyUI write them."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of all subcommands."""
    parser = argparse.ArgumentParser(prog="python -m flashvideo_core", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_generate(sub)
    _add_enhance(sub)
    add_train_stage2(sub)

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


SEQUENTIAL_CFG_HELP = ("run the guidance halves (with and without the prompt) as two batch-1 model calls instead of "
                       "one batch-2 call: the same result, about half the activation memory, a little slower")


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
    gen.add_argument("--sequential-cfg", action="store_true", help=SEQUENTIAL_CFG_HELP)
    gen.add_argument("--seed", type=int, default=0, help="seed of Stage I's noise (Stage II uses seed + 1); "
                     "the same seed and settings give the same video (default %(default)s)")
    gen.add_argument("--fps", type=float, help=f"output frame rate (default {config.DEFAULT_FPS})")
    _add_lora_args(gen)
    _add_mode_args(gen)


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
    enh.add_argument("--blend", choices=BLENDS, default=DEFAULT_BLEND,
                     help="how windows join: pixel (default) crossfades decoded frames; shared_noise also gives "
                     "overlapping windows the same degradation noise per latent frame; co_denoise runs all windows' "
                     "Euler steps together on one clip latent, velocities averaged where they overlap (holds the "
                     "clip's latent in RAM, ~3 MB per frame at 1080p). The latent ones start windows on the VAE's "
                     "4-frame grid. Toy-scale measurements: README, enhance")
    enh.add_argument("--color-match", action="store_true", help="match output colours to the input per window")
    enh.add_argument("--stage2-prefix", action="store_true", help='prefix the prompt with "medium motion,"')
    enh.add_argument("--sequential-cfg", action="store_true", help=SEQUENTIAL_CFG_HELP)
    enh.add_argument("--seed", type=int, default=0, help="seed of the encode and noise draws (window i uses its "
                     "own seed derived from it); same seed, same output (default %(default)s)")
    enh.add_argument("--force", action="store_true", help="overwrite the output file if it exists, and allow "
                     "the default 1080p target beyond x4 the input's long edge")
    _add_lora_args(enh)
    _add_mode_args(enh)
    _add_weight_args(enh)


def _add_lora_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stage2-lora", metavar="FILE", help="a Stage II LoRA (.safetensors written by "
                        "train-stage2 --lora) applied to Stage II after it loads (default: none)")
    parser.add_argument("--stage2-lora-strength", type=float, metavar="S", help="how much of the LoRA: 1 = as "
                        "trained, 0 = none, negative reverses it (default 1; typical 0.5-1.5)")


def _add_mode_args(parser: argparse.ArgumentParser) -> None:
    """The memory and speed modes (modes.settings.ModelModes); each default is the plain way."""
    parser.add_argument("--fp8", action="store_true", help="store the transformers' (and T5's) block linears in "
                        "fp8 e4m3fn, upcast per layer when used: about half the weight memory, a small error "
                        "(embeddings, norms, adaLN and the projections stay in the compute precision)")
    parser.add_argument("--block-swap", metavar="N|auto", help="keep N transformer blocks on the GPU and stream "
                        "the others from pinned CPU memory (the next one copied while the current runs); 'auto': "
                        "the planner picks N for the free memory, none when the model fits (default: off)")
    parser.add_argument("--memory", default="flags", choices=MEMORY_FLAGS, help="flags (default): the memory "
                        "flags as given; auto: for the run's size and the free GPU memory, the planner picks per model "
                        "the fastest of plain, --sequential-cfg, --fp8, --fp8 --sequential-cfg, then block swap, "
                        "and T5 in fp8 when it does not fit in its precision; one line per model says what it picked "
                        "(plain on the CPU); a run that fits in no mode is refused before anything loads. Not with "
                        "--fp8, --block-swap or --sequential-cfg (auto sets them); --attention and --compile apply")
    parser.add_argument("--attention", default="sdpa", choices=ATTENTION_BACKENDS, help="attention kernel: sdpa "
                        "(default), sage (SageAttention 2) or flash (FlashAttention 2/3) when installed; a missing "
                        "one falls back to sdpa with a note. fp8 attention is never used")
    parser.add_argument("--compile", action="store_true", help="torch.compile each transformer block (regional; "
                        "the first run at a size compiles, minutes)")


def _add_weight_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", help="folder with stage1.pt, stage2.pt, 3d-vae.pt, text_encoder/, tokenizer/ "
                        "(default: the embedded tiny random weights)")
    for name in ("stage1", "stage2", "vae", "text-encoder", "tokenizer"):
        parser.add_argument(f"--{name}", help=f"path of the {name} weights (overrides --weights)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                        help="default %(default)s: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
