"""Overhead of `run_stage2` over the bare transformer forwards it needs (narrow random Stage II model, CPU).

Stage II costs S batched forwards (batch 2: cond + uncond); everything else `run_stage2` does
(validation, scaling, the time grid, batching, CFG, Euler updates) should be noise next to them.
This builds a narrow Stage II transformer, then in each repeat times, interleaved:
  - run_stage2 with S Euler steps and CFG on a degraded latent, and
  - S bare model(latents, text, timestep, noise_step) calls of batch 2 on the same inputs,
and prints both (minimum and median over repeats) and the overhead ratios. It also times the
model's forwards inside each run_stage2 call, so the overhead is measured within one run as well
(immune to load changes between runs); exits 1 if that overhead exceeds the target (3 %).

    python bench/bench_stage2_overhead.py [--layers 2] [--heads 4] [--frames 5] [--size 128x192] [--steps 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET = 0.03


def build_inputs(args):
    """(model, cond (1, 226, D), degraded RAW latent (1, 16, T, h, w)) for the benchmark."""
    from flashvideo_core import config
    from flashvideo_core.layout import latent_frames
    from flashvideo_core.model.transformer import build_transformer
    from flashvideo_core.sampling.degradation import degrade_latent

    height, width = (int(v) for v in args.size.lower().split("x"))
    shape = config.TransformerConfig(
        num_layers=args.layers, num_heads=args.heads, head_dim=64, time_embed_dim=128, text_dim=256,
        stage2_extras=True,
    )
    model = build_transformer(shape, seed=0)
    generator = torch.Generator().manual_seed(0)
    cond = torch.randn(1, config.TEXT_TOKENS, shape.text_dim, generator=generator)
    latent = torch.randn(1, 16, latent_frames(args.frames), height // 8, width // 8, generator=generator)
    return model, cond, degrade_latent(latent, config.DEFAULT_NOISE_STEP, seed=1)


def bare_forwards(model, cond, latent, steps: int) -> None:
    """The S batch-2 forwards run_stage2 needs, with inputs prepared outside the timed region."""
    from flashvideo_core import config
    from flashvideo_core.sampling.schedule import stage2_model_timesteps, stage2_time_grid

    hidden = (latent * config.STAGE2_SCALE_FACTOR).permute(0, 2, 1, 3, 4).expand(2, -1, -1, -1, -1).contiguous()
    text = torch.cat([cond, torch.zeros_like(cond)])
    timesteps = [torch.full((2,), float(t)) for t in stage2_model_timesteps(stage2_time_grid(steps))]
    noise_step = torch.full((2,), float(config.DEFAULT_NOISE_STEP))

    def run() -> None:
        with torch.no_grad():
            for timestep in timesteps:
                model(hidden, text, timestep, noise_step=noise_step)

    return run


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class TimedModel(torch.nn.Module):
    """Wraps the model and adds up the wall time spent inside its forward calls."""

    def __init__(self, model):
        super().__init__()
        self.inner = model
        self.config = model.config
        self.seconds = 0.0

    def forward(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.inner(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--frames", type=int, default=5, help="pixel frames, 4k+1")
    parser.add_argument("--size", default="128x192", help="Stage II pixel size HxW (multiples of 16)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is the least noisy)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from flashvideo_core.sampling.settings import Stage2Settings
    from flashvideo_core.sampling.stages import run_stage2

    model, cond, latent = build_inputs(args)
    timed_model = TimedModel(model)
    bare = bare_forwards(model, cond, latent, args.steps)

    def full() -> None:
        run_stage2(timed_model, cond, latent, Stage2Settings(steps=args.steps, cfg=13.0))

    full(), bare()  # warm-up (allocator, RoPE cache, kernels)
    full_times, bare_times, inside = [], [], []
    for i in range(args.repeats):  # interleaved, alternating which goes first, so load drift hits both alike
        timed_model.seconds = 0.0
        pair = (full, bare) if i % 2 == 0 else (bare, full)
        times = {fn: timed(fn) for fn in pair}
        full_times.append(times[full])
        bare_times.append(times[bare])
        inside.append(timed_model.seconds)
    # Separate runs: min / min and the median of paired ratios (both noisy on a shared machine).
    full_s, bare_s = min(full_times), min(bare_times)
    paired = statistics.median(f / b - 1.0 for f, b in zip(full_times, bare_times, strict=True))
    # Same run: time run_stage2 spends outside the model's forwards, relative to the time inside them.
    in_run = statistics.median((f - m) / m for f, m in zip(full_times, inside, strict=True))
    tokens = latent.shape[2] * (latent.shape[3] // 2) * (latent.shape[4] // 2)
    print(f"model: {args.layers} layers x {args.heads} heads x 64, {tokens} image tokens + 226 text; "
          f"{args.steps} steps, batch 2 (CFG); {torch.get_num_threads()} thread(s); {args.repeats} repeats")
    print(f"bare forwards:  min {bare_s * 1000:8.1f} ms   median {statistics.median(bare_times) * 1000:8.1f} ms")
    print(f"run_stage2:     min {full_s * 1000:8.1f} ms   median {statistics.median(full_times) * 1000:8.1f} ms")
    print(f"overhead vs bare forwards: {(full_s / bare_s - 1.0) * 100:+.2f} % (min/min), "
          f"{paired * 100:+.2f} % (median of paired ratios)")
    print(f"overhead inside run_stage2 (time outside model forwards / time inside): {in_run * 100:+.2f} %")
    ok = in_run <= TARGET
    print(f"{'PASS' if ok else 'FAIL'}: target <= {TARGET * 100:.0f} % (judged on the in-run number, which load "
          "changes between runs cannot move)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
