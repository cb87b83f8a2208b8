"""Schedules and time grids match the numbers in SPEC.md and diffusers' CogVideoX schedulers."""

import math

import pytest
import torch

from flashvideo_core.errors import FlashVideoInputError
from flashvideo_core.schedule import (
    dynamic_cfg_scale,
    stage1_timesteps,
    stage2_model_timesteps,
    stage2_time_grid,
    zero_snr_alphas_cumprod,
)

SPEC_ALPHAS = {600: 0.127520, 650: 0.086447, 675: 0.069674, 700: 0.055250, 750: 0.032799, 900: 0.002960}


def test_alphas_cumprod_reference_values():
    alphas = zero_snr_alphas_cumprod()
    for step, value in SPEC_ALPHAS.items():
        assert alphas[step].item() == pytest.approx(value, abs=1e-6)
    assert alphas[675].sqrt().item() == pytest.approx(0.263959, abs=1e-6)
    assert (1 - alphas[675]).sqrt().item() == pytest.approx(0.964534, abs=1e-6)
    assert alphas[-1].item() == 0.0


def test_alphas_cumprod_match_diffusers_cogvideox_5b_config():
    from diffusers import CogVideoXDPMScheduler

    scheduler = CogVideoXDPMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", rescale_betas_zero_snr=True,
        snr_shift_scale=1.0, prediction_type="v_prediction",
    )
    assert torch.allclose(zero_snr_alphas_cumprod(), scheduler.alphas_cumprod.double(), atol=1e-6)


def test_snr_shift_three_is_a_different_schedule():
    assert zero_snr_alphas_cumprod(snr_shift=3.0)[675].item() != pytest.approx(SPEC_ALPHAS[675], abs=1e-4)


def test_stage1_official_timesteps():
    steps = stage1_timesteps(51)
    assert len(steps) == 51
    assert steps[:4] == [999, 979, 959, 940]
    assert steps[-1] == 19
    assert all(a > b for a, b in zip(steps, steps[1:], strict=False))
    assert stage1_timesteps(1) == [999]
    with pytest.raises(FlashVideoInputError, match="steps=0"):
        stage1_timesteps(0)


def test_dynamic_cfg_follows_the_official_formula():
    for t in (999, 940, 500, 51, 19, 0):
        base = (51 - t) / 51
        expected = 1 + 8 * (1 - math.cos(math.pi * base**5)) / 2
        assert dynamic_cfg_scale(t) == pytest.approx(expected, rel=1e-12)
    assert dynamic_cfg_scale(0) == pytest.approx(9.0)  # (51 - 0) / 51 = 1 -> 1 + 8
    assert dynamic_cfg_scale(51) == pytest.approx(1.0)


def test_stage2_time_grid_values():
    grid = stage2_time_grid(5, 2.5)
    assert [round(v, 4) for v in grid.tolist()] == [0.0, 0.0909, 0.2105, 0.375, 0.6154, 1.0]
    timesteps = stage2_model_timesteps(stage2_time_grid(4, 2.5))
    assert timesteps.tolist() == pytest.approx([1000.0, 882.35294, 714.28571, 454.54545], abs=1e-4)


@pytest.mark.parametrize("steps, shift", [(1, 2.5), (4, 1.0), (6, 3.5), (50, 2.0)])
def test_stage2_time_grid_is_monotone_from_zero_to_one(steps, shift):
    grid = stage2_time_grid(steps, shift)
    assert grid[0] == 0.0 and grid[-1] == 1.0
    assert torch.all(grid[1:] > grid[:-1])


def test_stage2_grid_rejects_bad_settings():
    with pytest.raises(FlashVideoInputError, match="steps"):
        stage2_time_grid(0)
    with pytest.raises(FlashVideoInputError, match="shift"):
        stage2_time_grid(4, 0.0)
