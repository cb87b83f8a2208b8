"""Latent degradation (DEG_latent): the Stage II starting point."""

from __future__ import annotations

import numbers

import torch

from ..config import DEFAULT_NOISE_STEP, STAGE2_SCALE_FACTOR
from ..errors import FlashVideoInputError
from ..layout import check_latent
from ..rng import cpu_generator, randn
from .schedule import NUM_TRAIN_STEPS, zero_snr_alphas_cumprod


def check_noise_step(noise_step: int, name: str = "noise_step") -> None:
    """Raise unless noise_step is an integer DDPM step 0..999."""
    if isinstance(noise_step, bool) or not isinstance(noise_step, numbers.Integral) or not (
        0 <= noise_step < NUM_TRAIN_STEPS
    ):
        raise FlashVideoInputError(
            f"{name}={noise_step!r} must be an integer 0-{NUM_TRAIN_STEPS - 1} "
            f"(default {DEFAULT_NOISE_STEP}; the paper recommends 650-750 for 49 frames)."
        )


def degrade_latent(
    latent: torch.Tensor,
    noise_step: int = DEFAULT_NOISE_STEP,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    scale_factor: float = STAGE2_SCALE_FACTOR,
) -> torch.Tensor:
    """Z0 = sqrt(a_k) Z + sqrt(1 - a_k) eps on the scaled latent Z = latent * scale_factor.

    latent: RAW VAE latent (B, 16, T, h, w). a = zero_snr_alphas_cumprod() (SNR shift 1.0, exact index
    k = noise_step, as the official code: sqrt(a_675) = 0.263959). eps ~ N(0, I) is drawn in fp32 on CPU
    from `generator` (or a new one seeded with `seed`; one of the two is required), so the result is the
    same on every device. Returns Z0 / scale_factor (RAW space), same shape, dtype and device as `latent`.
    """
    check_latent(latent, "latent")
    check_noise_step(noise_step)
    if generator is None:
        if seed is None:
            raise FlashVideoInputError("degrade_latent needs a seed or a generator (the noise must be reproducible).")
        generator = cpu_generator(seed)
    return add_degradation_noise(latent, noise_step, generator, scale_factor)


def add_degradation_noise(latent: torch.Tensor, noise_step: int, generator: torch.Generator | None,
                          scale_factor: float = STAGE2_SCALE_FACTOR, noise: torch.Tensor | None = None) -> torch.Tensor:
    """degrade_latent's formula without its checks, for callers whose latent and noise step are already
    checked (the Stage II chain: a latent it encoded, Stage2Settings.noise_step). Same inputs and output.

    noise: eps itself, shaped like latent (enhance's latent window blends draw it per latent frame of the
    clip); None: drawn from `generator`.
    """
    alpha = zero_snr_alphas_cumprod()[int(noise_step)].item()
    if noise is None:
        noise = randn(tuple(latent.shape), generator, device=latent.device)  # (B, 16, T, h, w) fp32
    elif noise.shape != latent.shape:
        raise FlashVideoInputError(f"degradation noise {tuple(noise.shape)} must be shaped like the latent "
                                   f"{tuple(latent.shape)}.")
    scaled = latent.float() * scale_factor
    degraded = alpha**0.5 * scaled + (1.0 - alpha) ** 0.5 * noise.to(device=latent.device, dtype=torch.float32)
    return (degraded / scale_factor).to(latent.dtype)
