"""Peak memory of ONE enhance window at 1080p: today's chain vs a baseline that restores the removed copy.

The Stage II chain used to resize every enhance window a second time to the size it already had
(stage2_chain.resize_video interpolated even at the same size: a full float32 copy of the window,
3 x L x 1088 x 1920 x 4 bytes = 1.14 GiB for L = 49). Today it returns such a video as it is. This
runs the real window path, enhance.stream.enhance_window -> stage2_refiner -> refine_video ->
video_to_stage2_latent -> resize_video + encode_video (then, with --through window, the 1-step
Stage II ODE, the decode and the window's crop/un-layout), with tiny random models
(config.TINY_STAGE2, config.TINY_VAE) at the real pixel size: L frames of --input (uint8, as the
stream holds them) to the --size target. Two cases, each in a fresh Python process:
  today:    the code as it is;
  baseline: stage2_chain.resize_video replaced, in that process only, by the old one (a chunked
            bilinear interpolate into a new tensor even when the size already matches).
Each child resets its peak-RSS counter (/proc/self/clear_refs, Linux) at every phase boundary, so
the peak of each phase is printed: fit (uint8 frames -> the model's (1, 3, L, h, w) at the work
size), encode (resize + VAE encode), then stage2, decode, post with --through window. The window
peak is the largest. Prints each case's window peak in MiB, their difference, the size of one
float32 copy of the window, and PASS if the drop >= that copy minus TOLERANCE_MIB, else FAIL (exit 1).

What holds the peak (measured; see the report of each run): through the encode, today's window
peak is the fit phase, where fit_frames holds the exact-size resize and its edge-padded copy
together (~2 copies), so the window peak drops by ~0.3 copy although the encode phase drops by
~1; through the whole window the decode phase (the window's input, still referenced by the
callers, + the decoded output + the decoder's working memory) is the peak in both cases.

Memory counted is resident memory (torch's CPU tensors are not Python allocations, so tracemalloc
cannot see them); as in bench_enhance_memory.py the children run with glibc's mmap threshold fixed
at 1 MB, so every tensor gets its own mapping, returned when freed, and the RSS follows live tensors.
The VAE slices are planned for --vae-budget-mb of free memory in both cases (not what this shared
machine has free at that moment).

Time on the repo's 2 CPU cores, nearly all of it the tiny VAE at 1080p: the default (49 frames,
through encode) ~1.5 min per case on an idle machine, 2-3x that when other jobs share the cores;
--through window adds the decode, about 4x the encode (use it with --frames 9 or 17).

    python bench/bench_enhance_window_peak.py [--frames 49] [--input 270x480] [--size 1080p]
                                              [--through encode|window] [--vae-budget-mb 4096]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TOLERANCE_MIB = 24
"""PASS needs drop >= one float32 copy of the window - TOLERANCE_MIB (2 % of the 49-frame copy). Measured:
these peaks move by 10-20 MiB from run to run, and the VAE encoder's working memory is ~10 MiB larger
on today's window (a view with frames outermost, as fit_frames makes it) than on the old contiguous
copy (a baseline that copies with today's strides drops by 1.00x the copy, the old resize by 0.97x)."""
CHILD_ENV = {"MALLOC_MMAP_THRESHOLD_": str(2**20), "MALLOC_ARENA_MAX": "2"}
"""glibc: every allocation of 1 MB or more gets its own mapping, returned to the OS when freed, so the
RSS counts live tensors and not the heap glibc keeps (the same setting as bench_enhance_memory.py)."""
CASES = ("today", "baseline")

CHILD = r"""
import json, sys
import torch
import torch.nn.functional as F
from flashvideo_core import config
from flashvideo_core.enhance import stream
from flashvideo_core.enhance.plan import EnhanceSettings, plan_enhance, window_seed
from flashvideo_core.model.transformer import build_transformer
from flashvideo_core.sampling import stage2_chain
from flashvideo_core.vae import AUTO, build_vae

case, through, frames, in_h, in_w, size, budget_mb = sys.argv[1:8]
frames, in_h, in_w, budget = int(frames), int(in_h), int(in_w), int(budget_mb) * 2**20


def status_kib(key):
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith(key + ":"))


def reset_peak():
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # VmHWM := VmRSS (Linux >= 4.0)


peaks, phase = {}, [None]


def mark(name):
    # Close the current phase (its peak RSS, MiB) and start `name`.
    if phase[0] is not None:
        peaks[phase[0]] = status_kib("VmHWM") / 1024
    phase[0] = name
    reset_peak()


class Stop(Exception):
    pass


if case == "baseline":  # the removed copy, restored: interpolate even when the size already matches
    def resize_always(video, height, width, batch_frames=stage2_chain.RESIZE_BATCH):
        b, c, f = video.shape[:3]
        out = torch.empty(b, c, f, height, width)
        for start in range(0, f, batch_frames):
            chunk = video[:, :, start : start + batch_frames].float()
            flat = chunk.permute(0, 2, 1, 3, 4).reshape(-1, c, *chunk.shape[-2:])
            resized = F.interpolate(flat, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
            out[:, :, start : start + chunk.shape[2]] = resized.reshape(b, -1, c, height, width).permute(0, 2, 1, 3, 4)
        return out
    stage2_chain.resize_video = resize_always

to_latent, decode = stage2_chain.video_to_stage2_latent, stage2_chain.decode_latents


def observed_to_latent(*args, **kwargs):
    mark("encode")
    latent = to_latent(*args, **kwargs)
    if through == "encode":
        mark(None)
        raise Stop
    mark("stage2")
    return latent


def observed_decode(*args, **kwargs):
    mark("decode")
    return decode(*args, **kwargs)


stage2_chain.video_to_stage2_latent, stage2_chain.decode_latents = observed_to_latent, observed_decode

torch.manual_seed(0)
models = stage2_chain.Stage2Models(
    build_transformer(config.TINY_STAGE2, seed=1).eval(), build_vae(config.TINY_VAE, seed=2).eval(),
    torch.randn(1, config.TEXT_TOKENS, config.TINY_STAGE2.text_dim), free_memory=lambda device: budget)
settings = EnhanceSettings(size=size, window=frames, overlap=0, steps=1, seed=0)
plan = plan_enhance(frames, in_h, in_w, settings)
window = plan.windows[0]
chain = stream.stage2_refiner(models, slices=AUTO)


def refine(video, seed, plan):
    out = chain(video, seed, plan)
    mark("post")
    return out


clip = torch.randint(0, 256, (frames, in_h, in_w, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
rest = status_kib("VmRSS") / 1024
mark("fit")
try:
    out = stream.enhance_window(clip, window, window_seed(plan.seed, 0), plan, refine)
    shape = list(out.shape)
    del out
except Stop:
    shape = None
mark(None)
print("RESULT", json.dumps({"rest_mib": rest, "peaks": peaks, "shape": shape,
                            "work": [plan.target.work_height, plan.target.work_width],
                            "target": [plan.target.height, plan.target.width], "length": window.length}))
"""


def run_case(case: str, args) -> dict:
    """One case in a fresh process: {"rest_mib", "peaks": {phase: MiB}, "shape", "work", "target", "length"}."""
    height, width = (int(v) for v in args.input.lower().split("x"))
    cmd = [sys.executable, "-c", CHILD, case, args.through, str(args.frames), str(height), str(width), args.size,
           str(args.vae_budget_mb)]
    env = {**os.environ, **CHILD_ENV, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                                                   os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if done.returncode != 0:
        raise SystemExit(f"case {case} failed (exit code {done.returncode}; -9 is usually the out-of-memory "
                         f"killer):\n{done.stdout[-1000:]}{done.stderr[-3000:]}")
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=49, help="window length L, 8k+1 (default 49, as trained)")
    parser.add_argument("--input", default="270x480", help="input frame size HxW (default 270x480)")
    parser.add_argument("--size", default="1080p", help="named target size (default 1080p: work 1088x1920)")
    parser.add_argument("--through", choices=("encode", "window"), default="encode",
                        help="encode: stop after the chain's resize + encode (default); window: the whole window "
                             "(1 Stage II step, decode, crop and layout back)")
    parser.add_argument("--vae-budget-mb", type=int, default=4096, help="free memory the VAE slices are planned for")
    args = parser.parse_args(argv)
    if not sys.platform.startswith("linux"):
        raise SystemExit("this benchmark reads and resets the peak RSS through /proc (Linux only).")

    results = {case: run_case(case, args) for case in CASES}
    today, baseline = results["today"], results["baseline"]
    work_h, work_w = today["work"]
    copy_mib = 3 * today["length"] * work_h * work_w * 4 / 2**20
    phases = list(today["peaks"])
    print(f"one enhance window: {args.frames} frames {args.input} (HxW) uint8 -> "
          f"{today['target'][0]}x{today['target'][1]} (HxW), work {work_h}x{work_w}; tiny models, VAE slices for "
          f"{args.vae_budget_mb} MiB; through {args.through}")
    print(f"{'peak RSS MiB':<14}{'at rest':>9}" + "".join(f"{p:>9}" for p in phases) + f"{'window':>9}")
    for case in CASES:
        r = results[case]
        print(f"{case:<14}{r['rest_mib']:>9.0f}" + "".join(f"{r['peaks'][p]:>9.0f}" for p in phases)
              + f"{max(r['peaks'].values()):>9.0f}")
    drop = max(baseline["peaks"].values()) - max(today["peaks"].values())
    need = copy_mib - TOLERANCE_MIB
    for case in CASES:
        peaks = results[case]["peaks"]
        print(f"{case}: window peak in phase {max(peaks, key=peaks.get)}")
    encode_drop = baseline["peaks"]["encode"] - today["peaks"]["encode"]
    print(f"drop of the encode phase's peak (where the removed copy lived): {encode_drop:.0f} MiB "
          f"= {encode_drop / copy_mib:.2f} x the copy")
    print(f"drop of the window peak (baseline - today): {drop:.0f} MiB")
    print(f"one float32 copy of the window (3 x {today['length']} x {work_h} x {work_w} x 4 bytes): {copy_mib:.0f} MiB "
          f"({copy_mib / 1024:.2f} GiB)")
    ok = drop >= need
    print(f"{'PASS' if ok else 'FAIL'}: drop {drop:.0f} MiB = {drop / copy_mib:.2f} x the copy "
          f"(needs >= the copy - {TOLERANCE_MIB} MiB of measurement tolerance = {need:.0f} MiB)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
