"""bench/bench_stage2_training.py --quick runs end to end in seconds, so the toy reproduction cannot break
unnoticed when the training library changes: it trains both toy models with training.loop.train_stage2,
samples with the Stage II sampler, prints every claim and saves models that load back.

The bench's photos come from scikit-image, a bench-only dependency the test environment does not have,
so toy_footage.load_photo is replaced by smooth random pictures of the same layout; everything else is
the bench's own code. The numbers of a --quick run mean nothing and are not checked."""

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "bench")]

import bench_stage2_training  # noqa: E402
import toy_footage  # noqa: E402
import toy_stage2  # noqa: E402


def _smooth_picture(name: str, photo_px_per_out_px: float = 1.0, long_edge: int = 320) -> torch.Tensor:
    """A (3, 48, 64) stand-in photo in [-1, 1]: random noise upsampled (smooth, with edges), seeded by name."""
    generator = torch.Generator().manual_seed(sum(map(ord, name)))
    coarse = torch.rand(1, 3, 6, 8, generator=generator) * 2.0 - 1.0
    return F.interpolate(coarse, size=(48, 64), mode="bicubic", align_corners=False)[0].clamp(-1.0, 1.0)


@pytest.fixture
def no_skimage_photos(monkeypatch):
    monkeypatch.setattr(toy_footage, "load_photo", _smooth_picture)


def test_quick_run_prints_every_claim_and_saves_loadable_models(no_skimage_photos, tmp_path, capsys):
    saved = tmp_path / "toy.pt"
    threads = torch.get_num_threads()
    try:
        code = bench_stage2_training.main(["--quick", "--threads", "1", "--save", str(saved)])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    for claim in ("claim 1 ", "claim 2 ", "claim 3 ", "claim 4 "):
        line = next(line for line in out.splitlines() if line.startswith(claim))
        assert line.endswith(("PASS", "FAIL")) or "PASS  [" in line or "FAIL  [" in line, line
    assert "chosen on validation: noise step" in out and "training.loop.train_stage2" in out
    assert "process CPU" in out and "claims PASS" in out
    state = torch.load(saved, weights_only=True)
    assert set(state) >= {"P", "L", "run", "latent_scale", "L_noise_step"}
    from flashvideo_core.model.transformer import build_transformer

    for key in ("P", "L"):
        model = build_transformer(toy_stage2.toy_config())
        model.load_state_dict(state[key])  # strict: the saved model is the toy config's
    assert "toy_stage2.toy_config()" in saved.with_suffix(".txt").read_text()

    try:  # --load evaluates the saved models without training
        code = bench_stage2_training.main(["--quick", "--threads", "1", "--load", str(saved)])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    assert f"loaded P and L from {saved} (no training)" in out and "training P" not in out
    assert "artefact inputs (claim 4): 8x8 block DCT" in out
    assert any(line.startswith("claim 4 (noise-step trade-off, artefact inputs)") for line in out.splitlines())


def test_load_refuses_a_file_that_is_not_a_save(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(SystemExit, match="not a file of this bench's --save"):
        bench_stage2_training.main(["--quick", "--load", str(other)])


def _reference_block_quantise(pixels: torch.Tensor, scale: float) -> torch.Tensor:
    """block_dct_quantise written out block by block with the DCT-II sums (JPEG's FDCT/IDCT formulas)."""
    import math

    out = torch.empty_like(pixels, dtype=torch.float64)
    c = [math.sqrt(0.5) if k == 0 else 1.0 for k in range(8)]
    basis = torch.tensor([[c[u] * math.cos((2 * x + 1) * u * math.pi / 16) / 2 for x in range(8)] for u in range(8)],
                         dtype=torch.float64)  # basis[u, x]
    step = (toy_stage2.JPEG_LUMINANCE * scale).clamp(min=1.0)
    flat = pixels.double().reshape(-1, *pixels.shape[-2:]) * 127.5
    for plane, result in zip(flat, out.view(-1, *pixels.shape[-2:]), strict=True):
        for y in range(0, plane.shape[0], 8):
            for x in range(0, plane.shape[1], 8):
                block = plane[y:y + 8, x:x + 8]
                coefficients = torch.einsum("uy,vx,yx->uv", basis, basis, block)
                coefficients = torch.round(coefficients / step) * step
                result[y:y + 8, x:x + 8] = torch.einsum("uy,vx,uv->yx", basis, basis, coefficients)
    return (out / 127.5).float().clamp(-1.0, 1.0)


def test_block_dct_quantise_is_jpeg_blockwise_quantisation():
    pixels = torch.rand(2, 3, 2, 16, 24, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.8
    for scale in (0.5, 3.0, 20.0):
        torch.testing.assert_close(toy_stage2.block_dct_quantise(pixels, scale),
                                   _reference_block_quantise(pixels, scale), atol=1e-5, rtol=0)
    changed = pixels.clone()
    changed[0, 1, 0, 9, 17] += 0.3  # inside the block at rows 8-15, columns 16-23 of one frame and channel
    delta = (toy_stage2.block_dct_quantise(changed, 3.0) - toy_stage2.block_dct_quantise(pixels, 3.0)).abs()
    assert delta[0, 1, 0, 8:16, 16:24].max() > 0 and delta.sum() == delta[0, 1, 0, 8:16, 16:24].sum()
    with pytest.raises(ValueError, match="multiple of 8"):
        toy_stage2.block_dct_quantise(pixels[..., :12], 1.0)


def test_block_scale_for_rms_reaches_the_target():
    pixels = F.interpolate(torch.rand(4, 3, 4, 6, generator=torch.Generator().manual_seed(1)) * 2 - 1,
                           size=(16, 16), mode="bicubic", align_corners=False).clamp(-1, 1)[:, :, None]
    scale = toy_stage2.block_scale_for_rms(pixels, 0.1)
    assert abs(toy_stage2.rms_change(pixels, toy_stage2.block_dct_quantise(pixels, scale)) - 0.1) < 2e-3


def test_training_clips_are_a_fixed_sequence(no_skimage_photos):
    photos = toy_footage.load_photos(("a.png", "b.png"))
    clips = toy_stage2.PanZoomClips(photos, frames=3, size=16, count=10)
    first, again, other = clips[3], clips[3], clips[4]
    assert first.pixels.shape == (3, 3, 16, 16) and first.text.shape == (1, toy_stage2.TEXT_TOKENS, toy_stage2.TEXT_DIM)
    assert torch.equal(first.pixels, again.pixels) and not torch.equal(first.pixels, other.pixels)
    assert len(clips) == 10 and len(list(clips)) == 10
