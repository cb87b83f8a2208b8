"""Classifier-free guidance around a FlashVideoTransformer, batched as the official code does.

The unconditional embedding is all zeros in both stages (never an encoded empty prompt).
Model contract: model(latents (B, T, C, h, w), text (B, L, D), timestep (B,), noise_step=None) -> (B, T, C, h, w).
The callables built here take and return latents in latent layout (B, C, T, h, w).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..config import DEFAULT_NOISE_STEP, STAGE1_CFG, STAGE1_CFG_EXPONENT, STAGE1_STEPS, STAGE2_CFG
from ..devices import model_dtype
from ..errors import FlashVideoInputError
from ..layout import latent_to_transformer, transformer_to_latent
from .schedule import dynamic_cfg_scale, stage2_model_timestep


def _text_pair(cond: torch.Tensor, batch: int, device, dtype, cond_first: bool) -> torch.Tensor:
    """(1 or B, L, D) prompt embedding -> (2B, L, D): [cond, zeros] or [zeros, cond]."""
    if cond.shape[0] not in (1, batch):
        raise FlashVideoInputError(
            f"prompt embedding batch is {cond.shape[0]} but the latent batch is {batch}; give 1 or {batch}."
        )
    text = cond.to(device=device, dtype=dtype).expand(batch, -1, -1)
    pair = (text, torch.zeros_like(text)) if cond_first else (torch.zeros_like(text), text)
    return torch.cat(pair)


def _text_pairs(cond: torch.Tensor, dtype: torch.dtype, cond_first: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """texts_for(latent (B, C, T, h, w)) -> its (2B, L, D) text batch (_text_pair), made once per (B, device)."""
    made: dict[tuple, torch.Tensor] = {}

    def texts_for(latent: torch.Tensor) -> torch.Tensor:
        key = (latent.shape[0], latent.device)
        if key not in made:
            made[key] = _text_pair(cond, latent.shape[0], latent.device, dtype, cond_first)
        return made[key]

    return texts_for


def _cfg_forward(model, hidden: torch.Tensor, text: torch.Tensor, timestep: torch.Tensor, sequential: bool,
                 **extra: torch.Tensor) -> torch.Tensor:
    """model on the CFG batch (2B, ...): one batch-2B call, or with `sequential` two batch-B calls (the first
    half, then the second; the same values, about half the activation memory) concatenated."""
    if not sequential:
        return model(hidden, text, timestep, **extra)
    halves = zip(hidden.chunk(2), text.chunk(2), timestep.chunk(2), *(v.chunk(2) for v in extra.values()),
                 strict=True)
    return torch.cat([model(h, x, t, **dict(zip(extra, rest, strict=True))) for h, x, t, *rest in halves])


def stage1_denoiser(
    model,
    cond: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    cfg: float = STAGE1_CFG,
    cfg_exponent: float = STAGE1_CFG_EXPONENT,
    num_steps: int = STAGE1_STEPS,
    dynamic_cfg: bool = True,
    sequential_cfg: bool = False,
) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """denoise(x, t) -> guided x0, for the DPM++ sampler.

    x: scaled latent (B, C, T, h, w); t: DDPM timestep (int). cond: (1 or B, L, D) prompt embedding.
    alphas_cumprod: (1000,) table for the x0 formula (schedule.stage1_alphas(...).denoiser).
    The model runs once on the batch [uncond = zeros, cond] (the official order) with the latents in the
    model's dtype and the timestep t as an fp32 tensor (the official code builds it from the fp32 latent,
    so 999 stays 999 even in bf16). v-prediction: x0 = sqrt(a_t) x - sqrt(1 - a_t) v, in fp32; then
    x0 = x0_u + s_t (x0_c - x0_u) with s_t = dynamic_cfg_scale(t, cfg, cfg_exponent, num_steps, dynamic_cfg).
    Returns fp32 (B, C, T, h, w). sequential_cfg: the two halves as two calls (_cfg_forward).
    """
    dtype = model_dtype(model)
    texts_for = _text_pairs(cond, dtype, cond_first=False)  # [zeros, cond]

    def denoise(x: torch.Tensor, t: int) -> torch.Tensor:
        x_pair = torch.cat([x, x]).float()  # (2B, C, T, h, w)
        timestep = torch.full((2 * x.shape[0],), float(t), device=x.device, dtype=torch.float32)
        with torch.no_grad():
            hidden = latent_to_transformer(x_pair).to(dtype)
            v = transformer_to_latent(_cfg_forward(model, hidden, texts_for(x), timestep, sequential_cfg)).float()
        a = float(alphas_cumprod[t])
        x0_u, x0_c = (a**0.5 * x_pair - (1.0 - a) ** 0.5 * v).chunk(2)
        scale = dynamic_cfg_scale(t, cfg, cfg_exponent, num_steps, dynamic=dynamic_cfg)
        return x0_u + scale * (x0_c - x0_u)

    return denoise


def stage2_velocity(
    model,
    cond: torch.Tensor,
    cfg: float = STAGE2_CFG,
    noise_step: int = DEFAULT_NOISE_STEP,
    working_dtype: torch.dtype | None = None,
    sequential_cfg: bool = False,
) -> Callable[[torch.Tensor, float], torch.Tensor]:
    """velocity(z, t) -> guided dz/dt, for the Euler sampler.

    z: scaled latent (B, C, T, h, w), in the ODE's dtype; t: flow time in [0, 1). cond: (1 or B, L, D).
    The model runs once on the batch [cond, uncond = zeros] (the official order) with the latents in the
    model's dtype. Time values are held in `working_dtype` (default: the model's dtype), as the official
    code holds them in its ODE's dtype: timestep = 1000 - 1000 t computed in that dtype
    (schedule.stage2_model_timestep), and the noise step written as
    torch.full((2B,), noise_step, dtype=working_dtype), so in bf16 675 arrives as 676.0
    and the timesteps are bf16-rounded exactly as in the official bf16 runs; fp32 keeps them (nearly) exact.
    v = v_u + cfg (v_c - v_u), computed and returned in z's dtype, (B, C, T, h, w).
    sequential_cfg: the two halves as two calls (_cfg_forward).
    """
    dtype = model_dtype(model)
    time_dtype = working_dtype or dtype
    texts_for = _text_pairs(cond, dtype, cond_first=True)  # [cond, zeros]

    def velocity(z: torch.Tensor, t: float) -> torch.Tensor:
        batch = z.shape[0]
        hidden = latent_to_transformer(torch.cat([z, z])).to(dtype)  # (2B, T, C, h, w)
        timestep = stage2_model_timestep(torch.full((2 * batch,), float(t), device=z.device, dtype=time_dtype))
        step = torch.full((2 * batch,), noise_step, device=z.device, dtype=time_dtype)
        with torch.no_grad():
            out = _cfg_forward(model, hidden, texts_for(z), timestep, sequential_cfg, noise_step=step)
            v = transformer_to_latent(out).to(z.dtype)
        v_c, v_u = v.chunk(2)
        return v_u + cfg * (v_c - v_u)

    return velocity
