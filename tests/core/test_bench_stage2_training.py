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


def test_training_clips_are_a_fixed_sequence(no_skimage_photos):
    photos = toy_footage.load_photos(("a.png", "b.png"))
    clips = toy_stage2.PanZoomClips(photos, frames=3, size=16, count=10)
    first, again, other = clips[3], clips[3], clips[4]
    assert first.pixels.shape == (3, 3, 16, 16) and first.text.shape == (1, toy_stage2.TEXT_TOKENS, toy_stage2.TEXT_DIM)
    assert torch.equal(first.pixels, again.pixels) and not torch.equal(first.pixels, other.pixels)
    assert len(clips) == 10 and len(list(clips)) == 10
