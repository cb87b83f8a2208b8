"""Noise schedules and time grids of both stages.

- The shared "ZeroSNR DDPM" schedule (1000 steps) used by Stage I sampling and latent degradation.
- Stage I timestep spacing, the alpha tables its sampler and denoiser read, and the official dynamic CFG.
- Stage II's shifted flow-matching time grid and its model timesteps 1000 - 1000 t.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import FlashVideoInputError

NUM_TRAIN_STEPS = 1000
BETA_START, BETA_END = 0.00085, 0.012
STAGE1_ALPHA_RULES = ("official", "diffusers")


def _shifted_alphas_cumprod(num_train_steps: int, snr_shift: float) -> torch.Tensor:
    """cumprod(1 - beta) of the scaled_linear betas, SNR-shifted; float64 (num_train_steps,), not rescaled."""
    betas = torch.linspace(BETA_START**0.5, BETA_END**0.5, num_train_steps, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    return alphas_cumprod / (snr_shift + (1.0 - snr_shift) * alphas_cumprod)


def _rescale_zero_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Shift and scale sqrt(alphas_cumprod) so the last entry is 0 and the first is unchanged."""
    root = alphas_cumprod.sqrt()
    first, last = root[0].clone(), root[-1].clone()
    return ((root - last) * first / (first - last)) ** 2


def zero_snr_alphas_cumprod(num_train_steps: int = NUM_TRAIN_STEPS, snr_shift: float = 1.0) -> torch.Tensor:
    """alphas_cumprod of the ZeroSNR schedule, float64 (num_train_steps,), index = DDPM timestep.

    betas = linspace(sqrt(0.00085), sqrt(0.012))^2 -> cumprod(1 - beta) -> SNR shift a / (s + (1 - s) a)
    -> rescale sqrt(alphas_cumprod) so the last step has exactly zero SNR (first value kept).
    Equals diffusers' CogVideoXDPMScheduler with the CogVideoX-5B config (rescale_betas_zero_snr=True,
    snr_shift_scale=1.0). FlashVideo uses snr_shift = 1.0 everywhere at inference (3.0 is CogVideoX-2B's).
    """
    return _rescale_zero_snr(_shifted_alphas_cumprod(num_train_steps, snr_shift))


def check_stage1_steps(num_steps: int, num_train_steps: int = NUM_TRAIN_STEPS) -> None:
    """Raise unless num_steps is an int in 1..num_train_steps."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral) or not (
        1 <= num_steps <= num_train_steps
    ):
        raise FlashVideoInputError(
            f"steps={num_steps!r} must be an integer in 1..{num_train_steps} (official Stage I: 51)."
        )


def stage1_timesteps(num_steps: int = 51, num_train_steps: int = NUM_TRAIN_STEPS) -> list[int]:
    """DDPM timesteps Stage I visits, noisiest first: numpy linspace(999, 0, n, endpoint=False) cast to int.

    51 steps -> [999, 979, 959, 940, ..., 19] (the official spacing; computed with numpy exactly as the
    official discretizer, because a float formula rounds differently for some n, e.g. 99).
    For n dividing 1000 (10, 50, ...) this equals diffusers' "trailing" spacing; for 51 it does not.
    """
    check_stage1_steps(num_steps, num_train_steps)
    top = num_train_steps - 1
    return [int(t) for t in np.linspace(top, 0, int(num_steps), endpoint=False).astype(np.int64)]


@dataclass(frozen=True)
class Stage1Alphas:
    """The alphas_cumprod tables Stage I reads, float64 (1000,), indexed by DDPM timestep.

    sampler: the DPM++ step coefficients (a = sqrt of the entry at the current / next timestep).
    denoiser: v-prediction to x0, x0 = sqrt(a) x - sqrt(1 - a) v.
    """

    sampler: torch.Tensor
    denoiser: torch.Tensor


def stage1_alphas(timesteps: list[int], rule: str = "official", snr_shift: float = 1.0) -> Stage1Alphas:
    """The alpha tables for a Stage I run over `timesteps` (schedule.stage1_timesteps).

    rule "diffusers": both tables are zero_snr_alphas_cumprod (= CogVideoXDPMScheduler).
    rule "official": what the official SAT code does. Its sampler applies the zero-SNR rescale to the
    VISITED timesteps only (ZeroSNRDDPMDiscretization.get_sigmas(n)), so the smallest visited timestep
    (19 for 51 steps) keeps its un-rescaled value and every entry is up to 0.07 % above the 1000-step
    table; its DiscreteDenoiser then snaps that value to the nearest entry of the 1000-step table for
    the x0 formula, which for 51 steps is the entry of timestep t - 1 at the 11 smallest timesteps.
    Entries of timesteps that are not visited are the plain 1000-step values in both tables.
    """
    if rule not in STAGE1_ALPHA_RULES:
        raise FlashVideoInputError(f"schedule rule={rule!r} must be one of {STAGE1_ALPHA_RULES}.")
    full = zero_snr_alphas_cumprod(snr_shift=snr_shift)
    if rule == "diffusers" or len(timesteps) < 2:
        return Stage1Alphas(full, full)  # one step visits only t=999, whose alpha is 0 in every rule
    visited = torch.tensor(sorted(timesteps))  # ascending, as the official discretizer indexes them
    subset = _rescale_zero_snr(_shifted_alphas_cumprod(NUM_TRAIN_STEPS, snr_shift)[visited])
    sampler = full.clone()
    sampler[visited] = subset
    nearest = (subset.sqrt()[:, None] - full.sqrt()[None, :]).abs().argmin(dim=1)  # (n,) table index
    denoiser = full.clone()
    denoiser[visited] = full[nearest]
    return Stage1Alphas(sampler, denoiser)


def dynamic_cfg_scale(
    timestep: float, scale: float = 8.0, exponent: float = 5.0, num_steps: int = 51, dynamic: bool = True
) -> float:
    """The Stage I guidance scale at DDPM timestep `timestep` (dynamic=False: just `scale`).

    s = 1 + scale (1 - cos(pi ((N - t) / N)^exponent)) / 2, as the official code computes it:
    `DynamicCFG.scale_schedule_dy` (guiders.py) takes (step_index / N)^exp with N = the guider's
    num_steps (51 in stage1.yaml), and `VideoDDIMSampler.denoise` (sampling.py) passes
    step_index = sampler.num_steps - timestep, where sampler.num_steps is also 51 in stage1.yaml and
    timestep is the DDPM timestep VALUE (999, 979, ...), not the step index. So t = 999 gives
    ((51 - 999)/51)^5 = -2.2e6 and the scale is an essentially arbitrary value in [1, 1 + scale] for all
    but the smallest timesteps (a quirk shared with CogVideoX-SAT and diffusers' `use_dynamic_cfg`,
    which uses the step count instead of 51). The official code only runs 51 steps, so keep N = 51
    for other step counts to keep the same curve in t. cos is even, so |base|^exponent is used,
    which equals the official value for every exponent it can compute (and is defined for all).
    """
    if not dynamic:
        return float(scale)
    base = (num_steps - float(timestep)) / num_steps
    return 1.0 + scale * (1.0 - math.cos(math.pi * abs(base) ** exponent)) / 2.0


def stage2_time_grid(num_steps: int = 4, shift: float = 2.5, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Flow time points, float64 (num_steps + 1,), from 0 (degraded latent) to 1 (high-res latent).

    t = linspace(0, 1, S + 1), then t <- 1 - s (1 - t) / (1 + (s - 1)(1 - t)).
    S = 5, s = 2.5: [0, .0909, .2105, .375, .6154, 1]. `dtype` is the precision the grid is computed in
    (returned as float64 holding those values): the official code computes it in the ODE's dtype, so
    bf16 gives its bf16 grid (S = 5: [0, .09375, .21484, .375, .61719, 1]).
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral) or num_steps < 1:
        raise FlashVideoInputError(f"steps={num_steps!r} must be an integer >= 1 (paper: 4-6; official scripts 5).")
    if not isinstance(shift, numbers.Real) or not math.isfinite(shift) or not shift > 0:
        raise FlashVideoInputError(f"shift={shift!r} must be a positive number (official 2.5; range 2-3.5).")
    t = torch.linspace(0.0, 1.0, int(num_steps) + 1, dtype=dtype)
    shifted = 1.0 - shift * (1.0 - t) / (1.0 + (shift - 1.0) * (1.0 - t))
    return shifted.to(torch.float64)


def stage2_model_timestep(t: torch.Tensor) -> torch.Tensor:
    """Flow time t (a tensor of any shape and dtype) -> the timestep the Stage II model sees, 1000 - 1000 t.

    Computed in t's own dtype, as the official ODE computes it in its dtype: in bf16 both the product
    and the difference are bf16-rounded exactly as in the official bf16 runs.
    """
    return 1000 - t * 1000


def stage2_model_timesteps(grid: torch.Tensor) -> torch.Tensor:
    """Timesteps the Stage II model sees at every grid point but the last (float64 (S,)): stage2_model_timestep."""
    return stage2_model_timestep(grid[:-1].to(torch.float64))
