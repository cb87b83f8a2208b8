"""What bench/gpu_check.py and its modes section (bench/gpu_check_modes.py) share: the JSON report, the
time budget with its per-case estimates, and the measuring helpers (timing with device memory, FLOP
counting, modules built on the device, the guided transformer call).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from flashvideo_core import config
from flashvideo_core.config import TransformerConfig, VAEConfig
from flashvideo_core.vae import SliceSpec

SCHEMA = 2
SECTIONS = ("environment", "placement", "performance", "attention", "memory", "modes")

ASSUMED_TFLOPS = {"cuda": 400.0, "cpu": 0.02}
"""Achieved TFLOP/s assumed for a transformer forward before one is measured in the run (bf16 on an
H100: attention-bound at Stage II's 104,746 tokens, FlashAttention-2 kernels reach 330-450 at head_dim 64;
the CPU figure is for the dry run's tiny sizes). Once a stage's forward is measured, its own time is used."""
ASSUMED_CONV_TFLOPS = {"cuda": 150.0, "cpu": 0.02}
"""The same for the VAE decode (cuDNN 3D convolutions, bf16); nothing measured here yet."""
SETUP_SECONDS = {"cuda": 5.0, "cpu": 0.5}
"""Building a real-size model on the GPU, quantising or pinning its weights: added to each case's estimate."""


@dataclass(frozen=True)
class Sizes:
    """The shapes of the performance and modes sections: real (the published models and sizes) or dry (tiny)."""

    stage1: TransformerConfig
    stage2: TransformerConfig
    vae: VAEConfig
    frames: int
    stage1_size: tuple[int, int]
    """(height, width) in pixels."""
    stage2_size: tuple[int, int]
    decode_slices: SliceSpec
    """Latent units; the official Stage II decode: 2-frame chunks, 2 width tiles sharing 16 latent pixels."""

    def stage(self, stage: int) -> tuple[TransformerConfig, tuple[int, int]]:
        """(network, (height, width)) of Stage I or II."""
        return (self.stage1, self.stage1_size) if stage == 1 else (self.stage2, self.stage2_size)


REAL = Sizes(config.STAGE1_5B, config.STAGE2_2B, config.VAE_COGVIDEOX, config.DEFAULT_NUM_FRAMES,
             (config.STAGE1_HEIGHT, config.STAGE1_WIDTH), (config.STAGE2_HEIGHT, config.STAGE2_WIDTH),
             SliceSpec(chunk_frames=2, tile_width=128, overlap=16))
DRY = Sizes(config.TINY_STAGE1, config.TINY_STAGE2, config.TINY_VAE, 9, (32, 48), (32, 48),
            SliceSpec(chunk_frames=2, tile_width=4, overlap=2))


def mismatch_kind(message: str) -> str | None:
    """'device_mismatch' or 'dtype_mismatch' for PyTorch's errors about mixed tensors, else None.

    Device: "Expected all tensors to be on the same device", "... found at least two devices", or an
    "Input type (...) and weight type (...) should be the same" naming both CUDA and CPU tensors.
    dtype: "expected scalar type ...", "... must have the same dtype", the same "should be the same"
    message without a device difference.
    """
    text = message.lower()
    named_types = re.findall(r"type \(([^)]*)\)", text)  # "Input type (torch.cuda.FloatTensor) and weight type (...)"
    on_both = len({"cuda" in name for name in named_types}) == 2
    if "same device" in text or "two devices" in text or on_both:
        return "device_mismatch"
    if "expected scalar type" in text or "same dtype" in text or ("should be the same" in text and "type" in text):
        return "dtype_mismatch"
    return None


class Report:
    """The JSON report, written to `path` after every item (a run stopped midway keeps what it measured)."""

    def __init__(self, path: Path, mode: str):
        self.path = path
        self.started = time.perf_counter()
        self.data: dict = {"schema": SCHEMA, "mode": mode, "started": datetime.now(timezone.utc).isoformat(),
                           "seconds_total": 0.0, "ok": False, "complete": True, "failures": []}
        for section in SECTIONS:
            self.data[section] = {}
        self.data["placement"] = {"items": []}
        self.data["performance"] = {"cases": {}}
        self.data["modes"] = {"rows": []}

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def fail(self, where: str, error: str) -> None:
        self.data["failures"].append(f"{where}: {error.splitlines()[0][:300] if error else 'failed'}")

    def save(self) -> None:
        self.data["seconds_total"] = round(self.elapsed(), 2)
        self.data["ok"] = not self.data["failures"]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".partial")
        tmp.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        os.replace(tmp, self.path)


@dataclass
class Clock:
    """The run's time budget: a case starts only when its estimate ends before the deadline."""

    report: Report
    deadline: float

    def skip_reason(self, estimate: float) -> str | None:
        """None when a case of `estimate` seconds fits, else why not (and the report is marked incomplete)."""
        left = self.deadline - self.report.elapsed()
        if estimate <= left:
            return None
        self.report.data["complete"] = False
        return f"estimated {estimate:.0f} s, {max(0.0, left):.0f} s left before --deadline-s {self.deadline:g}"


def forward_seconds(report: Report, stage: int, device: torch.device) -> tuple[float, str]:
    """Estimated seconds of one guided forward of `stage` at the run's size, and its basis: the plain
    forward measured in this run (performance case or modes row), else its FLOPs at ASSUMED_TFLOPS."""
    for row in report.data["modes"]["rows"]:
        if row.get("stage") == stage and row.get("mode") == "plain" and row.get("status") == "pass":
            return row["seconds"], "the plain forward measured in this run"
    case = report.data["performance"]["cases"].get(f"stage{stage}_forward", {})
    if case.get("status") == "pass" and case.get("seconds"):
        return case["seconds"], "the forward measured in this run"
    flops = report.data["performance"].get("run_size_flops_meta", {}).get(f"stage{stage}_forward", {}).get("flops")
    rate = ASSUMED_TFLOPS[device.type] * 1e12
    return (flops or 0) / rate, f"FLOPs counted on meta at an assumed {ASSUMED_TFLOPS[device.type]:g} TFLOP/s"


def error_fields(exc: BaseException) -> dict:
    """An exception -> {error, kind (device_mismatch / dtype_mismatch / out_of_memory / other), traceback tail}."""
    text = f"{type(exc).__name__}: {exc}"
    kind = mismatch_kind(str(exc)) or "other"
    if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
        kind = "out_of_memory"
    tail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-6:])
    return {"error": text[:4000], "error_kind": kind, "traceback_tail": tail[-4000:]}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def weights_of(module: torch.nn.Module) -> dict:
    return {"parameters": sum(p.numel() for p in module.parameters()),
            "weights_bytes": sum(p.numel() * p.element_size() for p in module.parameters())}


class AttentionRecorder(TorchDispatchMode):
    """Records the SDPA kernels a call runs, and the FLOPs of those the flop counter has no formula for."""

    def __init__(self):
        super().__init__()
        self.kernels: Counter = Counter()
        self.uncounted_flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if "scaled_dot_product" in name or name.endswith("attention_forward"):
            self.kernels[f"aten.{name}"] += 1
            if func.overloadpacket not in flop_registry and len(args) >= 2:
                query, key = args[0], args[1]  # (B, heads, L, D)
                self.uncounted_flops += 4 * query.shape[:-1].numel() * key.shape[-2] * query.shape[-1]
        return func(*args, **(kwargs or {}))


def counted(call: Callable[[], object]) -> tuple[object, dict]:
    """Run `call` once under FlopCounterMode and the attention recorder -> (its result, FLOP record)."""
    recorder = AttentionRecorder()
    with FlopCounterMode(display=False) as counter, recorder:
        result = call()
    flops = counter.get_total_flops()
    return result, {"flops": flops + recorder.uncounted_flops, "flops_counted": flops,
                    "attention_flops_added": recorder.uncounted_flops, "sdpa_kernels": dict(recorder.kernels)}


def timed(call: Callable[[], object], device: torch.device, live: bool = False) -> tuple[object, dict]:
    """Run `call` once -> (its result, {seconds, peak_bytes, start_bytes, activation_peak_bytes, added_bytes}).

    CUDA: peak_bytes is torch.cuda.max_memory_allocated since a reset just before the call (weights and
    inputs included), start_bytes what was allocated then, activation_peak_bytes = added_bytes their
    difference (what the call itself added at its peak). CPU (the dry run): the device peaks are None;
    with `live`, added_bytes is the call's live tensor bytes at their peak (planning.live_bytes.LiveBytes),
    so the dry run takes the same comparisons as a GPU run (its numbers mean nothing).
    """
    sync(device)
    start_bytes = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        start_bytes = torch.cuda.memory_allocated(device)
    count = None
    if live and device.type != "cuda":
        from flashvideo_core.planning.live_bytes import LiveBytes

        count = LiveBytes()
    start = time.perf_counter()
    with count if count is not None else contextlib.nullcontext():
        result = call()
    sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    added = peak - start_bytes if peak is not None else (count.peak if count is not None else None)
    return result, {"seconds": round(seconds, 4), "peak_bytes": peak, "start_bytes": start_bytes,
                    "activation_peak_bytes": None if peak is None else peak - start_bytes, "added_bytes": added,
                    "added_source": "torch.cuda.max_memory_allocated - memory_allocated at the start"
                    if peak is not None else ("live tensor bytes (planning.live_bytes)" if count else None)}


@contextlib.contextmanager
def built_on(device: torch.device, dtype: torch.dtype):
    """Modules made in the block are created and initialised on `device` in `dtype` (no CPU copy, no fp32 copy)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(old)


@dataclass(frozen=True)
class GuidedCall:
    """One guided model call as sampling/guidance.py makes it: the CFG batch (2, T, C, h, w) of latents and
    (2, 226, text_dim) of text, one batch-2 call or with `sequential` two batch-1 calls (_cfg_forward).
    input_bytes: the latents and text on the device (part of what the planner counts)."""

    model: object
    hidden: torch.Tensor
    text: torch.Tensor
    timestep: torch.Tensor
    extra: dict
    input_bytes: int

    def __call__(self, sequential: bool = False) -> torch.Tensor:
        from flashvideo_core.sampling.guidance import _cfg_forward

        return _cfg_forward(self.model, self.hidden, self.text, self.timestep, sequential, **self.extra)


def guided_call(model, cfg, frames: int, size: tuple[int, int], stage: int, device, dtype) -> GuidedCall:
    """The CFG-batch inputs of `stage` at `frames` x `size` (height, width) pixels, drawn on the CPU from a
    generator seeded by the stage (the same inputs every time), on `device` in `dtype`."""
    from flashvideo_core.layout import latent_frames, latent_to_transformer

    height, width = size
    gen = torch.Generator().manual_seed(stage)  # drawn on the CPU (also serves the meta device), then moved
    latent = torch.randn(1, config.LATENT_CHANNELS, latent_frames(frames), height // 8, width // 8,
                         generator=gen).to(device)
    hidden = latent_to_transformer(torch.cat([latent, latent])).to(dtype)  # (2, T, C, h, w)
    cond = torch.randn(1, config.TEXT_TOKENS, cfg.text_dim, generator=gen).to(device, dtype)
    nbytes = (hidden.numel() + 2 * cond.numel()) * hidden.element_size()
    if stage == 1:
        text = torch.cat([torch.zeros_like(cond), cond])  # [uncond, cond]
        return GuidedCall(model, hidden, text, torch.full((2,), 999.0, device=device), {}, nbytes)
    text = torch.cat([cond, torch.zeros_like(cond)])  # [cond, uncond]
    timestep = torch.full((2,), 1000.0, device=device, dtype=dtype)
    noise_step = torch.full((2,), config.DEFAULT_NOISE_STEP, device=device, dtype=dtype)
    return GuidedCall(model, hidden, text, timestep, {"noise_step": noise_step}, nbytes)
