"""train_stage2: the Stage II training loop (Algorithm 1 over DEG_pixel + DEG_latent pairs).

Per step, from one CPU generator (the run's seed) in this order: the clips of the batch, DEG_pixel
strengths, the codec's posterior draws (HR clip, then LR clip), the DEG_latent steps and noise, the
unconditional coin flips, t. Z_HR = codec.encode(HR); Z_LR = degrade_latents(codec.encode(
degrade_pixels(HR)), k); loss = objective.stage2_loss. AdamW, gradient clipping, bf16 autocast on
CUDA only (fp32 elsewhere). A checkpoint (checkpoints.save_checkpoint) every checkpoint_every steps
and at the end; resume=<step folder> continues from it bit-identically (fp32, CPU).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..errors import FlashVideoInputError
from ..progress import ProgressCallback, report
from ..rng import cpu_generator
from .checkpoints import STATE_NAME, WEIGHTS_NAME, load_training_state, save_checkpoint
from .latent_degradation import degrade_latents, sample_noise_steps
from .objective import sample_times, stage2_loss
from .pixel_degradation import degrade_pixels
from .settings import TrainSettings


@dataclass(frozen=True)
class TrainingSample:
    """One training clip: pixels (3, F, H, W) in [-1, 1] and its caption embedding text (1, L, D)."""

    pixels: torch.Tensor
    text: torch.Tensor


@dataclass
class TrainResult:
    """steps: the last step done; losses: the loss of every step this call ran; checkpoint: the last folder."""

    steps: int
    losses: list[float] = field(default_factory=list)
    checkpoint: Path | None = None


def make_optimizer(params, settings: TrainSettings) -> torch.optim.AdamW:
    """AdamW with the settings' lr, betas and weight decay over `params`."""
    return torch.optim.AdamW(params, lr=settings.lr, betas=settings.betas, weight_decay=settings.weight_decay)


def draw_batch(samples: Sequence[TrainingSample], codec, settings: TrainSettings, generator: torch.Generator):
    """(z_lr, z_hr, text, noise_steps, t) for one step, drawn from `generator` (see the module docstring)."""
    index = torch.randint(len(samples), (settings.batch,), generator=generator).tolist()
    hr = torch.stack([samples[i].pixels for i in index])  # (B, 3, F, H, W)
    text = torch.cat([samples[i].text for i in index])  # (B, L, D)
    lr_pixels = degrade_pixels(hr, settings.pixel, generator)
    z_hr = codec.encode(hr, generator)
    z_lr_clean = codec.encode(lr_pixels, generator)
    steps = sample_noise_steps(settings.batch, settings.latent, generator)
    z_lr = degrade_latents(z_lr_clean, steps, generator)
    uncond = torch.rand(settings.batch, generator=generator) < settings.uncond_fraction
    text = torch.where(uncond.view(-1, 1, 1), torch.zeros_like(text), text)
    return z_lr, z_hr, text, steps, sample_times(settings.batch, generator)


def _resume(model, optimizer, generator: torch.Generator, folder: Path) -> int:
    """Load weights, optimizer and RNG state of a step folder; returns its step."""
    state = load_training_state(folder / STATE_NAME)
    model.load_state_dict(load_file(str(folder / WEIGHTS_NAME)))
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["rng"])
    return int(state["step"])


def _train_step(model, optimizer, batch, settings: TrainSettings, device: torch.device) -> float:
    z_lr, z_hr, text, steps, t = (x.to(device) for x in batch)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())
    with autocast:
        loss = stage2_loss(model, z_lr, z_hr, text.to(next(model.parameters()).dtype), steps, t)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], settings.grad_clip)
    optimizer.step()
    return float(loss.detach())


def train_stage2(model, codec, samples: Sequence[TrainingSample], settings: TrainSettings, out_dir: str | Path,
                 callback: ProgressCallback | None = None, resume: str | Path | None = None) -> TrainResult:
    """Train `model` (a Stage II FlashVideoTransformer, in place) on `samples` through `codec`.

    out_dir: where step-<N>/ checkpoints go; resume: a step folder to continue from. callback gets
    ProgressEvent("train", step, settings.steps) after every step. Returns a TrainResult.
    """
    if not samples:
        raise FlashVideoInputError("no training samples; give at least one clip.")
    device = next(model.parameters()).device
    if settings.gradient_checkpointing:
        model.inner.enable_gradient_checkpointing()
    generator = cpu_generator(settings.seed)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], settings)
    start = _resume(model, optimizer, generator, Path(resume)) if resume is not None else 0
    result = TrainResult(start)
    model.train()
    for step in range(start + 1, settings.steps + 1):
        batch = draw_batch(samples, codec, settings, generator)
        result.losses.append(_train_step(model, optimizer, batch, settings, device))
        result.steps = step
        report(callback, "train", step, settings.steps)
        if step % settings.checkpoint_every == 0 or step == settings.steps:
            state = {"step": step, "optimizer": optimizer.state_dict(), "rng": generator.get_state(),
                     "settings": settings.to_json()}
            result.checkpoint = save_checkpoint(out_dir, model, state)
    model.eval()
    return result
