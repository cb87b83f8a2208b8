"""The VAE's memory plan for WHOLE clips vs the measured peak (issue 14, item 7), at the real VAE widths.

    python bench/bench_vae_memory_model.py            # 24 min measured on 2 cores shared under load ~9
    python bench/bench_vae_memory_model.py --quick    # the fake-tensor rows only (seconds)

The plan (flashvideo_core.vae.cost): a sliced decode holds the largest slice (decode_slice_bytes: bytes per
output voxel x the chunk's output frames x the tile's pixels, + the causal conv cache carried to the next
chunk, decoder_cache_bytes) plus, on the CPU, the float32 video it writes into (planned_decode_bytes). An
encode is planned by auto slicing with the decoder's model: decode_slice_bytes of its largest chunk (chunk
+ 1 latent frames: 17 pixel frames for the official 17/16/16) + the float32 moments it writes.

Measured: the most bytes of live tensors at once (planning.live_bytes.LiveBytes; the latent or video
passed in is left out, as the plan leaves it out), which is what a caching allocator that frees at once
would need. Rows:
- real: the real VAE (widths 128, 256, 256, 512; random weights, fp32) run on the CPU, each case in a fresh
  process (bench/isolated.py), latent 12x16 (96x128 pixels): decodes of whole clips of 3 and 13 latent
  frames in the official 2-frame chunks, and an encode of 49 frames in 4-frame chunks (17/16/16). Peak RSS
  over the process's baseline is printed beside it for information (no PASS: glibc's malloc keeps freed
  blocks, so RSS runs above the live bytes).
- fake: the same VAE under FakeTensorMode (shapes, dtypes and storages exactly as a real run; nothing
  computed or allocated): the 1080p decode bench/gpu_check.py runs on a GPU (latent 134x240, 13 frames,
  2-frame chunks, 2 width tiles of 128 sharing 16) in bf16 and fp32, and the 1080p Stage II encode (49
  frames in 17/16/16). layout.check_latent's NaN check (a data-dependent .item()) is switched off here.

PASS: every decode's ratio measured / planned in [0.75, 1.0] (the plan never undershoots: on a CPU running
out of memory kills the process; and it wastes at most a quarter), every encode's <= 1.0 (the encoder is
planned with the decoder's costlier model: its slack is printed, not judged), and a 13-frame clip holds,
less its video, at most one carried conv cache more than a 3-frame clip (nothing accumulates across chunks).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from isolated import measure  # noqa: E402

LOW, HIGH = 0.75, 1.0
MIB = 2**20
HEIGHT, WIDTH = 12, 16
"""Latent size of the real rows (96x128 pixels)."""
DECODE_FRAMES = (3, 13)

SETUP = f"""
import torch
from flashvideo_core import config
from flashvideo_core.planning.live_bytes import LiveBytes
from flashvideo_core.vae import SliceSpec, build_vae, decode_latents, encode_video
from flashvideo_core.vae.cost import decode_slice_bytes, decoder_cache_bytes, planned_decode_bytes
torch.set_num_threads(2)
vae = build_vae(config.VAE_COGVIDEOX, seed=0)
h, w = {HEIGHT}, {WIDTH}
"""
DECODE = """
latent = torch.randn(1, 16, {frames}, h, w, generator=torch.Generator().manual_seed(0))
spec = SliceSpec(chunk_frames=2)
with LiveBytes(exclude=[latent]) as count:
    out = decode_latents(vae, latent, spec)
result = [count.peak, planned_decode_bytes(vae, tuple(latent.shape), spec), out.numel() * 4,
          decoder_cache_bytes(vae, h, w)]
"""
ENCODE = """
video = torch.rand(1, 3, 49, 8 * h, 8 * w, generator=torch.Generator().manual_seed(0)) * 2 - 1
with LiveBytes(exclude=[video]) as count:
    out = encode_video(vae, video, None, False, SliceSpec(chunk_frames=4))
moments = 2 * out.numel() * 4
result = [count.peak, decode_slice_bytes(vae, 5, h, w) + moments, moments, 0]
"""


def _row(label: str, peak: int, planned: float, extra: str = "") -> tuple[str, bool]:
    """Print one row -> (label, passed): a decode within [LOW, HIGH], an encode at most HIGH."""
    ratio = peak / planned
    low = LOW if "decode" in label else 0.0
    passed = low <= ratio <= HIGH
    flag = "" if passed else f"  <- outside [{low}, {HIGH}]"
    print(f"{label:58s} live {peak / MIB:8.1f} MiB, planned {planned / MIB:8.1f} MiB, ratio {ratio:.3f}{extra}{flag}",
          flush=True)
    return label, passed


def real_rows() -> tuple[list[tuple[str, bool]], bool]:
    """The real-compute rows (fresh processes) -> ([(label, passed)], whether nothing accumulated)."""
    rows, held = [], {}
    for frames in DECODE_FRAMES:
        r = measure(SETUP, DECODE.format(frames=frames))
        peak, planned, video, cache = r["value"]
        rss = (r["peak_kib"] - r["baseline_kib"]) * 1024
        held[frames] = peak - video
        rows.append(_row(f"real  decode {frames:2d} latent frames (2-frame chunks)", peak, planned,
                         f"; RSS {rss / MIB:7.1f} MiB ({rss / planned:.2f}x), {r['seconds']:.0f} s"))
    growth = held[DECODE_FRAMES[-1]] - held[DECODE_FRAMES[0]]
    steady = growth <= cache
    print(f"real  decode held less the video, {DECODE_FRAMES[-1]} vs {DECODE_FRAMES[0]} frames: "
          f"{growth / MIB:+.1f} MiB (one carried cache: {cache / MIB:.1f} MiB): {'ok' if steady else 'GROWS'}",
          flush=True)
    r = measure(SETUP, ENCODE)
    peak, planned, _, _ = r["value"]
    rss = (r["peak_kib"] - r["baseline_kib"]) * 1024
    rows.append(_row("real  encode 49 frames (17/16/16)", peak, planned,
                     f"; RSS {rss / MIB:7.1f} MiB ({rss / planned:.2f}x), {r['seconds']:.0f} s"))
    return rows, steady


def fake_rows() -> list[tuple[str, bool]]:
    """The 1080p rows under FakeTensorMode (in this process: nothing is allocated)."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from flashvideo_core import config
    from flashvideo_core.planning.live_bytes import LiveBytes, default_dtype
    from flashvideo_core.vae import SliceSpec, build_vae, decode_latents, encode_video, slicing
    from flashvideo_core.vae.cost import decode_slice_bytes, planned_decode_bytes

    slicing.check_latent = lambda *args, **kwargs: None  # its NaN check reads a value: fake tensors have none
    height, width, frames = config.STAGE2_HEIGHT // 8, config.STAGE2_WIDTH // 8, 13
    official = SliceSpec(chunk_frames=2, tile_width=128, overlap=16)
    rows, mode = [], FakeTensorMode()
    for dtype in (torch.bfloat16, torch.float32):
        name = str(dtype).removeprefix("torch.")
        with mode, default_dtype(dtype):
            vae = build_vae(config.VAE_COGVIDEOX, seed=0)
        with mode:
            latent = torch.randn(1, 16, frames, height, width)
            with LiveBytes(exclude=[latent]) as count:
                decode_latents(vae, latent, official)
        planned = planned_decode_bytes(vae, tuple(latent.shape), official)
        rows.append(_row(f"fake  decode 1080p {frames} frames, 2 width tiles, {name}", count.peak, planned))
        with mode:
            video = torch.rand(1, 3, 49, 8 * height, 8 * width)
            with LiveBytes(exclude=[video]) as count:
                out = encode_video(vae, video, None, False, SliceSpec(chunk_frames=4))
        moments = 2 * out.numel() * 4
        planned = decode_slice_bytes(vae, 5, height, width) + moments
        rows.append(_row(f"fake  encode 1080p 49 frames (17/16/16), {name}", count.peak, planned))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only the fake-tensor rows (seconds)")
    args = parser.parse_args(argv)
    rows, steady = fake_rows(), True
    if not args.quick:
        real, steady = real_rows()
        rows += real
    failed = [" ".join(label.split()) for label, ok in rows if not ok]
    passed = not failed and steady
    print(f"PASS needs decodes in [{LOW}, {HIGH}], encodes <= {HIGH} and no growth across chunks: "
          f"{'PASS' if passed else 'FAIL (' + '; '.join(failed) + ')' if failed else 'FAIL (growth)'}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
