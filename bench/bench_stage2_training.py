"""TOY-SCALE reproduction of Stage II training (paper Algorithm 1, sections 3.3, Tables 8 and 10) on the CPU.

Trains two narrow real FlashVideoTransformers (4 layers x 128 hidden, patch 2) in a stand-in latent
space (fixed 2x2 pixel-unshuffle, 12 channels: no VAE weights exist here) on pan/zoom clips of real
photos bundled in scikit-image, with the library's degradations and objective, and samples them with
the library's Stage II sampler (see bench/toy_stage2.py). Both runs happen in this one script:
  P: DEG_pixel only (noise step 0 fed to the model);
  L: DEG_pixel + DEG_latent with the noise step uniform over 0-900.
Held-out clips come from photos never trained on (toy_footage.TEST_PHOTOS), degraded with the same
DEG_pixel ranges (fixed seed). "bicubic" = the LR input itself (the degraded clip, upscaled back with
bicubic), i.e. what Stage II is given. "Noisy inputs" = the LR input plus Gaussian pixel noise
(sigma NOISE_SIGMA on the [-1, 1] scale), a stand-in for Stage I's artefacts.
Claims (each printed with its numbers and PASS/FAIL):
  1. P, 1 step: PSNR >= bicubic + 0.2 dB and low-frequency PSNR >= bicubic + 1.5 dB;
  2. P: log-spectral distance (LSD) at 4 steps < at 1 step (more steps add detail, Table 8);
  3. noisy inputs, 4 steps: L at the default noise step 675 beats P (noise step 0) by >= 3 dB PSNR;
  4. noisy inputs, 4 steps: L's best LSD over noise steps 0, 150, ..., 900 is at an inner step (Table 10).
Sampling: cfg 1.0 (empty captions: the conditional and unconditional embeddings are both zeros), shift 2.5.

    .venv/bin/python -m pip install -r bench/requirements-bench.txt   # scikit-image (bundled photos)
    .venv/bin/python bench/bench_stage2_training.py [--steps 400] [--size 16] [--threads 2] [--save FILE] [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT.parent), str(ROOT)]

import toy_footage  # noqa: E402
import toy_stage2  # noqa: E402

NOISE_SIGMA = 0.1
SWEEP = (0, 150, 300, 450, 600, 750, 900)
DEFAULT_NOISE_STEP = 675
"""flashvideo_core.config.DEFAULT_NOISE_STEP, the inference default."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400, help="optimiser steps per model (default 400)")
    parser.add_argument("--size", type=int, default=16, help="square clip size in pixels (even; default 16)")
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--clips", type=int, default=16, help="held-out clips (default 16)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--quick", action="store_true", help="smoke run in seconds (numbers meaningless)")
    parser.add_argument("--save", type=Path, default=None,
                        help="write both trained models' state dicts here (torch.save; e.g. bench/output/toy.pt)")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.size, args.frames, args.batch, args.clips = 3, 16, 3, 2, 2
    return args


def held_out(args):
    """(hr, lr, noisy) held-out clips (clips, 3, frames, size, size): HR, DEG_pixel'd, DEG_pixel'd + noise."""
    degradation = toy_stage2.library()[4]
    hr = toy_footage.held_out_clips(args.clips, args.frames, args.size)
    lr = degradation.degrade_pixels(hr, toy_stage2.pixel_settings(), torch.Generator().manual_seed(99))
    noise = torch.randn(lr.shape, generator=torch.Generator().manual_seed(98))
    return hr, lr, (lr + NOISE_SIGMA * noise).clamp(-1.0, 1.0)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _row(name: str, s: dict[str, float]) -> str:
    return f"  {name:<34} PSNR {s['psnr']:6.2f}  LF-PSNR {s['lf_psnr']:6.2f}  LSD {s['lsd']:.4f}"


def claims_pixel_model(model, hr, lr) -> list[bool]:
    """Claims 1 and 2 on clean held-out inputs with the pixel-only model."""
    base = toy_stage2.scores(lr, hr)
    one = toy_stage2.scores(toy_stage2.enhance_pixels(model, lr, 1, 0), hr)
    four = toy_stage2.scores(toy_stage2.enhance_pixels(model, lr, 4, 0), hr)
    print(_row("bicubic (the LR input)", base))
    print(_row("P, 1 step", one))
    print(_row("P, 4 steps", four))
    gain, lf_gain = one["psnr"] - base["psnr"], one["lf_psnr"] - base["lf_psnr"]
    c1 = gain >= 0.2 and lf_gain >= 1.5
    print(f"claim 1 (P 1 step vs bicubic): PSNR {gain:+.2f} dB (need >= +0.2), "
          f"LF-PSNR {lf_gain:+.2f} dB (need >= +1.5): {verdict(c1)}")
    c2 = four["lsd"] < one["lsd"]
    print(f"claim 2 (more steps add detail): LSD 4 steps {four['lsd']:.4f} < 1 step {one['lsd']:.4f}: {verdict(c2)}")
    return [c1, c2]


def claims_latent_model(pixel_model, latent_model, hr, lr, noisy) -> list[bool]:
    """Claims 3 and 4 on noisy held-out inputs; the clean sweep is printed for information."""
    print(_row("noisy input itself", toy_stage2.scores(noisy, hr)))
    p_noisy = toy_stage2.scores(toy_stage2.enhance_pixels(pixel_model, noisy, 4, 0), hr)
    print(_row("P on noisy, 4 steps", p_noisy))
    sweep = {}
    for k in SWEEP + ((DEFAULT_NOISE_STEP,) if DEFAULT_NOISE_STEP not in SWEEP else ()):
        sweep[k] = toy_stage2.scores(toy_stage2.enhance_pixels(latent_model, noisy, 4, k), hr)
        print(_row(f"L on noisy, 4 steps, noise step {k}", sweep[k]))
    for k in SWEEP:
        print(_row(f"(clean input) L, 4 steps, noise step {k}", toy_stage2.scores(
            toy_stage2.enhance_pixels(latent_model, lr, 4, k), hr)))
    margin = sweep[DEFAULT_NOISE_STEP]["psnr"] - p_noisy["psnr"]
    c3 = margin >= 3.0
    print(f"claim 3 (DEG_latent robustness): L@{DEFAULT_NOISE_STEP} - P on noisy inputs = {margin:+.2f} dB "
          f"(need >= +3): {verdict(c3)}")
    best = min(SWEEP, key=lambda k: sweep[k]["lsd"])
    c4 = best not in (SWEEP[0], SWEEP[-1])
    print(f"claim 4 (noise-step trade-off): best LSD {sweep[best]['lsd']:.4f} at noise step {best} "
          f"(ends {SWEEP[0]}: {sweep[SWEEP[0]]['lsd']:.4f}, {SWEEP[-1]}: {sweep[SWEEP[-1]]['lsd']:.4f}); "
          f"inner step needed: {verdict(c4)}")
    return [c3, c4]


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    print(f"TOY-SCALE Stage II training bench ({'QUICK smoke run, numbers meaningless' if args.quick else 'full'}):"
          f" {args.size}x{args.size} px clips, {args.frames} frames, batch {args.batch}, {args.steps} steps "
          f"per model, lr {args.lr}, {args.threads} threads; train photos {len(toy_footage.TRAIN_PHOTOS)}, "
          f"held-out photos {', '.join(toy_footage.TEST_PHOTOS)} ({args.clips} clips)")
    hr, lr, noisy = held_out(args)
    base = toy_stage2.ToyRun(size=args.size, frames=args.frames, batch=args.batch, steps=args.steps, lr=args.lr)
    print("training P (DEG_pixel only)")
    pixel_model, p_time = toy_stage2.train(base)
    print("training L (DEG_pixel + DEG_latent 0-900)")
    latent_model, l_time = toy_stage2.train(dataclasses.replace(base, noise_steps=(0, 900)))
    if args.save is not None:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"P": pixel_model.state_dict(), "L": latent_model.state_dict(), "run": dataclasses.asdict(base)},
                   args.save)
        print(f"saved both models to {args.save} (rebuild with toy_stage2.toy_config())")
    results = claims_pixel_model(pixel_model, hr, lr) + claims_latent_model(pixel_model, latent_model, hr, lr, noisy)
    total = time.perf_counter() - start
    print(f"time: train P {p_time:.0f} s, train L {l_time:.0f} s, total {total:.0f} s "
          f"({args.threads} threads; other load on the machine counts too)")
    print(f"TOY-SCALE summary: {sum(results)}/{len(results)} claims PASS")
    return 0 if all(results) or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
