"""Latent degradation (DEG_latent): the Stage II starting point."""

from __future__ import annotations

import torch

from .config import DEFAULT_NOISE_STEP, STAGE2_SCALE_FACTOR
from .errors import FlashVideoInputError
from .layout import check_latent
from .rng import cpu_generator, randn
from .schedule import zero_snr_alphas_cumprod


def check_noise_step(noise_step: int) -> None:
    """Raise unless noise_step is an int in 0..999."""
    if isinstance(noise_step, bool) or not isinstance(noise_step, int) or not 0 <= noise_step <= 999:
        raise FlashVideoInputError(
            f"noise_step={noise_step!r} must be an integer 0-999 (default 675; paper recommends 650-750)."
        )


def degrade_latent(
    latent: torch.Tensor,
    noise_step: int = DEFAULT_NOISE_STEP,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    scale_factor: float = STAGE2_SCALE_FACTOR,
) -> torch.Tensor:
    """Z0 = sqrt(a_k) Z + sqrt(1 - a_k) eps on the scaled latent Z = latent * scale_factor.

    latent: RAW VAE latent (B, 16, T, h, w). Returns the degraded latent back in RAW space
    (Z0 / scale_factor), same dtype and device. eps is drawn on CPU from `generator` (or a new one
    from `seed`), so the result is identical on every device.
    """
    check_latent(latent, "latent")
    check_noise_step(noise_step)
    if generator is None:
        if seed is None:
            raise FlashVideoInputError("degrade_latent needs a seed or a generator (reproducibility).")
        generator = cpu_generator(seed)
    alpha = zero_snr_alphas_cumprod()[noise_step].item()
    eps = randn(tuple(latent.shape), generator, device=latent.device, dtype=torch.float32)
    scaled = latent.float() * scale_factor
    degraded = alpha**0.5 * scaled + (1.0 - alpha) ** 0.5 * eps
    return (degraded / scale_factor).to(latent.dtype)
