"""TrainSettings: the knobs of a Stage II training run, one frozen object checked when made.

Defaults are the paper's optimiser values (AdamW, lr 4e-5, betas 0.9/0.95, weight decay 1e-4,
gradient clip 0.1) and a 10% unconditional fraction (the zero text embedding, so CFG works).
A schedule (schedule.Schedule) changes the batch and the DEG_latent range per phase (and, for a
media source, the sample size); a LoRA (model.lora_adapter.LoraSettings) trains an adapter only.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import asdict, dataclass, field

from ..errors import FlashVideoInputError
from ..model.lora_adapter import LoraSettings
from ..sampling.settings import check_seed
from .latent_degradation import LatentDegradation
from .pixel_degradation import PixelDegradation
from .schedule import Phase, Schedule

LR_DECAYS = ("constant", "cosine")
"""After the warm-up: constant (the paper's) keeps lr; cosine falls from lr toward 0 by the last step."""

PRECISIONS = ("auto", "fp32", "bf16")
"""auto: bf16 autocast on CUDA, fp32 elsewhere; fp32: no autocast; bf16: bf16 autocast on any device.
The weights and the optimiser state stay fp32 in every case."""


def _positive_int(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise FlashVideoInputError(f"{name}={value!r} must be an integer >= 1.")


def _number(value, name: str, low: float, high: float = math.inf, low_open: bool = False) -> None:
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    if not ok or value > high or value < low or (low_open and value == low):
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        raise FlashVideoInputError(f"{name}={value!r} must be a finite number {bound}"
                                   f"{'' if high == math.inf else f' and <= {high:g}'}.")


@dataclass(frozen=True)
class TrainSettings:
    """steps: optimiser steps in all; batch: clips per step; lr, betas, weight_decay: AdamW;
    lr_warmup: steps over which the lr rises linearly to lr (0: none); lr_decay: one of LR_DECAYS (lr_at);
    grad_clip: max gradient norm; uncond_fraction: share of samples trained with the zero text
    embedding; checkpoint_every: steps between checkpoints (one is also written at the end);
    seed: the one CPU generator of the run (sample choice, degradations, t, uncond draws);
    gradient_checkpointing: recompute block activations in the backward pass (less memory);
    pixel / latent: DEG_pixel and DEG_latent ranges; precision: one of PRECISIONS;
    lora: train a LoRA of these settings instead of every weight (None: full fine-tuning);
    schedule: the phases (steps must equal their sum; None: one phase of `batch` and `latent`);
    validate_every: steps between validation passes (None: never; one also runs at the end)."""

    steps: int = 1000
    batch: int = 1
    lr: float = 4e-5
    lr_warmup: int = 0
    lr_decay: str = "constant"
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 1e-4
    grad_clip: float = 0.1
    uncond_fraction: float = 0.1
    checkpoint_every: int = 500
    seed: int = 0
    gradient_checkpointing: bool = False
    pixel: PixelDegradation = field(default_factory=PixelDegradation)
    latent: LatentDegradation = field(default_factory=LatentDegradation)
    precision: str = "auto"
    lora: LoraSettings | None = None
    schedule: Schedule | None = None
    validate_every: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.betas, list):
            object.__setattr__(self, "betas", tuple(self.betas))
        _positive_int(self.steps, "steps")
        _positive_int(self.batch, "batch")
        _positive_int(self.checkpoint_every, "checkpoint_every")
        _number(self.lr, "lr", 0.0, low_open=True)
        if isinstance(self.lr_warmup, bool) or not isinstance(self.lr_warmup, numbers.Integral) or \
                not 0 <= self.lr_warmup < self.steps:
            raise FlashVideoInputError(f"lr_warmup={self.lr_warmup!r} must be an integer from 0 to steps - 1 "
                                       f"({self.steps - 1}): the warm-up steps before the full lr.")
        if self.lr_decay not in LR_DECAYS:
            raise FlashVideoInputError(f"lr_decay={self.lr_decay!r} must be one of {', '.join(LR_DECAYS)}.")
        if not isinstance(self.betas, tuple) or len(self.betas) != 2:
            raise FlashVideoInputError(f"betas={self.betas!r} must be a pair (paper: (0.9, 0.95)).")
        for index, beta in enumerate(self.betas):
            _number(beta, f"betas[{index}]", 0.0, 1.0)
        _number(self.weight_decay, "weight_decay", 0.0)
        _number(self.grad_clip, "grad_clip", 0.0, low_open=True)
        _number(self.uncond_fraction, "uncond_fraction", 0.0, 1.0)
        check_seed(self.seed)
        if self.precision not in PRECISIONS:
            raise FlashVideoInputError(f"precision={self.precision!r} must be one of {', '.join(PRECISIONS)}.")
        if self.lora is not None and not isinstance(self.lora, LoraSettings):
            raise FlashVideoInputError(f"lora={self.lora!r} must be a LoraSettings (or None for full fine-tuning).")
        if self.validate_every is not None:
            _positive_int(self.validate_every, "validate_every")
        if self.schedule is not None and self.schedule.total_steps != self.steps:
            raise FlashVideoInputError(f"steps={self.steps} but the schedule's phases add up to "
                                       f"{self.schedule.total_steps} steps; they must agree.")

    def at_step(self, step: int) -> tuple[int, LatentDegradation, Phase | None]:
        """(batch, DEG_latent settings, phase or None) of 1-based `step`: the schedule's phase values
        where it sets them, else the run's."""
        if self.schedule is None:
            return self.batch, self.latent, None
        _, phase = self.schedule.phase_at(step)
        latent = self.latent if phase.noise_steps is None else LatentDegradation(phase.noise_steps)
        return phase.batch or self.batch, latent, phase

    def lr_at(self, step: int) -> float:
        """The learning rate of 1-based `step`: lr * step / (lr_warmup + 1) during the warm-up (steps 1 to
        lr_warmup), then lr (constant) or, for cosine, lr * (1 + cos(pi * d / (n + 1))) / 2 with d the steps
        since the warm-up and n = steps - lr_warmup those left: lr at the first, above 0 at the last. A function
        of the step alone, so a resumed run follows the same curve."""
        if step <= self.lr_warmup:
            return self.lr * step / (self.lr_warmup + 1)
        if self.lr_decay == "constant":
            return self.lr
        done, left = step - self.lr_warmup - 1, self.steps - self.lr_warmup
        return self.lr * (1 + math.cos(math.pi * done / left)) / 2

    def bf16_autocast(self, device_type: str) -> bool:
        """True when steps (and validation passes) on a device of `device_type` ("cuda", "cpu", ...) run under
        bf16 autocast: precision "bf16", or "auto" on CUDA (PRECISIONS)."""
        return self.precision == "bf16" or (self.precision == "auto" and device_type == "cuda")

    def checkpoint_due(self, step: int) -> bool:
        """True when 1-based `step` ends with a checkpoint: every checkpoint_every steps and the last step."""
        return step % self.checkpoint_every == 0 or step == self.steps

    def validation_due(self, step: int) -> bool:
        """True when 1-based `step` ends with a validation pass (given held-out samples): every validate_every
        steps (when set) and the last step."""
        return step == self.steps or (self.validate_every is not None and step % self.validate_every == 0)

    def to_json(self) -> str:
        """The settings as JSON text (stored in the training state)."""
        return json.dumps(asdict(self), sort_keys=True)
