"""A sliced VAE pass holds one chunk's worth of memory for any clip length, and the plan covers the whole clip.

Counted in live tensor bytes (planning.live_bytes.LiveBytes), which are deterministic. Before the conv cache
was kept lean (vae/cache.py), the tiny VAE's decode of 13 latent frames peaked 35 MiB above that of 3
(a second cache and 1x1 convs' clones of their inputs held across chunks); now the difference is the
latent's own bytes.
"""

import contextlib

import pytest
import torch

from flashvideo_core import config
from flashvideo_core.planning.live_bytes import LiveBytes
from flashvideo_core.vae import SliceSpec, build_vae, decode_latents, encode_video, slicing
from flashvideo_core.vae.cache import cache_bytes, lean_cache
from flashvideo_core.vae.cost import decoder_cache_bytes, planned_decode_bytes

CHUNKS = SliceSpec(chunk_frames=2)


@pytest.fixture(scope="module")
def vae():
    return build_vae(config.TINY_VAE, seed=0)


def _latent(frames, height=8, width=12, seed=0):
    return torch.randn(1, 16, frames, height, width, generator=torch.Generator().manual_seed(seed))


def _decode_peak(vae, frames: int) -> tuple[int, int]:
    """(live-bytes peak of decoding `frames` latent frames in 2-frame chunks, bytes of the decoded video)."""
    latent = _latent(frames)
    with LiveBytes(exclude=[latent]) as count:
        video = decode_latents(vae, latent, CHUNKS)
    return count.peak, video.numel() * video.element_size()


def test_lean_cache_leaves_every_value_bit_identical(vae, monkeypatch):
    latent = _latent(7, height=12, width=12, seed=3)
    video = torch.rand(1, 3, 25, 96, 96, generator=torch.Generator().manual_seed(4)) * 2 - 1
    tiled = SliceSpec(chunk_frames=2, tile_height=8, tile_width=8, overlap=4)
    lean = [decode_latents(vae, latent, spec) for spec in (CHUNKS, tiled)]
    lean.append(encode_video(vae, video, None, False, SliceSpec(chunk_frames=2)))
    monkeypatch.setattr(slicing, "lean_cache", lambda model: contextlib.nullcontext())  # the cache as diffusers
    monkeypatch.setattr(slicing, "consumed", lambda cache: cache)                        # returns it, all kept
    full = [decode_latents(vae, latent, spec) for spec in (CHUNKS, tiled)]
    full.append(encode_video(vae, video, None, False, SliceSpec(chunk_frames=2)))
    for a, b in zip(lean, full, strict=True):
        assert torch.equal(a, b)


def test_decoder_cache_bytes_is_the_cache_carried_between_chunks(vae):
    with torch.no_grad(), lean_cache(vae.decoder):
        _, cache = vae.decoder(_latent(3, height=6, width=10))
    assert cache_bytes(cache) == decoder_cache_bytes(vae, 6, 10) > 0


def test_decode_peak_does_not_grow_with_the_clip_beyond_its_output(vae):
    peaks = {frames: _decode_peak(vae, frames) for frames in (3, 7, 13)}
    held = {frames: peak - output for frames, (peak, output) in peaks.items()}
    # A later chunk may hold at most the one cache it reads (old code: +35 MiB, 13x the cache).
    assert held[13] - held[3] <= decoder_cache_bytes(vae, 8, 12)
    # From the second chunk on nothing accumulates (a few KiB: the latent's frames moved to the VAE).
    assert abs(held[13] - held[7]) <= 64 * 1024
    for frames, (peak, _) in peaks.items():
        plan = planned_decode_bytes(vae, (1, 16, frames, 8, 12), CHUNKS)
        assert 0.5 * plan <= peak <= plan, (frames, peak, plan)


def test_encode_peak_does_not_grow_with_the_clip(vae):
    held = {}
    for frames in (5, 13):
        video = torch.rand(1, 3, 4 * (frames - 1) + 1, 64, 96, generator=torch.Generator().manual_seed(1))
        with LiveBytes(exclude=[video]) as count:
            moments = encode_video(vae, video, None, False, CHUNKS)
        held[frames] = count.peak - 2 * moments.numel() * moments.element_size()  # moments, then their mean
    assert abs(held[13] - held[5]) <= 64 * 1024
