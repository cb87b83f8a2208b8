"""TOY-SCALE reproduction of Stage II training (paper Algorithm 1, section 3.3, Tables 8 and 10) on the CPU.

Trains two narrow real FlashVideoTransformers (4 layers x 128 hidden, patch 2) with the library's
training loop (training.loop.train_stage2, once per lr phase: toy_stage2.LR_PHASES) in a stand-in latent
space (fixed 2x2 pixel-unshuffle, 12 channels, x 1.93 to the VAE latent's unit spread: no VAE weights
exist here) on pan/zoom clips of real photos bundled in scikit-image, and samples them with the library's
Stage II sampler (see bench/toy_stage2.py). Both runs happen in this one script, same steps, batch, lr, seed:
  P: DEG_pixel only (DEG_latent range 0-0: noise step 0, the least the library's DEG_latent can add);
  L: DEG_pixel + DEG_latent with the noise step uniform over 0-900.
Three disjoint photo sets (toy_footage): TRAIN (training only), VALIDATION (choices only), TEST (the
reported numbers). Held-out clips get the same DEG_pixel ranges (fixed seeds). "bicubic" = the LR input
itself (the degraded clip, upscaled back with bicubic), i.e. what Stage II is given. "Noisy inputs" = the
LR input plus Gaussian pixel noise (sigma NOISE_SIGMA on the [-1, 1] scale), a stand-in for Stage I's
artefacts. Sampling: the library chain's order (encode, DEG_latent at the noise step, Euler, decode),
cfg 1.0 (empty captions: the conditional and unconditional embeddings are both zeros), shift 2.5.
Claims (each printed with its numbers and PASS/FAIL; all on TEST clips):
  1. P, 1 step, clean inputs: PSNR >= bicubic + 0.2 dB and low-frequency PSNR >= bicubic + 1.5 dB;
  2. more steps add detail (Table 8): L (the method) at noise step 0 on clean inputs has a lower
     log-spectral distance (LSD) at 4 steps than at 1 step. P's two numbers are printed too: in this
     stand-in latent P does NOT get lower (see below);
  3. noisy inputs, 4 steps: L beats P (noise step 0, the only one P knows) by >= 3 dB PSNR, with L's
     inference noise step CHOSEN ON VALIDATION clips (the step of best PSNR there, over SWEEP);
  4. ARTEFACT inputs (below; not the noisy ones), 4 steps: L's best LSD over SWEEP (every 50 steps, 0-900) is
     at an inner step (Table 10).
Claim 4's protocol, fixed and committed BEFORE any model was run on these inputs (not to be changed after):
  Why not the noisy inputs: Gaussian pixel noise is the very kind of degradation DEG_latent trains L to
  remove, so L removes it at any noise step, step 0 included (an earlier run: best LSD at step 0 on sigma
  0.1). Table 10's point is about Stage I's artefacts that NEITHER low-level degradation models: too small a
  noise step and the model trusts its input and keeps them; too large and it loses fidelity to the input.
  Artefact: blockwise DCT quantisation like intra-frame JPEG (toy_stage2.block_dct_quantise), applied to the
  DEG_pixel'd LR clip (Stage I's output is a low-resolution video WITH artefacts): every frame and RGB
  channel separately, 8x8 blocks on a fixed grid from the frame's top-left, orthonormal 2-D DCT-II of the
  pixels x 127.5 (JPEG's level-shifted 0-255 scale), each coefficient rounded to a multiple of scale x the
  JPEG luminance table (ITU-T T.81 Annex K.1; no clamp at 255), inverse DCT, clamp to [-1, 1]. No chroma
  subsampling (a downscale: DEG_pixel's own family).
  Why this one: it makes what a generator leaves and DEG_pixel / DEG_latent do not: errors tied to a fixed
  grid (Stage I's latent cells and patches), content-dependent rather than i.i.d., that remove detail
  unevenly AND add false structure (block edges, banded flat areas, ringing), changing from frame to frame
  as the content moves under the grid (flicker). Blur + area downscale + bicubic up makes none of these;
  DEG_latent makes i.i.d. Gaussian noise.
  Why 8x8: the real hand-off upscales Stage I 4x (270p -> 1080p), so one Stage I latent cell (8x8 px at
  270p) covers 4x4 Stage II latent cells; the toy's latent cell is 2x2 px: 4 x 2 = 8 px.
  Strength: the quantiser scale at which the artefact's RMS change of the input equals claim 3's noise,
  NOISE_SIGMA = 0.1 on [-1, 1] (this bench's stand-in strength for Stage I's artefacts), so claims 3 and 4
  differ in the artefact's structure, not its energy. The scale is found by bisection on the VALIDATION LR
  clips (inputs only, no model) and used unchanged on the TEST clips; both RMS values are printed. (Checked
  before this protocol was committed, on validation inputs only: RMS 0.1 needs scale ~20, about IJG
  quality 2.5, i.e. coarse, blocky, banded.)
  Models: this run's trained P and L (or --load's), no retraining, nothing chosen on the test clips.
  Sweep: L, 4 steps, every noise step of SWEEP (0, 50, ..., 900), sampling seed 7 as everywhere here, on the
  TEST clips; metric LSD (the claim's), PSNR and LF-PSNR printed for every step; the artefact input itself
  and P (noise step 0) printed for information.
  PASS: the noise step of lowest LSD over SWEEP is neither 0 nor 900; otherwise FAIL, reported as it comes.
Why claim 3 chooses the noise step on validation clips, not at the paper's 675: a noise step sets a
per-element SNR, but what survives of the picture depends on how many latent elements carry one picture
region (a real 1080p latent is 135 x 240 elements of 8x8 pixels x 4 frames; the stand-in's is 8 x 8 of
2x2 pixels), so 675 here is not 675 in the real model even with the spread matched. The inference step is
a setting of the method (the paper tunes it, Table 10), so it is tuned here too, on photos disjoint from
the test photos; L at 675 is printed for information.
Why claim 2 is judged on L: Table 8 is the full method's; and in this stand-in latent the least noise the
library's DEG_latent adds (step 0: sqrt(1 - a_0) = 0.029 of the latent's spread, 0.015 on the pixel
scale) decodes to pixel-scale noise as strong as the clips' finest detail, which P, trained on nothing
else, turns into excess detail the more steps it takes (a VAE decodes latent noise to coarse
perturbations instead). Measured (16 px, 1500 steps): P sampled WITHOUT that noise has 4-step LSD 0.851 <
1-step 0.903; with it 1.042 > 0.938. The loop has no "DEG_latent off" setting to train a noise-free P.
For information (no claim) the script also prints where L's best LSD is on the noisy inputs (claim 4's
earlier, noise-based form) and L's LSD sweep at twice the noise.

    .venv/bin/python -m pip install -r bench/requirements-bench.txt   # scikit-image (bundled photos)
    nice -n 10 .venv/bin/python bench/bench_stage2_training.py [--steps 3000] [--size 16] [--save FILE] [--quick]
    .venv/bin/python bench/bench_stage2_training.py --load FILE   # evaluate --save's models, no training
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT.parent), str(ROOT)]

import toy_footage  # noqa: E402
import toy_stage2  # noqa: E402

NOISE_SIGMA = 0.1
SWEEP = tuple(range(0, 901, 50))
QUICK_SWEEP = (0, 450, 900)
DEFAULT_NOISE_STEP = 675
"""flashvideo_core.config.DEFAULT_NOISE_STEP, the inference default (printed for information)."""
SAMPLING_STEPS = 4


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="optimiser steps per model (default 3000)")
    parser.add_argument("--size", type=int, default=16, help="square clip size in pixels (even; default 16)")
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4, help="peak AdamW lr (default 5e-4; toy_stage2.LR_PHASES)")
    parser.add_argument("--clips", type=int, default=16, help="validation and test clips each (default 16)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: 2 threads are ~1.6x faster on an idle 2-core machine "
                             "but stall under other load)")
    parser.add_argument("--quick", action="store_true", help="smoke run in seconds (numbers meaningless)")
    parser.add_argument("--save", type=Path, default=None,
                        help="write both trained models here (torch.save of state dicts) and how to use them "
                             "beside it (FILE with .txt)")
    parser.add_argument("--load", type=Path, default=None,
                        help="evaluate the models a --save wrote instead of training (size, frames, batch, steps "
                             "and lr are then the saved run's)")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.size, args.frames, args.batch, args.clips = 2, 16, 3, 2, 2
    if args.size % 8:
        parser.error(f"--size {args.size}: must be a multiple of 8 (claim 4's artefact works on 8x8 blocks)")
    args.sweep = QUICK_SWEEP if args.quick else SWEEP
    return args


def held_out(args, photos: tuple[str, ...], seed: int, sigma: float = NOISE_SIGMA):
    """(hr, lr, noisy) clips (clips, 3, frames, size, size) of `photos`: HR, DEG_pixel'd, DEG_pixel'd + noise
    of standard deviation `sigma`."""
    degradation = toy_stage2.library()[4]
    hr = toy_footage.held_out_clips(args.clips, args.frames, args.size, photos, seed=seed)
    lr = degradation.degrade_pixels(hr, toy_stage2.pixel_settings(), torch.Generator().manual_seed(seed + 1))
    noise = torch.randn(lr.shape, generator=torch.Generator().manual_seed(seed + 2))
    return hr, lr, (lr + sigma * noise).clamp(-1.0, 1.0)


def artefact_inputs(validation, test):
    """Claim 4's inputs: block_dct_quantise of the TEST LR clips at the scale whose RMS change of the
    VALIDATION LR clips is NOISE_SIGMA (inputs only, no model). Returns (scale, test artefact clips)."""
    scale = toy_stage2.block_scale_for_rms(validation[1], NOISE_SIGMA)
    artefacts = toy_stage2.block_dct_quantise(test[1], scale)
    print(f"artefact inputs (claim 4): 8x8 block DCT quantisation at scale {scale:.3f} x the JPEG luminance "
          f"table (about IJG quality {50.0 / scale:.1f}), set on validation LR clips to RMS change "
          f"{toy_stage2.rms_change(validation[1], toy_stage2.block_dct_quantise(validation[1], scale)):.4f} "
          f"(target {NOISE_SIGMA}); on the test LR clips: {toy_stage2.rms_change(test[1], artefacts):.4f}")
    return scale, artefacts


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _row(name: str, s: dict[str, float]) -> str:
    return f"  {name:<38} PSNR {s['psnr']:6.2f}  LF-PSNR {s['lf_psnr']:6.2f}  LSD {s['lsd']:.4f}"


def _enhanced(model, pixels, steps: int, noise_step: int, hr) -> dict[str, float]:
    return toy_stage2.scores(toy_stage2.enhance_pixels(model, pixels, steps, noise_step), hr)


def claims_clean(pixel_model, latent_model, test) -> list[bool]:
    """Claim 1 (P) and claim 2 (L at noise step 0; P's numbers printed too) on clean test inputs."""
    hr, lr, _ = test
    base = toy_stage2.scores(lr, hr)
    p1, p4 = _enhanced(pixel_model, lr, 1, 0, hr), _enhanced(pixel_model, lr, 4, 0, hr)
    l1, l4 = _enhanced(latent_model, lr, 1, 0, hr), _enhanced(latent_model, lr, 4, 0, hr)
    for name, row in (("bicubic (the LR input)", base), ("P, 1 step", p1), ("P, 4 steps", p4),
                      ("L, 1 step, noise step 0", l1), ("L, 4 steps, noise step 0", l4)):
        print(_row(name, row))
    gain, lf_gain = p1["psnr"] - base["psnr"], p1["lf_psnr"] - base["lf_psnr"]
    c1 = gain >= 0.2 and lf_gain >= 1.5
    print(f"claim 1 (P 1 step vs bicubic): PSNR {gain:+.2f} dB (need >= +0.2), "
          f"LF-PSNR {lf_gain:+.2f} dB (need >= +1.5): {verdict(c1)}")
    c2 = l4["lsd"] < l1["lsd"]
    print(f"claim 2 (more steps add detail, the method = L): LSD 4 steps {l4['lsd']:.4f} < 1 step {l1['lsd']:.4f}: "
          f"{verdict(c2)}  [P, for information: 4 steps {p4['lsd']:.4f} vs 1 step {p1['lsd']:.4f}: "
          f"{'lower' if p4['lsd'] < p1['lsd'] else 'NOT lower'}]")
    return [c1, c2]


def choose_noise_step(latent_model, validation, sweep=SWEEP) -> int:
    """L's inference noise step: the `sweep` step of best PSNR on the noisy VALIDATION clips, 4 steps."""
    hr, _, noisy = validation
    psnrs = {k: _enhanced(latent_model, noisy, SAMPLING_STEPS, k, hr)["psnr"] for k in sweep}
    chosen = max(sweep, key=psnrs.get)
    print("validation (noisy inputs, L, 4 steps), PSNR by noise step: "
          + ", ".join(f"{k}: {v:.2f}" for k, v in psnrs.items()))
    print(f"  chosen on validation: noise step {chosen}")
    return chosen


def claim_noisy(pixel_model, latent_model, test, chosen: int, sweep=SWEEP) -> bool:
    """Claim 3 on noisy test inputs (L's noise step `chosen` on validation); L's noisy LSD by step for info."""
    hr, lr, noisy = test
    print(_row("noisy input itself", toy_stage2.scores(noisy, hr)))
    p_noisy = _enhanced(pixel_model, noisy, SAMPLING_STEPS, 0, hr)
    print(_row("P on noisy, 4 steps", p_noisy))
    scores = {k: _enhanced(latent_model, noisy, SAMPLING_STEPS, k, hr) for k in sweep + (DEFAULT_NOISE_STEP,)}
    for k in sorted(scores):
        print(_row(f"L on noisy, 4 steps, noise step {k}", scores[k]))
    if chosen != 0:
        print(_row(f"(clean input) L, 4 steps, noise step {chosen}", _enhanced(latent_model, lr, SAMPLING_STEPS,
                                                                                chosen, hr)))
    margin = scores[chosen]["psnr"] - p_noisy["psnr"]
    c3 = margin >= 3.0
    print(f"claim 3 (DEG_latent robustness): L@{chosen} (chosen on validation) - P on noisy test inputs = "
          f"{margin:+.2f} dB (need >= +3): {verdict(c3)}  [L@{DEFAULT_NOISE_STEP}: "
          f"{scores[DEFAULT_NOISE_STEP]['psnr'] - p_noisy['psnr']:+.2f} dB, for information]")
    best = min(sweep, key=lambda k: scores[k]["lsd"])
    print(f"  for information (no claim; claim 4's earlier, noise-based form): on the noisy inputs L's best LSD is "
          f"{scores[best]['lsd']:.4f} at noise step {best}")
    return c3


def claim_artefacts(pixel_model, latent_model, test, artefacts, sweep=SWEEP) -> bool:
    """Claim 4 (the protocol in the module docstring): L, 4 steps, on the TEST artefact inputs over `sweep`;
    PASS iff the lowest LSD is at an inner step."""
    hr = test[0]
    print(_row("artefact input itself", toy_stage2.scores(artefacts, hr)))
    print(_row("P on artefacts, 4 steps", _enhanced(pixel_model, artefacts, SAMPLING_STEPS, 0, hr)))
    scores = {k: _enhanced(latent_model, artefacts, SAMPLING_STEPS, k, hr) for k in sweep}
    for k in sweep:
        print(_row(f"L on artefacts, 4 steps, noise step {k}", scores[k]))
    best = min(sweep, key=lambda k: scores[k]["lsd"])
    ends = (sweep[0], sweep[-1])
    c4 = best not in ends
    print(f"claim 4 (noise-step trade-off, artefact inputs): best LSD {scores[best]['lsd']:.4f} at noise step {best} "
          f"(PSNR {scores[best]['psnr']:.2f}; ends {ends[0]}: {scores[ends[0]]['lsd']:.4f}, {ends[1]}: "
          f"{scores[ends[1]]['lsd']:.4f}); inner step needed: {verdict(c4)}")
    return c4


def stronger_artefacts(latent_model, args, sigma: float = 2 * NOISE_SIGMA) -> None:
    """For information (no claim): L's LSD by noise step on test inputs with twice the noise."""
    hr, _, noisy = held_out(args, toy_footage.TEST_PHOTOS, 1234, sigma)
    lsd = {k: _enhanced(latent_model, noisy, SAMPLING_STEPS, k, hr)["lsd"] for k in args.sweep}
    print(f"for information, noise sigma {sigma:g} (no claim): L's LSD by noise step "
          + ", ".join(f"{k}: {v:.3f}" for k, v in lsd.items()) + f"; best at {min(lsd, key=lsd.get)}")


def save_models(path: Path, pixel_model, latent_model, run, chosen: int) -> None:
    """torch.save both state dicts and the run to `path`; write how to use them to path.with_suffix('.txt')."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"P": pixel_model.state_dict(), "L": latent_model.state_dict(), "run": dataclasses.asdict(run),
                "latent_scale": toy_stage2.LATENT_SCALE, "L_noise_step": chosen}, path)
    path.with_suffix(".txt").write_text(
        f"Toy Stage II models from bench/bench_stage2_training.py (TOY-SCALE, stand-in latent).\n"
        f"Load: state = torch.load('{path}', weights_only=True)\n"
        f"Rebuild (with bench/ and the repo root on sys.path):\n"
        f"  model = flashvideo_core.model.transformer.build_transformer(toy_stage2.toy_config());\n"
        f"  model.load_state_dict(state['P'] or state['L']); model.eval()\n"
        f"Keys: 'P' = DEG_pixel only (use noise step 0); 'L' = DEG_pixel + DEG_latent 0-900 (noise step\n"
        f"  {chosen} chosen on validation clips; any 0-900 works); 'run' = the ToyRun fields "
        f"(size {run.size} px, {run.frames} frames, {run.steps} steps).\n"
        f"Latent space: toy_stage2.ScaledCodec() = 2x2 pixel-unshuffle (12 channels, half size) x "
        f"{toy_stage2.LATENT_SCALE}; pixels (B, 3, F, H, W) in [-1, 1], H, W even; any F (no temporal "
        f"compression; the models were trained on {run.frames}-frame clips).\n"
        f"Text: zeros (1, {toy_stage2.TEXT_TOKENS}, {toy_stage2.TEXT_DIM}) (empty captions), cfg "
        f"{toy_stage2.CFG}.\n"
        f"Sampling: toy_stage2.enhance_pixels(model, lr_pixels, steps={SAMPLING_STEPS}, noise_step=k, seed=7) = "
        f"encode, degrade_latents at k, sample_euler_flow over stage2_time_grid(steps, {toy_stage2.SHIFT}) "
        f"with stage2_velocity(model, zeros text, cfg {toy_stage2.CFG}, k, float32), decode.\n"
        f"Inputs it was trained on: DEG_pixel of toy_stage2.pixel_settings() (blur + 2-4x area downscale, "
        f"bicubic back up) of pan/zoom clips (toy_footage).\n")
    print(f"saved both models to {path}, how to use them in {path.with_suffix('.txt')}")


def train_both(base):
    """Train P (DEG_pixel only) and L (+ DEG_latent 0-900) from `base`: (P, L, P seconds, L seconds)."""
    print("training P (DEG_pixel only) with training.loop.train_stage2")
    pixel_model, p_time = toy_stage2.train(base)
    print("training L (DEG_pixel + DEG_latent 0-900) with training.loop.train_stage2")
    latent_model, l_time = toy_stage2.train(dataclasses.replace(base, noise_steps=(0, 900)))
    return pixel_model, latent_model, p_time, l_time


def saved_run(path: Path) -> dict:
    """The state a --save wrote (weights_only), checked to hold both models and the run."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as error:
        raise SystemExit(f"--load {path}: cannot read it as a file of this bench's --save ({error})") from error
    if not isinstance(state, dict) or not {"P", "L", "run"} <= set(state):
        raise SystemExit(f"--load {path}: not a file of this bench's --save (needs the keys P, L and run)")
    return state


def load_models(path: Path):
    """(P, L) in eval mode from a --save file."""
    from flashvideo_core.model.transformer import build_transformer

    state, models = saved_run(path), []
    for key in ("P", "L"):
        model = build_transformer(toy_stage2.toy_config())
        model.load_state_dict(state[key])
        models.append(model.eval())
    print(f"loaded P and L from {path} (no training): run {state['run']}")
    return models


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.load is not None:  # evaluate at the saved run's clip size (the rest is printed for the record)
        run = saved_run(args.load)["run"]
        args.size, args.frames, args.batch, args.steps, args.lr = (run[k] for k in ("size", "frames", "batch",
                                                                                   "steps", "lr"))
    torch.set_num_threads(args.threads)
    start, cpu_start, load_start = time.perf_counter(), time.process_time(), os.getloadavg()[0]
    std = toy_stage2.measure_latent_std(args.frames, args.size, clips=8 if args.quick else 256)
    print(f"TOY-SCALE Stage II training bench ({'QUICK smoke run, numbers meaningless' if args.quick else 'full'}):"
          f" {args.size}x{args.size} px clips, {args.frames} frames, batch {args.batch}, {args.steps} steps "
          f"per model, peak lr {args.lr} (phases {toy_stage2.LR_PHASES}), {args.threads} threads; photos: train "
          f"{len(toy_footage.TRAIN_PHOTOS)}, validation {', '.join(toy_footage.VALIDATION_PHOTOS)}, test "
          f"{', '.join(toy_footage.TEST_PHOTOS)} ({args.clips} clips each); stand-in latent std {std:.3f} x "
          f"scale {toy_stage2.LATENT_SCALE} = {std * toy_stage2.LATENT_SCALE:.3f}; noisy inputs: sigma {NOISE_SIGMA}")
    validation = held_out(args, toy_footage.VALIDATION_PHOTOS, 4321)
    test = held_out(args, toy_footage.TEST_PHOTOS, 1234)
    _, artefacts = artefact_inputs(validation, test)
    base = toy_stage2.ToyRun(size=args.size, frames=args.frames, batch=args.batch, steps=args.steps, lr=args.lr)
    if args.load is None:
        pixel_model, latent_model, p_time, l_time = train_both(base)
    else:
        (pixel_model, latent_model), p_time, l_time = load_models(args.load), 0.0, 0.0
    results = claims_clean(pixel_model, latent_model, test)
    chosen = choose_noise_step(latent_model, validation, args.sweep)
    results.append(claim_noisy(pixel_model, latent_model, test, chosen, args.sweep))
    results.append(claim_artefacts(pixel_model, latent_model, test, artefacts, args.sweep))
    stronger_artefacts(latent_model, args)
    if args.save is not None:
        save_models(args.save, pixel_model, latent_model, base, chosen)
    total, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    print(f"time: train P {p_time:.0f} s, train L {l_time:.0f} s, total {total:.0f} s wall, process CPU "
          f"{cpu:.0f} s ({args.threads} threads; 1-min load average {load_start:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at end, on {os.cpu_count()} CPUs)")
    print(f"TOY-SCALE summary: {sum(results)}/{len(results)} claims PASS")
    return 0 if all(results) or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
