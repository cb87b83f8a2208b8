"""Noise schedules and time grids of both stages.

- The shared "ZeroSNR DDPM" schedule (1000 steps) used by Stage I sampling and latent degradation.
- Stage I timestep spacing and the official dynamic-CFG scale.
- Stage II's shifted flow-matching time grid and its model timesteps 1000 (1 - t).
"""

from __future__ import annotations

import math

import torch

from .errors import FlashVideoInputError

NUM_TRAIN_STEPS = 1000
BETA_START, BETA_END = 0.00085, 0.012


def zero_snr_alphas_cumprod(num_train_steps: int = NUM_TRAIN_STEPS, snr_shift: float = 1.0) -> torch.Tensor:
    """alphas_cumprod of the ZeroSNR schedule, float64 (num_train_steps,).

    scaled_linear betas -> cumprod(1 - beta) -> SNR shift a / (s + (1 - s) a) -> rescale
    sqrt(alphas_cumprod) so the last step has exactly zero SNR (first value kept).
    FlashVideo uses snr_shift = 1.0 everywhere at inference.
    """
    betas = torch.linspace(BETA_START**0.5, BETA_END**0.5, num_train_steps, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    alphas_cumprod = alphas_cumprod / (snr_shift + (1.0 - snr_shift) * alphas_cumprod)
    root = alphas_cumprod.sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * first / (first - last)
    return root**2


def stage1_timesteps(num_steps: int = 51, num_train_steps: int = NUM_TRAIN_STEPS) -> list[int]:
    """DDPM timesteps Stage I visits, noisiest first: int(linspace(999, 0, n, endpoint=False)).

    51 steps -> [999, 979, 959, 940, ..., 19] (the official spacing).
    """
    if not isinstance(num_steps, int) or not 1 <= num_steps <= num_train_steps:
        raise FlashVideoInputError(f"steps={num_steps!r} must be an integer in 1..{num_train_steps}.")
    top = num_train_steps - 1
    return [int(top - top * i / num_steps) for i in range(num_steps)]


def dynamic_cfg_scale(timestep: float, scale: float = 8.0, exponent: float = 5.0, num_steps: int = 51) -> float:
    """The official Stage I guidance scale at DDPM timestep `timestep`.

    The official DynamicCFG computes 1 + scale (1 - cos(pi ((N - t) / N)^exp)) / 2 with N the
    sampler's step count and t the DDPM timestep VALUE (not the step index), a quirk it shares with
    CogVideoX-SAT and diffusers `use_dynamic_cfg`. (N - t) / N is negative for t > N; for the official
    odd integer exponent the power keeps its sign, which `sign(b) |b|^exp` reproduces for any exponent.
    """
    base = (num_steps - float(timestep)) / num_steps
    powered = math.copysign(abs(base) ** exponent, base)
    return 1.0 + scale * (1.0 - math.cos(math.pi * powered)) / 2.0


def stage2_time_grid(num_steps: int = 4, shift: float = 2.5) -> torch.Tensor:
    """Flow time points, float64 (num_steps + 1,), from 0 (degraded latent) to 1 (high-res latent).

    t = linspace(0, 1, S + 1), then t <- 1 - s (1 - t) / (1 + (s - 1)(1 - t)).
    S = 5, s = 2.5: [0, .0909, .2105, .375, .6154, 1].
    """
    if not isinstance(num_steps, int) or num_steps < 1:
        raise FlashVideoInputError(f"steps={num_steps!r} must be an integer >= 1 (paper: 4-6).")
    if not shift > 0:
        raise FlashVideoInputError(f"shift={shift!r} must be positive (official 2.5; 2-3.5).")
    remaining = 1.0 - torch.linspace(0.0, 1.0, num_steps + 1, dtype=torch.float64)
    return 1.0 - shift * remaining / (1.0 + (shift - 1.0) * remaining)


def stage2_model_timesteps(grid: torch.Tensor) -> torch.Tensor:
    """Timesteps the Stage II model sees: 1000 (1 - t) for every grid point but the last."""
    return 1000.0 * (1.0 - grid[:-1])
