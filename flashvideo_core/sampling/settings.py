"""The knobs of each stage as frozen dataclasses, checked once when they are made.

An instance that exists is valid: the CLI builds one from its flags, the nodes from their widgets
(VALIDATE_INPUTS shows the same messages), the library entry points take one, and nothing below
checks the same values again. Defaults are the official ones (SPEC.md).

Seeds are not settings: each run takes its seed beside its settings (see `stage2_seeds` for the
Stage II rule shared by the CLI, enhance and the nodes).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from .. import config
from ..errors import FlashVideoInputError
from ..layout import check_num_frames, check_pixel_size
from .degradation import check_noise_step
from .schedule import STAGE1_ALPHA_RULES, check_stage1_steps, stage2_time_grid
from .stage2_sampler import check_solver

SEED_MAX = 2**63 - 1
"""Largest seed (ComfyUI's INT widget limit for seeds; torch generators take any 64-bit value)."""


def check_cfg(cfg: float, name: str = "cfg") -> None:
    """Raise unless cfg is a finite number >= 0."""
    if isinstance(cfg, bool) or not isinstance(cfg, numbers.Real) or not math.isfinite(cfg) or cfg < 0:
        raise FlashVideoInputError(f"{name}={cfg!r} must be a finite number >= 0.")


def check_seed(seed: int, name: str = "seed") -> None:
    """Raise unless seed is an integer 0..SEED_MAX."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= SEED_MAX:
        raise FlashVideoInputError(f"{name}={seed!r} must be an integer from 0 to {SEED_MAX}.")


@dataclass(frozen=True)
class Stage1Settings:
    """Stage I text-to-video: frames (4k+1), size (multiples of 16), DPM++ steps and dynamic CFG.

    dynamic_cfg=False gives a constant `cfg`; schedule "official" (SAT alpha tables) or "diffusers".
    sequential_cfg: the conditional and unconditional halves as two batch-1 calls (same result, about
    half the activation memory; off: one batch-2 call, the official way).
    """

    num_frames: int = config.DEFAULT_NUM_FRAMES
    height: int = config.STAGE1_HEIGHT
    width: int = config.STAGE1_WIDTH
    steps: int = config.STAGE1_STEPS
    cfg: float = config.STAGE1_CFG
    cfg_exponent: float = config.STAGE1_CFG_EXPONENT
    dynamic_cfg: bool = True
    schedule: str = "official"
    sequential_cfg: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise FlashVideoInputError naming the first invalid setting and its fix."""
        check_num_frames(self.num_frames, "frames")
        check_pixel_size(self.height, self.width, "Stage I size")
        check_stage1_steps(self.steps)
        check_cfg(self.cfg, "cfg")
        check_cfg(self.cfg_exponent, "cfg_exponent")
        if self.schedule not in STAGE1_ALPHA_RULES:
            raise FlashVideoInputError(f"schedule={self.schedule!r} must be one of {', '.join(STAGE1_ALPHA_RULES)}.")


@dataclass(frozen=True)
class Stage2Settings:
    """Stage II refinement: the degradation step (also fed to the model), Euler steps, CFG, time shift.

    round_times=True computes the time grid, timesteps and noise step in the model's dtype as the
    official code does (see stages.run_stage2); solver "euler" (the paper's) or "heun".
    sequential_cfg: as in Stage1Settings.
    """

    noise_step: int = config.DEFAULT_NOISE_STEP
    steps: int = config.STAGE2_STEPS
    cfg: float = config.STAGE2_CFG
    shift: float = config.STAGE2_SHIFT
    solver: str = "euler"
    round_times: bool = True
    sequential_cfg: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise FlashVideoInputError naming the first invalid setting and its fix."""
        check_noise_step(self.noise_step)
        stage2_time_grid(self.steps, self.shift)  # the grid's own checks of steps and shift
        check_cfg(self.cfg, "cfg")
        check_solver(self.solver)


STAGE2_SEED_OFFSET = 1
"""generate's Stage II seed is its seed + this (Stage I uses the seed itself)."""


def offset_seed(seed: int, offset: int) -> int:
    """seed + offset, wrapped into 0..SEED_MAX (so a seed near the top stays a valid seed)."""
    return (seed + offset) % (SEED_MAX + 1)


def stage2_seeds(seed: int) -> tuple[int, int]:
    """Stage II seed s -> (encode seed, degradation seed) = (s, s + 1), each wrapped into 0..SEED_MAX.

    The one rule shared by every Stage II run: the VAE's posterior sample is drawn from
    rng.cpu_generator(s) and the degradation noise from rng.cpu_generator(s + 1). In ComfyUI that is
    Prepare Stage II seed = s and Latent Degradation seed = s + 1; `generate --seed S` uses
    s = S + 1 (Stage I takes S); enhance window i uses s = enhance seed + 1 + 1,000,003 i.
    """
    return seed, offset_seed(seed, 1)


def clip_stage2_seed(seed: int) -> int:
    """generate's Stage II seed for its seed S: S + STAGE2_SEED_OFFSET, wrapped (see stage2_seeds)."""
    return offset_seed(seed, STAGE2_SEED_OFFSET)
