"""3D RoPE on the integer grid, and the FlashVideoTransformer's contract."""

import math

import pytest
import torch
from diffusers.models.embeddings import get_3d_rotary_pos_embed

from flashvideo_core import config
from flashvideo_core.errors import FlashVideoInputError
from flashvideo_core.model.rope import rope_3d
from flashvideo_core.model.transformer import build_transformer


def _formula_angle(t, y, x, dim):
    """Angle of one token at one head dim, written out from SPEC.md: t 16 / h 24 / w 24 at 64."""
    split = [(t, 16), (y, 24), (x, 24)]
    offset = 0
    for position, size in split:
        if dim < offset + size:
            pair = (dim - offset) // 2
            return position * 10000.0 ** (-(2 * pair) / size)
        offset += size
    raise AssertionError


@pytest.mark.parametrize("frames, grid_h, grid_w", [(13, 16, 30), (13, 67, 120)])
def test_rope_equals_the_integer_grid_formula_and_diffusers_slice_grid(frames, grid_h, grid_w):
    cos, sin = rope_3d(frames, grid_h, grid_w, 64)
    assert cos.shape == (frames * grid_h * grid_w, 64)
    ref_cos, ref_sin = get_3d_rotary_pos_embed(
        embed_dim=64, crops_coords=None, grid_size=(grid_h, grid_w), temporal_size=frames, use_real=True,
        grid_type="slice", max_size=(grid_h, grid_w),
    )
    assert torch.allclose(cos, ref_cos.float(), atol=1e-5) and torch.allclose(sin, ref_sin.float(), atol=1e-5)
    generator = torch.Generator().manual_seed(0)
    for token in torch.randint(0, cos.shape[0], (50,), generator=generator).tolist():
        t, rest = divmod(token, grid_h * grid_w)
        y, x = divmod(rest, grid_w)
        for dim in (0, 1, 14, 15, 16, 17, 39, 40, 41, 63):
            angle = _formula_angle(t, y, x, dim)
            assert cos[token, dim].item() == pytest.approx(math.cos(angle), abs=1e-5)
            assert sin[token, dim].item() == pytest.approx(math.sin(angle), abs=1e-5)


def _inputs(frames=2, height=6, width=10, text_dim=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(1, frames, 16, height, width, generator=gen), torch.randn(1, 7, text_dim, generator=gen)


@pytest.fixture(scope="module")
def stage2():
    return build_transformer(config.TINY_STAGE2, seed=0)


def test_forward_keeps_shape_at_odd_latent_sizes(stage2):
    for height, width in ((6, 10), (4, 4), (10, 2)):
        latents, text = _inputs(height=height, width=width)
        with torch.no_grad():
            out = stage2(latents, text, torch.tensor([500.0]), noise_step=675.0)
        assert out.shape == latents.shape


def test_stage2_needs_noise_step_and_both_extras_reach_the_output(stage2):
    latents, text = _inputs()
    with pytest.raises(FlashVideoInputError, match="noise_step"):
        stage2(latents, text, torch.tensor([500.0]))
    with torch.no_grad():
        base = stage2(latents, text, 500.0, noise_step=675.0)
        other_step = stage2(latents, text, 500.0, noise_step=676.0)
        longer = stage2(torch.cat([latents, latents], dim=1), text, 500.0, noise_step=675.0)
    assert not torch.allclose(base, other_step)
    assert not torch.allclose(base, longer[:, :2])


def test_positions_matter(stage2):
    latents, text = _inputs()
    flipped = latents.flip(-1)
    with torch.no_grad():
        out = stage2(latents, text, 500.0, noise_step=675.0)
        out_flipped = stage2(flipped, text, 500.0, noise_step=675.0)
    assert not torch.allclose(out.flip(-1), out_flipped, atol=1e-4)


def test_bad_shapes_are_named(stage2):
    latents, text = _inputs()
    with pytest.raises(FlashVideoInputError, match="multiple of the patch size"):
        stage2(latents[..., :5], text, 500.0, noise_step=675.0)
    with pytest.raises(FlashVideoInputError, match="text embedding"):
        stage2(latents, torch.zeros(1, 7, 4096), 500.0, noise_step=675.0)
    with pytest.raises(FlashVideoInputError, match="latents must be"):
        stage2(torch.zeros(1, 2, 4, 6, 10), text, 500.0, noise_step=675.0)


def test_official_head_dim_64_builds_and_runs():
    cfg = config.TransformerConfig(num_layers=1, num_heads=1, head_dim=64, time_embed_dim=32, text_dim=32)
    model = build_transformer(cfg, seed=0)
    latents, text = _inputs()
    with torch.no_grad():
        assert model(latents, text, 999.0).shape == latents.shape
