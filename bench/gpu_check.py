"""The whole GPU acceptance in one command, for the day a CUDA machine is lent for a few minutes.

    python bench/gpu_check.py --out gpu_report/              # one CUDA GPU, bf16; < 6 min on an H100
    python bench/gpu_check.py --dry-run --out /tmp/gpu_dry   # the same code at tiny sizes on the CPU

Needs only torch, diffusers, transformers and safetensors (with what they bring: huggingface_hub,
numpy, Pillow; sentencepiece for the tiny T5 tokenizer; einops is not used): no ComfyUI, no ffmpeg,
no network, nothing downloaded. `imageio_ffmpeg` is replaced
in this process by a stub (importing works, any call into it fails and is reported), and where
`generate` would write its two mp4 files, `flashvideo_core.pipeline.write_video` is swapped, in this
process only, for a null writer that consumes the frames and records their count and size.

Writes DIR/gpu_check.json (rewritten after every item, so a run stopped midway leaves what it
measured) and prints a summary. Sections:
- environment: versions, the GPU, the precision, which flashvideo_core.video modules were imported
  (pipeline.py and enhance/run.py import the package) and any call into the ffmpeg stub (none).
- placement (bench/gpu_check_placement.py): every node of nodes.NODE_CLASS_MAPPINGS, wired as the
  shipped workflow wires them, and pipeline.generate, on tiny weights (weights.tiny) in bf16 on the GPU:
  pass/fail/skip, seconds, the error text, whether it is a device or dtype mismatch, and what came out
  (shape, dtype, device). A node with no case here is a failure ("missing"), so a new node cannot go
  unchecked. The Stage II LoRA node runs on a tiny LoRA written to the run's models folder, its model in a
  second Stage II sampler; it needs peft (its adapter layers), so where peft is not installed that pair is
  skipped, saying so.
- performance (bench/gpu_check_perf.py): real-size architectures with random weights built on the GPU
  in the run's dtype: one Stage I forward (CogVideoX-5B shape) at 256x480x49, batch 2 (CFG); one Stage II
  forward (2B, 3D RoPE) at 1072x1920x49, batch 2; a whole 4-step Stage II (sampling.stages.run_stage2) at
  1080p; one sliced decode of the whole 49-frame clip at 1080p (vae.decode_latents, two width tiles as the
  official decode). Each: seconds, peak device memory (reset per case), FLOPs (torch.utils.flop_counter,
  counted once) and achieved TFLOP/s, with the paper's time beside it (Stage I 30.1 s / 50 NFE, Stage II
  72.2 s / 4 NFE). Transformers: the counted call is the warm-up, the next call is timed. VAE: a small
  decode warms up, then the 1080p decode is counted and timed together. Also the FLOPs of one forward of
  each stage counted on the meta device at the real sizes (so the dry run takes the real configs through
  the same call and a GPU run has a reference) and at the run's sizes (where the time estimates start).
- attention: the SDPA backend flags, the SDPA kernels each transformer call ran (recorded by a
  dispatch mode), a probe of each backend alone (torch.nn.attention.sdpa_kernel) at the Stage II
  head shape, and diffusers' attention processor.
- memory: per case the measured peak beside flashvideo_core.memory_floor's floor, and "planner_prediction":
  the planner's bytes (planning.planner.plan_peak for the transformers, vae.cost.planned_decode_bytes for
  the whole-clip decode) with measured / predicted, measured as the planner counts (case_peak_bytes: the
  case's weights + inputs + what the call added at its peak).
- modes (bench/gpu_check_modes.py): Stage I and Stage II at the same sizes in each memory mode (plain,
  sequential CFG, fp8, fp8 + sequential CFG, block swap, SageAttention / FlashAttention when installed,
  then torch.compile): seconds and over plain, peak vs the planner's prediction for that mode, the
  attention kernel that ran, the output against the plain mode's.
- failures (one line each), ok (no failures), complete (nothing skipped for time).

Time: every case and row has an estimate (a forward measured earlier in the run, else its FLOPs at an
assumed rate: gpu_check_tools.ASSUMED_TFLOPS) and starts only when it ends before --deadline-s (default
330 on the GPU: the run ends within 6 minutes on an H100; none with --dry-run); what is skipped says so,
and "complete" turns false.

--dry-run runs everything at tiny sizes (config.TINY_*) on the CPU, so CI catches a broken script;
its times, peaks (live tensor bytes there) and ratios mean nothing. Exit code 0 when ok, 1 otherwise.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import tempfile
import types
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class _FfmpegStub(types.ModuleType):
    """Stands in for imageio_ffmpeg: importing works (flashvideo_core.video may import it at module level),
    calling anything in it raises and is recorded, so the check proves it never runs ffmpeg."""

    calls: list[str] = []

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def refuse(*args, **kwargs):
            _FfmpegStub.calls.append(name)
            raise RuntimeError(f"imageio_ffmpeg.{name} was called, but the GPU check must not need ffmpeg "
                               "(bench/gpu_check.py replaces imageio_ffmpeg with a stub)")

        return refuse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))  # the check's own modules (also when imported from elsewhere)
NEEDED = ("torch", "diffusers", "transformers", "safetensors", "huggingface_hub", "sentencepiece", "numpy", "PIL")
"""What the check imports besides the standard library (diffusers brings huggingface_hub, numpy and Pillow;
the tiny T5 tokenizer needs sentencepiece)."""


def _missing(names: tuple[str, ...]) -> list[str]:
    import importlib.util

    return [name for name in names if importlib.util.find_spec(name) is None]


if __name__ == "__main__" and _missing(NEEDED):
    raise SystemExit(f"bench/gpu_check.py needs {', '.join(_missing(NEEDED))}, not installed here. On a machine "
                     "without network, carry the wheels: README.md, section 'GPU acceptance run'.")

import torch  # noqa: E402
from gpu_check_modes import MODE_NAMES, run_modes  # noqa: E402
from gpu_check_perf import CASES, flops_meta, run_performance  # noqa: E402
from gpu_check_placement import run_placement  # noqa: E402
from gpu_check_tools import (  # noqa: E402, F401  (mismatch_kind: tests/core/test_gpu_check.py reads it here)
    DRY,
    REAL,
    Clock,
    Report,
    Sizes,
    dtype_name,
    mismatch_kind,
    sync,
)

REPORT_NAME = "gpu_check.json"
GPU_DEADLINE_S = 330.0
"""The default --deadline-s on the GPU: the cases end within 6 minutes on an H100 with start-up and imports."""
PARTS = ("placement", *CASES, "stage1_modes", "stage2_modes", "compile")
"""What --only can choose: the placement section, each performance case, each stage's modes rows (all but
compile), and the compile rows of both stages."""


# ----------------------------------------------------------------------------------------------- report


# -------------------------------------------------------------------------------------------- environment


def environment(device: torch.device, dtype: torch.dtype, dry_run: bool) -> dict:
    """Versions, the device and what the run is (the imports of flashvideo_core.video are added at the end)."""
    import diffusers
    import transformers

    info = {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "device": str(device), "dtype": dtype_name(dtype), "dry_run": dry_run,
            "null_video_writer": "flashvideo_core.pipeline.write_video is replaced in this process by a writer that "
                                 "consumes the frames and records their count and size (no ffmpeg, no file)",
            "imageio_ffmpeg": "replaced by a stub in this process (the real package is never imported): any call "
                              "into it fails and is listed in ffmpeg_calls"}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        free, total = torch.cuda.mem_get_info(device)
        info.update(gpu=props.name, capability=f"{props.major}.{props.minor}", total_memory_bytes=total,
                    multiprocessors=props.multi_processor_count, free_memory_bytes_at_start=free,
                    cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
    info["optional_libraries"] = _versions(("triton", "sageattention", "flash_attn", "flash_attn_interface", "peft"))
    return info


def _versions(names: tuple[str, ...]) -> dict:
    """name -> installed version (or "installed" without one, or None when absent)."""
    import importlib.metadata
    import importlib.util

    found = {}
    for name in names:
        if importlib.util.find_spec(name) is None:
            found[name] = None
            continue
        try:
            found[name] = importlib.metadata.version(name.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            found[name] = "installed"
    return found


def video_imports() -> dict:
    """Which flashvideo_core.video modules this process imported, and what was called in the ffmpeg stub."""
    return {"flashvideo_core_video_modules": sorted(m for m in sys.modules if m.startswith("flashvideo_core.video")),
            "imported_by": "flashvideo_core/pipeline.py and flashvideo_core/enhance/run.py import the package at "
                           "module level (nodes/enhance_node.py imports enhance/run.py)",
            "imageio_ffmpeg_is_stub": isinstance(sys.modules.get("imageio_ffmpeg"), _FfmpegStub),
            "ffmpeg_calls": list(_FfmpegStub.calls)}


# ---------------------------------------------------------------------------------------------- attention


def attention_backends(report: Report, sizes: Sizes, device: torch.device, dtype: torch.dtype) -> None:
    """The SDPA flags, and whether each backend alone runs a Stage II-shaped attention (heads x 64) here."""
    section = report.data["attention"]
    backends = torch.backends.cuda
    section["flags"] = {name: bool(getattr(backends, f"{name}_sdp_enabled")()) for name in
                        ("flash", "mem_efficient", "math", "cudnn") if hasattr(backends, f"{name}_sdp_enabled")}
    probe = {}
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError as exc:
        section["probe"] = {"error": str(exc)}
        report.save()
        return
    heads, dim = sizes.stage2.num_heads, sizes.stage2.head_dim
    gen = torch.Generator(device=device).manual_seed(6)
    q, k, v = (torch.randn(2, heads, 1024, dim, generator=gen, device=device, dtype=dtype) for _ in range(3))
    for backend in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"):
        if not hasattr(SDPBackend, backend):
            continue
        try:
            with sdpa_kernel([getattr(SDPBackend, backend)]):
                torch.nn.functional.scaled_dot_product_attention(q, k, v)
            sync(device)
            probe[backend] = "runs"
        except Exception as exc:  # reported, the run goes on
            probe[backend] = f"refused: {str(exc).splitlines()[0][:200]}"
    section["probe"] = {"shape": [2, heads, 1024, dim], "dtype": dtype_name(dtype), **probe}
    report.save()


# ------------------------------------------------------------------------------------------------ summary


def _gib(value) -> str:
    return "-" if value is None else f"{value / 2**30:.2f} GiB"


def summary(data: dict) -> str:
    """The report as a few readable lines."""
    env = data["environment"]
    lines = [f"FlashVideo GPU check ({data['mode']}): {env.get('gpu', env.get('device'))}, {env.get('dtype')}, "
             f"torch {env.get('torch')}, {data['seconds_total']:.0f} s"]
    items = data["placement"].get("items", [])
    counts = Counter(item["status"] for item in items)
    lines.append(f"placement: {counts['pass']} pass, {counts['fail']} fail, {counts['skip']} skip")
    for item in items:
        if item["status"] != "pass":
            why = item.get("error") or item.get("reason") or ""
            lines.append(f"  {item['status']:4s} {item['item']}: {item.get('error_kind', '')} {why[:160]}")
    lines.append("performance:")
    for name, case in data["performance"]["cases"].items():
        if case.get("status") != "pass":
            lines.append(f"  {name:15s} {case.get('status')}: {(case.get('error') or case.get('reason') or '')[:160]}")
            continue
        ratio = case.get("ratio_to_paper")
        paper = f", paper {case['paper_seconds']:.2f} s (x{ratio})" if case.get("paper_seconds") else ""
        tflops = f", {case['tflops_per_s']} TFLOP/s" if case.get("tflops_per_s") is not None else ""
        lines.append(f"  {name:15s} {case['seconds']:8.3f} s, peak {_gib(case.get('peak_bytes'))}{tflops}{paper}")
    meta = data["performance"].get("real_size_flops_meta", {})
    lines.append("real-size FLOPs per CFG forward (meta device): " + ", ".join(
        f"{name} {entry['flops'] / 1e12:.1f} TFLOP" for name, entry in meta.items() if isinstance(entry, dict)))
    attention = data["attention"]
    lines.append(f"attention: flags {attention.get('flags')}, kernels {attention.get('sdpa_kernels')}")
    lines.append(f"attention probe: {attention.get('probe')}")
    for stage, mem in data["memory"].items():
        plan = mem.get("planner_prediction") or {}
        lines.append(f"memory {stage}: peak {_gib(mem.get('measured_peak_bytes'))} (the call added "
                     f"{_gib(mem.get('activation_peak_bytes'))}; as the planner counts "
                     f"{_gib(mem.get('case_peak_bytes'))}), floor {_gib(mem.get('memory_floor_bytes'))}, planner "
                     f"{_gib(plan.get('total_bytes'))} (measured/planned {plan.get('measured_over_predicted')})")
    lines += _modes_lines(data["modes"].get("rows", []))
    lines.append(f"{'OK' if data['ok'] else 'FAILED'}{'' if data['complete'] else ' (incomplete: deadline)'}; "
                 f"{len(data['failures'])} failure(s)")
    lines += [f"  {failure}" for failure in data["failures"]]
    return "\n".join(lines)


def _modes_lines(rows: list[dict]) -> list[str]:
    """The modes rows as a table: time (and over plain), peak vs the planner, kernel, output error."""
    if not rows:
        return []
    lines = ["modes (one guided forward each; peak = weights on the device + inputs + what the call added):"]
    for row in rows:
        head = f"  stage {row['stage']} {row['mode']:18s}"
        if row.get("status") != "pass":
            why = row.get("error") or row.get("reason") or ""
            lines.append(f"{head} {row.get('status')}: {why[:150]}")
            continue
        plan = row.get("planner_prediction") or {}
        over = f" (x{row['seconds_over_plain']})" if row.get("seconds_over_plain") else ""
        error = row.get("rel_error_vs_plain")
        lines.append(f"{head} {row['seconds']:8.3f} s{over}, peak {_gib(row.get('case_peak_bytes'))}, planner "
                     f"{_gib(plan.get('total_bytes'))} (measured/planned {plan.get('measured_over_predicted')}), "
                     f"{row.get('attention_ran')}" + ("" if error is None else f", output error {error:.2g}"))
    return lines


# --------------------------------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help=f"folder for {REPORT_NAME}")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU (checks the script itself)")
    parser.add_argument("--precision", choices=("bf16", "fp32", "fp16"), default=None,
                        help="default bf16 on the GPU (the official precision), fp32 for --dry-run")
    parser.add_argument("--only", default=",".join(PARTS),
                        help=f"comma-separated parts to run (default all): {','.join(PARTS)}")
    parser.add_argument("--deadline-s", type=float, default=None,
                        help="skip each case or mode row whose time estimate would end after this many seconds "
                             "(default 330 on the GPU: the whole run within 6 minutes on an H100; none with "
                             "--dry-run, which checks the script and must run every case however loaded the CPU)")
    return parser.parse_args(argv)


def _deadline(args: argparse.Namespace) -> float:
    """--deadline-s, else 330 s on the GPU and no deadline for --dry-run (a loaded CI machine must not skip cases)."""
    if args.deadline_s is not None:
        return args.deadline_s
    return math.inf if args.dry_run else GPU_DEADLINE_S


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.modules["imageio_ffmpeg"] = _FfmpegStub("imageio_ffmpeg")  # before anything imports flashvideo_core.video
    from flashvideo_core.devices import DTYPES

    wanted = {part.strip() for part in args.only.split(",") if part.strip()}
    unknown = wanted - set(PARTS)
    if unknown:
        raise SystemExit(f"--only: unknown part(s) {', '.join(sorted(unknown))}; use {','.join(PARTS)}.")
    if args.dry_run:
        device, sizes = torch.device("cpu"), DRY
    elif not torch.cuda.is_available():
        raise SystemExit("No CUDA device here (torch.cuda.is_available() is False). Run on a GPU machine with a "
                         "CUDA build of torch, or check the script itself with --dry-run.")
    else:
        device, sizes = torch.device("cuda"), REAL
    precision = args.precision or ("fp32" if args.dry_run else "bf16")
    dtype = DTYPES[precision]
    report = Report(args.out / REPORT_NAME, "dry-run" if args.dry_run else "gpu")
    report.data["environment"] = environment(device, dtype, args.dry_run)
    report.data["parts"] = sorted(wanted)
    report.data["modes"]["names"] = list(MODE_NAMES)
    report.save()
    with tempfile.TemporaryDirectory(prefix="flashvideo-gpu-check-") as work:
        os.environ.setdefault("FLASHVIDEO_CACHE", str(Path(work) / "cache"))
        attention_backends(report, sizes, device, dtype)
        if "placement" in wanted:
            run_placement(report, device, precision, Path(work))
        flops_meta(report, sizes)
        clock = Clock(report, _deadline(args))
        run_performance(report, clock, sizes, device, dtype, wanted)
        run_modes(report, clock, sizes, device, dtype, wanted)
    report.data["environment"].update(video_imports())
    if report.data["environment"]["ffmpeg_calls"] or not report.data["environment"]["imageio_ffmpeg_is_stub"]:
        report.fail("environment", f"ffmpeg was needed: imageio_ffmpeg calls {_FfmpegStub.calls} (the check must "
                                   "run without ffmpeg)")
    report.save()
    print(summary(report.data))
    print(f"report: {report.path}")
    return 0 if report.data["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
