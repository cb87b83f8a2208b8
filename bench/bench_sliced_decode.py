"""Sliced VAE decode vs unsliced on the same latent: peak memory (target <= 30%) and time (<= 1.2x).

A narrow CogVideoX VAE (block widths 1/8 of the real one, same depth pattern) on a latent big
enough that decoder activations dominate: 13 latent frames x 32 x 48 = 49 frames at 256x384
(unsliced needs ~10 GB here; 512x768 does not fit unsliced in 24 GB even at this width).
Each case runs in its own process (bench/isolated.py), so each peak is that case's alone. The
decoded video, which every case must hold on CPU, is subtracted from each peak.

Cases: unsliced (one decoder call), chunks (the official 2-latent-frame temporal chunks with the
causal cache carried), chunks+tiles (plus spatial tiles with blended overlaps, the shape the
node's manual default and its auto mode use when a frame does not fit). The targets are checked
for chunks+tiles; chunks alone is printed to show what the temporal split gives by itself.

    python bench/bench_sliced_decode.py [--frames 13] [--height 32] [--width 48] [--tile 20]
"""

from __future__ import annotations

import argparse

from isolated import measure

SETUP = """
import torch
from flashvideo_core import config
from flashvideo_core.vae import build_vae, decode_latents, SliceSpec
torch.set_num_threads(2)
shape = config.VAEConfig(block_out_channels=(16, 32, 32, 64), layers_per_block=3, norm_num_groups=8)
vae = build_vae(shape, seed=0)
latent = torch.randn(1, 16, {frames}, {height}, {width}, generator=torch.Generator().manual_seed(0))
spec = {spec}
"""
WORK = "video = decode_latents(vae, latent, spec)\nresult = list(video.shape)"
MEMORY_TARGET, TIME_TARGET = 0.30, 1.20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=13, help="latent frames (odd)")
    parser.add_argument("--height", type=int, default=32, help="latent height")
    parser.add_argument("--width", type=int, default=48, help="latent width")
    parser.add_argument("--tile", type=int, default=20, help="latent tile side for chunks+tiles")
    args = parser.parse_args()
    sizes = {"frames": args.frames, "height": args.height, "width": args.width}
    output_bytes = 3 * (4 * (args.frames - 1) + 1) * 8 * args.height * 8 * args.width * 4
    cases = {
        "unsliced": "SliceSpec(chunk_frames=None)",
        "chunks": "SliceSpec(chunk_frames=2)",
        "chunks+tiles": f"SliceSpec(chunk_frames=2, tile_height={args.tile}, tile_width={args.tile}, overlap=4)",
    }
    results = {}
    for name, spec in cases.items():
        r = measure(SETUP.format(spec=spec, **sizes), WORK)
        r["work"] = max((r["peak_kib"] - r["baseline_kib"]) * 1024 - output_bytes, 1)
        results[name] = r
        print(f"{name:13s} peak {r['peak_kib'] / 1024:8.1f} MiB  decoder {r['work'] / 2**20:8.1f} MiB  "
              f"{r['seconds']:7.2f} s  output {r['value']}", flush=True)
    print(f"output video {output_bytes / 2**20:.1f} MiB (held by every case, subtracted above)")
    base = results["unsliced"]
    ok = True
    for name in ("chunks", "chunks+tiles"):
        memory_ratio = results[name]["work"] / base["work"]
        time_ratio = results[name]["seconds"] / base["seconds"]
        checked = name == "chunks+tiles"
        if checked:
            ok = memory_ratio <= MEMORY_TARGET and time_ratio <= TIME_TARGET
        note = f"(targets <= {MEMORY_TARGET} and <= {TIME_TARGET})" if checked else "(for information)"
        print(f"{name:13s} / unsliced: memory {memory_ratio:.3f}, time {time_ratio:.3f} {note}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
