"""Latent degradation for training (DEG_latent, paper section 3.3): the inference formula, per sample.

Z_LR = sqrt(a_k) Z + sqrt(1 - a_k) eps on the SCALED latent Z (raw VAE latent x 1.15258426, what the
Stage II model sees), a = sampling.schedule.zero_snr_alphas_cumprod() (SNR shift 1.0), eps ~ N(0, I)
drawn in fp32 on CPU from the generator (rng.randn). The noise step k of each sample is drawn
uniformly from a range (paper: 600-900 at first, then 650-750) and is also what the model's
noise-step embedding is fed, as the integer k (the loop's job). For one sample at k = 675 this is
exactly sampling.degradation.add_degradation_noise, which works in raw-latent space.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import FlashVideoInputError
from ..rng import randn
from ..sampling.degradation import check_noise_step
from ..sampling.schedule import zero_snr_alphas_cumprod

DEFAULT_NOISE_STEPS = (600, 900)
"""The paper's first training range; it then narrows to FINE_NOISE_STEPS."""

FINE_NOISE_STEPS = (650, 750)


@dataclass(frozen=True)
class LatentDegradation:
    """DEG_latent's noise-step range (low, high), inclusive integers 0..999, drawn uniformly per sample."""

    noise_steps: tuple[int, int] = DEFAULT_NOISE_STEPS

    def __post_init__(self) -> None:
        if isinstance(self.noise_steps, list):  # from JSON or a schedule file
            object.__setattr__(self, "noise_steps", tuple(self.noise_steps))
        if not isinstance(self.noise_steps, tuple) or len(self.noise_steps) != 2:
            raise FlashVideoInputError(f"noise_steps={self.noise_steps!r} must be a (low, high) pair of integer "
                                       f"noise steps 0-999 (paper: {DEFAULT_NOISE_STEPS}, then {FINE_NOISE_STEPS}).")
        low, high = self.noise_steps
        check_noise_step(low, "noise_steps low")
        check_noise_step(high, "noise_steps high")
        if low > high:
            raise FlashVideoInputError(f"noise_steps={self.noise_steps!r}: low must not exceed high.")


def sample_noise_steps(batch: int, settings: LatentDegradation, generator: torch.Generator) -> torch.Tensor:
    """(batch,) int64 noise steps, uniform over settings.noise_steps inclusive, from the CPU `generator`."""
    low, high = settings.noise_steps
    return torch.randint(low, high + 1, (batch,), generator=generator, dtype=torch.long)


def degrade_latents(z: torch.Tensor, noise_steps: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Z_LR = sqrt(a_k) z + sqrt(1 - a_k) eps, each sample b at its own k = noise_steps[b].

    z: SCALED latent (B, C, T, h, w) (raw VAE latent x the Stage II scale factor). noise_steps: (B,)
    integers 0..999 (a tensor or a sequence). eps (B, C, T, h, w) is drawn in fp32 on CPU from
    `generator` in one call, then moved to z's device; the sum is formed in fp32. Returns z's shape,
    dtype and device.
    """
    if not isinstance(z, torch.Tensor) or z.ndim != 5:
        shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise FlashVideoInputError(f"z must be a latent (batch, channels, frames, h, w); got {shape}.")
    steps = torch.as_tensor(noise_steps).to("cpu")
    if steps.shape != (z.shape[0],) or steps.is_floating_point() or steps.dtype == torch.bool:
        raise FlashVideoInputError(f"noise_steps must be {z.shape[0]} integers (one per sample); got "
                                   f"{steps.dtype} of shape {tuple(steps.shape)}.")
    if bool(((steps < 0) | (steps > 999)).any()):
        raise FlashVideoInputError(f"noise_steps {steps.tolist()} must all be 0-999.")
    alphas = zero_snr_alphas_cumprod()[steps.long()]  # (B,) float64
    shape = (-1,) + (1,) * (z.ndim - 1)
    signal = alphas.sqrt().to(torch.float32).view(shape).to(z.device)
    noise_scale = (1.0 - alphas).sqrt().to(torch.float32).view(shape).to(z.device)
    eps = randn(tuple(z.shape), generator, device=z.device)  # (B, C, T, h, w) fp32
    return (signal * z.float() + noise_scale * eps).to(z.dtype)
