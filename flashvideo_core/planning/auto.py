"""Whole-mode `auto` (issue 14, item 6): the fastest memory mode that fits, chosen per model before it loads.

`memory="auto"` (CLI `--memory auto`, the nodes' `memory` input) replaces the explicit memory settings
(fp8 weights, sequential CFG, block swap) by the planner's choice for the run's size and the free device
memory: planner.choose_modes (plain > sequential CFG > fp8 > fp8 + sequential CFG > block swap), with
attention and compile kept as given. On the CPU every model runs plain (block swap saves nothing there and
the planner's margins are a GPU allocator's). T5 runs first and alone: its weights in the compute precision
when they fit the free memory, else fp8 (text.loading stores its block linears in fp8). When no mode fits a
stage, the planner's nothing-fits message is raised before anything loads.

`choose_stage` (one transformer), `choose_t5`, and `RunMemory` (what a whole run uses: T5's weight format and
each stage's StageMemory; `RunMemory.as_set` for explicit settings).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import torch

from ..config import TransformerConfig
from ..errors import FlashVideoInputError
from ..modes.settings import ModelModes
from .lower_bound import file_config, on_accelerator, t5_weight_bytes
from .planner import GIB, Allowed, MemoryPlan, choose_modes, stage_config

logger = logging.getLogger(__name__)

AS_SET, AUTO = "as set", "auto"
MEMORY_CHOICES = (AS_SET, AUTO)
"""as set: the memory modes as given (default); auto: chosen by the planner (module docstring)."""
FP8 = "fp8_e4m3fn"


def check_memory(memory: str) -> None:
    """Raise FlashVideoInputError unless `memory` is one of MEMORY_CHOICES."""
    if memory not in MEMORY_CHOICES:
        raise FlashVideoInputError(f"memory={memory!r} must be one of {', '.join(map(repr, MEMORY_CHOICES))}.")


def check_auto_alone(memory: str, modes: ModelModes, sequential: dict[str, bool]) -> None:
    """Raise FlashVideoInputError for memory 'auto' with an explicit memory setting: modes' fp8 weights or
    block swap, or a sequential CFG (its name -> whether it is on), naming each; else nothing."""
    check_memory(memory)
    given = [name for name, on in (("modes.weights fp8", modes.weights != "default"),
                                   ("modes.resident_blocks", modes.resident_blocks is not None), *sequential.items())
             if on]
    if memory == AUTO and given:
        raise FlashVideoInputError(f"memory='auto' chooses fp8 weights, block swap and sequential CFG itself, and "
                                   f"{' and '.join(given)} set them too: leave them unset, or use memory='as set'.")


@dataclass(frozen=True)
class StageMemory:
    """One stage's memory settings: modes (resident_blocks None or a block count, never 'auto' once chosen),
    sequential_cfg, and the console line that says what was chosen ('' when they were given)."""

    modes: ModelModes
    sequential_cfg: bool
    line: str = ""


@dataclass(frozen=True)
class RunMemory:
    """What a run stores and runs its models with: T5's weight format ('default' or 'fp8_e4m3fn'), each
    stage's StageMemory (stage number -> StageMemory)."""

    t5_weights: str
    stages: dict = field(default_factory=dict)

    @classmethod
    def as_set(cls, modes: ModelModes, sequential: dict[int, bool]) -> RunMemory:
        """The explicit settings: `modes` for every stage (and fp8 for T5 with fp8 weights), each stage's
        sequential CFG as given (stage -> bool)."""
        return cls(modes.weights, {n: StageMemory(modes, seq) for n, seq in sequential.items()})

    def modes(self, stage: int) -> ModelModes:
        """The ModelModes of `stage`."""
        return self.stages[stage].modes

    def sequential_cfg(self, stage: int) -> bool:
        """Whether `stage` runs its CFG halves one after the other."""
        return self.stages[stage].sequential_cfg


def mode_words(plan: MemoryPlan, num_layers: int) -> str:
    """A chosen mode in a few words: 'plain', 'fp8 weights + sequential CFG', 'block swap (6 of 30 blocks
    resident) + sequential CFG'."""
    parts = ["fp8 weights"] if plan.modes.weights == FP8 else []
    blocks = plan.modes.resident_blocks
    if isinstance(blocks, int) and blocks < num_layers:
        parts.append(f"block swap ({blocks} of {num_layers} blocks resident)")
    if plan.sequential_cfg:
        parts.append("sequential CFG")
    return " + ".join(parts) or "plain"


def choose_stage(name: str, stage: int, size: tuple[int, int, int], dtype: torch.dtype, device, free: int,
                 base: ModelModes = ModelModes(), config: TransformerConfig | None = None, *, fp8: bool = True,
                 fp8_words: str = "--fp8") -> StageMemory:
    """The fastest mode of a Stage `stage` transformer (`config`; None: the published network) that fits `free`
    bytes on `device` at size = (frames, height, width); `name` starts its line ('Stage II: fp8 weights +
    sequential CFG (predicted 7.9 GiB of 11.0 free)'). base: attention and compile are kept; fp8=False: the
    weights stay as in base (a loaded model), and when only fp8 would fit the error says so with fp8_words.
    Raises FlashVideoInputError (planner.nothing_fits_message) when no mode fits."""
    frames, height, width = size
    base = dataclasses.replace(base, resident_blocks=None, weights=FP8 if base.weights == FP8 else "default")
    if not on_accelerator(device):
        return StageMemory(base, False, f"{name}: plain (on the CPU the memory modes save nothing)")
    allow = Allowed(fp8=fp8)
    try:
        plan = choose_modes(stage, height, width, frames, free, dtype, allow, base, config)
    except FlashVideoInputError as nothing_fits:
        _raise_with_fp8(nothing_fits, stage, size, free, dtype, base, config, fp8_words)
    layers = stage_config(stage, config).num_layers
    return StageMemory(plan.modes, plan.sequential_cfg, f"{name}: {mode_words(plan, layers)} (predicted "
                       f"{plan.total_bytes / GIB:.1f} GiB of {free / GIB:.1f} free)")


def _raise_with_fp8(error: FlashVideoInputError, stage: int, size: tuple, free: int, dtype: torch.dtype,
                    base: ModelModes, config: TransformerConfig | None, fp8_words: str) -> NoReturn:
    """Re-raise `error`, adding the fp8 mode that would fit when the weights were not fp8 and fp8 was not allowed."""
    frames, height, width = size
    if base.weights != FP8:
        try:
            plan = choose_modes(stage, height, width, frames, free, dtype, Allowed(), base, config)
        except FlashVideoInputError:
            raise error from None
        if plan.modes.weights == FP8:
            raise FlashVideoInputError(f"{error} With fp8 weights it would fit ({plan.description}, about "
                                       f"{plan.total_bytes / GIB:.1f} GiB predicted): {fp8_words}.") from None
    raise error from None


def choose_t5(path: str | Path, dtype: torch.dtype, device, free: int) -> tuple[str, str]:
    """(T5's weight format, its console line): the compute precision when its weights fit `free` (or on the CPU,
    or when its size cannot be read from a header), else fp8. A T5 that does not fit even in fp8 is left to
    lower_bound.check_t5's refusal."""
    if not on_accelerator(device):
        return "default", "T5: plain (on the CPU the memory modes save nothing)"
    need = t5_weight_bytes(path, dtype, "default")
    if need is None or need <= free:
        known = f" ({need / GIB:.1f} GiB of {free / GIB:.1f} free)" if need is not None else ""
        return "default", f"T5: plain{known}"
    small = t5_weight_bytes(path, dtype, FP8)
    return FP8, (f"T5: fp8 weights ({small / GIB:.1f} GiB of {free / GIB:.1f} free; "
                 f"{need / GIB:.1f} GiB in its precision)")


def choose_run(t5_path: str | Path, stages: list[tuple[int, str, str | Path, tuple[int, int, int]]],
               dtype: torch.dtype, device, free: int, base: ModelModes = ModelModes(), beside: int = 0) -> RunMemory:
    """memory 'auto' for a run from weight files, before any model loads: T5 (choose_t5) and each of `stages`
    = (stage number, name, its weight file (the network from its header), (frames, height, width)) for
    `free` device bytes less `beside` (other weights that stay on the device beside the transformer, e.g.
    enhance's VAE), one at a time (each model runs alone). Logs one line per model. Raises
    FlashVideoInputError when a stage fits in no mode."""
    t5, line = choose_t5(t5_path, dtype, device, free)
    room = max(0, free - beside)
    chosen = {number: choose_stage(name, number, size, dtype, device, room, base, file_config(path))
              for number, name, path, size in stages}
    for text in (line, *(stage.line for stage in chosen.values())):
        logger.info("memory auto, %s", text)
    return RunMemory(t5, chosen)
