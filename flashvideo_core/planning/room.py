"""The too-small-card message (issue 12): the memory floor's refusal plus the mode that would fit.

memory_floor (a root basic) refuses a size whose least memory is not free, before any compute; it may
not import the planner, so it takes its hint as a callable. fitting_hint makes that callable: the
fastest mode that fits the free memory (planner.choose_modes), said in the caller's words (ModeWords:
CLI flags, or the nodes' inputs), or, when no mode fits, planner.nothing_fits_message (fewer frames or
a smaller size in the smallest mode). The hint is computed only when the check fails. After an
out-of-memory mid-run (out_of_memory.py), smaller_mode_hint names the fastest mode that needs less than the
one that ran.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import FlashVideoInputError
from ..modes.apply import SWAP_ATTR
from ..modes.attention import attention_backend
from ..modes.compile import STATE_ATTR as COMPILE_ATTR
from ..modes.fp8 import fp8_layers
from ..modes.settings import AUTO as AUTO_BLOCKS
from ..modes.settings import ModelModes
from .call import DeviceRoom, StageCall
from .planner import (
    FIT_MARGIN,
    FIT_RESERVE,
    GIB,
    Allowed,
    MemoryPlan,
    choose_modes,
    plan_peak,
    resolve_resident_blocks,
)


@dataclass(frozen=True)
class ModeWords:
    """How a front end names the settings of a mode: fp8 weights, block swap with {n} resident blocks,
    sequential CFG, what to say when the plain mode is the one that fits, and what joins the settings."""

    fp8: str
    block_swap: str
    sequential_cfg: str
    plain: str
    joiner: str = ", "


CLI_WORDS = ModeWords(fp8="--fp8", block_swap="--block-swap {n}", sequential_cfg="--sequential-cfg",
                      plain="no memory flag", joiner=" ")
"""The command line's flags (generate and enhance)."""


def settings_for(plan: MemoryPlan, words: ModeWords = CLI_WORDS) -> str:
    """What to set for `plan`'s mode in `words`, e.g. '--fp8 --block-swap 12 --sequential-cfg'."""
    parts = []
    if plan.modes.weights == "fp8_e4m3fn":
        parts.append(words.fp8)
    if isinstance(plan.modes.resident_blocks, int):
        parts.append(words.block_swap.format(n=plan.modes.resident_blocks))
    if plan.sequential_cfg:
        parts.append(words.sequential_cfg)
    return words.joiner.join(parts) or words.plain


def modes_of(model: torch.nn.Module) -> ModelModes:
    """The modes a loaded transformer carries (fp8 layers, attention kernel, compile); block swap is left
    out (the planner chooses it)."""
    return ModelModes(weights="fp8_e4m3fn" if fp8_layers(model) else "default", attention=attention_backend(model),
                      compile=hasattr(model, COMPILE_ATTR))


def ran_modes(model: torch.nn.Module) -> ModelModes:
    """modes_of(model) with the block swap it runs with now (its resident block count; None without one)."""
    swap = getattr(model, SWAP_ATTR, None)
    return dataclasses.replace(modes_of(model), resident_blocks=max(1, swap.resident) if swap is not None else None)


def fitting_hint(call: StageCall, room: DeviceRoom, words: ModeWords = CLI_WORDS) -> Callable[[], str]:
    """A callable for memory_floor.check_fits(hint=): one sentence naming the fastest mode that fits
    room.budget (free + the bytes of the model's weights already on the device, e.g. a loaded node model,
    - the weights beside it) for the whole stage (weights + one call's activations) at the call's size, with
    the settings that select it (in `words`), or the planner's nothing-fits sentence. The call's modes: fp8,
    attention and compile are kept; block swap is the planner's to choose, never on the CPU; its
    sequential_cfg is the planner's to choose too."""
    base = dataclasses.replace(call.modes, resident_blocks=None)
    allow = Allowed(block_swap=not call.on_cpu)
    budget, held = room.budget, room.held
    said = f"{budget / GIB:.1f} GiB" + (f" (free + {held / GIB:.1f} GiB of its weights loaded)" if held else "")

    def hint() -> str:
        try:
            plan = choose_modes(call.stage, call.height, call.width, call.frames, budget, call.dtype, allow, base,
                                call.config)
        except FlashVideoInputError as nothing_fits:
            return f"No mode fits: {nothing_fits}"
        return (f"The mode that fits {said}: {plan.description} (about {plan.total_bytes / GIB:.1f} GiB "
                f"predicted): {settings_for(plan, words)}.")

    return hint


def smaller_mode_hint(call: StageCall, room: DeviceRoom, words: ModeWords = CLI_WORDS) -> Callable[[], str]:
    """A callable for an out-of-memory message: one sentence naming the fastest mode whose predicted need is
    below that of the mode that ran (the call's modes and sequential_cfg; block swap 'auto' as the planner
    resolves it for room.budget) and that fits room.budget, with its settings in `words`; or the planner's
    nothing-fits sentence. Suggesting the mode that ran again would be no help, whatever the planner
    predicted for it."""
    stage, frames, height, width, dtype = call.stage, call.frames, call.height, call.width, call.dtype
    free_bytes = room.budget

    def hint() -> str:
        ran = dataclasses.replace(call.modes, resident_blocks=None) if call.on_cpu else call.modes
        if ran.resident_blocks == AUTO_BLOCKS:
            try:
                ran = resolve_resident_blocks(stage, height, width, frames, free_bytes, dtype, ran,
                                              call.sequential_cfg, call.config)
            except FlashVideoInputError:
                ran = dataclasses.replace(ran, resident_blocks=1)
        current = plan_peak(stage, height, width, frames, dtype, ran, call.sequential_cfg, call.config)
        below = min(free_bytes, int(current.total_bytes * (1 + FIT_MARGIN) + FIT_RESERVE) - 1)
        base = dataclasses.replace(call.modes, resident_blocks=None)
        try:
            plan = choose_modes(stage, height, width, frames, below, dtype, Allowed(block_swap=not call.on_cpu),
                                base, call.config)
        except FlashVideoInputError:
            return (f"No mode that needs less than this run's ({current.description}) fits "
                    f"{free_bytes / GIB:.1f} GiB: use fewer frames or a smaller size, or free memory first.")
        return (f"A mode that needs less than this run's ({current.description}, about "
                f"{current.total_bytes / GIB:.1f} GiB predicted): {plan.description} (about "
                f"{plan.total_bytes / GIB:.1f} GiB): {settings_for(plan, words)}.")

    return hint
