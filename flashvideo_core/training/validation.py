"""A validation pass on held-out clips: DEG_pixel -> codec -> DEG_latent at a fixed step -> the library's
Stage II sampler -> decode, scored against the high-quality clip (PSNR, low-frequency PSNR, LSD)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import config
from ..devices import model_dtype
from ..sampling.guidance import stage2_velocity
from ..sampling.schedule import stage2_time_grid
from ..sampling.stage2_sampler import sample_euler_flow
from .latent_degradation import degrade_latents
from .metrics import log_spectral_distance, lowfreq_psnr, psnr
from .objective import model_velocity
from .pixel_degradation import PixelDegradation, degrade_pixels


@dataclass(frozen=True)
class ValidationScores:
    """psnr, lowfreq_psnr (dB, higher is better), lsd (log-spectral distance, lower is better)."""

    psnr: float
    lowfreq_psnr: float
    lsd: float


def _velocity(model, text: torch.Tensor, cfg: float, noise_step: int):
    """velocity(z, t) of the inference sampler: guidance.stage2_velocity with fp32 times; at cfg 1 only its
    conditional half, one batch-B call (v_u + 1 (v_c - v_u) is v_c: the unconditional call would be wasted),
    the model called as stage2_velocity calls it (objective.model_velocity: timestep 1000 (1 - t) and
    the noise step as fp32 tensors)."""
    if cfg != 1.0:
        return stage2_velocity(model, text, cfg, noise_step, torch.float32)

    def velocity(z: torch.Tensor, t: float) -> torch.Tensor:
        batch = z.shape[0]
        cond = text.to(device=z.device, dtype=model_dtype(model)).expand(batch, -1, -1)
        times = torch.full((batch,), float(t), dtype=torch.float32)
        steps = torch.full((batch,), float(noise_step), dtype=torch.float32)
        return model_velocity(model, z.to(model_dtype(model)), cond, times, steps).to(z.dtype)

    return velocity


def degraded_latent(codec, clips: torch.Tensor, pixel: PixelDegradation, noise_step: int,
                    seed: int = 0) -> torch.Tensor:
    """The LR input of a validation pass for HQ clips (B, 3, F, H, W) in [-1, 1]: degrade_latents(codec.encode(
    degrade_pixels(clips)), noise_step), every draw from a CPU generator seeded with `seed` (the same each
    pass). Returns the codec's scaled latent (B, C, T, h, w)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        z_lr = codec.encode(degrade_pixels(clips, pixel, generator), generator)
        return degrade_latents(z_lr, torch.full((clips.shape[0],), int(noise_step)), generator)


def score_refined(model, codec, z_lr: torch.Tensor, clips: torch.Tensor, text: torch.Tensor, noise_step: int,
                  steps: int = config.STAGE2_STEPS, cfg: float = 1.0,
                  shift: float = config.STAGE2_SHIFT) -> ValidationScores:
    """Refine the LR latent z_lr (degraded_latent) with `model` and the inference sampler (guidance.stage2_velocity
    at `cfg`, fp32 times; at cfg 1 its conditional half only, + sample_euler_flow over stage2_time_grid(steps,
    shift)), decode, and score against `clips` (B, 3, F, H, W) in [-1, 1]; text: (1 or B, L, D)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        device = next(model.parameters()).device
        velocity = _velocity(model, text, cfg, noise_step)
        z = sample_euler_flow(velocity, z_lr.to(device), stage2_time_grid(steps, shift))
        refined = codec.decode(z.float().cpu()).clamp(-1.0, 1.0)
    model.train(was_training)
    return ValidationScores(psnr(refined, clips), lowfreq_psnr(refined, clips), log_spectral_distance(refined, clips))


def validate(model, codec, clips: torch.Tensor, text: torch.Tensor, pixel: PixelDegradation, noise_step: int,
             steps: int = config.STAGE2_STEPS, cfg: float = 1.0, shift: float = config.STAGE2_SHIFT,
             seed: int = 0) -> ValidationScores:
    """Score `model` on held-out HQ clips (B, 3, F, H, W) in [-1, 1] with prompt embedding text (1 or B, L, D):
    score_refined of degraded_latent(codec, clips, pixel, noise_step, seed)."""
    z_lr = degraded_latent(codec, clips, pixel, noise_step, seed)
    return score_refined(model, codec, z_lr, clips, text, noise_step, steps, cfg, shift)


class HeldOut:
    """A validation pass over fixed held-out samples: callable(model) -> ValidationScores.

    clips: TrainingSamples (pixels (3, F, H, W) in [-1, 1], text (1, L, D)), drawn once (e.g.
    source.held_out_clips); each is scored on its own (clips may differ in frame count) with
    validate(...) at `noise_step`, `steps` and `cfg`, and the three scores are averaged over clips. Each
    clip's LR latent (degraded_latent: the codec's encode, the same every pass) is made on the first pass and
    kept for the next ones.
    """

    def __init__(self, clips, codec, pixel: PixelDegradation, noise_step: int = config.DEFAULT_NOISE_STEP,
                 steps: int = config.STAGE2_STEPS, cfg: float = 1.0, seed: int = 0):
        self.clips, self.codec, self.pixel = list(clips), codec, pixel
        self.noise_step, self.steps, self.cfg, self.seed = noise_step, steps, cfg, seed
        self.latents: list[torch.Tensor] = []

    def __call__(self, model) -> ValidationScores:
        if not self.latents:
            self.latents = [degraded_latent(self.codec, clip.pixels[None], self.pixel, self.noise_step, self.seed + i)
                            for i, clip in enumerate(self.clips)]
        device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
        scores = [score_refined(model, self.codec, z_lr, clip.pixels[None], clip.text.to(device, dtype),
                                self.noise_step, self.steps, self.cfg)
                  for clip, z_lr in zip(self.clips, self.latents, strict=True)]
        count = len(scores)
        return ValidationScores(sum(s.psnr for s in scores) / count, sum(s.lowfreq_psnr for s in scores) / count,
                                sum(s.lsd for s in scores) / count)
