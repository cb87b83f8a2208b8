"""One Stage II forward at the full 1080p token count with a narrow model: attention memory grows
linearly with the token count (memory-efficient attention), and the peak stays under 4 GB.

1080p Stage II latents are 13 x 134 x 240 (49 frames at 1072x1920), i.e. 13 x 67 x 120 = 104,520
video tokens after the 2x2 patch, plus 226 text tokens. A materialised attention matrix for that
would need tokens^2 x 4 bytes = 41 GiB per head. The model here is narrow (1 layer, 2 heads x 64,
real patching, 3D RoPE and Stage II embeddings), so the activations are small and the attention
scores are what would grow. Each latent-frame count runs in its own process (bench/isolated.py);
the script prints the peak over the process baseline per token for each and checks that it does
not grow with the token count (linear memory), and that the full-size peak is under 4 GB.

    python bench/bench_attention_memory.py [--frames 1,4,13] [--layers 1] [--heads 2]
"""

from __future__ import annotations

import argparse

from isolated import measure

TEXT_TOKENS = 226
PEAK_TARGET_GIB = 4.0
LINEARITY_TARGET = 1.5
"""Bytes per token at the most tokens over bytes per token at the fewest: at most ~1 for linear memory
(less when fixed costs dominate small inputs); quadratic attention memory would give ~13 here."""

SETUP = """
import torch
from flashvideo_core.config import TransformerConfig
from flashvideo_core.model.transformer import build_transformer
torch.set_num_threads(2)
shape = TransformerConfig(num_layers={layers}, num_heads={heads}, head_dim=64, time_embed_dim=64, text_dim=64,
                          stage2_extras=True)
model = build_transformer(shape, seed=0)
gen = torch.Generator().manual_seed(0)
latents = torch.randn(1, {frames}, 16, 134, 240, generator=gen)  # (B, T, C, h, w), 1072x1920 latent
text = torch.randn(1, {text_tokens}, 64, generator=gen)
timestep, noise_step = torch.tensor([1000.0]), torch.tensor([675.0])
"""
WORK = """
with torch.no_grad():
    out = model(latents, text, timestep, noise_step=noise_step)
result = list(out.shape)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", default="1,4,13", help="latent frame counts to run (13 = 49 video frames)")
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--heads", type=int, default=2)
    args = parser.parse_args()
    per_token, peaks = {}, {}
    for frames in (int(f) for f in args.frames.split(",")):
        tokens = frames * 67 * 120 + TEXT_TOKENS
        r = measure(SETUP.format(layers=args.layers, heads=args.heads, frames=frames, text_tokens=TEXT_TOKENS), WORK)
        work_bytes = (r["peak_kib"] - r["baseline_kib"]) * 1024
        per_token[frames] = work_bytes / tokens
        peaks[frames] = r["peak_kib"] * 1024
        matrix = tokens**2 * 4 * args.heads
        print(f"{frames:2d} latent frames, {tokens:7d} tokens: peak {peaks[frames] / 2**30:5.2f} GiB "
              f"(+{work_bytes / 2**20:7.1f} MiB for the forward, {per_token[frames] / 1024:6.2f} KiB/token) "
              f"in {r['seconds']:6.1f} s; explicit attention scores would take {matrix / 2**30:8.1f} GiB",
              flush=True)
    smallest, largest = min(per_token), max(per_token)
    growth = per_token[largest] / per_token[smallest]
    print(f"bytes per token at {largest} vs {smallest} latent frames: {growth:.2f} "
          f"(linear memory: <= {LINEARITY_TARGET}; quadratic would be ~{largest / smallest:.0f})")
    print(f"peak at {largest} latent frames: {peaks[largest] / 2**30:.2f} GiB (target < {PEAK_TARGET_GIB})")
    return 0 if growth <= LINEARITY_TARGET and peaks[largest] < PEAK_TARGET_GIB * 2**30 else 1


if __name__ == "__main__":
    raise SystemExit(main())
