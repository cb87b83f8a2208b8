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
Block swap is predicted only: on a CPU every block is "resident", so its device share needs a GPU
(bench/gpu_check.py).
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
from flashvideo_core.modes.settings import ModelModes  # noqa: E402
from flashvideo_core.planning.live_bytes import guided_call_peak  # noqa: E402
from flashvideo_core.planning.planner import plan_peak  # noqa: E402

NARROW = TransformerConfig(num_layers=4, num_heads=2, head_dim=32, time_embed_dim=64, text_dim=64,
                           stage2_extras=True)
"""Stage II's structure (3D RoPE, extras) at 64 wide: activations at 1080p stay a few hundred MiB."""
TOLERANCE = 0.15
MODES = (("plain", ModelModes(), False), ("sequential CFG", ModelModes(), True),
         ("fp8", ModelModes(weights="fp8_e4m3fn"), False),
         ("fp8 + sequential CFG", ModelModes(weights="fp8_e4m3fn"), True))
MIB = 2**20


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
    the predicted and measured bytes, their ratio, and `passed` (both within TOLERANCE); block swap rows
    carry predictions only."""
    torch.set_num_threads(2)
    rows = []
    for name, modes, sequential in MODES:
        row = {"mode": name, **_measure(modes, sequential, frames, real_frames, dtype)}
        row["passed"] = all(abs(row[k]["ratio"] - 1) <= TOLERANCE for k in ("fake", "real"))
        rows.append(row)
    for blocks in (1, 2):
        swap = ModelModes(resident_blocks=blocks)
        plan = plan_peak(2, config.STAGE2_HEIGHT, config.STAGE2_WIDTH, frames, dtype, swap, False, config=NARROW)
        rows.append({"mode": f"block swap, {blocks}/{NARROW.num_layers} resident", "predicted_bytes": plan.total_bytes,
                     "weights_bytes": plan.weights_bytes, "passed": None})
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
    for row in rows:
        if row["passed"] is None:
            lines.append(f"  {row['mode']:22s} predicted {row['predicted_bytes'] / MIB:8.1f} MiB "
                         f"(weights {row['weights_bytes'] / MIB:.2f} MiB): predicted only (needs a GPU)")
            continue
        parts = [f"{k} {row[k]['frames']} frames: predicted {row[k]['predicted_bytes'] / MIB:7.1f} / measured "
                 f"{row[k]['measured_bytes'] / MIB:7.1f} MiB = {row[k]['ratio']:.3f}" for k in ("fake", "real")]
        lines.append(f"  {row['mode']:22s} " + "; ".join(parts) + f"  {'PASS' if row['passed'] else 'FAIL'}")
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
