"""The Stage II training objective (the paper's Algorithm 1), written out exactly.

    t ~ U[0, 1] per sample
    Z_t = (1 - t) Z_LR + t Z_HR                    (t = 0: the degraded latent, t = 1: the clean one)
    loss = MSE( model(Z_t, text, 1000 (1 - t), k),  Z_HR - Z_LR )

Z_HR, Z_LR: SCALED latents (raw VAE latent x config.STAGE2_SCALE_FACTOR, or a codec's latent),
layout (B, C, T, h, w). The model's timestep is schedule.stage2_model_timestep(t) = 1000 - 1000 t,
the very function the inference guidance calls, and the noise step k (the DEG_latent step of each
sample) reaches the noise-step embedding as a float tensor, as sampling.guidance.stage2_velocity
passes it. The frame-count embedding is the model's own (from the latent frames). At inference the
Euler sampler integrates dz/dt = model(...) from Z_LR at t = 0 to t = 1, so the regression target
Z_HR - Z_LR is that velocity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import FlashVideoInputError
from ..layout import latent_to_transformer, transformer_to_latent
from ..sampling.schedule import stage2_model_timestep


def sample_times(batch: int, generator: torch.Generator) -> torch.Tensor:
    """t ~ U[0, 1), (batch,) float32 on CPU, drawn from the CPU `generator`."""
    return torch.rand((batch,), generator=generator, dtype=torch.float32)


def _per_sample(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) times -> (B, 1, 1, 1, 1) in like's dtype and device, for broadcasting over a latent."""
    if t.ndim != 1 or t.shape[0] != like.shape[0]:
        raise FlashVideoInputError(f"t must be (batch,) = ({like.shape[0]},); got {tuple(t.shape)}.")
    return t.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.ndim - 1)))


def flow_inputs(z_lr: torch.Tensor, z_hr: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Z_t, target) = ((1 - t) Z_LR + t Z_HR, Z_HR - Z_LR) for latents (B, C, T, h, w) and t (B,)."""
    if z_lr.shape != z_hr.shape:
        raise FlashVideoInputError(f"Z_LR {tuple(z_lr.shape)} and Z_HR {tuple(z_hr.shape)} must have one shape.")
    tt = _per_sample(t, z_hr)
    return (1.0 - tt) * z_lr + tt * z_hr, z_hr - z_lr


def model_velocity(model, z_t: torch.Tensor, text: torch.Tensor, t: torch.Tensor,
                   noise_steps: torch.Tensor) -> torch.Tensor:
    """The model's velocity at Z_t (B, C, T, h, w), flow time t (B,), text (B, L, D), noise steps (B,).

    Called exactly as at inference: latents in the transformer layout (B, T, C, h, w) in the model's
    input dtype, timestep stage2_model_timestep(t) (1000 - 1000 t, fp32 here), noise_step as a float
    tensor. Returns (B, C, T, h, w) in the model's output dtype.
    """
    timestep = stage2_model_timestep(t.to(device=z_t.device, dtype=torch.float32))
    step = torch.as_tensor(noise_steps, device=z_t.device).to(torch.float32).reshape(-1)
    out = model(latent_to_transformer(z_t), text, timestep, noise_step=step)
    return transformer_to_latent(out)


def stage2_loss(model, z_lr: torch.Tensor, z_hr: torch.Tensor, text: torch.Tensor, noise_steps: torch.Tensor,
                t: torch.Tensor) -> torch.Tensor:
    """Algorithm 1's loss, a scalar: mean over every element of (model(Z_t, ...) - (Z_HR - Z_LR))^2, in fp32.

    z_lr: the degraded latent (DEG_latent of the codec's latent of the DEG_pixel clip), z_hr: the
    clean latent, both (B, C, T, h, w); text (B, L, D) (zeros for the unconditional samples);
    noise_steps (B,) the DEG_latent step of each sample; t (B,) in [0, 1].
    """
    z_t, target = flow_inputs(z_lr, z_hr, t)
    prediction = model_velocity(model, z_t, text, t, noise_steps)
    return F.mse_loss(prediction.float(), target.float())
