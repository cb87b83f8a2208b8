"""bench/gpu_check.py's modes section (issue 14's proof on a GPU): each memory mode of Stage I and Stage II
at the run's sizes, one guided forward each (the CFG batch of sampling/guidance.py), beside the plain one.

Rows per stage, in this order (MODE_ORDER): plain, block swap (N = L // 5 resident blocks: 6 of Stage II's
30, 8 of Stage I's 42; CudaTransfers on a GPU, SyncTransfers in the dry run), fp8 weights, sequential CFG,
SageAttention and FlashAttention (only when installed; else skipped with the fallback line), fp8 +
sequential CFG, and last, after both stages' other rows, torch.compile (Stage II first; regional,
inductor on a GPU; the dry run compiles with dynamo's "eager" backend: inductor takes minutes on a CPU);
run alone (--only compile), each stage's plain row comes first.

Each row: seconds of one timed forward (compile: after a first call that compiles, timed apart) and over
plain; the peak as the planner counts it (the model's weights on the device + the inputs + what the call
added at its peak: torch.cuda.max_memory_allocated, or live tensor bytes in the dry run), the planner's
prediction (planning.planner.plan_peak for that mode) and measured / predicted; the attention kernel that
ran (modes.attention) and the output's relative error against the plain row's (block swap must be
bit-identical: same kernels, same order; the others within their precision). Every row has a time estimate
(the plain forward measured in this run x the mode's slowdown + its setup; compile + COMPILE_SECONDS) and
starts only when it fits the deadline.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
from gpu_check_perf import case_peak, planner_prediction
from gpu_check_tools import (
    SETUP_SECONDS,
    Clock,
    Report,
    Sizes,
    built_on,
    error_fields,
    forward_seconds,
    guided_call,
    timed,
)

from flashvideo_core.modes.block_swap import device_bytes
from flashvideo_core.modes.settings import ModelModes
from flashvideo_core.planning.out_of_memory import release

COMPILE_SECONDS = {"cuda": 90.0, "cpu": 10.0}
"""Assumed time of the first compile of a stage's blocks (inductor on a GPU machine; not measured yet)."""
BIT_IDENTICAL = ("block_swap",)
"""Rows whose output must equal the plain row's exactly (a mismatch is a failure: e.g. a transfer race)."""
MAX_REL_ERROR = 0.1
"""Rows whose output is further than this from the plain row's (relative L2) are failures."""


@dataclass(frozen=True)
class ModeRow:
    """One row: the ModelModes the planner is asked about, sequential CFG or not, the time over plain
    assumed for the estimate, and the compile backend (compile rows only)."""

    name: str
    modes: ModelModes
    sequential: bool = False
    slowdown: float = 1.0


MODE_ORDER = (
    ModeRow("plain", ModelModes()),
    ModeRow("block_swap", ModelModes(resident_blocks=1), slowdown=1.1),  # N set per stage: resident_blocks()
    ModeRow("fp8", ModelModes(weights="fp8_e4m3fn"), slowdown=1.15),
    ModeRow("sequential_cfg", ModelModes(), sequential=True, slowdown=1.05),
    ModeRow("sage", ModelModes(attention="sage"), slowdown=0.8),
    ModeRow("flash", ModelModes(attention="flash"), slowdown=1.0),
    ModeRow("fp8_sequential_cfg", ModelModes(weights="fp8_e4m3fn"), sequential=True, slowdown=1.2),
)
"""Most unproven on a GPU first (block swap's CUDA streams, fp8 casts), so a short lease measures those."""
COMPILE_ROW = ModeRow("compile", ModelModes(compile=True))
MODE_NAMES = tuple(row.name for row in MODE_ORDER) + ("compile",)


def resident_blocks(num_layers: int) -> int:
    """The block-swap row's N: a fifth of the blocks (what an 8 GB card needs at 1080p), at least 1."""
    return max(1, num_layers // 5)


class StageRun:
    """The model, inputs and reference output of one stage's rows (built once, each mode applied and undone)."""

    def __init__(self, report: Report, clock: Clock, sizes: Sizes, stage: int, device, dtype):
        self.report, self.clock, self.sizes, self.stage = report, clock, sizes, stage
        self.device, self.dtype = device, dtype
        self.cfg, self.size = sizes.stage(stage)
        self.model = self.call = self.reference = None

    def build(self) -> None:
        from flashvideo_core.model.transformer import build_transformer

        with built_on(self.device, self.dtype):
            self.model = build_transformer(self.cfg, seed=0)
        self.call = guided_call(self.model, self.cfg, self.sizes.frames, self.size, self.stage, self.device,
                                self.dtype)

    def estimate(self, row: ModeRow) -> float:
        seconds, _ = forward_seconds(self.report, self.stage, self.device)
        if row.name == "compile":
            return SETUP_SECONDS[self.device.type] + COMPILE_SECONDS[self.device.type] + 2 * seconds
        return SETUP_SECONDS[self.device.type] + row.slowdown * seconds

    def run(self, row: ModeRow) -> None:
        """One row into report.modes.rows: skipped for time, run, or failed (recorded; the run goes on)."""
        modes = row.modes
        if row.name == "block_swap":
            modes = ModelModes(resident_blocks=resident_blocks(self.cfg.num_layers))
        record = {"stage": self.stage, "mode": row.name, "status": "running",
                  "estimate_seconds": round(self.estimate(row), 1)}
        self.report.data["modes"]["rows"].append(record)
        reason = self.clock.skip_reason(record["estimate_seconds"])
        if reason:
            record.update(status="skip", reason=reason)
            self.report.save()
            return
        started = time.perf_counter()
        try:
            if self.model is None:
                self.build()
            _MEASURES.get(row.name, _measure_plain)(self, row, modes, record)
        except Exception as exc:  # reported, the run goes on
            record.update(status="fail", **error_fields(exc))
            self.report.fail(f"modes/stage{self.stage}/{row.name}", record["error"])
        record["row_seconds"] = round(time.perf_counter() - started, 2)
        release(self.device)
        self.report.save()

    def measure(self, model, row: ModeRow, modes: ModelModes, record: dict, weights_on_device: int) -> None:
        """Time one guided forward of `model` and fill the record (peak vs planner, attention, output error)."""
        from flashvideo_core.modes.attention import attention_backend, describe_backend

        call = guided_call(model, self.cfg, self.sizes.frames, self.size, self.stage, self.device, self.dtype)
        live = not modes.compile  # a dispatch mode would keep dynamo from compiling (and the CPU count needs one)
        out, timing = timed(lambda: call(row.sequential), self.device, live=live)
        measured = case_peak(weights_on_device, call.input_bytes, timing)
        record.update(timing, case_peak_bytes=measured, weights_on_device_bytes=weights_on_device,
                      input_bytes=call.input_bytes, attention_ran=attention_backend(model),
                      attention_line=describe_backend(model), output_finite=bool(torch.isfinite(out).all()),
                      planner_prediction=planner_prediction(self.stage, self.cfg, self.sizes.frames, self.size,
                                                            self.dtype, measured, modes, row.sequential))
        if row.name == "plain":
            self.reference = out
        else:
            self._compare(row, out, record)
        record["status"] = "pass" if record.get("status") == "running" else record["status"]

    def _compare(self, row: ModeRow, out: torch.Tensor, record: dict) -> None:
        plain = next((r for r in self.report.data["modes"]["rows"] if r["stage"] == self.stage
                      and r["mode"] == "plain" and r["status"] == "pass"), None)
        if plain:
            record["seconds_over_plain"] = round(record["seconds"] / plain["seconds"], 3)
        if self.reference is None or not bool(torch.isfinite(self.reference).all()):
            record["rel_error_vs_plain"] = None  # no finite plain output to compare with (random weights)
            return
        ref = self.reference.float()
        error = ((out.float() - ref).norm() / ref.norm().clamp_min(1e-30)).item()
        record["rel_error_vs_plain"] = error
        limit = 0.0 if row.name in BIT_IDENTICAL else MAX_REL_ERROR
        if not error <= limit:
            record["status"] = "fail"
            record["error"] = f"output differs from the plain mode's by {error:.3g} (relative L2; allowed {limit:g})"
            self.report.fail(f"modes/stage{self.stage}/{row.name}", record["error"])


def _measure_plain(run: StageRun, row: ModeRow, modes: ModelModes, record: dict) -> None:
    run.measure(run.model, row, modes, record, device_bytes(run.model, run.device))


def _measure_fp8(run: StageRun, row: ModeRow, modes: ModelModes, record: dict) -> None:
    """fp8 rows on a quantised copy (the plain model stays for the rows after; its bytes are not counted)."""
    from flashvideo_core.modes.fp8 import quantize_fp8

    model = copy.deepcopy(run.model)
    stats = quantize_fp8(model, run.dtype)
    record.update(fp8_layers=len(stats.quantized), fp8_bytes_ratio=round(stats.ratio, 4))
    try:
        run.measure(model, row, modes, record, device_bytes(model, run.device))
    finally:
        del model
        release(run.device)


def _measure_block_swap(run: StageRun, row: ModeRow, modes: ModelModes, record: dict) -> None:
    """Block swap on the plain model (streamed blocks to pinned host memory), then disabled again."""
    from flashvideo_core.modes.block_swap import enable_block_swap

    handle = enable_block_swap(run.model, modes.resident_blocks, run.device)
    release(run.device)
    try:
        memory = handle.memory()
        record.update(resident_blocks=handle.resident, blocks=len(handle.blocks),
                      transfers=type(handle.transfers).__name__, streamed_bytes=memory.streamed,
                      in_flight_bytes=memory.in_flight)
        run.measure(run.model, row, modes, record, memory.resident)
    finally:
        handle.disable(run.device)


def _measure_attention(run: StageRun, row: ModeRow, modes: ModelModes, record: dict) -> None:
    """A Sage / Flash row: skipped (with the fallback line) when the library is not installed."""
    from flashvideo_core.modes.attention import STATE_ATTR, describe_backend, set_attention_backend

    layers = [m for m in run.model.modules() if hasattr(m, "set_processor") and hasattr(m, "processor")]
    before = [layer.processor for layer in layers]
    try:
        if set_attention_backend(run.model, row.name, log=False) != row.name:
            record.update(status="skip", reason=describe_backend(run.model))
            return
        run.measure(run.model, row, modes, record, device_bytes(run.model, run.device))
    finally:
        for layer, processor in zip(layers, before, strict=True):
            layer.set_processor(processor)
        state = getattr(run.model, STATE_ATTR, None)
        if state is not None:
            state.hook.remove()
            delattr(run.model, STATE_ATTR)


def _measure_compile(run: StageRun, row: ModeRow, modes: ModelModes, record: dict) -> None:
    """Regional compile: a first call compiles (timed as compile_seconds), the second is the measured one."""
    from flashvideo_core.modes.compile import compile_blocks, uncompile_blocks

    backend = "inductor" if run.device.type == "cuda" else "eager"
    info = compile_blocks(run.model, backend=backend)
    try:
        start = time.perf_counter()
        run.call(row.sequential)
        record.update(compile_backend=info.backend, compiled_blocks=info.blocks,
                      compile_seconds=round(time.perf_counter() - start, 2))
        run.measure(run.model, row, modes, record, device_bytes(run.model, run.device))
    finally:
        uncompile_blocks(run.model)
        torch._dynamo.reset()


_MEASURES = {"fp8": _measure_fp8, "fp8_sequential_cfg": _measure_fp8, "block_swap": _measure_block_swap,
             "sage": _measure_attention, "flash": _measure_attention, "compile": _measure_compile}


def run_modes(report: Report, clock: Clock, sizes: Sizes, device, dtype, wanted: set) -> None:
    """The wanted stages' rows ("stage1_modes", "stage2_modes"), then their compile rows ("compile")."""
    report.data["modes"].update(
        sizes={f"stage{s}": f"{sizes.stage(s)[1][1]}x{sizes.stage(s)[1][0]}x{sizes.frames} (WxHxF)" for s in (1, 2)},
        peak="weights on the device + inputs + what the call added at its peak (the planner's count)",
        block_swap_resident={f"stage{s}": resident_blocks(sizes.stage(s)[0].num_layers) for s in (1, 2)})
    runs = {}
    for stage in (1, 2):
        if f"stage{stage}_modes" in wanted:
            run = StageRun(report, clock, sizes, stage, device, dtype)
            for row in MODE_ORDER:
                run.run(row)
            run.model = run.call = None  # rebuilt (seconds, the same seeded weights) for the compile row
            release(device)
            runs[stage] = run
    if "compile" in wanted:
        for stage in (2, 1):  # Stage II first: its 1080p forward is where compile matters, and it costs the most
            run = runs.get(stage)
            if run is None:  # compile alone (--only compile): the plain row first, for the time and output ratios
                run = StageRun(report, clock, sizes, stage, device, dtype)
                run.run(MODE_ORDER[0])
            run.run(COMPILE_ROW)
            run.model = run.call = run.reference = None
            release(device)
