"""bench/gpu_check.py's performance section: real-size architectures with random weights built on the GPU.

Cases (CASES, in this order): one Stage I forward (CogVideoX-5B shape) at 256x480x49, batch 2 (CFG);
one Stage II forward (2B, 3D RoPE) at 1072x1920x49, batch 2; a whole 4-step Stage II
(sampling.stages.run_stage2) at 1080p; one sliced VAE decode at 1080p (vae.decode_latents, two width tiles
as the official decode). Each: seconds, peak device memory (reset per case), FLOPs
(torch.utils.flop_counter, counted once) and achieved TFLOP/s, the paper's time beside it, and in the
memory section the peak against the planner (planning.planner.plan_peak for the transformers,
vae.cost.planned_decode_bytes for the whole-clip VAE decode). Each case starts only when its time estimate
(case_estimate) fits before the deadline.
"""

from __future__ import annotations

import time

import torch
from gpu_check_tools import (
    ASSUMED_CONV_TFLOPS,
    REAL,
    SETUP_SECONDS,
    Clock,
    Report,
    Sizes,
    built_on,
    counted,
    error_fields,
    forward_seconds,
    guided_call,
    sync,
    timed,
    weights_of,
)

from flashvideo_core import config
from flashvideo_core.planning.out_of_memory import release

CASES = ("stage1_forward", "stage2_forward", "stage2_4_steps", "vae_decode")
PAPER = {
    "stage1_forward": {"seconds": 30.1 / 50, "what": "Stage I 270p, 50 NFE in 30.1 s: 0.602 s per NFE"},
    "stage2_forward": {"seconds": 72.2 / 4, "what": "Stage II 1080p, 4 NFE in 72.2 s: 18.05 s per NFE"},
    "stage2_4_steps": {"seconds": 72.2, "what": "Stage II 1080p, 4 NFE in 72.2 s"},
    "vae_decode": {"seconds": None, "what": "the paper gives no VAE decode time"},
}
"""The paper's timings (one GPU; absolute times compare only on the same GPU)."""
VAE_FLOPS_PER_OUTPUT_VOXEL = 2.0e7
"""FLOPs of the real VAE's decode per output pixel per frame: 2001 TFLOP counted (FlopCounterMode under
FakeTensorMode) for 49 frames at 1072x1920 in 2-frame chunks and 2 width tiles; scales with width^2."""


def flops_meta(report: Report, sizes: Sizes) -> None:
    """FLOPs of one CFG forward of each stage, counted on the meta device (shapes only, seconds on any CPU):
    at the real sizes (real_size_flops_meta; the dry run thereby takes the real configs through the same
    call, a GPU run gets the reference the measured count should match) and at the run's sizes
    (run_size_flops_meta, what the time estimates start from). On meta, SDPA runs as its math
    decomposition, whose matmuls are counted."""
    from flashvideo_core.model.transformer import build_transformer

    meta = torch.device("meta")
    for key, run_sizes in (("real_size_flops_meta", REAL), ("run_size_flops_meta", sizes)):
        if key == "run_size_flops_meta" and sizes == REAL:  # a GPU run: the same count
            report.data["performance"][key] = report.data["performance"]["real_size_flops_meta"]
            break
        counts = {}
        try:
            for stage in (1, 2):
                cfg, size = run_sizes.stage(stage)
                with built_on(meta, torch.bfloat16):
                    model = build_transformer(cfg, seed=0)
                call = guided_call(model, cfg, run_sizes.frames, size, stage, meta, torch.bfloat16)
                out, count = counted(call)
                counts[f"stage{stage}_forward"] = {"flops": count["flops"], "output_shape": list(out.shape)}
        except Exception as exc:  # reported, the run goes on
            counts["error"] = error_fields(exc)["error"]
            report.fail(f"performance/{key}", counts["error"])
        report.data["performance"][key] = counts
    report.save()


def case_estimate(report: Report, name: str, sizes: Sizes, device: torch.device) -> tuple[float, str]:
    """Seconds the case is expected to take, and on what the estimate rests (forward_seconds: a forward
    measured in this run, else FLOPs at an assumed rate; the VAE from its FLOPs per output voxel)."""
    setup = SETUP_SECONDS[device.type]
    if name == "vae_decode":
        height, width = sizes.stage2_size
        width_scale = (sizes.vae.block_out_channels[0] / 128) ** 2
        flops = VAE_FLOPS_PER_OUTPUT_VOXEL * width_scale * sizes.frames * height * width
        rate = ASSUMED_CONV_TFLOPS[device.type]
        return setup + flops / (rate * 1e12), f"{flops / 1e12:.0f} TFLOP at an assumed {rate:g} TFLOP/s"
    stage = 1 if name == "stage1_forward" else 2
    forwards = 4 if name == "stage2_4_steps" else 2  # the forward cases: the counted warm-up, then the timed call
    seconds, basis = forward_seconds(report, stage, device)
    return setup + forwards * seconds, f"{forwards} forwards of {seconds:.2f} s ({basis})"


def run_case(report: Report, clock: Clock, name: str, sizes: Sizes, device: torch.device, measure) -> None:
    """Run one performance case into report.performance.cases[name] when its estimate fits the deadline;
    a failure is recorded and the run goes on."""
    estimate, basis = case_estimate(report, name, sizes, device)
    case = {"case": name, "status": "running", "estimate_seconds": round(estimate, 1), "estimate_basis": basis}
    report.data["performance"]["cases"][name] = case
    reason = clock.skip_reason(estimate)
    if reason:
        case.update(status="skip", reason=reason)
        report.save()
        return
    started = time.perf_counter()
    try:
        measure(case)
        case["status"] = "pass"
    except Exception as exc:  # reported, the run goes on
        case.update(status="fail", **error_fields(exc))
        report.fail(f"performance/{name}", case["error"])
    case["case_seconds"] = round(time.perf_counter() - started, 2)
    release(device)
    report.save()


def run_performance(report: Report, clock: Clock, sizes: Sizes, device, dtype, wanted: set) -> None:
    """The four cases that are wanted, in CASES order (one Stage II model serves its forward and its 4 steps)."""
    holder: dict = {}
    steps = {"stage1_forward": lambda case: _forward(case, report, 1, sizes, device, dtype, holder),
             "stage2_forward": lambda case: _forward(case, report, 2, sizes, device, dtype, holder),
             "stage2_4_steps": lambda case: _stage2_steps(case, holder, sizes, device, dtype, report),
             "vae_decode": lambda case: _vae(case, report, sizes, device, dtype)}
    for name in CASES:
        if name in wanted:
            run_case(report, clock, name, sizes, device, steps[name])
        if name != "stage2_forward":
            holder.clear()
    release(device)


def with_rates(case: dict, flops: int | None, nfe: int = 1) -> dict:
    """Add TFLOP/s and the paper's time to a measured case (seconds per NFE for single forwards)."""
    paper = PAPER[case["case"]]
    seconds = case.get("seconds")
    if flops and seconds:
        case["tflops_per_s"] = round(nfe * flops / seconds / 1e12, 2)
    case["paper_seconds"] = paper["seconds"]
    case["paper"] = paper["what"]
    case["ratio_to_paper"] = round(seconds / paper["seconds"], 3) if seconds and paper["seconds"] else None
    return case


def planner_prediction(stage: int, cfg, frames: int, size: tuple[int, int], dtype, measured: int | None,
                       modes=None, sequential: bool = False) -> dict:
    """planning.planner.plan_peak for the case (default: plain mode, batch-2 CFG) beside the measured peak."""
    from flashvideo_core.modes.settings import ModelModes
    from flashvideo_core.planning.planner import plan_peak

    plan = plan_peak(stage, size[0], size[1], frames, dtype, modes or ModelModes(), sequential, config=cfg)
    return {"total_bytes": plan.total_bytes, "weights_bytes": plan.weights_bytes,
            "activation_bytes": plan.activation_bytes, "phase": plan.phase, "mode": plan.description,
            "measured_over_predicted": round(measured / plan.total_bytes, 4) if measured else None}


def case_peak(weights: int, inputs: int, timing: dict) -> int | None:
    """What the planner predicts, measured: the weights on the device + the inputs + what the call added at
    its peak (timed's added_bytes; None where nothing was measured). Other memory left allocated is excluded."""
    return None if timing.get("added_bytes") is None else weights + inputs + timing["added_bytes"]


def _forward(case: dict, report: Report, stage: int, sizes: Sizes, device, dtype, holder: dict) -> None:
    """Build one stage's transformer on the device, count a CFG forward (the warm-up), then time one."""
    from flashvideo_core.memory_floor import transformer_floor
    from flashvideo_core.model.transformer import build_transformer

    name = case["case"]
    cfg, (height, width) = sizes.stage(stage)
    start = time.perf_counter()
    with built_on(device, dtype):
        model = build_transformer(cfg, seed=0)
    sync(device)
    holder["model"] = model
    call = guided_call(model, cfg, sizes.frames, (height, width), stage, device, dtype)
    case.update(shape=f"{width}x{height}x{sizes.frames} (WxHxF), batch 2 (CFG)", layers=cfg.num_layers,
                hidden=cfg.hidden_size, build_seconds=round(time.perf_counter() - start, 2), **weights_of(model),
                flops_counted_in="the warm-up call", attention_processor=_processor(model))
    out, count = counted(call)  # also the warm-up
    case.update(count, output_shape=list(out.shape))
    del out
    out, timing = timed(call, device, live=True)
    case.update(timing, output_finite=bool(torch.isfinite(out).all()))
    with_rates(case, count["flops"])
    report.data["attention"].setdefault("sdpa_kernels", {})[name] = count["sdpa_kernels"]
    measured = case_peak(case["weights_bytes"], call.input_bytes, timing)
    report.data["memory"][name] = {
        "measured_peak_bytes": timing["peak_bytes"], "activation_peak_bytes": timing["activation_peak_bytes"],
        "case_peak_bytes": measured, "weights_bytes": case["weights_bytes"], "input_bytes": call.input_bytes,
        "memory_floor_bytes": transformer_floor(sizes.frames, height, width, cfg.hidden_size, dtype),
        "attention_kernels": count["sdpa_kernels"],
        "planner_prediction": planner_prediction(stage, cfg, sizes.frames, (height, width), dtype, measured)}


def _stage2_steps(case: dict, holder: dict, sizes: Sizes, device, dtype, report: Report) -> None:
    """sampling.stages.run_stage2 with Stage2Settings(steps=4) at the Stage II size, timed (model built if needed)."""
    from flashvideo_core.layout import latent_frames
    from flashvideo_core.memory_floor import transformer_floor
    from flashvideo_core.model.transformer import build_transformer
    from flashvideo_core.sampling.settings import Stage2Settings
    from flashvideo_core.sampling.stages import run_stage2

    if "model" not in holder:
        with built_on(device, dtype):
            holder["model"] = build_transformer(sizes.stage2, seed=0)
    model = holder["model"]
    height, width = sizes.stage2_size
    gen = torch.Generator().manual_seed(4)
    latent = torch.randn(1, config.LATENT_CHANNELS, latent_frames(sizes.frames), height // 8, width // 8, generator=gen)
    cond = torch.randn(1, config.TEXT_TOKENS, sizes.stage2.text_dim, generator=gen)
    settings = Stage2Settings(steps=4)
    forward_flops = report.data["performance"]["cases"].get("stage2_forward", {}).get("flops")
    case.update(shape=f"{width}x{height}x{sizes.frames} (WxHxF)", steps=settings.steps, solver=settings.solver,
                includes="run_stage2 as called: latent to the device, 4 CFG forwards, Euler steps, result to the CPU")
    out, timing = timed(lambda: run_stage2(model, cond, latent, settings, device=device, dtype=dtype), device,
                        live=True)
    case.update(timing, output_finite=bool(torch.isfinite(out).all()))
    case["flops"] = settings.steps * forward_flops if forward_flops else None
    with_rates(case, forward_flops, nfe=settings.steps)
    weights = weights_of(model)["weights_bytes"]
    measured = case_peak(weights, 0, timing)
    report.data["memory"]["stage2_4_steps"] = {
        "measured_peak_bytes": timing["peak_bytes"], "activation_peak_bytes": timing["activation_peak_bytes"],
        "case_peak_bytes": measured, "weights_bytes": weights,
        "memory_floor_bytes": transformer_floor(sizes.frames, height, width, sizes.stage2.hidden_size, dtype),
        "planner_prediction": planner_prediction(2, sizes.stage2, sizes.frames, (height, width), dtype, measured)}


def _processor(model) -> str | None:
    blocks = getattr(getattr(model, "inner", None), "transformer_blocks", None)
    return type(blocks[0].attn1.processor).__name__ if blocks else None


def _vae(case: dict, report: Report, sizes: Sizes, device, dtype) -> None:
    """One sliced decode of a whole 49-frame clip at the Stage II size: a small decode warms up, then one
    decode is counted and timed together (a second 1080p decode would cost as much again)."""
    from flashvideo_core.devices import free_memory
    from flashvideo_core.layout import latent_frames
    from flashvideo_core.memory_floor import video_floor
    from flashvideo_core.vae import UNSLICED, build_vae, decode_latents
    from flashvideo_core.vae.cost import auto_slice_spec, decode_slice_bytes, decoder_cache_bytes, planned_decode_bytes
    from flashvideo_core.vae.slicing import _tiles

    height, width = sizes.stage2_size
    spec = sizes.decode_slices
    start = time.perf_counter()
    with built_on(device, dtype):
        vae = build_vae(sizes.vae, seed=0)
    sync(device)
    gen = torch.Generator().manual_seed(5)
    latent = torch.randn(1, config.LATENT_CHANNELS, latent_frames(sizes.frames), height // 8, width // 8, generator=gen)
    tiles = _tiles(height // 8, width // 8, spec)
    case.update(shape=f"{width}x{height}x{sizes.frames} (WxHxF)", slices=spec.__dict__, tiles=len(tiles),
                build_seconds=round(time.perf_counter() - start, 2), **weights_of(vae),
                flops_counted_in="the timed call (after a small warm-up decode)",
                auto_slices_for_free_memory=auto_slice_spec(vae, tuple(latent.shape), free_memory(device)).__dict__)
    decode_latents(vae, torch.randn(1, config.LATENT_CHANNELS, 1, 8, 8, generator=gen), UNSLICED)  # warm-up
    (out, count), timing = timed(lambda: counted(lambda: decode_latents(vae, latent, spec)), device, live=True)
    case.update(**count, **timing, output_shape=list(out.shape), output_finite=bool(torch.isfinite(out).all()))
    with_rates(case, count["flops"])
    on_host = device.type == "cpu"  # the decoded video is written to host memory: the device's own on the CPU
    planned = planned_decode_bytes(vae, tuple(latent.shape), spec, output=on_host)
    measured = case_peak(case["weights_bytes"], 0, timing)
    report.data["memory"]["vae_decode"] = {
        "measured_peak_bytes": timing["peak_bytes"], "activation_peak_bytes": timing["activation_peak_bytes"],
        "case_peak_bytes": measured, "weights_bytes": case["weights_bytes"], "memory_floor_bytes": None,
        "video_floor_host_bytes": video_floor(sizes.frames, height, width),
        "planned_slice_bytes": int(decode_slice_bytes(vae, spec.chunk_frames + 1, tiles[0][2], tiles[0][3])),
        "planned_cache_bytes": decoder_cache_bytes(vae, tiles[0][2], tiles[0][3]),
        "planner_prediction": {
            "total_bytes": int(case["weights_bytes"] + planned), "weights_bytes": case["weights_bytes"],
            "activation_bytes": int(planned), "mode": "vae.cost.planned_decode_bytes (whole clip: the largest "
            "slice + the carried conv cache" + (" + the float32 video" if on_host else "; the video is on the host")
            + ")", "measured_over_predicted": round(measured / (case["weights_bytes"] + planned), 4)
            if measured else None}}
