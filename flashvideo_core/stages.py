"""The two sampling stages as single calls: validate, set up noise and scaling, sample, return RAW latents.

Used by the CLI pipeline and the ComfyUI sampler nodes.
"""

from __future__ import annotations

import torch

from . import config
from .devices import model_device
from .errors import FlashVideoInputError
from .guidance import stage1_denoiser, stage2_velocity
from .layout import check_latent, check_num_frames, check_pixel_size, latent_frames
from .progress import ProgressCallback, ProgressEvent
from .rng import cpu_generator, randn
from .schedule import stage1_timesteps, stage2_time_grid, zero_snr_alphas_cumprod
from .stage1_sampler import sample_dpmpp_2m_v
from .stage2_sampler import sample_euler_flow


def check_embedding(cond: torch.Tensor, model, name: str = "prompt embedding") -> None:
    """Raise unless cond is (B, L, D) with D equal to the model's text width."""
    width = model.config.text_dim
    if not isinstance(cond, torch.Tensor) or cond.ndim != 3:
        shape = tuple(cond.shape) if isinstance(cond, torch.Tensor) else type(cond).__name__
        raise FlashVideoInputError(f"{name} must be (batch, tokens, {width}); got {shape}.")
    if cond.shape[-1] != width:
        raise FlashVideoInputError(
            f"{name} width is {cond.shape[-1]} but this model expects {width} (T5 v1.1 XXL gives 4096). "
            "Use the T5 encoder that belongs to these weights."
        )


def _check_stage(model, stage: int) -> None:
    is_stage2 = bool(getattr(model.config, "stage2_extras", False))
    if (stage == 2) != is_stage2:
        given = "Stage II" if is_stage2 else "Stage I"
        wanted = "Stage II" if stage == 2 else "Stage I"
        raise FlashVideoInputError(f"a {given} model was given where the {wanted} model is needed.")


def _preview_in_raw_space(callback: ProgressCallback | None, scale: float) -> ProgressCallback | None:
    if callback is None:
        return None

    def forward(event: ProgressEvent) -> None:
        preview = None if event.preview is None else (event.preview.float() / scale).cpu()
        callback(ProgressEvent(event.phase, event.step, event.total, preview))

    return forward


def run_stage1(
    model,
    cond: torch.Tensor,
    *,
    num_frames: int = config.DEFAULT_NUM_FRAMES,
    height: int = config.STAGE1_HEIGHT,
    width: int = config.STAGE1_WIDTH,
    steps: int = config.STAGE1_STEPS,
    cfg: float = config.STAGE1_CFG,
    cfg_exponent: float = config.STAGE1_CFG_EXPONENT,
    seed: int = 0,
    device=None,
    dtype: torch.dtype | None = None,
    callback: ProgressCallback | None = None,
) -> torch.Tensor:
    """Text embedding -> Stage I RAW latent (1, 16, (F-1)/4+1, H/8, W/8), float32 on CPU.

    cond: (1, L, text_dim) T5 embedding (the unconditional one is zeros). Initial noise and every
    sampler noise come from one CPU generator seeded with `seed`. Validation happens before sampling.
    Callback previews are RAW-space x0 latents.
    """
    _check_stage(model, 1)
    check_num_frames(num_frames, "frames")
    check_pixel_size(height, width, "Stage I size")
    check_embedding(cond, model)
    timesteps = stage1_timesteps(steps)
    device = torch.device(device) if device is not None else model_device(model)
    if dtype is not None:
        model.to(dtype)
    model.to(device)
    generator = cpu_generator(seed)
    shape = (1, config.LATENT_CHANNELS, latent_frames(num_frames), height // 8, width // 8)
    noise = randn(shape, generator, device=device)
    alphas_cumprod = zero_snr_alphas_cumprod()
    denoise = stage1_denoiser(model, cond[:1].to(device), alphas_cumprod, cfg, cfg_exponent, steps)
    x0 = sample_dpmpp_2m_v(
        denoise, noise, timesteps, alphas_cumprod, generator,
        _preview_in_raw_space(callback, config.STAGE1_SCALE_FACTOR),
    )
    return (x0 / config.STAGE1_SCALE_FACTOR).float().cpu()


def run_stage2(
    model,
    cond: torch.Tensor,
    latent: torch.Tensor,
    *,
    noise_step: int = config.DEFAULT_NOISE_STEP,
    steps: int = config.STAGE2_STEPS,
    cfg: float = config.STAGE2_CFG,
    shift: float = config.STAGE2_SHIFT,
    solver: str = "euler",
    device=None,
    dtype: torch.dtype | None = None,
    callback: ProgressCallback | None = None,
) -> torch.Tensor:
    """Degraded RAW latent (B, 16, T, h, w) -> Stage II RAW latent of the same shape, float32 on CPU.

    `latent` must already be degraded (degradation.degrade_latent) at `noise_step`, which is also
    fed to the model's ref-step embedding. The ODE runs in the model's dtype, scaled by 1.15258426.
    """
    _check_stage(model, 2)
    check_latent(latent, "latent")
    check_embedding(cond, model)
    from .degradation import check_noise_step

    check_noise_step(noise_step)
    grid = stage2_time_grid(steps, shift)
    device = torch.device(device) if device is not None else model_device(model)
    if dtype is not None:
        model.to(dtype)
    model.to(device)
    working = next(model.parameters()).dtype
    z = (latent.to(device).float() * config.STAGE2_SCALE_FACTOR).to(working)
    velocity = stage2_velocity(model, cond[:1].to(device), cfg, noise_step, working)
    z = sample_euler_flow(velocity, z, grid, _preview_in_raw_space(callback, config.STAGE2_SCALE_FACTOR), solver)
    return (z.float() / config.STAGE2_SCALE_FACTOR).cpu()
