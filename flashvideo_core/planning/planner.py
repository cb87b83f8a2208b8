"""The memory planner: a stage's peak device memory for a size and a mode, from shapes alone, and the
fastest mode that fits the free memory.

plan_peak: weights (memory_model.weights_bytes: parameter bytes by dtype, fp8 blocks at 1 byte + a
scale per row, block swap's resident share) + one guided model call's activation peak
(memory_model.activation_peak; checked against a fake-tensor live-bytes count). Not counted: T5 and the
VAE (they run before and after the transformer, each planned on its own: vae.cost slices the decode to the
free memory), and the CUDA allocator's own overhead, which `fits` covers with FIT_MARGIN and FIT_RESERVE.

choose_modes tries, fastest first (CANDIDATE_ORDER), and takes the first that fits:
1. plain: one batch-2 call per step, weights in the compute dtype;
2. sequential CFG: two batch-1 calls (the same result; big GEMMs stay efficient at batch 1, a few % slower);
3. fp8 weights (upcast per layer: a few % slower, output within fp8's error), 4. fp8 + sequential CFG;
5.-8. block swap with the largest N that fits, in the order above (default, sequential, fp8, fp8 +
   sequential): streaming blocks from pinned CPU memory costs transfer time every call, hidden behind
   compute only when a block's compute outlasts its copy (1080p yes, Stage I's small sizes no), so it
   comes last; more resident blocks = fewer copies.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from .. import config as fv_config
from ..config import TransformerConfig
from ..errors import FlashVideoInputError
from ..modes.settings import AUTO, ModelModes
from . import memory_model

FIT_MARGIN = 0.10
"""A plan fits when total x (1 + FIT_MARGIN) + FIT_RESERVE <= free: the caching allocator's rounding and
fragmentation and kernel workspaces (not yet measured on a GPU: bench/gpu_check.py compares)."""
FIT_RESERVE = 512 * 2**20
GIB = 2**30


@dataclass(frozen=True)
class MemoryPlan:
    """Predicted device bytes of one stage's transformer call.

    weights_bytes: the weights on the device (block swap: the resident and in-flight blocks);
    activation_bytes: the call's live-bytes peak (inputs, RoPE tables, one block's intermediates);
    total_bytes: their sum; phase: where the activation peak is; description: the mode in words.
    """

    stage: int
    height: int
    width: int
    frames: int
    modes: ModelModes
    sequential_cfg: bool
    weights_bytes: int
    activation_bytes: int
    phase: str
    description: str

    @property
    def total_bytes(self) -> int:
        """weights_bytes + activation_bytes."""
        return self.weights_bytes + self.activation_bytes

    def fits(self, free_bytes: int) -> bool:
        """Whether the plan fits `free_bytes` with the margin (FIT_MARGIN, FIT_RESERVE)."""
        return self.total_bytes * (1 + FIT_MARGIN) + FIT_RESERVE <= free_bytes


@dataclass(frozen=True)
class Allowed:
    """The tools choose_modes may use (each True by default)."""

    sequential_cfg: bool = True
    fp8: bool = True
    block_swap: bool = True


def stage_config(stage: int, config: TransformerConfig | None = None) -> TransformerConfig:
    """`config`, or the stage's real network (Stage I 5B, Stage II 2B); refuses a stage other than 1 or 2."""
    if stage not in (1, 2):
        raise FlashVideoInputError(f"stage={stage!r} must be 1 (text to video) or 2 (the 1080p enhancer).")
    return config or (fv_config.STAGE1_5B if stage == 1 else fv_config.STAGE2_2B)


def describe(modes: ModelModes, sequential_cfg: bool, num_layers: int, dtype: torch.dtype) -> str:
    """A mode in words, e.g. 'bf16, fp8 weights, 12/30 blocks resident, sequential CFG, sdpa'."""
    parts = [{torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}.get(dtype, str(dtype))]
    if modes.weights == "fp8_e4m3fn":
        parts.append("fp8 weights")
    blocks = modes.resident_blocks
    if isinstance(blocks, int) and blocks < num_layers:
        parts.append(f"{blocks}/{num_layers} blocks resident")
    parts.append("sequential CFG" if sequential_cfg else "batched CFG")
    parts.append(modes.attention + (", compiled" if modes.compile else ""))
    return ", ".join(parts)


def plan_peak(stage: int, height: int, width: int, frames: int, dtype: torch.dtype, modes: ModelModes = ModelModes(),
              sequential_cfg: bool = False, config: TransformerConfig | None = None, batch: int = 1) -> MemoryPlan:
    """Predicted peak device memory of one guided transformer call of `stage` on `batch` (frames, height,
    width) pixel videos in `dtype` with `modes` (resident_blocks None or a number; 'auto' is resolved by
    resolve_resident_blocks / choose_modes). config: the network (default: the stage's real one).
    Shapes only, microseconds (after a one-off ~50 ms parameter count per network)."""
    cfg = stage_config(stage, config)
    if modes.resident_blocks == AUTO:
        raise FlashVideoInputError("resident_blocks='auto' is a choice for the planner: resolve it with "
                                   "planner.resolve_resident_blocks (or choose_modes) before plan_peak.")
    weights = memory_model.weights_bytes(cfg, dtype, modes)
    peak = memory_model.activation_peak(cfg, frames, height, width, dtype, sequential_cfg, batch, modes.attention)
    return MemoryPlan(stage, height, width, frames, modes, sequential_cfg, weights, peak.bytes, peak.phase,
                      describe(modes, sequential_cfg, cfg.num_layers, dtype))


def _with_blocks(modes: ModelModes, blocks: int | None) -> ModelModes:
    return dataclasses.replace(modes, resident_blocks=blocks)


def largest_resident(stage: int, height: int, width: int, frames: int, dtype: torch.dtype, modes: ModelModes,
                     sequential_cfg: bool, free_bytes: int, config: TransformerConfig | None = None,
                     batch: int = 1) -> MemoryPlan | None:
    """The plan with the most resident blocks N (None = all, no swap) that fits free_bytes, or None."""
    num_layers = stage_config(stage, config).num_layers
    for blocks in (None, *range(num_layers - 1, 0, -1)):
        plan = plan_peak(stage, height, width, frames, dtype, _with_blocks(modes, blocks), sequential_cfg, config,
                         batch)
        if plan.fits(free_bytes):
            return plan
    return None


def _candidates(base: ModelModes, allow: Allowed) -> list[tuple[ModelModes, bool, bool]]:
    """(modes, sequential_cfg, search resident blocks) in CANDIDATE_ORDER, limited by `allow` and `base`
    (base.weights fp8 = fp8 only; base.resident_blocks a number = that number everywhere)."""
    weights = ["fp8_e4m3fn"] if base.weights == "fp8_e4m3fn" else ["default"] + (["fp8_e4m3fn"] * allow.fp8)
    cfg_modes = [False, True] if allow.sequential_cfg else [False]
    fixed = base.resident_blocks if isinstance(base.resident_blocks, int) else None
    plain = [(dataclasses.replace(base, weights=w, resident_blocks=fixed), s, False)
             for w in weights for s in cfg_modes]
    if fixed is not None or not allow.block_swap:
        return plain
    return plain + [(m, s, True) for m, s, _ in plain]


def choose_modes(stage: int, height: int, width: int, frames: int, free_bytes: int, dtype: torch.dtype,
                 allow: Allowed = Allowed(), base: ModelModes = ModelModes(), config: TransformerConfig | None = None,
                 batch: int = 1) -> MemoryPlan:
    """The fastest mode that fits `free_bytes` (module docstring's order), as its MemoryPlan (plan.modes,
    plan.sequential_cfg). base: attention and compile are kept; base.weights fp8 or a fixed
    resident_blocks are honoured. Raises FlashVideoInputError (nothing_fits_message) when none fits."""
    for modes, sequential, search in _candidates(base, allow):
        if search:
            plan = largest_resident(stage, height, width, frames, dtype, modes, sequential, free_bytes, config, batch)
            if plan is not None and plan.modes.resident_blocks is not None:
                return plan
            continue
        plan = plan_peak(stage, height, width, frames, dtype, modes, sequential, config, batch)
        if plan.fits(free_bytes):
            return plan
    raise FlashVideoInputError(nothing_fits_message(stage, height, width, frames, free_bytes, dtype, allow, base,
                                                    config, batch))


def resolve_resident_blocks(stage: int, height: int, width: int, frames: int, free_bytes: int, dtype: torch.dtype,
                            modes: ModelModes, sequential_cfg: bool, config: TransformerConfig | None = None,
                            batch: int = 1) -> ModelModes:
    """`modes` with resident_blocks='auto' replaced by the largest N that fits (None when every block fits);
    other values are returned unchanged. Raises FlashVideoInputError when even one resident block does not fit."""
    if modes.resident_blocks != AUTO:
        return modes
    plan = largest_resident(stage, height, width, frames, dtype, modes, sequential_cfg, free_bytes, config, batch)
    if plan is None:
        allow = Allowed(sequential_cfg=sequential_cfg, fp8=modes.weights == "fp8_e4m3fn")
        raise FlashVideoInputError(nothing_fits_message(stage, height, width, frames, free_bytes, dtype, allow,
                                                        modes, config, batch))
    return plan.modes


def smallest_plan(stage: int, height: int, width: int, frames: int, dtype: torch.dtype, allow: Allowed = Allowed(),
                  base: ModelModes = ModelModes(), config: TransformerConfig | None = None,
                  batch: int = 1) -> MemoryPlan:
    """The least-memory plan `allow` permits at this size (fp8, sequential CFG, 1 resident block when allowed)."""
    modes, sequential, search = _candidates(base, allow)[-1]
    blocks = 1 if search else modes.resident_blocks
    return plan_peak(stage, height, width, frames, dtype, _with_blocks(modes, blocks), sequential, config, batch)


def nothing_fits_message(stage: int, height: int, width: int, frames: int, free_bytes: int, dtype: torch.dtype,
                         allow: Allowed = Allowed(), base: ModelModes = ModelModes(),
                         config: TransformerConfig | None = None, batch: int = 1) -> str:
    """The error text when no allowed mode fits: the stage, the memory its smallest mode needs, what is free,
    and the fewer frames / the smaller size (same aspect ratio) at which that mode fits."""
    low = smallest_plan(stage, height, width, frames, dtype, allow, base, config, batch)

    def fits(h: int, w: int, f: int) -> bool:
        return smallest_plan(stage, h, w, f, dtype, allow, base, config, batch).fits(free_bytes)

    step, hints = fv_config.PIXEL_MULTIPLE, []
    fewer = next((f for f in range(frames - 4, 0, -4) if fits(height, width, f)), None)
    if fewer is not None:
        hints.append(f"{fewer} frames at {width}x{height}")
    smaller = next(((h, w) for w in range(width - step, 0, -step)
                    for h in [max(step, round(height * w / width / step) * step)] if fits(h, w, frames)), None)
    if smaller is not None:
        hints.append(f"{smaller[1]}x{smaller[0]} at {frames} frames")
    fix = f"use {' or '.join(hints)} (in that mode), or free memory first" if hints else "free memory first"
    need = low.total_bytes * (1 + FIT_MARGIN) + FIT_RESERVE
    return (f"Stage {'I' if stage == 1 else 'II'} at {width}x{height} (WxH) with {frames} frames needs about "
            f"{need / GIB:.1f} GiB on the device even in its smallest mode ({low.description}), and "
            f"{free_bytes / GIB:.1f} GiB is free: {fix}.")
