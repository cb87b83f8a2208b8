"""Stage I sampler: stochastic DPM++(2M) in alpha space with v-prediction (official VPSDEDPMPP2M)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .progress import ProgressCallback, report
from .rng import randn

Denoiser = Callable[[torch.Tensor, int], torch.Tensor]
"""denoise(x, t) -> guided x0 estimate, both in the sampler's (scaled) space."""


def _log_snr(alpha_sqrt: float) -> float:
    """lambda = log(a / sqrt(1 - a^2)) for a = sqrt(alphas_cumprod)."""
    return float(torch.tensor(alpha_sqrt**2 / (1.0 - alpha_sqrt**2), dtype=torch.float64).sqrt().log())


def sample_dpmpp_2m_v(
    denoise: Denoiser,
    x: torch.Tensor,
    timesteps: list[int],
    alphas_cumprod: torch.Tensor,
    generator: torch.Generator,
    callback: ProgressCallback | None = None,
) -> torch.Tensor:
    """Run the official Stage I sampler; returns the final x0 (same layout as x, fp32).

    x: scaled initial noise (B, C, T, h, w). timesteps: DDPM timesteps noisiest first
    (schedule.stage1_timesteps). With a = sqrt(alphas_cumprod[t]), a' the next one (1 after the
    last), lambda = log(a / sqrt(1 - a^2)), h = lambda' - lambda:
      x' = sqrt((1-a'^2)/(1-a^2)) e^-h x - expm1(-2h) a' D + sqrt(1-a'^2) sqrt(1-e^-2h) noise
    with D = x0 on the first step and D = (1 + 1/2r) x0 - 1/2r x0_prev later (r = h_prev / h).
    The last step returns x0. As in the official code, every second-order step first draws (and
    discards) the first-order step's noise, so a seeded generator is consumed the same way.
    """
    alphas_sqrt = [alphas_cumprod[t].item() ** 0.5 for t in timesteps] + [1.0]
    x = x.float()
    old_x0, h_last = None, None
    total = len(timesteps)
    for i, t in enumerate(timesteps):
        x0 = denoise(x, t).float()
        report(callback, "stage1", i + 1, total, x0)
        if i == total - 1:
            return x0
        a, a_next = alphas_sqrt[i], alphas_sqrt[i + 1]
        h = _log_snr(a_next) - _log_snr(a)
        keep = ((1.0 - a_next**2) / (1.0 - a**2)) ** 0.5 * torch.tensor(-h, dtype=torch.float64).exp().item()
        toward_x0 = torch.tensor(-2.0 * h, dtype=torch.float64).expm1().item() * a_next
        noise_scale = (1.0 - a_next**2) ** 0.5 * (1.0 - torch.tensor(-2.0 * h, dtype=torch.float64).exp().item()) ** 0.5
        noise = randn(tuple(x.shape), generator, device=x.device)
        if old_x0 is not None:
            noise = randn(tuple(x.shape), generator, device=x.device)  # the official first draw is discarded
            r = h_last / h
            x0_used = (1.0 + 1.0 / (2.0 * r)) * x0 - (1.0 / (2.0 * r)) * old_x0
        else:
            x0_used = x0
        x = keep * x - toward_x0 * x0_used + noise_scale * noise
        old_x0, h_last = x0, h
    return x
