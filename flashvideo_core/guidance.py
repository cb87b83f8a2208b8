"""Classifier-free guidance around a FlashVideoTransformer, batched as the official code does.

The unconditional embedding is all zeros in both stages (never an encoded empty prompt).
Model contract: model(latents (B,T,C,h,w), text (B,L,D), timestep (B,), noise_step=None) -> (B,T,C,h,w).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .config import DEFAULT_NOISE_STEP, STAGE1_CFG, STAGE1_CFG_EXPONENT, STAGE1_STEPS, STAGE2_CFG
from .layout import latent_to_transformer, transformer_to_latent
from .schedule import dynamic_cfg_scale


def _model_dtype(model: torch.nn.Module) -> torch.dtype:
    for param in model.parameters():
        return param.dtype
    return torch.float32


def stage1_denoiser(
    model,
    cond: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    cfg: float = STAGE1_CFG,
    cfg_exponent: float = STAGE1_CFG_EXPONENT,
    num_steps: int = STAGE1_STEPS,
    dynamic_cfg: bool = True,
) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """denoise(x, t) -> guided x0 for the DPM++ sampler.

    x: scaled latent (B, C, T, h, w) fp32. The model runs on [uncond, cond] (zeros first) at
    timestep t (the DDPM integer, as float); v-prediction gives x0 = sqrt(a) x - sqrt(1-a) v; then
    x0 = x0_u + s_t (x0_c - x0_u), s_t = dynamic_cfg_scale(t, cfg, cfg_exponent, num_steps) (or cfg).
    """
    dtype = _model_dtype(model)

    def denoise(x: torch.Tensor, t: int) -> torch.Tensor:
        batch = x.shape[0]
        text = cond.to(x.device, dtype).expand(batch, -1, -1)
        texts = torch.cat([torch.zeros_like(text), text])
        hidden = latent_to_transformer(torch.cat([x, x])).to(dtype)
        timestep = torch.full((2 * batch,), float(t), device=x.device, dtype=dtype)
        with torch.no_grad():
            v = transformer_to_latent(model(hidden, texts, timestep)).float()
        a = alphas_cumprod[t].item()
        x0 = a**0.5 * torch.cat([x, x]) - (1.0 - a) ** 0.5 * v
        x0_u, x0_c = x0.chunk(2)
        scale = dynamic_cfg_scale(t, cfg, cfg_exponent, num_steps) if dynamic_cfg else cfg
        return x0_u + scale * (x0_c - x0_u)

    return denoise


def stage2_velocity(
    model,
    cond: torch.Tensor,
    cfg: float = STAGE2_CFG,
    noise_step: int = DEFAULT_NOISE_STEP,
    working_dtype: torch.dtype | None = None,
) -> Callable[[torch.Tensor, float], torch.Tensor]:
    """velocity(z, t) -> guided dz/dt for the Euler sampler.

    z: scaled latent (B, C, T, h, w). The model runs on [cond, uncond] (zeros second) at timestep
    1000 (1 - t); v = v_u + cfg (v_c - v_u). The noise step is written into a tensor of the ODE's
    working dtype, exactly as the official code does: 675 stays 675.0 in fp32 and becomes 676.0 in bf16.
    """
    dtype = working_dtype or _model_dtype(model)

    def velocity(z: torch.Tensor, t: float) -> torch.Tensor:
        batch = z.shape[0]
        text = cond.to(z.device, dtype).expand(batch, -1, -1)
        texts = torch.cat([text, torch.zeros_like(text)])
        hidden = latent_to_transformer(torch.cat([z, z])).to(dtype)
        timestep = torch.full((2 * batch,), 1000.0 * (1.0 - t), device=z.device, dtype=dtype)
        step = torch.full((2 * batch,), noise_step, device=z.device, dtype=dtype)
        with torch.no_grad():
            v = transformer_to_latent(model(hidden, texts, timestep, noise_step=step)).to(z.dtype)
        v_c, v_u = v.chunk(2)
        return v_u + cfg * (v_c - v_u)

    return velocity
