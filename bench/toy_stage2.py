"""The toy-scale Stage II of bench_stage2_training.py: a narrow real FlashVideoTransformer trained with the
library's Algorithm 1 on pan/zoom clips of real photos, sampled with the library's Stage II sampler.

Everything that is the method comes from the library: DEG_pixel (training.pixel_degradation),
DEG_latent (training.latent_degradation), the stand-in latent space (training.codec.PixelUnshuffleCodec,
a fixed 2x2 pixel-unshuffle: 12 channels at half size, since no VAE weights exist here), the objective
(training.objective.stage2_loss), the sampler (sampling.stage2_sampler.sample_euler_flow with
sampling.guidance.stage2_velocity over sampling.schedule.stage2_time_grid) and the metrics
(training.metrics). This module only wires them together, with a plain AdamW loop.

Captions are empty: the text embedding is zeros (8 tokens of width TEXT_DIM), the same as the
unconditional one, so CFG has nothing to separate and runs at cfg = 1.0 (v = v_cond).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import toy_footage

TEXT_DIM, TEXT_TOKENS = 32, 8
CFG = 1.0
"""Empty captions: cond == uncond (zeros), so any scale gives v_cond; 1.0 says so."""


def library():
    """The library pieces the toy uses, imported here so a missing one is named clearly."""
    try:
        from flashvideo_core.training import codec, latent_degradation, metrics, objective, pixel_degradation
    except ImportError as error:
        raise SystemExit(f"the Stage II training library is incomplete here: {error}") from error
    return codec, latent_degradation, metrics, objective, pixel_degradation


def toy_config(layers: int = 4, heads: int = 2):
    """TransformerConfig of the toy Stage II: `layers` x (heads x 64) hidden, patch 2, 12 latent channels.

    patch^2 x channels = 48 <= hidden (128 at 2 heads), so a token can carry its patch and the noise.
    """
    from flashvideo_core.config import TransformerConfig

    return TransformerConfig(num_layers=layers, num_heads=heads, head_dim=64, time_embed_dim=128,
                             text_dim=TEXT_DIM, in_channels=12, out_channels=12, patch_size=2,
                             stage2_extras=True)


@dataclass(frozen=True)
class ToyRun:
    """One toy training run: clip size (pixels, square), frames, batch, optimiser steps, peak lr,
    and the DEG_latent range (None = pixel degradation only, noise step 0 fed to the model)."""

    size: int = 16
    frames: int = 5
    batch: int = 8
    steps: int = 400
    lr: float = 5e-4
    noise_steps: tuple[int, int] | None = None
    seed: int = 0


def _lr_at(run: ToyRun, step: int) -> float:
    """Linear warm-up over 5 % of the steps, then cosine decay to 0."""
    warm = max(1, run.steps // 20)
    if step < warm:
        return run.lr * (step + 1) / warm
    return run.lr * 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, run.steps - warm)))


def training_pair(hr: torch.Tensor, run: ToyRun, generator: torch.Generator):
    """(z_lr, z_hr, noise_steps) for HR clips (B, 3, T, H, W): DEG_pixel, encode, then DEG_latent if on."""
    codec, latent_degradation, _, _, pixel_degradation = library()
    space = codec.PixelUnshuffleCodec(factor=2)
    pixels = pixel_degradation.degrade_pixels(hr, pixel_settings(), generator)
    z_hr, z_lr = space.encode(hr, generator), space.encode(pixels, generator)
    if run.noise_steps is None:
        return z_lr, z_hr, torch.zeros(hr.shape[0], dtype=torch.long)
    steps = latent_degradation.sample_noise_steps(
        hr.shape[0], latent_degradation.LatentDegradation(run.noise_steps), generator)
    return latent_degradation.degrade_latents(z_lr, steps, generator), z_hr, steps


def pixel_settings():
    """DEG_pixel of the toy: the library's default ranges, upscaled back with bicubic (the baseline)."""
    return library()[4].PixelDegradation(upscale_mode="bicubic")


def train(run: ToyRun, log=print):
    """Train a fresh toy Stage II on clips of toy_footage.TRAIN_PHOTOS; returns (model in eval mode, seconds)."""
    from flashvideo_core.model.transformer import build_transformer

    objective = library()[3]
    model = build_transformer(toy_config(), seed=run.seed).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=run.lr, betas=(0.9, 0.95), weight_decay=1e-4)
    photos = toy_footage.load_photos(toy_footage.TRAIN_PHOTOS)
    generator = torch.Generator().manual_seed(run.seed)
    text = torch.zeros(run.batch, TEXT_TOKENS, TEXT_DIM)
    start, losses = time.perf_counter(), []
    for step in range(run.steps):
        hr = toy_footage.clip_batch(photos, run.batch, run.frames, run.size, generator)
        z_lr, z_hr, noise_steps = training_pair(hr, run, generator)
        t = objective.sample_times(run.batch, generator)
        for group in optimiser.param_groups:
            group["lr"] = _lr_at(run, step)
        loss = objective.stage2_loss(model, z_lr, z_hr, text, noise_steps, t)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        losses.append(loss.item())
        if (step + 1) % max(1, run.steps // 5) == 0:
            recent = sum(losses[-20:]) / len(losses[-20:])
            log(f"    step {step + 1}/{run.steps}  loss {recent:.4f}  {time.perf_counter() - start:.0f} s")
    return model.eval(), time.perf_counter() - start


def enhance_latent(model, z_lr: torch.Tensor, steps: int, noise_step: int, shift: float = 2.5) -> torch.Tensor:
    """The library's Stage II sampling of a (degraded) stand-in latent z_lr (B, 12, T, h, w): Euler over
    stage2_time_grid(steps, shift), velocity = stage2_velocity at cfg 1.0 with `noise_step` fed to the model."""
    from flashvideo_core.sampling.guidance import stage2_velocity
    from flashvideo_core.sampling.schedule import stage2_time_grid
    from flashvideo_core.sampling.stage2_sampler import sample_euler_flow

    cond = torch.zeros(1, TEXT_TOKENS, TEXT_DIM)
    velocity = stage2_velocity(model, cond, CFG, noise_step, torch.float32)
    with torch.no_grad():
        return sample_euler_flow(velocity, z_lr.float(), stage2_time_grid(steps, shift))


def enhance_pixels(model, lr_pixels: torch.Tensor, steps: int, noise_step: int, seed: int = 7) -> torch.Tensor:
    """LR pixel clips (B, 3, T, H, W) in [-1, 1] -> the toy Stage II's output clips, clamped to [-1, 1].

    Encode (stand-in codec), DEG_latent at `noise_step` (none at 0) with a fixed seed, sample, decode.
    """
    codec, latent_degradation, _, _, _ = library()
    space = codec.PixelUnshuffleCodec(factor=2)
    generator = torch.Generator().manual_seed(seed)
    z = space.encode(lr_pixels, generator)
    if noise_step > 0:
        steps_ = torch.full((z.shape[0],), noise_step, dtype=torch.long)
        z = latent_degradation.degrade_latents(z, steps_, generator)
    return space.decode(enhance_latent(model, z, steps, noise_step)).clamp(-1.0, 1.0)


def scores(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """PSNR, low-frequency PSNR (4x4 box) and log-spectral distance of pred against target, library metrics."""
    metrics = library()[2]
    return {"psnr": metrics.psnr(pred, target), "lf_psnr": metrics.lowfreq_psnr(pred, target),
            "lsd": metrics.log_spectral_distance(pred, target)}
