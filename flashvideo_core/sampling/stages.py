"""The two sampling stages as single calls: validate, set up noise and scaling, sample, return RAW latents.

Used by the CLI pipeline, the enhance path and the ComfyUI sampler nodes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import config
from ..devices import model_device, model_dtype, move_model
from ..errors import FlashVideoInputError
from ..finite import check_finite, checked_model_calls
from ..layout import check_latent, latent_frames, transformer_to_latent
from ..progress import ProgressCallback, ProgressEvent
from ..rng import cpu_generator, randn
from .guidance import stage1_denoiser, stage2_velocity
from .schedule import stage1_alphas, stage1_timesteps, stage2_time_grid
from .settings import Stage1Settings, Stage2Settings, check_seed
from .stage1_sampler import sample_dpmpp_2m_v
from .stage2_sampler import Velocity, sample_euler_flow

VelocityWrap = Callable[[Velocity, torch.device], Velocity]
"""(the model's velocity, which takes z on the given device; that device) -> the velocity the sampler
integrates. With one, run_stage2 keeps the ODE state on the CPU: enhance's co-denoised windows
(enhance/latent_windows.py) integrate a whole clip's latent, the model sees one window at a time."""


def check_embedding(cond: torch.Tensor, model, name: str = "prompt embedding", batch: int | None = None) -> None:
    """Raise unless cond is (1 or batch, L, D) with D equal to the model's text width (model.config.text_dim)."""
    width = model.config.text_dim
    if not isinstance(cond, torch.Tensor) or cond.ndim != 3:
        shape = tuple(cond.shape) if isinstance(cond, torch.Tensor) else type(cond).__name__
        raise FlashVideoInputError(f"{name} must be (batch, tokens, {width}); got {shape}.")
    if cond.shape[-1] != width:
        raise FlashVideoInputError(
            f"{name} width is {cond.shape[-1]} but this model expects {width} (T5 v1.1 XXL gives 4096). "
            "Use the T5 encoder that belongs to these weights."
        )
    if batch is not None and cond.shape[0] not in (1, batch):
        raise FlashVideoInputError(f"{name} batch is {cond.shape[0]}; it must be 1 or {batch} (the latent batch).")


def _check_stage(model, stage: int) -> None:
    is_stage2 = bool(model.config.stage2_extras)
    if (stage == 2) != is_stage2:
        given = "Stage II" if is_stage2 else "Stage I"
        wanted = "Stage II" if stage == 2 else "Stage I"
        raise FlashVideoInputError(f"a {given} model was given where the {wanted} model is needed.")


def _place(model, device, dtype) -> torch.device:
    """Move/cast `model` in place if device/dtype are given; return the device it runs on."""
    device = torch.device(device) if device is not None else model_device(model)
    if dtype is not None and dtype != model_dtype(model):
        model.to(dtype=dtype)
    if device != model_device(model):
        move_model(model, device)
    return device


def _preview_in_raw_space(callback: ProgressCallback | None, scale: float) -> ProgressCallback | None:
    """Wrap `callback` so previews arrive as RAW-space fp32 CPU latents (scaled latent / scale)."""
    if callback is None:
        return None

    def forward(event: ProgressEvent) -> None:
        preview = None if event.preview is None else (event.preview.float() / scale).cpu()
        callback(ProgressEvent(event.phase, event.step, event.total, preview))

    return forward


def run_stage1(
    model,
    cond: torch.Tensor,
    settings: Stage1Settings = Stage1Settings(),
    *,
    seed: int = 0,
    device=None,
    dtype: torch.dtype | None = None,
    callback: ProgressCallback | None = None,
) -> torch.Tensor:
    """Text embedding -> Stage I RAW latent (1, 16, (F-1)/4+1, H/8, W/8), float32 on CPU.

    cond: (1, L, text_dim) T5 embedding (the unconditional one is zeros). settings: frames, size,
    steps, CFG (valid by construction). The initial noise is CPU fp32 randn drawn from
    rng.cpu_generator(seed) in the official layout (1, T, 16, h, w) (so it equals the official
    script's initial noise for the same seed) and permuted to (1, 16, T, h, w); the same generator
    then feeds the sampler's noise. The model runs on `device` in `dtype` (default: where it is, as
    it is; if given, the model is moved or cast in place); the sampler state stays fp32 (the official
    code samples in fp32 under bf16 autocast). Dynamic CFG uses N = 51 (the official guider
    constant) at every step count. Callback previews are RAW-space x0 latents (fp32, CPU).
    """
    _check_stage(model, 1)
    check_seed(seed)
    check_embedding(cond, model, batch=1)
    timesteps = stage1_timesteps(settings.steps)
    alphas = stage1_alphas(timesteps, settings.schedule)
    device = _place(model, device, dtype)
    generator = cpu_generator(seed)
    spatial = config.VAE_SPATIAL_COMPRESSION
    shape = (1, latent_frames(settings.num_frames), config.LATENT_CHANNELS, settings.height // spatial,
             settings.width // spatial)
    noise = transformer_to_latent(randn(shape, generator, device=device)).contiguous()  # (1, 16, T, h, w)
    check_finite(cond, "Stage I: the prompt embedding", "Check the T5 weights (a damaged file) and the prompt.")
    denoise = checked_model_calls(stage1_denoiser(
        model, cond, alphas.denoiser, settings.cfg, settings.cfg_exponent, config.STAGE1_STEPS,
        dynamic_cfg=settings.dynamic_cfg, sequential_cfg=settings.sequential_cfg,
    ), "Stage I", model.source_file)
    with torch.no_grad():
        x0 = sample_dpmpp_2m_v(
            denoise, noise, timesteps, alphas.sampler, generator,
            _preview_in_raw_space(callback, config.STAGE1_SCALE_FACTOR),
        )
    return (x0.float() / config.STAGE1_SCALE_FACTOR).cpu()


def run_stage2(
    model,
    cond: torch.Tensor,
    latent: torch.Tensor,
    settings: Stage2Settings = Stage2Settings(),
    *,
    device=None,
    dtype: torch.dtype | None = None,
    callback: ProgressCallback | None = None,
    velocity_wrap: VelocityWrap | None = None,
) -> torch.Tensor:
    """Degraded RAW latent (B, 16, T, h, w) -> Stage II RAW latent of the same shape, float32 on CPU.

    `latent` must already be degraded (degradation.degrade_latent) at settings.noise_step, which is
    also fed to the model's ref-step embedding. cond: (1 or B, L, text_dim). The data is checked
    before the model is touched (settings are valid by construction). The ODE state is the latent
    x 1.15258426 in the model's dtype (default: as it is; device/dtype move or cast the model in
    place), integrated over stage2_time_grid(steps, shift). round_times=True (official): the grid,
    the model timesteps 1000 (1 - t) and the noise step are computed in the model's dtype, as the
    official code does (bf16: S=5 timesteps 1000, 904, 784, 624, 384 and noise step 676); False:
    exact float64 grid, timesteps and noise step passed in fp32.
    Callback previews are RAW-space x0 latents (fp32, CPU). velocity_wrap: see VelocityWrap (the state
    then stays on the CPU, in the model's dtype).
    """
    _check_stage(model, 2)
    check_latent(latent, "latent")
    check_embedding(cond, model, batch=latent.shape[0])
    check_finite(cond, "Stage II: the prompt embedding", "Check the T5 weights (a damaged file) and the prompt.")
    device = _place(model, device, dtype)
    working = model_dtype(model)
    time_dtype = working if settings.round_times else torch.float32
    grid = stage2_time_grid(settings.steps, settings.shift, dtype=working if settings.round_times else torch.float64)
    z = (latent.to(device if velocity_wrap is None else "cpu").float() * config.STAGE2_SCALE_FACTOR).to(working)
    velocity = checked_model_calls(
        stage2_velocity(model, cond, settings.cfg, settings.noise_step, time_dtype, settings.sequential_cfg),
        "Stage II",
        model.source_file,
    )
    if velocity_wrap is not None:
        velocity = velocity_wrap(velocity, device)
    with torch.no_grad():
        z = sample_euler_flow(velocity, z, grid, _preview_in_raw_space(callback, config.STAGE2_SCALE_FACTOR),
                              settings.solver)
    return (z.float() / config.STAGE2_SCALE_FACTOR).cpu()
