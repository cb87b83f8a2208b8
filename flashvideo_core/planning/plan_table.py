"""What runs on which card, from the planner: the README's table.

    python -m flashvideo_core.planning.plan_table            # markdown table, bf16, 49 frames

Per card size (8 / 12 / 16 / 24 / 48 / 80 GB, taken as GiB with CARD_OVERHEAD_GIB of it not free: the CUDA
context and a desktop) the mode choose_modes picks and its predicted peak, for text-to-video's Stage I
(256x480) and Stage II (1072x1920) at 49 frames and for enhance (Stage II on 49-frame windows, at 1080p
and 720p). A card where nothing fits shows the hint of the planner's error (fewer frames or a smaller size).
T5 and the VAE are not in these numbers (see planner).
"""

from __future__ import annotations

import argparse

import torch

from .. import config as fv_config
from ..errors import FlashVideoInputError
from .planner import GIB, choose_modes, plan_peak, smallest_plan

CARDS_GB = (8, 12, 16, 24, 48, 80)
CARD_OVERHEAD_GIB = 1.0
"""Of a card's memory, this much is taken as not free for the models (CUDA context, display, ComfyUI)."""
ROWS = (
    ("text-to-video, Stage I", 1, fv_config.STAGE1_HEIGHT, fv_config.STAGE1_WIDTH),
    ("text-to-video, Stage II", 2, fv_config.STAGE2_HEIGHT, fv_config.STAGE2_WIDTH),
    ("enhance to 1080p (Stage II window)", 2, fv_config.STAGE2_HEIGHT, fv_config.STAGE2_WIDTH),
    ("enhance to 720p (Stage II window)", 2, 720, 1280),
)


def _short(description: str) -> str:
    """The mode without the dtype and attention parts (the same in every cell); batched CFG is the plain way."""
    parts = [p for p in description.split(", ")[1:-1] if p != "batched CFG"]
    return ", ".join(parts).replace("sequential CFG", "seq. CFG") or "plain"


def cell(stage: int, height: int, width: int, frames: int, free_bytes: int, dtype: torch.dtype) -> str:
    """'mode (peak GiB)' of the fastest fitting mode, or 'no: <the largest frame count that fits>'."""
    try:
        plan = choose_modes(stage, height, width, frames, free_bytes, dtype)
    except FlashVideoInputError:
        fitting = next((f for f in range(frames - 4, 0, -4)
                        if smallest_plan(stage, height, width, f, dtype).fits(free_bytes)), None)
        return f"no (fits {fitting} frames)" if fitting else "no"
    return f"{_short(plan.description)} ({plan.total_bytes / GIB:.1f})"


def table(frames: int = fv_config.DEFAULT_NUM_FRAMES, dtype: torch.dtype = torch.bfloat16) -> str:
    """The markdown table (module docstring)."""
    head = "| | " + " | ".join(f"{gb} GB" for gb in CARDS_GB) + " |"
    lines = [head, "|" + "---|" * (len(CARDS_GB) + 1)]
    for name, stage, height, width in ROWS:
        cells = [cell(stage, height, width, frames, int((gb - CARD_OVERHEAD_GIB) * GIB), dtype) for gb in CARDS_GB]
        lines.append(f"| {name}, {width}x{height}x{frames} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plain_peaks(frames: int = fv_config.DEFAULT_NUM_FRAMES, dtype: torch.dtype = torch.bfloat16) -> str:
    """Each row's predicted peak in the plain mode and in the smallest mode, GiB (a line per row)."""
    lines = []
    for name, stage, height, width in ROWS:
        plain = plan_peak(stage, height, width, frames, dtype)
        low = smallest_plan(stage, height, width, frames, dtype)
        lines.append(f"{name}: plain {plain.total_bytes / GIB:.1f} GiB (weights {plain.weights_bytes / GIB:.1f}, "
                     f"activations {plain.activation_bytes / GIB:.1f}); smallest ({low.description}) "
                     f"{low.total_bytes / GIB:.1f} GiB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the table and the peaks behind it."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=fv_config.DEFAULT_NUM_FRAMES)
    parser.add_argument("--fp32", action="store_true", help="plan fp32 instead of bf16")
    args = parser.parse_args(argv)
    dtype = torch.float32 if args.fp32 else torch.bfloat16
    print(table(args.frames, dtype))
    print()
    print(plain_peaks(args.frames, dtype))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
