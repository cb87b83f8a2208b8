"""TOY-SCALE (CPU) judge of enhance's any-video choices with a trained toy Stage II: how windows are joined
(EnhanceSettings.blend: pixel crossfade / shared noise / co-denoise) and the automatic noise step rule.

The model: a narrow real FlashVideoTransformer (bench/toy_stage2.py: 4 layers x 128, patch 2) trained by
the library's loop (training.loop.train_stage2, DEG_pixel + DEG_latent 0-900) in the STAND-IN latent
space (toy_stage2.ScaledCodec: 2x2 pixel-unshuffle, 12 channels, NO temporal compression) on pan/zoom
clips of real photos (toy_footage.TRAIN_PHOTOS), clips of 5, 9 and 17 frames mixed (one length per
batch), so it has seen every window length used below. It is trained once and cached (--model FILE;
--retrain), not per run.
The enhance path is the library's, unchanged: enhance.run.enhance_images with EnhanceSettings(blend=...)
over a ToyChain, the toy's sampling.stage2_chain.LatentStage2 (the same seam the real models run through:
Stage2Chain), so windows, keyed noise, the clip latent and the velocity averaging are the library's code.
Held-out clips: toy_footage.TEST_PHOTOS (never trained on), DEG_pixel'd (fixed seed) as the input,
the clean clip as the reference; target size = input size (long_edge = clip size).

Table 1 (blends): long clips of CLIP_FRAMES frames in windows of WINDOW frames overlapping by OVERLAP
(aligned, the same windows for every blend). flicker = mean |frame t+1 - frame t| over pairs touching an
overlap ("seam") / over pairs inside one window, divided by the same ratio of the clean clip (its own
motion cancels): 1.00 = no seam. dErr = the same ratio of mean |(out t+1 - out t) - (clean t+1 - clean t)|
(temporal error). PSNR, low-frequency PSNR and log-spectral distance (LSD, lower = closer spectrum)
against the clean clips.
Table 2 (noise step): clips of several lengths (a clip up to WINDOW frames is one window of its own
length), noise step "auto" (enhance.noise_rule: at 16 px the resolution term clamps it to 500) against
fixed steps; pixel blend.

    .venv/bin/python -m pip install -r bench/requirements-bench.txt   # scikit-image (bundled photos)
    nice -n 10 .venv/bin/python bench/bench_window_blending.py [--model FILE] [--retrain] [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT.parent), str(ROOT)]

import toy_footage  # noqa: E402
import toy_stage2  # noqa: E402

from flashvideo_core.enhance.plan import BLENDS, EnhanceSettings, plan_enhance  # noqa: E402
from flashvideo_core.enhance.run import enhance_images  # noqa: E402
from flashvideo_core.enhance.windows import plan_windows  # noqa: E402
from flashvideo_core.sampling.guidance import stage2_velocity  # noqa: E402
from flashvideo_core.sampling.schedule import stage2_time_grid  # noqa: E402
from flashvideo_core.sampling.stage2_chain import resize_video  # noqa: E402
from flashvideo_core.sampling.stage2_sampler import sample_euler_flow  # noqa: E402

LENGTHS = (5, 9, 17)
SIZE = 16
WINDOW, OVERLAP, CLIP_FRAMES = 17, 5, 65
FIXED_STEPS = (0, 100, 200, 300, 400, 500, 600, 675, 750, 900)
RULE_LENGTHS = (5, 9, 17, 65)
EULER_STEPS = 4
DEFAULT_MODEL = ROOT / "output" / "window_blending_toy.pt"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="trained toy model: loaded if it exists, "
                        "else trained and saved there (default %(default)s)")
    parser.add_argument("--retrain", action="store_true", help="train the model even if --model exists")
    parser.add_argument("--train-steps", type=int, default=1500, help="optimiser steps (default %(default)s)")
    parser.add_argument("--clips", type=int, default=8, help="held-out clips per measurement (default %(default)s)")
    parser.add_argument("--blend-steps", default="0,300,auto,675",
                        help="noise steps of table 1, comma-separated (default %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: on a loaded 2-core "
                        "machine more threads oversubscribe and run many times slower)")
    parser.add_argument("--quick", action="store_true", help="smoke run in seconds (numbers meaningless)")
    args = parser.parse_args(argv)
    args.blend_steps = [s if s == "auto" else int(s) for s in args.blend_steps.split(",")]
    args.clip_frames, args.fixed, args.rule_lengths = CLIP_FRAMES, FIXED_STEPS, RULE_LENGTHS
    if args.quick:
        args.train_steps, args.clips, args.clip_frames = 2, 1, 29
        args.fixed, args.rule_lengths, args.blend_steps = (0, 675), (9, 29), ["auto"]
        if args.model == DEFAULT_MODEL:
            args.model = Path(tempfile.mkdtemp(prefix="window-blending-")) / "quick.pt"
    return args


class MixedLengthClips:
    """A training.loop.SampleSource: each batch is `batch` pan/zoom clips of one length drawn from LENGTHS."""

    def __init__(self, size: int):
        self.photos, self.size = toy_footage.load_photos(toy_footage.TRAIN_PHOTOS), size
        self.text = torch.zeros(1, toy_stage2.TEXT_TOKENS, toy_stage2.TEXT_DIM)
        self.sample = toy_stage2.library()[2].TrainingSample

    def draw(self, phase, batch: int, generator: torch.Generator):
        frames = LENGTHS[int(torch.randint(len(LENGTHS), (), generator=generator))]
        picks = torch.randint(len(self.photos), (batch,), generator=generator).tolist()
        return [self.sample(toy_footage.pan_zoom_clip(self.photos[i], frames, self.size, generator), self.text)
                for i in picks]


def train_model(args):
    """Train the toy Stage II on MixedLengthClips with the library loop in toy_stage2's lr phases
    (toy_stage2.train); save it to args.model."""
    run = toy_stage2.ToyRun(size=SIZE, frames=max(LENGTHS), steps=args.train_steps, noise_steps=(0, 900))
    print(f"training the toy model: {run.steps} steps, batch {run.batch}, {SIZE} px, clips of {LENGTHS} frames, "
          f"DEG_latent {run.noise_steps}, peak lr {run.lr}")
    model, _ = toy_stage2.train(run, log=lambda line: print(line, flush=True), data=MixedLengthClips(SIZE))
    args.model.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "run": dataclasses.asdict(run), "lengths": LENGTHS}, args.model)
    return model


def load_model(args):
    """The cached toy model (torch.load weights_only=True), or a fresh one trained now."""
    from flashvideo_core.model.transformer import build_transformer

    if args.retrain or not args.model.exists():
        return train_model(args)
    saved = torch.load(args.model, weights_only=True)
    model = build_transformer(toy_stage2.toy_config(), seed=0)
    model.load_state_dict(saved["model"])
    print(f"toy model: {args.model} (trained {saved['run']['steps']} steps on clips of {saved['lengths']} frames)")
    return model.eval()


class ToyChain:
    """The toy as a sampling.stage2_chain.LatentStage2: ScaledCodec encode/decode (its latent is already
    the model's space: scale 1, one pixel frame per latent frame), the library's Euler flow sampler with
    stage2_velocity, the VelocityWrap applied when enhance gives one (co_denoise)."""

    frames_per_latent, scale = 1, 1.0

    def __init__(self, model):
        self.model, self.codec = model, toy_stage2.ScaledCodec()
        self.cond = torch.zeros(1, toy_stage2.TEXT_TOKENS, toy_stage2.TEXT_DIM)
        self.decoded: list[torch.Tensor] = []  # every window's decoded pixels, in call order (for `disagreement`)

    def encode(self, video, size, seed):
        return self.codec.encode(resize_video(video, *size))

    def sample(self, latent, settings, velocity_wrap=None):
        velocity = stage2_velocity(self.model, self.cond, settings.cfg, settings.noise_step, torch.float32)
        if velocity_wrap is not None:
            velocity = velocity_wrap(velocity, torch.device("cpu"))
        with torch.no_grad():
            return sample_euler_flow(velocity, latent.float(), stage2_time_grid(settings.steps, settings.shift),
                                     solver=settings.solver)

    def decode(self, latent):
        self.decoded.append(self.codec.decode(latent).clamp(-1.0, 1.0))
        return self.decoded[-1]


def settings_for(noise_step, blend: str = "pixel") -> EnhanceSettings:
    return EnhanceSettings(long_edge=SIZE, noise_step=noise_step, steps=EULER_STEPS, cfg=toy_stage2.CFG,
                           shift=toy_stage2.SHIFT, window=WINDOW, overlap=OVERLAP, blend=blend)


def enhance_clips(chain: ToyChain, lr: torch.Tensor, settings: EnhanceSettings) -> tuple[torch.Tensor, float]:
    """LR clips (N, 3, F, H, W) in [-1, 1] -> (enhanced (N, 3, F, H, W) through enhance.run.enhance_images,
    the windows' disagreement: mean |window A - window B| over the frames both decoded, before blending)."""
    out, gaps = [], []
    for clip in lr:
        chain.decoded.clear()
        images = (clip.permute(1, 2, 3, 0) + 1) / 2  # IMAGE (F, H, W, 3)
        out.append(enhance_images(images, chain, settings).permute(3, 0, 1, 2) * 2 - 1)
        windows = plan_enhance(clip.shape[1], SIZE, SIZE, settings).windows
        pairs = list(zip(windows, chain.decoded, strict=True))
        for (a, pa), (b, pb) in zip(pairs, pairs[1:], strict=False):
            gaps.append((pa[0, :, b.start - a.start : a.stop - a.start] - pb[0, :, : a.stop - b.start]).abs().mean())
    return torch.stack(out), float(torch.stack(gaps).mean()) if gaps else 0.0


def held_out(count: int, frames: int, seed: int = 1234) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean, degraded) held-out clips (count, 3, frames, SIZE, SIZE) of toy_footage.TEST_PHOTOS."""
    hr = toy_footage.held_out_clips(count, frames, SIZE, seed=seed)
    lr = toy_stage2.library()[4].degrade_pixels(hr, toy_stage2.pixel_settings(), torch.Generator().manual_seed(99))
    return hr, lr


def seam_pairs(num_frames: int) -> torch.Tensor:
    """(num_frames - 1,) bool: pair (t, t+1) touches a frame two windows cover."""
    covered = torch.zeros(num_frames, dtype=torch.long)
    for w in plan_windows(num_frames, WINDOW, OVERLAP):
        covered[w.start : w.stop] += 1
    shared = covered > 1
    return shared[:-1] | shared[1:]


def temporal_ratios(video: torch.Tensor, hr: torch.Tensor, seam: torch.Tensor) -> tuple[float, float, float]:
    """Of videos (N, 3, F, H, W) against the clean clips: (flicker = seam/inside ratio of mean |frame t+1 - t|
    over the clean clips' same ratio; dErr = seam/inside ratio of mean |(out t+1 - out t) - (clean t+1 - clean t)|;
    level = mean |frame t+1 - t| inside windows over the clean clips' (> 1: flickers everywhere))."""
    def ratio(per_pair: torch.Tensor) -> float:
        return float(per_pair[seam].mean() / per_pair[~seam].mean())

    diff, clean = video.diff(dim=2), hr.diff(dim=2)
    per_pair, clean_pair = diff.abs().mean(dim=(0, 1, 3, 4)), clean.abs().mean(dim=(0, 1, 3, 4))
    error = (diff - clean).abs().mean(dim=(0, 1, 3, 4))
    level = float(per_pair[~seam].mean() / clean_pair[~seam].mean())
    return ratio(per_pair) / ratio(clean_pair), ratio(error), level


def _row(name: str, ratios, disagree, s: dict[str, float], seconds: float | None = None) -> str:
    cells = [f"{ratios[0]:7.3f}", f"{ratios[1]:6.3f}", f"{ratios[2]:6.3f}",
             f"{disagree:8.4f}" if disagree is not None else f"{'-':>8}",
             f"{s['psnr']:6.2f}", f"{s['lf_psnr']:7.2f}", f"{s['lsd']:.4f}"]
    return f"  {name:<13} " + "  ".join(cells) + (f"  {seconds:5.1f} s" if seconds is not None else "")


def blend_table(chain, args, noise_step) -> dict[str, dict]:
    """Table 1 at one noise step: every blend on the same long held-out clips; returns the numbers by blend."""
    hr, lr = held_out(args.clips, args.clip_frames)
    plans = {b: plan_enhance(args.clip_frames, SIZE, SIZE, settings_for(noise_step, b)) for b in BLENDS}
    windows = {b: [(w.start, w.stop) for w in p.windows] for b, p in plans.items()}
    assert len({tuple(w) for w in windows.values()}) == 1, f"the blends' windows differ: {windows}"
    seam = seam_pairs(args.clip_frames)
    print(f"\nTable 1, noise step {noise_step} (= {plans['pixel'].stage2.noise_step}): {args.clips} held-out clips of "
          f"{args.clip_frames} frames, {SIZE}x{SIZE} px, windows {windows['pixel']}; {int(seam.sum())} seam pairs, "
          f"{int((~seam).sum())} inside")
    print(f"  {'':<13} {'flicker':>7}  {'dErr':>6}  {'level':>6}  {'disagree':>8}  {'PSNR':>6}  {'LF-PSNR':>7}  "
          "LSD     time")
    print(_row("input (LR)", temporal_ratios(lr, hr, seam), None, toy_stage2.scores(lr, hr)))
    enhance_clips(chain, lr[:1], settings_for(noise_step))  # warm-up: the first call pays for lazy set-up
    results = {}
    for blend in BLENDS:
        start = time.perf_counter()
        out, disagree = enhance_clips(chain, lr, settings_for(noise_step, blend))
        seconds = time.perf_counter() - start
        results[blend] = {"ratios": temporal_ratios(out, hr, seam), "disagree": disagree,
                          "scores": toy_stage2.scores(out, hr), "seconds": seconds}
        print(_row(blend, results[blend]["ratios"], disagree, results[blend]["scores"], seconds), flush=True)
    base = results["pixel"]
    for blend in BLENDS[1:]:
        r = results[blend]
        print(f"  {blend} vs pixel: flicker {r['ratios'][0]:.3f} vs {base['ratios'][0]:.3f} (1 = no seam), "
              f"disagreement x{r['disagree'] / base['disagree']:.3f}, "
              f"PSNR {r['scores']['psnr'] - base['scores']['psnr']:+.2f} dB, "
              f"LSD {r['scores']['lsd'] - base['scores']['lsd']:+.4f}, time x{r['seconds'] / base['seconds']:.2f}")
    return results


def noise_table(chain, args) -> None:
    """Table 2: "auto" against fixed noise steps on held-out clips of several lengths (pixel blend)."""
    print(f"\nTable 2, noise step: {args.clips} held-out clips per length, {SIZE}x{SIZE} px, pixel blend; "
          "PSNR / LSD per step; * = best of the column's row")
    steps = ["auto", *args.fixed]
    print(f"  {'frames':>6} {'auto=':>6}  " + "  ".join(f"{str(s):>13}" for s in steps))
    for frames in args.rule_lengths:
        hr, lr = held_out(args.clips, frames, seed=4321 + frames)
        auto = plan_enhance(frames, SIZE, SIZE, settings_for("auto")).stage2.noise_step
        scores = {s: toy_stage2.scores(enhance_clips(chain, lr, settings_for(s))[0], hr) for s in steps}
        best_psnr = max(steps, key=lambda s: scores[s]["psnr"])
        best_lsd = min(steps, key=lambda s: scores[s]["lsd"])
        cells = [f"{scores[s]['psnr']:5.2f}{'*' if s == best_psnr else ' '}/{scores[s]['lsd']:.3f}"
                 f"{'*' if s == best_lsd else ' '}" for s in steps]
        base = toy_stage2.scores(lr, hr)
        print(f"  {frames:>6} {auto:>6}  " + "  ".join(cells)
              + f"   (input {base['psnr']:.2f}/{base['lsd']:.3f}; best PSNR at {best_psnr}, best LSD at {best_lsd})",
              flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    print(f"TOY-SCALE window blending bench ({'QUICK smoke run, numbers meaningless' if args.quick else 'full'}), "
          f"CPU, {args.threads} threads: stand-in latent (2x2 unshuffle, no temporal compression), {SIZE} px, "
          f"{EULER_STEPS} Euler steps, cfg {toy_stage2.CFG:g}, shift {toy_stage2.SHIFT:g}, window {WINDOW} / "
          f"overlap {OVERLAP}; test photos {', '.join(toy_footage.TEST_PHOTOS)}")
    chain = ToyChain(load_model(args))
    for noise_step in args.blend_steps:
        blend_table(chain, args, noise_step)
    noise_table(chain, args)
    print(f"\ntotal {time.perf_counter() - start:.0f} s (TOY-SCALE: a 16 px stand-in latent without temporal "
          "compression; the real VAE's causal 4-frame latents are not measured here)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
