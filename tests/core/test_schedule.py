"""Schedules and time grids match SPEC.md, the official SAT code and diffusers' CogVideoX scheduler."""

import math

import numpy as np
import pytest
import torch

from flashvideo_core.errors import FlashVideoInputError
from flashvideo_core.sampling.schedule import (
    dynamic_cfg_scale,
    stage1_alphas,
    stage1_timesteps,
    stage2_model_timesteps,
    stage2_time_grid,
    zero_snr_alphas_cumprod,
)

SPEC_ALPHAS = {600: 0.127520, 650: 0.086447, 675: 0.069674, 700: 0.055250, 750: 0.032799, 900: 0.002960}


def test_alphas_cumprod_reproduce_the_spec_reference_values():
    alphas = zero_snr_alphas_cumprod()
    assert alphas.dtype == torch.float64 and alphas.shape == (1000,)
    for step, value in SPEC_ALPHAS.items():
        assert alphas[step].item() == pytest.approx(value, abs=1e-6)
    assert alphas[675].sqrt().item() == pytest.approx(0.263959, abs=1e-6)
    assert (1 - alphas[675]).sqrt().item() == pytest.approx(0.964534, abs=1e-6)
    assert alphas[-1].item() == 0.0  # zero terminal SNR
    assert alphas[0].item() == pytest.approx(1 - 0.00085, rel=1e-12)  # first value kept by the rescale
    assert torch.all(alphas[1:] < alphas[:-1])


def test_alphas_cumprod_match_diffusers_cogvideox_dpm_scheduler_with_the_5b_config():
    from diffusers import CogVideoXDPMScheduler

    scheduler = CogVideoXDPMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", rescale_betas_zero_snr=True,
        snr_shift_scale=1.0, prediction_type="v_prediction", timestep_spacing="trailing",
    )
    assert torch.allclose(zero_snr_alphas_cumprod(), scheduler.alphas_cumprod.double(), atol=1e-6)


def test_snr_shift_three_is_the_2b_schedule_not_flashvideos():
    from diffusers import CogVideoXDPMScheduler

    shifted = zero_snr_alphas_cumprod(snr_shift=3.0)
    assert shifted[675].item() != pytest.approx(SPEC_ALPHAS[675], abs=1e-4)
    scheduler = CogVideoXDPMScheduler(rescale_betas_zero_snr=True, snr_shift_scale=3.0)
    assert torch.allclose(shifted, scheduler.alphas_cumprod.double(), atol=1e-6)


def test_stage1_timesteps_use_the_official_spacing():
    steps = stage1_timesteps(51)
    assert len(steps) == 51
    assert steps[:4] == [999, 979, 959, 940] and steps[-1] == 19
    assert all(a > b for a, b in zip(steps, steps[1:], strict=False))
    assert stage1_timesteps(1) == [999]
    # numpy's rounding, as the official discretizer (for 99 it differs from plain float math)
    for n in (2, 7, 50, 99, 185, 999, 1000):
        assert stage1_timesteps(n) == np.linspace(999, 0, n, endpoint=False).astype(int).tolist()


@pytest.mark.parametrize("steps", [10, 50])
def test_stage1_timesteps_equal_diffusers_trailing_spacing_when_the_count_divides_1000(steps):
    from diffusers import CogVideoXDPMScheduler

    scheduler = CogVideoXDPMScheduler(timestep_spacing="trailing")
    scheduler.set_timesteps(steps)
    assert stage1_timesteps(steps) == scheduler.timesteps.tolist()


@pytest.mark.parametrize("bad", [0, -1, 1001, 2.5, "51", True])
def test_stage1_timesteps_reject_bad_step_counts(bad):
    with pytest.raises(FlashVideoInputError, match="steps="):
        stage1_timesteps(bad)


def _official_subset_sqrt_alphas(timesteps_ascending):
    """Transcription of the official ZeroSNRDDPMDiscretization.get_sigmas(n) (shift 1.0), in fp32."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    alphas_cumprod = np.cumprod(1.0 - betas)[timesteps_ascending]
    root = torch.tensor(alphas_cumprod, dtype=torch.float32).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    return (root - last) * first / (first - last)


def test_official_stage1_alphas_rescale_the_visited_steps_and_snap_the_denoiser_to_the_full_table():
    timesteps = stage1_timesteps(51)
    alphas = stage1_alphas(timesteps, "official")
    ascending = sorted(timesteps)
    subset = _official_subset_sqrt_alphas(ascending)
    assert torch.allclose(alphas.sampler[ascending].sqrt().float(), subset, atol=2e-7)
    full_sqrt = zero_snr_alphas_cumprod().sqrt().float()
    nearest = [(full_sqrt - value).abs().argmin().item() for value in subset]  # DiscreteDenoiser.sigma_to_idx
    assert torch.allclose(alphas.denoiser[ascending], zero_snr_alphas_cumprod()[nearest])
    assert nearest[:3] == [18, 38, 57] and nearest[-3:] == [959, 979, 999]  # t - 1 at the smallest steps
    assert sum(n != t for n, t in zip(nearest, ascending, strict=True)) == 11
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    assert alphas.sampler[19].item() == pytest.approx(np.cumprod(1 - betas)[19], rel=1e-12)  # kept un-rescaled
    assert alphas.sampler[999].item() == 0.0
    unvisited = [t for t in range(1000) if t not in set(timesteps)]
    assert torch.equal(alphas.sampler[unvisited], zero_snr_alphas_cumprod()[unvisited])


def test_diffusers_stage1_alphas_are_the_plain_table_and_one_step_is_safe():
    plain = zero_snr_alphas_cumprod()
    alphas = stage1_alphas(stage1_timesteps(51), "diffusers")
    assert torch.equal(alphas.sampler, plain) and torch.equal(alphas.denoiser, plain)
    single = stage1_alphas([999], "official")
    assert torch.isfinite(single.sampler).all() and single.sampler[999] == 0.0
    with pytest.raises(FlashVideoInputError, match="rule='paper'"):
        stage1_alphas([999], "paper")


def test_dynamic_cfg_is_the_official_formula_in_the_timestep_value():
    for t in (999, 979, 940, 500, 51, 19, 0):
        base = (51 - t) / 51
        expected = 1 + 8 * (1 - math.cos(math.pi * base**5)) / 2
        assert dynamic_cfg_scale(t) == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert dynamic_cfg_scale(0) == pytest.approx(9.0)  # (51 - 0) / 51 = 1 -> 1 + 8
    assert dynamic_cfg_scale(51) == pytest.approx(1.0)
    assert dynamic_cfg_scale(19, scale=6.0, exponent=5.0, num_steps=50) == pytest.approx(
        1 + 6 * (1 - math.cos(math.pi * (31 / 50) ** 5)) / 2
    )


def test_dynamic_cfg_can_be_constant():
    assert dynamic_cfg_scale(999, scale=8.0, dynamic=False) == 8.0
    assert dynamic_cfg_scale(19, scale=6.5, dynamic=False) == 6.5
    # exponent 0: base^0 = 1 -> cos(pi) = -1 -> 1 + scale at every timestep
    assert all(dynamic_cfg_scale(t, 7.0, exponent=0.0) == pytest.approx(8.0) for t in (999, 500, 19))


def test_stage2_time_grid_values_from_spec():
    grid = stage2_time_grid(5, 2.5)
    assert grid.dtype == torch.float64 and grid.shape == (6,)
    assert [round(v, 4) for v in grid.tolist()] == [0.0, 0.0909, 0.2105, 0.375, 0.6154, 1.0]
    timesteps = stage2_model_timesteps(stage2_time_grid(4, 2.5))
    assert timesteps.tolist() == pytest.approx([1000.0, 882.35294, 714.28571, 454.54545], abs=1e-4)


def test_stage2_time_grid_in_bf16_is_the_official_bf16_grid():
    grid = stage2_time_grid(5, 2.5, dtype=torch.bfloat16)
    assert grid.dtype == torch.float64
    assert grid.tolist() == [0.0, 0.09375, 0.21484375, 0.375, 0.6171875, 1.0]
    assert torch.equal(grid.to(torch.bfloat16).double(), grid)  # holds exactly representable bf16 values


@pytest.mark.parametrize("steps, shift", [(1, 2.5), (4, 1.0), (6, 3.5), (50, 2.0), (5, 0.5)])
def test_stage2_time_grid_is_monotone_from_zero_to_one(steps, shift):
    grid = stage2_time_grid(steps, shift)
    assert grid[0] == 0.0 and grid[-1] == 1.0
    assert torch.all(grid[1:] > grid[:-1])
    model_t = stage2_model_timesteps(grid)
    assert model_t.shape == (steps,) and model_t[0] == 1000.0 and torch.all(model_t > 0)


def test_shift_one_is_the_uniform_grid():
    assert torch.allclose(stage2_time_grid(4, 1.0), torch.linspace(0, 1, 5, dtype=torch.float64))


@pytest.mark.parametrize("kwargs, message", [
    ({"num_steps": 0}, "steps=0"), ({"num_steps": 2.0}, "steps=2.0"),
    ({"shift": 0.0}, "shift=0.0"), ({"shift": float("nan")}, "shift=nan"),
])
def test_stage2_grid_rejects_bad_settings(kwargs, message):
    with pytest.raises(FlashVideoInputError, match=message):
        stage2_time_grid(**kwargs)
