"""Peak memory of the CLI `enhance` on a short and a 10x longer clip (tiny random models, CPU).

Stage II on a video runs window by window and streams frames from the input file to the output
file, so peak memory must be set by the window, not by the clip's length. This runs
`python -m flashvideo_core enhance IN -o OUT --scale 2` in a fresh process for a 49-frame and a
490-frame clip (default 64x96 -> 128x192) and prints each run's peak resident memory. Two checks,
exit 1 if either fails:
  ratio:  long peak / short peak < 1.5;
  growth: long peak - short peak < half of what holding the long clip's extra output frames as
          float32 would add (the signature of buffering the output instead of streaming it).
The ratio alone cannot tell streaming from buffering: the short run's peak (~0.4 GB of imports
plus the window's working memory, which grows with the frame size as the buffered output does)
is too large next to a buffered 490-frame output at any size that runs in minutes on a CPU.
The growth check can: at 128x192 the buffered frames would add ~125 MB, streaming adds ~20 MB.
--buffer-output makes enhance hold every output frame, to show that the check then fails.

To measure the same thing in every run, the children
  - run with glibc's mmap threshold fixed (CHILD_ENV), so the peaks count live tensors, not the
    heap the allocator keeps (which varied by +-130 MB from run to run);
  - plan the VAE slices as if --vae-budget-mb of memory were free (default 4096: no tiles, the
    official 4-latent-frame encode chunks), not whatever the machine has free at that moment
    (0: the free memory, as the CLI does).
About 10 minutes on 2 busy CPU cores, nearly all of it in the tiny VAE.

    python bench/bench_enhance_memory.py [--size 64x96] [--frames 49 490] [--window 49] [--overlap 8]
                                         [--vae-budget-mb 4096] [--buffer-output]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = """
import resource, sys
import flashvideo_core.devices, flashvideo_core.enhance.run
from flashvideo_core.cli import main
budget_mb, buffer_output = int(sys.argv[1]), sys.argv[2] == "buffer"
if budget_mb:
    flashvideo_core.devices.free_memory = lambda device: budget_mb * 2**20
if buffer_output:  # the regression this benchmark must catch: every output frame held until the end
    streamed = flashvideo_core.enhance.run.enhance_stream
    flashvideo_core.enhance.run.enhance_stream = lambda *args: iter([frame.clone() for frame in streamed(*args)])
code = main(sys.argv[3:])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("PEAK_KB", peak // 1024 if sys.platform == "darwin" else peak)
sys.exit(code)
"""
CHILD_ENV = {"MALLOC_MMAP_THRESHOLD_": str(2**20), "MALLOC_ARENA_MAX": "2"}
"""glibc: every allocation of 1 MB or more gets its own mapping, returned to the OS when freed (a fixed
threshold also stops glibc from raising it as tensors are freed), so the peak counts live tensors and
not the heap glibc keeps, which varied by +-130 MB from run to run. Other C libraries ignore these."""
MAX_RATIO = 1.5
MAX_GROWTH = 0.5
"""Largest allowed (long peak - short peak) / (memory the long clip's extra output frames would take)."""


def make_clip(path: Path, frames: int, height: int, width: int, fps: int = 8) -> Path:
    """A moving test pattern with a sine tone, `frames` frames long."""
    import imageio_ffmpeg

    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
         f"testsrc=size={width}x{height}:rate={fps}", "-f", "lavfi", "-i", "sine=frequency=440",
         "-frames:v", str(frames), "-shortest", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path)],
        check=True,
    )
    return path


def run_enhance(clip: Path, out: Path, weights: Path, args) -> tuple[int, float]:
    """(peak RSS in KiB, seconds) of one CLI enhance run in a fresh Python process."""
    mode = "buffer" if args.buffer_output else "stream"
    cmd = [sys.executable, "-c", CHILD, str(args.vae_budget_mb), mode, "enhance", str(clip), "-o", str(out),
           "--weights", str(weights), "--scale", str(args.scale), "--window", str(args.window),
           "--overlap", str(args.overlap), "--device", "cpu", "--quiet", "--force"]
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **CHILD_ENV})
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"enhance failed on {clip}:\n{result.stderr[-2000:]}")
    peak = next(int(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("PEAK_KB"))
    return peak, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="64x96", help="input HxW (default 64x96)")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--frames", type=int, nargs=2, default=(49, 490), metavar=("SHORT", "LONG"))
    parser.add_argument("--window", type=int, default=49)
    parser.add_argument("--overlap", type=int, default=8)
    parser.add_argument("--vae-budget-mb", type=int, default=4096,
                        help="free memory the VAE slices are planned for, in both runs (0: the machine's)")
    parser.add_argument("--buffer-output", action="store_true",
                        help="check the check: make enhance hold every output frame (this must fail)")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.lower().split("x"))

    from flashvideo_core.enhance.plan import EnhanceSettings, plan_enhance
    from flashvideo_core.enhance.sizing import image_frame_bytes
    from flashvideo_core.video import probe_video
    from flashvideo_core.weights.tiny import write_tiny_weights

    with tempfile.TemporaryDirectory(prefix="bench_enhance_") as tmp:
        work = Path(tmp)
        weights = work / "tiny"
        write_tiny_weights(weights)
        rows = []
        for frames in args.frames:
            clip = make_clip(work / f"clip_{frames}.mp4", frames, height, width)
            out = work / f"out_{frames}.mp4"
            peak_kb, seconds = run_enhance(clip, out, weights, args)
            info = probe_video(out)
            if info.num_frames != frames or not info.has_audio:
                raise SystemExit(f"{out}: {info.num_frames} frames, audio={info.has_audio}; expected {frames}, audio")
            settings = EnhanceSettings(scale=args.scale, window=args.window, overlap=args.overlap)
            plan = plan_enhance(frames, height, width, settings)
            rows.append((frames, len(plan.windows), info.height, info.width, seconds, peak_kb / 1024))

    budget = f"{args.vae_budget_mb} MB" if args.vae_budget_mb else "the free memory"
    print(f"CLI enhance, tiny models, {height}x{width} -> x{args.scale}, window {args.window}, overlap {args.overlap}, "
          f"VAE slices planned for {budget}")
    print(f"{'frames':>7} {'windows':>8} {'output':>10} {'seconds':>8} {'peak MB':>8}")
    for frames, windows, out_h, out_w, seconds, peak_mb in rows:
        print(f"{frames:>7} {windows:>8} {f'{out_h}x{out_w}':>10} {seconds:>8.1f} {peak_mb:>8.1f}")
    (short_frames, *_, short_mb), (long_frames, _, out_h, out_w, _, long_mb) = rows
    frame_mb = image_frame_bytes(out_h, out_w) / 2**20
    ratio = long_mb / short_mb
    extra_mb = (long_frames - short_frames) * frame_mb
    growth = (long_mb - short_mb) / extra_mb
    print(f"peak ratio {long_frames}/{short_frames} frames: {ratio:.3f} (limit {MAX_RATIO}); holding all "
          f"{long_frames} output frames as float32 would take {long_frames * frame_mb:.0f} MB more")
    print(f"peak growth {long_mb - short_mb:.0f} MB = {growth:.2f} x the {extra_mb:.0f} MB "
          f"that holding the {long_frames - short_frames} extra output frames would add (limit {MAX_GROWTH})")
    return 0 if ratio < MAX_RATIO and growth < MAX_GROWTH else 1


if __name__ == "__main__":
    sys.exit(main())
