"""What the memory checks and hints are about, as two objects instead of a dozen loose arguments.

StageCall: one guided transformer call of a stage (its network, size, precision, device and modes), the
thing the up-front refusal (lower_bound.check_stage), the too-small-card hint (room.fitting_hint) and the
out-of-memory hint (room.smaller_mode_hint) all reason about. DeviceRoom: the device memory that call gets
(free, the weights it takes there, what of them is already there, other weights beside it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..config import TransformerConfig
from ..modes.settings import ModelModes


@dataclass(frozen=True)
class StageCall:
    """One guided call of Stage `stage` (1 or 2) of the `config` network (None: the stage's published one) on
    (frames, height, width) pixel videos, the CFG halves one after the other when `sequential_cfg`, in
    `dtype` on `device` (a str is turned into a torch.device), with the run's `modes`."""

    stage: int
    frames: int
    height: int
    width: int
    dtype: torch.dtype
    device: torch.device | str
    modes: ModelModes = field(default_factory=ModelModes)
    sequential_cfg: bool = False
    config: TransformerConfig | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", torch.device(self.device))

    @property
    def size(self) -> tuple[int, int, int]:
        """(frames, height, width)."""
        return self.frames, self.height, self.width

    @property
    def on_cpu(self) -> bool:
        """Whether the call runs on the CPU (no block swap there; weights stay memory-mapped)."""
        return self.device.type == "cpu"


@dataclass(frozen=True)
class DeviceRoom:
    """The device memory a StageCall gets, in bytes: `free` there now (in ComfyUI: what it can free);
    `weights`: the transformer's weights on the device while it runs; `held`: of those, already there (a
    loaded node model); `beside`: other weights that stay on the device with it (the VAE in the CLI's
    enhance)."""

    free: int
    weights: int = 0
    held: int = 0
    beside: int = 0

    @property
    def budget(self) -> int:
        """What the transformer may take in all: free + held - beside (never below 0)."""
        return max(0, self.free + self.held - self.beside)
