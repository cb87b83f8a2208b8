"""Auto slicing's memory plan vs the measured peak of the slice it plans (target: measured / planned < 1).

`auto_slice_spec` picks VAE slices from free memory with a cost model (bytes per output pixel per
frame, `flashvideo_core.vae.cost.bytes_per_output_voxel`). On a CPU, running out of memory kills the process
instead of raising, so the model must never plan low. For VAEs of block widths 8 (the tiny test
VAE), 16, 64 and 128 (the real CogVideoX VAE, random weights), each case in its own process
(bench/isolated.py) decodes one official temporal chunk (2 latent frames; the first chunk, 3
latent frames, is the largest) and encodes one official Stage II chunk (17 frames), and compares
the peak, less the output it must hold, with what the plan assumed for that slice.

    python bench/bench_vae_memory_model.py [--widths 8 16 64 128]
"""

from __future__ import annotations

import argparse
import sys

from isolated import measure

SETUP = """
import torch
from flashvideo_core import config
from flashvideo_core.vae import build_vae, decode_latents, encode_video, SliceSpec
from flashvideo_core.vae.cost import bytes_per_output_voxel
torch.set_num_threads(2)
vae = build_vae(config.VAEConfig(block_out_channels={blocks}, layers_per_block={layers}, norm_num_groups={groups}),
                seed=0)
h, w = {height}, {width}
latent = torch.randn(1, 16, 3, h, w, generator=torch.Generator().manual_seed(0))
video = torch.rand(1, 3, 17, 8 * h, 8 * w, generator=torch.Generator().manual_seed(0)) * 2 - 1
planned_voxels = {{"decode": (4 * 2 + 2) * 64 * h * w, "encode": (4 * 4 + 2) * 64 * h * w}}
"""
WORK = {
    "decode": "out = decode_latents(vae, latent, SliceSpec(chunk_frames=2))\n"
              "result = [bytes_per_output_voxel(vae) * planned_voxels['decode'], out.numel() * 4]",
    "encode": "out = encode_video(vae, video, None, False, SliceSpec(chunk_frames=4))\n"
              "result = [bytes_per_output_voxel(vae) * planned_voxels['encode'], out.numel() * 4]",
}
VAES = {  # first block width: (block_out_channels, layers_per_block, norm groups, latent h, latent w)
    8: ((8, 8, 16, 16), 1, 4, 32, 48),
    16: ((16, 32, 32, 64), 3, 8, 32, 48),
    64: ((64, 128, 128, 256), 3, 32, 16, 24),
    128: ((128, 256, 256, 512), 3, 32, 16, 24),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=int, nargs="+", default=list(VAES), choices=list(VAES),
                        help="first block widths of the VAEs measured (default: all; 8 alone is the quickest)")
    args = parser.parse_args(argv)
    worst = 0.0
    for width in args.widths:
        blocks, layers, groups, height, latent_width = VAES[width]
        setup = SETUP.format(blocks=blocks, layers=layers, groups=groups, height=height, width=latent_width)
        for what, work in WORK.items():
            r = measure(setup, work)
            planned, output = r["value"]
            used = (r["peak_kib"] - r["baseline_kib"]) * 1024 - output
            ratio = used / planned
            worst = max(worst, ratio)
            print(f"width {width:3d} {what}: measured {used / 2**20:7.1f} MiB, planned {planned / 2**20:7.1f} MiB, "
                  f"ratio {ratio:.2f}  ({r['seconds']:.1f} s)", flush=True)
    print(f"worst measured / planned: {worst:.2f} (target < 1: the plan never undershoots)")
    return 0 if worst < 1 else 1


if __name__ == "__main__":
    sys.exit(main())
