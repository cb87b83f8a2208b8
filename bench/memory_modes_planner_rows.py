"""Planner vs measured, per memory mode (issue 14's proof row), on a narrow Stage II model on the CPU.

    python bench/memory_modes_planner_rows.py [--frames 49] [--real-frames 9]

For each mode (plain, sequential CFG, fp8, fp8 + sequential CFG) the planner's prediction
(flashvideo_core.planning.planner.plan_peak with the narrow config) beside two measurements of the same
thing, weights (bytes of the model's parameters and buffers after the mode is applied) + the live-bytes
peak of one guided model call (planning.live_bytes.guided_call_peak):
- at the real 1080p Stage II token count (49 frames, 1072x1920: 104,746 tokens), the model's call run
  under FakeTensorMode (the real weights of the narrow model, inputs and activations fake: shapes, dtypes
  and storages exactly as a real run, no compute; an independent count of what the formulas add up);
- actually run on the CPU with real tensors at --real-frames (default 9 = 3 latent frames, 24,346 tokens:
  attention at the full count takes ~5 min per call on 2 cores, so the real run uses fewer frames).
PASS when both are within 15% of the prediction. With --rss, the real run is also measured outside the
count: peak RSS over the baseline of a fresh process (bench/isolated.py) against the predicted activations
(informative, no PASS: measured at 9 frames, RSS grew 2.1-2.5x the predicted live bytes, 342 vs 160 MiB
plain: the CPU's malloc keeps freed blocks and each phase asks for new sizes; a CUDA caching allocator
reuses its blocks, bench/gpu_check.py measures how close a GPU comes). ~8 min on 2 cores.
Block swap (Stage II's real 2B network, bf16, N = L//5 and L//2 = 6 and 15 of 30 blocks resident, with and
without sequential CFG): the device peak under fake tensors with a second device standing in for the host.
The compute device is the (fake) CPU, so SDPA picks the same flash kernel as above (the meta device would
pick the math kernel and hold the S x S scores); the streamed blocks' masters live on meta, and any op mixing
the two raises as on CUDA. enable_block_swap's own hooks copy each streamed block in and out (SyncTransfers),
so measured = the weights on the compute device (the resident part) + the live-bytes peak of one guided call
counting only compute-device tensors (guided_call_peak: the activations and the streamed copies in flight,
not the host masters). The row also prints the blocks in flight at the peak: (that peak - the same call's
peak without the swap) / one block's bytes. Not covered: fp8 + block swap (quantize_fp8 reads the weights,
which fake tensors do not have), and the CUDA side stream's timing (bench/gpu_check.py).
Other benches import planner_rows() / format_rows() (bench/bench_memory_modes.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402

from flashvideo_core import config  # noqa: E402
from flashvideo_core.config import TransformerConfig  # noqa: E402
from flashvideo_core.model.transformer import build_transformer  # noqa: E402
from flashvideo_core.modes.block_swap import device_bytes, enable_block_swap  # noqa: E402
from flashvideo_core.modes.settings import ModelModes  # noqa: E402
from flashvideo_core.planning.live_bytes import fake_transformer, guided_call_peak  # noqa: E402
from flashvideo_core.planning.planner import plan_peak  # noqa: E402

NARROW = TransformerConfig(num_layers=4, num_heads=2, head_dim=32, time_embed_dim=64, text_dim=64,
                           stage2_extras=True)
"""Stage II's structure (3D RoPE, extras) at 64 wide: activations at 1080p stay a few hundred MiB."""
TOLERANCE = 0.15
MODES = (("plain", ModelModes(), False), ("sequential CFG", ModelModes(), True),
         ("fp8", ModelModes(weights="fp8_e4m3fn"), False),
         ("fp8 + sequential CFG", ModelModes(weights="fp8_e4m3fn"), True))
MIB = 2**20
SWAP_CONFIG, SWAP_DTYPE = config.STAGE2_2B, torch.bfloat16
SWAP_RESIDENT = (SWAP_CONFIG.num_layers // 5, SWAP_CONFIG.num_layers // 2)
HOST_STAND_IN = "meta"
"""Where block swap's rows keep the streamed blocks' masters: any device but the compute one (the CPU)."""


def _model(modes: ModelModes, dtype: torch.dtype):
    model = build_transformer(NARROW, seed=0).to(dtype)
    if modes.weights == "fp8_e4m3fn":
        from flashvideo_core.modes.fp8 import quantize_fp8

        quantize_fp8(model, dtype)
    return model


def _weight_bytes(model) -> int:
    seen = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return sum(t.numel() * t.element_size() for t in seen.values())


def _measure(modes, sequential, frames, real_frames, dtype) -> dict:
    height, width = config.STAGE2_HEIGHT, config.STAGE2_WIDTH
    model = _model(modes, dtype)
    weights = _weight_bytes(model)
    with FakeTensorMode(allow_non_fake_inputs=True):
        fake = guided_call_peak(model, frames, height, width, sequential)
    real = guided_call_peak(model, real_frames, height, width, sequential)
    row = {}
    for key, count, frame_count in (("fake", fake, frames), ("real", real, real_frames)):
        plan = plan_peak(2, height, width, frame_count, dtype, modes, sequential, config=NARROW)
        measured = weights + count.peak_bytes
        row[key] = {"frames": frame_count, "predicted_bytes": plan.total_bytes, "measured_bytes": measured,
                    "ratio": plan.total_bytes / measured, "peak_op": count.peak_op,
                    "attention_ops": count.attention_ops}
    return row


def planner_rows(frames: int = 49, real_frames: int = 9, dtype: torch.dtype = torch.float32) -> list[dict]:
    """One dict per mode: name, and for 'fake' (frames, under FakeTensorMode) and 'real' (real_frames, run)
    the predicted and measured bytes, their ratio, and `passed` (both within TOLERANCE); then swap_rows'
    block swap rows (Stage II's real network in bf16, 'fake' only)."""
    torch.set_num_threads(2)
    rows = []
    for name, modes, sequential in MODES:
        row = {"mode": name, **_measure(modes, sequential, frames, real_frames, dtype)}
        row["passed"] = all(abs(row[k]["ratio"] - 1) <= TOLERANCE for k in ("fake", "real"))
        rows.append(row)
    for sequential in (False, True):
        rows.extend(swap_rows(frames, sequential))
    return rows


def swap_rows(frames: int, sequential: bool) -> list[dict]:
    """Block swap at SWAP_RESIDENT blocks of Stage II's real network under fake tensors (module): per N a row
    with 'fake' (predicted and measured device bytes, ratio), the measured resident weights, the blocks in
    flight at the peak, and `passed` (within TOLERANCE)."""
    height, width = config.STAGE2_HEIGHT, config.STAGE2_WIDTH
    fake = FakeTensorMode(allow_non_fake_inputs=True)
    with fake:
        unswapped = guided_call_peak(fake_transformer(SWAP_CONFIG, SWAP_DTYPE, fake), frames, height, width,
                                     sequential).peak_bytes
    rows = []
    for resident in SWAP_RESIDENT:
        model = fake_transformer(SWAP_CONFIG, SWAP_DTYPE, fake)
        with fake:  # the model is on the compute device already: place=False keeps _apply off fake tensors
            handle = enable_block_swap(model, resident, "cpu", offload_device=HOST_STAND_IN, place=False)
            weights = device_bytes(model, "cpu")
            count = guided_call_peak(model, frames, height, width, sequential)
        modes = ModelModes(resident_blocks=resident)
        plan = plan_peak(2, height, width, frames, SWAP_DTYPE, modes, sequential, config=SWAP_CONFIG)
        measured = weights + count.peak_bytes
        block = handle.memory().streamed / len(handle.streamed)
        name = f"block swap {resident}/{SWAP_CONFIG.num_layers}" + (" + seq. CFG" if sequential else "")
        rows.append({"mode": name, "fake": {"frames": frames, "predicted_bytes": plan.total_bytes,
                                            "measured_bytes": measured, "ratio": plan.total_bytes / measured,
                                            "peak_op": count.peak_op, "attention_ops": count.attention_ops},
                     "resident_bytes": weights, "in_flight_blocks": (count.peak_bytes - unswapped) / block,
                     "passed": abs(plan.total_bytes / measured - 1) <= TOLERANCE})
    return rows


RSS_SETUP = """
import sys
sys.path.insert(0, {bench!r})
import torch
from flashvideo_core.planning.live_bytes import guided_call_peak
from flashvideo_core.modes.settings import ModelModes
import memory_modes_planner_rows as rows
torch.set_num_threads(2)
model = rows._model(ModelModes(weights={weights!r}), torch.float32)
"""
RSS_WORK = "guided_call_peak(model, {frames}, 1072, 1920, {sequential})"


def rss_rows(real_frames: int = 9) -> list[str]:
    """Per mode: the real run's peak RSS growth in a fresh process vs the predicted activation bytes (fp32)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from isolated import measure

    lines = []
    for name, modes, sequential in MODES:
        setup = RSS_SETUP.format(bench=str(Path(__file__).resolve().parent), weights=modes.weights)
        result = measure(setup, RSS_WORK.format(frames=real_frames,
                                                                                   sequential=sequential))
        grown = (result["peak_kib"] - result["baseline_kib"]) * 1024
        plan = plan_peak(2, config.STAGE2_HEIGHT, config.STAGE2_WIDTH, real_frames, torch.float32, modes, sequential,
                         config=NARROW)
        lines.append(f"  {name:22s} RSS growth {grown / MIB:7.1f} MiB, predicted activations "
                     f"{plan.activation_bytes / MIB:7.1f} MiB = {plan.activation_bytes / max(1, grown):.3f}")
    return lines


def format_rows(rows: list[dict]) -> str:
    """The rows as text, one line per mode."""
    lines = [f"planner vs measured (narrow Stage II, {NARROW.num_layers} x 64 wide, 1072x1920), tolerance "
             f"{TOLERANCE:.0%}:"]
    swap_header = False
    for row in rows:
        if "in_flight_blocks" in row and not swap_header:
            swap_header = True
            lines.append(f"block swap, device peak (Stage II's real {SWAP_CONFIG.num_layers}-block network, "
                         f"{str(SWAP_DTYPE).removeprefix('torch.')}, 1072x1920, fake tensors, host masters on "
                         f"{HOST_STAND_IN}):")
        parts = [f"{k} {row[k]['frames']} frames: predicted {row[k]['predicted_bytes'] / MIB:7.1f} / measured "
                 f"{row[k]['measured_bytes'] / MIB:7.1f} MiB = {row[k]['ratio']:.3f}" for k in ("fake", "real")
                 if k in row]
        if "in_flight_blocks" in row:
            parts.append(f"resident weights {row['resident_bytes'] / MIB:.0f} MiB, "
                         f"{row['in_flight_blocks']:.2f} streamed blocks in flight at the peak")
        lines.append(f"  {row['mode']:27s} " + "; ".join(parts) + f"  {'PASS' if row['passed'] else 'FAIL'}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=49, help="frames of the fake-tensor count (1080p)")
    parser.add_argument("--real-frames", type=int, default=9, help="frames of the real CPU run (1080p)")
    parser.add_argument("--bf16", action="store_true", help="bf16 instead of fp32")
    parser.add_argument("--rss", action="store_true", help="also the real run's peak RSS (fp32, fresh processes)")
    args = parser.parse_args()
    rows = planner_rows(args.frames, args.real_frames, torch.bfloat16 if args.bf16 else torch.float32)
    print(format_rows(rows))
    if args.rss:
        print(f"peak RSS of the real run ({args.real_frames} frames, fp32), outside the live-bytes count:")
        print("\n".join(rss_rows(args.real_frames)))
    return 0 if all(row["passed"] is not False for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
