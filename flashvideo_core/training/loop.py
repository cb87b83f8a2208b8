"""train_stage2: the Stage II training loop (Algorithm 1 over DEG_pixel + DEG_latent pairs).

Per step, from one CPU generator (the run's seed) in this order: the clips of the batch (a
Sequence[TrainingSample]: random indices; a SampleSource: its draw), DEG_pixel strengths, the
codec's posterior draws (HR clip, then LR clip), the DEG_latent steps and noise, the unconditional
coin flips, t. Z_HR = codec.encode(HR); Z_LR = degrade_latents(codec.encode(degrade_pixels(HR)), k);
loss = objective.stage2_loss. The batch and the DEG_latent range are the schedule phase's
(settings.at_step). AdamW, gradient clipping, autocast by settings.precision (bf16 on CUDA by
default, fp32 elsewhere). With settings.lora, a LoRA is attached and only it trains. A checkpoint
(checkpoints.save_checkpoint) every checkpoint_every steps and at the end; a validation pass
(`validator`) every validate_every steps and at the end; resume=<step folder> continues from it
bit-identically (fp32, CPU).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from safetensors.torch import load_file

from ..errors import CheckpointError, FlashVideoInputError
from ..progress import ProgressCallback, report
from ..rng import cpu_generator
from .checkpoints import LORA_NAME, STATE_NAME, load_training_state, save_checkpoint, weights_file
from .latent_degradation import degrade_latents, sample_noise_steps
from .lora import attach_lora, has_lora, load_lora_state, read_lora
from .objective import sample_times, stage2_loss
from .pixel_degradation import degrade_pixels
from .schedule import Phase
from .settings import TrainSettings


@dataclass(frozen=True)
class TrainingSample:
    """One training clip: pixels (3, F, H, W) in [-1, 1] and its caption embedding text (1, L, D)."""

    pixels: torch.Tensor
    text: torch.Tensor


@runtime_checkable
class SampleSource(Protocol):
    """Draws fresh samples every step (source.MediaSource reads them from media files).

    draw(phase, batch, generator) -> `batch` TrainingSamples of one shape, drawn only from the CPU
    `generator`; phase: the schedule's phase of the step (None without a schedule).
    """

    def draw(self, phase: Phase | None, batch: int, generator: torch.Generator) -> list[TrainingSample]: ...


@dataclass
class TrainResult:
    """steps: the last step done; losses: the loss of every step this call ran; checkpoint: the last
    folder; validations: (step, validator's scores) of every validation pass this call ran."""

    steps: int
    losses: list[float] = field(default_factory=list)
    checkpoint: Path | None = None
    validations: list[tuple[int, object]] = field(default_factory=list)


def make_optimizer(params, settings: TrainSettings) -> torch.optim.AdamW:
    """AdamW with the settings' lr, betas and weight decay over `params`."""
    return torch.optim.AdamW(params, lr=settings.lr, betas=settings.betas, weight_decay=settings.weight_decay)


def _samples(samples, phase: Phase | None, batch: int, generator: torch.Generator) -> list[TrainingSample]:
    if isinstance(samples, SampleSource):
        drawn = samples.draw(phase, batch, generator)
        if len(drawn) != batch:
            raise FlashVideoInputError(f"the sample source gave {len(drawn)} samples for a batch of {batch}.")
        return drawn
    index = torch.randint(len(samples), (batch,), generator=generator).tolist()
    return [samples[i] for i in index]


def draw_batch(samples: Sequence[TrainingSample] | SampleSource, codec, settings: TrainSettings,
               generator: torch.Generator, step: int = 1):
    """(z_lr, z_hr, text, noise_steps, t) for `step`, drawn from `generator` (see the module docstring)."""
    batch, latent, phase = settings.at_step(step)
    drawn = _samples(samples, phase, batch, generator)
    hr = torch.stack([sample.pixels for sample in drawn])  # (B, 3, F, H, W)
    text = torch.cat([sample.text for sample in drawn])  # (B, L, D)
    lr_pixels = degrade_pixels(hr, settings.pixel, generator)
    z_hr = codec.encode(hr, generator)
    z_lr_clean = codec.encode(lr_pixels, generator)
    steps = sample_noise_steps(batch, latent, generator)
    z_lr = degrade_latents(z_lr_clean, steps, generator)
    uncond = torch.rand(batch, generator=generator) < settings.uncond_fraction
    text = torch.where(uncond.view(-1, 1, 1), torch.zeros_like(text), text)
    return z_lr, z_hr, text, steps, sample_times(batch, generator)


def _load_model_file(model, folder: Path, settings: TrainSettings) -> None:
    """The weights (full run) or the adapter (LoRA run) of a step folder into `model`; CheckpointError if
    they do not fit."""
    path = weights_file(folder)
    if path is None:
        raise CheckpointError(f"{folder} holds no model file; --resume takes a step folder (or run folder) of "
                              "train-stage2.")
    if path.name == LORA_NAME:
        if settings.lora is None:
            raise CheckpointError(f"{folder} is a LoRA run's checkpoint; resume it with the run's --lora settings.")
        load_lora_state(model, read_lora(path), settings.lora)
        return
    if settings.lora is not None:
        raise CheckpointError(f"{folder} is a full fine-tuning checkpoint (every weight), not a LoRA; resume it "
                              "without --lora.")
    try:
        model.load_state_dict(load_file(str(path)))
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit the model being trained (another architecture?): "
                              f"{str(exc).splitlines()[0]}") from None


def _resume(model, optimizer, generator: torch.Generator, folder: Path, settings: TrainSettings) -> int:
    """Load the model file, optimizer and RNG state of a step folder; returns its step."""
    state = load_training_state(folder / STATE_NAME)
    _load_model_file(model, folder, settings)
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"{folder}: the optimizer state does not fit this run's trained parameters ({exc}); "
                              "was it written by a run with other --lora settings?") from None
    generator.set_state(state["rng"])
    return int(state["step"])


def _autocast(device: torch.device, settings: TrainSettings):
    if settings.bf16_autocast(device.type):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _train_step(model, optimizer, batch, settings: TrainSettings, device: torch.device, step: int) -> float:
    z_lr, z_hr, text, steps, t = (x.to(device) for x in batch)
    with _autocast(device, settings):
        loss = stage2_loss(model, z_lr, z_hr, text.to(next(model.parameters()).dtype), steps, t)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], settings.grad_clip)
    for group in optimizer.param_groups:
        group["lr"] = settings.lr_at(step)
    optimizer.step()
    return float(loss.detach())


def _trainable(model, settings: TrainSettings) -> list[torch.nn.Parameter]:
    """Attach the LoRA of settings.lora (only it trains) or make every weight trainable; returns the parameters."""
    if has_lora(model):
        raise FlashVideoInputError("the model already has a LoRA; pass the base model (train_stage2 attaches the "
                                   "LoRA of settings.lora itself).")
    if settings.lora is not None:
        return attach_lora(model, settings.lora)
    model.requires_grad_(True)
    return list(model.parameters())


def train_stage2(model, codec, samples: Sequence[TrainingSample] | SampleSource, settings: TrainSettings,
                 out_dir: str | Path, callback: ProgressCallback | None = None, resume: str | Path | None = None,
                 validator: Callable | None = None, lora_metadata: dict | None = None) -> TrainResult:
    """Train `model` (a Stage II FlashVideoTransformer, in place) on `samples` through `codec`.

    samples: a Sequence[TrainingSample] (drawn by random index) or a SampleSource. out_dir: where
    step-<N>/ checkpoints go; resume: a step folder to continue from. callback gets
    ProgressEvent("train", step, settings.steps, values={"loss": ..., "lr": ...}) after every step (after its
    checkpoint, if one is due). validator(model) -> scores (e.g. validation.HeldOut) runs every
    settings.validate_every steps and at the end, under no_grad and the run's autocast; a dataclass
    of numbers is also reported as ProgressEvent("validate", step, settings.steps, values=its fields).
    lora_metadata: extra entries of a LoRA checkpoint's file. Returns a TrainResult.
    """
    if not isinstance(samples, SampleSource) and not samples:
        raise FlashVideoInputError("no training samples; give at least one clip.")
    device = next(model.parameters()).device
    optimizer = make_optimizer(_trainable(model, settings), settings)
    if settings.gradient_checkpointing:
        model.inner.enable_gradient_checkpointing()
    generator = cpu_generator(settings.seed)
    start = _resume(model, optimizer, generator, Path(resume), settings) if resume is not None else 0
    result = TrainResult(start)
    model.train()
    for step in range(start + 1, settings.steps + 1):
        batch = draw_batch(samples, codec, settings, generator, step)
        result.losses.append(_train_step(model, optimizer, batch, settings, device, step))
        result.steps = step
        if settings.checkpoint_due(step):
            state = {"step": step, "optimizer": optimizer.state_dict(), "rng": generator.get_state(),
                     "settings": settings.to_json()}
            result.checkpoint = save_checkpoint(out_dir, model, state, {**(lora_metadata or {}), "steps": step})
        report(callback, "train", step, settings.steps, values={"loss": result.losses[-1], "lr": settings.lr_at(step)})
        if validator is not None and settings.validation_due(step):
            with _autocast(device, settings), torch.no_grad():
                scores = validator(model)
            result.validations.append((step, scores))
            model.train()
            values = {k: float(v) for k, v in asdict(scores).items()} if is_dataclass(scores) else None
            report(callback, "validate", step, settings.steps, values=values)
    model.eval()
    return result
