"""Memory modes of issue 14, ratios measured in one run on the CPU with NARROW Stage II models.

    python bench/bench_memory_modes.py [--frames 49] [--fp8-frames 13] [--fp8-layers 1] [--planner]

Rows (one function each, returning (name, measured text, passed); add a row = add a function to ROWS):
- fp8: weight bytes of the blocks' Linear layers in fp8 (+ per-channel scales) over the same in bf16
  (<= 0.55, the 4-layer NARROW model), and the output's relative error ||fp8 - fp32|| / ||fp32|| of one
  forward (fp32 compute, <= 2%) at --fp8-frames latent frames (default 13: the real 1080p count, 49 frames at
  1072x1920 = 13 x 67 x 120 + 226 = 104,746 tokens) with NARROW cut to --fp8-layers blocks (default 1: CPU
  attention at that count takes minutes per block on 2 cores; the error is per layer, as the fp8 tests show).
- block swap: weights on the device (meta stands in for the GPU) after enable_block_swap(N of L) over
  (N/L x blocks + everything else) (within 1%), and the blocks' share N/L exactly.
- sequential CFG: live-bytes peak of one guided call at the real 1080p count (49 frames: 13 x 67 x 120
  tokens), fake tensors (planning.live_bytes.guided_call_peak), two batch-1 calls over one batch-2 (<= 0.6).
- --planner: bench/memory_modes_planner_rows.py's planner-vs-measured rows too (each mode; block swap's device
  peak at Stage II's real widths under fake tensors, the streamed blocks in flight included).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402

from flashvideo_core import config  # noqa: E402
from flashvideo_core.config import TransformerConfig  # noqa: E402
from flashvideo_core.model.transformer import build_transformer  # noqa: E402
from flashvideo_core.modes.block_swap import device_bytes, enable_block_swap, find_blocks  # noqa: E402
from flashvideo_core.modes.fp8 import quantize_fp8  # noqa: E402

NARROW = TransformerConfig(num_layers=4, num_heads=2, head_dim=64, time_embed_dim=64, text_dim=64,
                           stage2_extras=True)
"""Stage II's structure (3D RoPE, extras, adaLN) 128 wide: a forward at 1080p fits a CPU."""
FP8_BYTES_TARGET, FP8_ERROR_TARGET, SEQ_CFG_TARGET, SWAP_TOLERANCE = 0.55, 0.02, 0.6, 0.01


def _latent_shape(frames: int) -> tuple[int, int, int]:
    """(latent frames, h, w) of a 1072x1920 clip of `frames` frames."""
    return ((frames - 1) // config.VAE_TEMPORAL_COMPRESSION + 1, config.STAGE2_HEIGHT // 8, config.STAGE2_WIDTH // 8)


def row_fp8(args) -> tuple[str, str, bool]:
    stats = quantize_fp8(build_transformer(NARROW, seed=0).to(torch.bfloat16), torch.bfloat16)
    model = build_transformer(dataclasses.replace(NARROW, num_layers=args.fp8_layers), seed=0)
    quantised = copy.deepcopy(model)
    quantize_fp8(quantised, torch.float32)
    t, h, w = _latent_shape(4 * (args.fp8_frames - 1) + 1)
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, t, 16, h, w, generator=generator)
    text = torch.randn(1, config.TEXT_TOKENS, NARROW.text_dim, generator=generator)
    with torch.no_grad():
        want = model(latents, text, torch.tensor([500.0]), 675.0)
        got = quantised(latents, text, torch.tensor([500.0]), 675.0)
    error = ((got - want).norm() / want.norm()).item()
    tokens = t * h * w // 4 + config.TEXT_TOKENS
    full = " (the real 1080p count)" if t == _latent_shape(config.DEFAULT_NUM_FRAMES)[0] else ", NOT the 1080p count"
    width = NARROW.num_heads * NARROW.head_dim
    text_out = (f"blocks' Linear bytes fp8/bf16 = {stats.ratio:.3f} (<= {FP8_BYTES_TARGET}); output rel. error "
                f"{error:.2%} (<= {FP8_ERROR_TARGET:.0%}) of a {args.fp8_layers}-block, {width}-wide Stage II at {t} "
                f"latent frame(s) = {tokens:,} tokens{full}")
    return "fp8 weights", text_out, stats.ratio <= FP8_BYTES_TARGET and error <= FP8_ERROR_TARGET


def row_block_swap(args) -> tuple[str, str, bool]:
    layers, resident = 8, 2
    model = build_transformer(TransformerConfig(**{**NARROW.__dict__, "num_layers": layers}), seed=0)
    blocks = sum(p.numel() * p.element_size() for p in find_blocks(model).parameters())
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    handle = enable_block_swap(model, resident, "meta")
    on_device = device_bytes(model, "meta")
    expected = resident / layers * blocks + (total - blocks)
    share = handle.memory().resident_blocks / blocks
    ok = abs(on_device / expected - 1) <= SWAP_TOLERANCE and share == resident / layers
    text_out = (f"N={resident} of L={layers}: device bytes {on_device / 2**20:.2f} MiB = {on_device / expected:.3f} x "
                f"(N/L x blocks + rest); blocks' share {share:.3f} (N/L = {resident / layers:.3f}); all weights "
                f"{total / 2**20:.2f} MiB, in flight at most {handle.memory().in_flight / 2**20:.2f} MiB more")
    return "block swap", text_out, ok


def row_sequential_cfg(args) -> tuple[str, str, bool]:
    from flashvideo_core.planning.live_bytes import guided_call_peak

    model = build_transformer(NARROW, seed=0)
    peaks = {}
    for sequential in (False, True):
        with FakeTensorMode(allow_non_fake_inputs=True):
            peaks[sequential] = guided_call_peak(model, args.frames, config.STAGE2_HEIGHT, config.STAGE2_WIDTH,
                                                 sequential).peak_bytes
    ratio = peaks[True] / peaks[False]
    t, h, w = _latent_shape(args.frames)
    text_out = (f"live-bytes peak sequential/batched = {ratio:.3f} (<= {SEQ_CFG_TARGET}): {peaks[True] / 2**20:.0f} "
                f"vs {peaks[False] / 2**20:.0f} MiB at {args.frames} frames ({t} x {h // 2} x {w // 2} tokens, fake "
                "tensors)")
    return "sequential CFG", text_out, ratio <= SEQ_CFG_TARGET


ROWS = (row_fp8, row_block_swap, row_sequential_cfg)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=config.DEFAULT_NUM_FRAMES, help="frames (1080p) of the CFG row")
    parser.add_argument("--fp8-frames", type=int, default=13, help="latent frames of the fp8 row's real forward "
                        "(default 13: 49 frames at 1080p)")
    parser.add_argument("--fp8-layers", type=int, default=1, help="blocks of the fp8 row's forward (default 1)")
    parser.add_argument("--planner", action="store_true", help="add the planner-vs-measured rows")
    args = parser.parse_args()
    torch.set_num_threads(2)
    passed = True
    for row in ROWS:
        name, text, ok = row(args)
        passed &= ok
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {text}", flush=True)
    if args.planner:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from memory_modes_planner_rows import format_rows, planner_rows

        rows = planner_rows()
        print(format_rows(rows))
        passed &= all(row["passed"] is not False for row in rows)
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
