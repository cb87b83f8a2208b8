"""Peak memory of the CLI `enhance` on a short and a 10x longer clip (tiny random models, CPU).

Stage II on a video runs window by window and streams frames from the input file to the output
file, so peak memory must be set by the window, not by the clip's length. This runs
`python -m flashvideo_core enhance IN -o OUT --scale 2` in a fresh process for a 49-frame and a
490-frame clip, prints each run's peak resident memory and their ratio, and exits 1 if the ratio
is 1.5 or more.

    python bench/bench_enhance_memory.py [--size 32x48] [--frames 49 490] [--window 49] [--overlap 8]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = """
import resource, sys
from flashvideo_core.cli import main
code = main(sys.argv[1:])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("PEAK_KB", peak // 1024 if sys.platform == "darwin" else peak)
sys.exit(code)
"""
MAX_RATIO = 1.5


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
    cmd = [sys.executable, "-c", CHILD, "enhance", str(clip), "-o", str(out), "--weights", str(weights),
           "--scale", str(args.scale), "--window", str(args.window), "--overlap", str(args.overlap),
           "--device", "cpu", "--quiet", "--force"]
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"enhance failed on {clip}:\n{result.stderr[-2000:]}")
    peak = next(int(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("PEAK_KB"))
    return peak, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="32x48", help="input HxW (default 32x48)")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--frames", type=int, nargs=2, default=(49, 490), metavar=("SHORT", "LONG"))
    parser.add_argument("--window", type=int, default=49)
    parser.add_argument("--overlap", type=int, default=8)
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.lower().split("x"))

    from flashvideo_core.enhance import plan_enhance
    from flashvideo_core.sizing import image_frame_bytes
    from flashvideo_core.tiny import write_tiny_weights
    from flashvideo_core.video_io import probe_video

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
            plan = plan_enhance(frames, height, width, scale=args.scale, window=args.window, overlap=args.overlap)
            rows.append((frames, len(plan.windows), info.height, info.width, seconds, peak_kb / 1024))

    print(f"CLI enhance, tiny models, {height}x{width} -> x{args.scale}, window {args.window}, overlap {args.overlap}")
    print(f"{'frames':>7} {'windows':>8} {'output':>10} {'seconds':>8} {'peak MB':>8}")
    for frames, windows, out_h, out_w, seconds, peak_mb in rows:
        print(f"{frames:>7} {windows:>8} {f'{out_h}x{out_w}':>10} {seconds:>8.1f} {peak_mb:>8.1f}")
    (short_frames, *_), (long_frames, _, out_h, out_w, _, _) = rows
    whole_clip_mb = long_frames * image_frame_bytes(out_h, out_w) / 2**20
    ratio = rows[1][-1] / rows[0][-1]
    print(f"peak ratio {long_frames}/{short_frames} frames: {ratio:.3f} (limit {MAX_RATIO}); holding all "
          f"{long_frames} output frames as float32 would take {whole_clip_mb:.0f} MB more")
    return 0 if ratio < MAX_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
