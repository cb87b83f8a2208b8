"""Stage I sampler: stochastic DPM++(2M) in alpha space with v-prediction (official VPSDEDPMPP2MSampler)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..progress import ProgressCallback, report
from ..rng import randn

Denoiser = Callable[[torch.Tensor, int], torch.Tensor]
"""denoise(x, t) -> guided x0 estimate; x and x0 in the sampler's (scaled) space, t the DDPM timestep."""


def _log_snr(alpha_sqrt: float) -> float:
    """lambda = log(a / sqrt(1 - a^2)) for a = sqrt(alphas_cumprod); -inf at a = 0, +inf at a = 1."""
    if alpha_sqrt <= 0.0:
        return -math.inf
    if alpha_sqrt >= 1.0:
        return math.inf
    return math.log(alpha_sqrt / math.sqrt(1.0 - alpha_sqrt**2))


def sample_dpmpp_2m_v(
    denoise: Denoiser,
    x: torch.Tensor,
    timesteps: list[int],
    alphas_cumprod: torch.Tensor,
    generator: torch.Generator,
    callback: ProgressCallback | None = None,
) -> torch.Tensor:
    """Run the official Stage I sampler from noise `x`; returns the last x0 estimate, float32, x's layout.

    x: scaled initial noise (B, C, T, h, w). timesteps: DDPM timesteps, noisiest first
    (schedule.stage1_timesteps). alphas_cumprod: (1000,) table indexed by timestep
    (schedule.stage1_alphas(...).sampler for the official values). With a = sqrt(alphas_cumprod[t]),
    a' the next one, lambda = log(a / sqrt(1 - a^2)), h = lambda' - lambda:
      x' = sqrt((1 - a'^2) / (1 - a^2)) e^-h x + (1 - e^-2h) a' D + sqrt(1 - a'^2) sqrt(1 - e^-2h) noise
    with D = x0 on the first step and D = (1 + 1/2r) x0 - (1/2r) x0_prev later (r = h_prev / h).
    The last step returns x0 without drawing noise. Noise is drawn in fp32 on CPU from `generator`
    (rng.randn) and moved to x's device. As in the official code (which computes the first-order
    update, with its own torch.randn_like, before the second-order one and discards it), every
    second-order step draws two noise tensors and uses the second, so a seeded run consumes the
    generator the way the official sampler consumes torch's: 1 + 2 (n - 2) draws for n steps.
    callback gets ProgressEvent("stage1", i + 1, n, preview=x0) after each model call, x0 in x's space.
    """
    alphas_sqrt = [float(alphas_cumprod[t]) ** 0.5 for t in timesteps] + [1.0]
    x = x.float()
    total = len(timesteps)
    old_x0, h_last = None, None
    for i, t in enumerate(timesteps):
        x0 = denoise(x, t).float()
        report(callback, "stage1", i + 1, total, x0)
        if i == total - 1:
            return x0
        a, a_next = alphas_sqrt[i], alphas_sqrt[i + 1]
        h = _log_snr(a_next) - _log_snr(a)
        keep = math.sqrt((1.0 - a_next**2) / (1.0 - a**2)) * math.exp(-h)
        toward_x0 = -math.expm1(-2.0 * h) * a_next
        noise_scale = math.sqrt(1.0 - a_next**2) * math.sqrt(-math.expm1(-2.0 * h))
        noise = randn(tuple(x.shape), generator, device=x.device)
        if old_x0 is None:
            x0_used = x0
        else:
            noise = randn(tuple(x.shape), generator, device=x.device)  # the official first draw is discarded
            half_inv_r = h / (2.0 * h_last)  # 1 / 2r; 0 after the first step, whose h_last is +inf (a = 0)
            x0_used = (1.0 + half_inv_r) * x0 - half_inv_r * old_x0
        x = keep * x + toward_x0 * x0_used + noise_scale * noise
        old_x0, h_last = x0, h
    return x
