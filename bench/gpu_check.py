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
- placement: every node of nodes.NODE_CLASS_MAPPINGS, wired as the shipped workflow wires them, and
  pipeline.generate, on tiny weights (weights.tiny) in bf16 on the GPU: pass/fail/skip, seconds,
  the error text, whether it is a device or dtype mismatch, and what came out (shape, dtype, device).
  A node with no case here is a failure ("missing"), so a new node cannot go unchecked.
- performance: real-size architectures with random weights built on the GPU in the run's dtype:
  one Stage I forward (CogVideoX-5B shape) at 256x480x49, batch 2 (CFG); one Stage II forward
  (2B, 3D RoPE) at 1072x1920x49, batch 2; a whole 4-step Stage II (sampling.stages.run_stage2) at
  1080p; one sliced VAE decode at 1080p (vae.decode_latents, two width tiles as the official
  decode). Each: seconds, peak device memory (reset per case), FLOPs (torch.utils.flop_counter,
  counted once) and achieved TFLOP/s, with the paper's time beside it (Stage I 30.1 s / 50 NFE,
  Stage II 72.2 s / 4 NFE). Transformers: the counted call is the warm-up, the next call is timed.
  VAE: a small decode warms up, then one 1080p decode is counted and timed together (a second
  1080p decode would cost a minute).
  Also the FLOPs of one real-size forward of each stage counted on the meta device (shapes only),
  so the dry run takes the real configs through the same call and a GPU run has a reference.
- attention: the SDPA backend flags, the SDPA kernels each transformer call ran (recorded by a
  dispatch mode), a probe of each backend alone (torch.nn.attention.sdpa_kernel) at the Stage II
  head shape, and diffusers' attention processor.
- memory: per stage the measured peak beside flashvideo_core.memory_floor's floor (and, for the
  VAE, its slicing cost model); "planner_prediction": planning.planner.plan_peak's bytes for the transformer
  cases and measured / predicted (null for the VAE, planned by its slicing cost model).
- failures (one line each), ok (no failures), complete (nothing skipped for time).

--dry-run runs everything at tiny sizes (config.TINY_*) on the CPU, so CI catches a broken script;
its times and paper ratios mean nothing. Exit code 0 when ok, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import traceback
import types
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
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
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode, flop_registry  # noqa: E402

from flashvideo_core import config  # noqa: E402
from flashvideo_core.config import TransformerConfig, VAEConfig  # noqa: E402
from flashvideo_core.vae import SliceSpec  # noqa: E402

REPORT_NAME = "gpu_check.json"
SCHEMA = 1
SECTIONS = ("environment", "placement", "performance", "attention", "memory")
CASES = ("stage1_forward", "stage2_forward", "stage2_4_steps", "vae_decode")
PROMPT = "A red fox runs through fresh snow at sunrise, its breath visible in the cold air."

PAPER = {
    "stage1_forward": {"seconds": 30.1 / 50, "what": "Stage I 270p, 50 NFE in 30.1 s: 0.602 s per NFE"},
    "stage2_forward": {"seconds": 72.2 / 4, "what": "Stage II 1080p, 4 NFE in 72.2 s: 18.05 s per NFE"},
    "stage2_4_steps": {"seconds": 72.2, "what": "Stage II 1080p, 4 NFE in 72.2 s"},
    "vae_decode": {"seconds": None, "what": "the paper gives no VAE decode time"},
}
"""The paper's timings (one GPU; absolute times compare only on the same GPU)."""

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


@dataclass(frozen=True)
class Sizes:
    """The shapes of the performance section: real (the published models and sizes) or dry (tiny)."""

    stage1: TransformerConfig
    stage2: TransformerConfig
    vae: VAEConfig
    frames: int
    stage1_size: tuple[int, int]
    """(height, width) in pixels."""
    stage2_size: tuple[int, int]
    decode_slices: SliceSpec
    """Latent units; the official Stage II decode: 2-frame chunks, 2 width tiles sharing 16 latent pixels."""


REAL = Sizes(config.STAGE1_5B, config.STAGE2_2B, config.VAE_COGVIDEOX, config.DEFAULT_NUM_FRAMES,
             (config.STAGE1_HEIGHT, config.STAGE1_WIDTH), (config.STAGE2_HEIGHT, config.STAGE2_WIDTH),
             SliceSpec(chunk_frames=2, tile_width=128, overlap=16))
DRY = Sizes(config.TINY_STAGE1, config.TINY_STAGE2, config.TINY_VAE, 9, (32, 48), (32, 48),
            SliceSpec(chunk_frames=2, tile_width=4, overlap=2))


# ----------------------------------------------------------------------------------------------- report


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


def _error_fields(exc: BaseException) -> dict:
    """An exception -> {error, kind (device_mismatch / dtype_mismatch / out_of_memory / other), traceback tail}."""
    text = f"{type(exc).__name__}: {exc}"
    kind = mismatch_kind(str(exc)) or "other"
    if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
        kind = "out_of_memory"
    tail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-6:])
    return {"error": text[:4000], "error_kind": kind, "traceback_tail": tail[-4000:]}


def describe(value) -> object:
    """A node output or handle -> a JSON-able summary (shapes, dtypes, devices), never the data."""
    if isinstance(value, torch.Tensor):
        return {"shape": list(value.shape), "dtype": _name(value.dtype), "device": str(value.device)}
    if isinstance(value, dict) and "samples" in value:
        return {"latent": describe(value["samples"]), "flashvideo": {k: v for k, v in (value.get("flashvideo") or {})
                                                                  .items() if isinstance(v, int | float | bool)}}
    module = getattr(value, "module", None)
    if isinstance(module, torch.nn.Module):
        return {"model": type(module).__name__, "rests_on": str(_module_device(module)),
                "runs_on": str(getattr(value, "device", None)), "dtype": str(getattr(value, "dtype", None))}
    if hasattr(value, "stage1") and hasattr(value, "stage2"):
        return {"stage1": describe(value.stage1), "stage2": describe(value.stage2)}
    if isinstance(value, str):
        return {"text_chars": len(value)}
    return type(value).__name__


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _module_device(module: torch.nn.Module) -> torch.device:
    return next((p.device for p in module.parameters()), torch.device("cpu"))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# -------------------------------------------------------------------------------------------- environment


def environment(device: torch.device, dtype: torch.dtype, dry_run: bool) -> dict:
    """Versions, the device and what the run is (the imports of flashvideo_core.video are added at the end)."""
    import diffusers
    import transformers

    info = {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "device": str(device), "dtype": str(dtype).replace("torch.", ""), "dry_run": dry_run,
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
    return info


def video_imports() -> dict:
    """Which flashvideo_core.video modules this process imported, and what was called in the ffmpeg stub."""
    return {"flashvideo_core_video_modules": sorted(m for m in sys.modules if m.startswith("flashvideo_core.video")),
            "imported_by": "flashvideo_core/pipeline.py and flashvideo_core/enhance/run.py import the package at "
                           "module level (nodes/enhance_node.py imports enhance/run.py)",
            "imageio_ffmpeg_is_stub": isinstance(sys.modules.get("imageio_ffmpeg"), _FfmpegStub),
            "ffmpeg_calls": list(_FfmpegStub.calls)}


# ---------------------------------------------------------------------------------------------- placement


class Link(str):
    """A node input taken from an earlier item's output (by the item's name)."""


NODE_GRAPH: list[tuple[str, str, dict]] = [
    ("stage1_model", "FlashVideoStage1Loader", {"model_name": "stage1.pt", "offload": "offload after use"}),
    ("stage2_model", "FlashVideoStage2Loader", {"model_name": "stage2.pt", "offload": "keep on device"}),
    ("vae", "FlashVideoVAELoader", {"vae_name": "3d-vae.pt", "offload": "offload after use"}),
    ("t5", "FlashVideoT5Loader", {"encoder_name": "text_encoder/", "offload": "offload after use"}),
    ("embeds", "FlashVideoTextEncode", {"t5": Link("t5"), "prompt": PROMPT, "stage2_prefix": True}),
    ("latent1", "FlashVideoStage1Sampler", {"model": Link("stage1_model"), "embeds": Link("embeds"), "seed": 0,
                                            "steps": 3, "frames": 9, "width": 48, "height": 32, "vae": Link("vae")}),
    ("preview", "FlashVideoVAEDecode", {"vae": Link("vae"), "latent": Link("latent1"), "slicing": "auto"}),
    ("prepared", "FlashVideoPrepareStage2", {"vae": Link("vae"), "images": Link("preview"), "width": 64,
                                             "height": 48, "seed": 1}),
    ("degraded", "FlashVideoLatentDegradation", {"latent": Link("prepared"), "seed": 2}),
    ("latent2", "FlashVideoStage2Sampler", {"model": Link("stage2_model"), "embeds": Link("embeds"),
                                            "latent": Link("degraded"), "steps": 2, "vae": Link("vae")}),
    ("video", "FlashVideoVAEDecode", {"vae": Link("vae"), "latent": Link("latent2"), "slicing": "manual",
                                      "chunk_frames": 2, "tile_size": 8, "tile_overlap": 4}),
    ("enhanced", "FlashVideoEnhanceImages", {"model": Link("stage2_model"), "vae": Link("vae"),
                                             "embeds": Link("embeds"), "images": Link("clip"), "target": "x2",
                                             "steps": 1, "window": 5, "overlap": 2, "seed": 3}),
]
"""(item, node id, inputs): the text-to-video workflow's wiring at tiny sizes, then Enhance Video on a clip.
Inputs not named take their widget default; loaders get the run's precision."""

SKIPPED_NODES = {
    "FlashVideoDownloadWeights": "downloads from Hugging Face (needs the network); its offline refusal is "
                                 "tested in tests/nodes/test_node_execution.py",
    "FlashVideoStage2LoRA": "needs a LoRA file from a training run; its model runs in the Stage II sampler in "
                            "tests/nodes/test_lora_node.py (CPU and the stand-in memory manager)",
}
"""Nodes that cannot run here, with the reason (network, video files through ffmpeg)."""


class _RecordingBar:
    """Stands in for comfy.utils.ProgressBar so the nodes make their previews (decoded on the VAE's device)."""

    updates = 0
    previews = 0

    def __init__(self, total):
        self.total = total

    def update_absolute(self, value, total=None, preview=None):
        _RecordingBar.updates += 1
        _RecordingBar.previews += preview is not None


def _comfy_standin(folder: Path) -> None:
    """A module `comfy` holding only utils.ProgressBar (no model_management: the nodes use their fallbacks)."""
    comfy = types.ModuleType("comfy")
    comfy.__file__ = str(folder / "comfy" / "__init__.py")
    comfy.utils = types.SimpleNamespace(ProgressBar=_RecordingBar)
    sys.modules["comfy"] = comfy
    sys.modules["comfy.utils"] = comfy.utils


def _models_folder(tiny: dict[str, Path], root: Path) -> Path:
    """A ComfyUI-like models folder: FlashVideo/ with the tiny published files (as tests/nodes/conftest.py)."""
    pack = root / "FlashVideo"
    pack.mkdir(parents=True)
    for name in ("stage1", "stage2", "vae"):
        shutil.copy(tiny[name], pack / tiny[name].name)
    for name in ("text_encoder", "tokenizer"):
        shutil.copytree(tiny[name], pack / tiny[name].name)
    (root / "text_encoders").mkdir()
    return root


def _widget_default(name: str, spec: tuple):
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if "default" in options:
        return options["default"]
    if isinstance(spec[0], list | tuple) and spec[0]:
        return spec[0][0]
    raise KeyError(f"input {name!r} has no default and the check's graph gives it no value")


def node_inputs(node_cls, given: dict, values: dict, precision: str) -> dict:
    """The keyword arguments ComfyUI would pass: `given` (links resolved from `values`), else widget defaults.

    Optional inputs are passed only when given; a loader's `precision` is the run's precision.
    """
    spec = node_cls.INPUT_TYPES()
    kwargs = {}
    for name, entry in spec.get("required", {}).items():
        if name in given:
            kwargs[name] = given[name]
        elif name == "precision":
            kwargs[name] = precision
        else:
            kwargs[name] = _widget_default(name, entry)
    kwargs.update({name: given[name] for name in spec.get("optional", {}) if name in given})
    return {name: values[value] if isinstance(value, Link) else value for name, value in kwargs.items()}


def _first_output(result):
    if isinstance(result, dict) and "result" in result:
        result = result["result"]
    return result[0] if isinstance(result, tuple | list) else result


def _attempt(items: list, report: Report, name: str, device: torch.device, run: Callable[[], object],
             **fields) -> object | None:
    """Run one placement item; record pass/fail, seconds, error text and a summary of its output."""
    record = {"item": name, **fields}
    items.append(record)
    start = time.perf_counter()
    bar_before = (_RecordingBar.updates, _RecordingBar.previews)
    value = None
    try:
        value = run()
        _sync(device)
        record.update(status="pass", output=describe(value))
    except Exception as exc:  # every failure is reported, the run goes on
        record.update(status="fail", **_error_fields(exc))
        report.fail(f"placement/{name}", record["error"])
    record["seconds"] = round(time.perf_counter() - start, 3)
    record["progress_updates"] = _RecordingBar.updates - bar_before[0]
    record["previews"] = _RecordingBar.previews - bar_before[1]
    report.save()
    return value


def run_placement(report: Report, device: torch.device, precision: str, work: Path) -> None:
    """Every node and pipeline.generate on tiny weights; the models' compute device is the run's device."""
    from flashvideo_core.weights.tiny import write_tiny_weights

    items = report.data["placement"]["items"]
    section = report.data["placement"]
    section.update(precision=precision, device=str(device),
                   comfy_standin="a module `comfy` holding only utils.ProgressBar, so the samplers make previews; "
                                 "no model_management, so the nodes use their ComfyUI-free fallbacks")
    tiny = write_tiny_weights(work / "weights")
    os.environ["FLASHVIDEO_MODELS_DIR"] = str(_models_folder(tiny, work / "models"))
    _comfy_standin(work)
    try:
        from nodes import NODE_CLASS_MAPPINGS
    except Exception as exc:  # reported, the run goes on
        items.append({"item": "import nodes", "status": "fail", **_error_fields(exc)})
        report.fail("placement/import nodes", str(exc))
        report.save()
        return
    values: dict[str, object] = {"clip": torch.rand(5, 16, 24, 3, generator=torch.Generator().manual_seed(0))}
    covered = set()
    for item, node_id, given in NODE_GRAPH:
        covered.add(node_id)
        node_cls = NODE_CLASS_MAPPINGS.get(node_id)
        if node_cls is None:
            items.append({"item": item, "node": node_id, "status": "skip", "reason": "no such node (renamed?)"})
            continue
        missing = [v for v in given.values() if isinstance(v, Link) and values.get(v) is None]
        if missing:
            items.append({"item": item, "node": node_id, "status": "skip",
                          "reason": f"needs {', '.join(missing)}, which failed"})
            continue

        def call(node_cls=node_cls, given=given):
            kwargs = node_inputs(node_cls, given, values, precision)
            return _first_output(getattr(node_cls(), node_cls.FUNCTION)(**kwargs))

        values[item] = _attempt(items, report, item, device, call, node=node_id)
    for node_id in NODE_CLASS_MAPPINGS:
        if node_id in SKIPPED_NODES:
            items.append({"item": node_id, "node": node_id, "status": "skip", "reason": SKIPPED_NODES[node_id]})
        elif node_id not in covered:
            items.append({"item": node_id, "node": node_id, "status": "fail", "error": "missing",
                          "error_kind": "missing", "reason": "no placement case in bench/gpu_check.py NODE_GRAPH"})
            report.fail(f"placement/{node_id}", "no placement case in bench/gpu_check.py NODE_GRAPH (add one)")
    resting = {name: describe(values[name]) for name in ("stage1_model", "stage2_model", "vae", "t5")
               if values.get(name) is not None}
    section["models_after_the_graph"] = resting
    _attempt(items, report, "pipeline.generate", device,
             lambda: _generate(tiny["stage1"].parent, device, precision, work / "generated", section))
    values.clear()
    _release(device)
    if device.type == "cuda":
        section["device_bytes_left_allocated"] = torch.cuda.memory_allocated(device)
    report.save()


def _generate(weights_dir: Path, device: torch.device, precision: str, out_dir: Path, section: dict):
    """pipeline.generate at tiny sizes on `device`, with write_video swapped for a null writer meanwhile."""
    from flashvideo_core import pipeline
    from flashvideo_core.sampling.settings import Stage1Settings, Stage2Settings
    from flashvideo_core.weights.loaders import find_weights

    writes: list[dict] = []

    def null_write(path, frames, *args, **kwargs):
        count, shape = 0, None
        for frame in frames:
            count, shape = count + 1, list(getattr(frame, "shape", []))
        writes.append({"file": Path(path).name, "frames": count, "frame_shape": shape})
        return Path(path)

    settings = pipeline.GenerateSettings(
        stage1=Stage1Settings(num_frames=9, height=32, width=48, steps=3), stage2=Stage2Settings(steps=2),
        stage2_height=48, stage2_width=64, seed=0, device=str(device), precision=precision)
    original = pipeline.write_video
    pipeline.write_video = null_write
    try:
        result = pipeline.generate(PROMPT, find_weights(weights_dir), out_dir, settings)
    finally:
        pipeline.write_video = original
        section["generate_writes"] = writes
    return result.stage2_latent


# -------------------------------------------------------------------------------------------- performance


class _AttentionRecorder(TorchDispatchMode):
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
    recorder = _AttentionRecorder()
    with FlopCounterMode(display=False) as counter, recorder:
        result = call()
    flops = counter.get_total_flops()
    return result, {"flops": flops + recorder.uncounted_flops, "flops_counted": flops,
                    "attention_flops_added": recorder.uncounted_flops, "sdpa_kernels": dict(recorder.kernels)}


def timed(call: Callable[[], object], device: torch.device) -> tuple[object, dict]:
    """Run `call` once -> (its result, {seconds, peak_bytes, start_bytes, activation_peak_bytes}).

    Device memory (CUDA only, else None): peak_bytes is torch.cuda.max_memory_allocated since a reset
    just before the call (weights and inputs included), start_bytes what was allocated then, and
    activation_peak_bytes their difference (what the call itself added at its peak).
    """
    _sync(device)
    start_bytes = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        start_bytes = torch.cuda.memory_allocated(device)
    start = time.perf_counter()
    result = call()
    _sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return result, {"seconds": round(seconds, 4), "peak_bytes": peak, "start_bytes": start_bytes,
                    "activation_peak_bytes": None if peak is None else peak - start_bytes}


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


def _weights(module: torch.nn.Module) -> dict:
    return {"parameters": sum(p.numel() for p in module.parameters()),
            "weights_bytes": sum(p.numel() * p.element_size() for p in module.parameters())}


def _with_rates(case: dict, flops: int | None, nfe: int = 1) -> dict:
    """Add TFLOP/s and the paper's time to a measured case (seconds per NFE for single forwards)."""
    paper = PAPER[case["case"]]
    seconds = case.get("seconds")
    if flops and seconds:
        case["tflops_per_s"] = round(nfe * flops / seconds / 1e12, 2)
    case["paper_seconds"] = paper["seconds"]
    case["paper"] = paper["what"]
    case["ratio_to_paper"] = round(seconds / paper["seconds"], 3) if seconds and paper["seconds"] else None
    return case


def _transformer_call(model, sizes: Sizes, stage: int, device: torch.device, dtype: torch.dtype):
    """One bare CFG-batch forward as sampling/guidance.py makes it: batch 2, 226 text tokens, 49 frames."""
    from flashvideo_core.layout import latent_frames, latent_to_transformer

    cfg = sizes.stage1 if stage == 1 else sizes.stage2
    height, width = sizes.stage1_size if stage == 1 else sizes.stage2_size
    gen = torch.Generator().manual_seed(stage)  # drawn on the CPU (also serves the meta device), then moved
    latent = torch.randn(1, config.LATENT_CHANNELS, latent_frames(sizes.frames), height // 8, width // 8,
                         generator=gen).to(device)
    hidden = latent_to_transformer(torch.cat([latent, latent])).to(dtype)  # (2, T, C, h, w)
    cond = torch.randn(1, config.TEXT_TOKENS, cfg.text_dim, generator=gen).to(device, dtype)
    if stage == 1:
        text = torch.cat([torch.zeros_like(cond), cond])  # [uncond, cond]
        timestep = torch.full((2,), 999.0, device=device)
        return lambda: model(hidden, text, timestep)
    text = torch.cat([cond, torch.zeros_like(cond)])  # [cond, uncond]
    timestep = torch.full((2,), 1000.0, device=device, dtype=dtype)
    noise_step = torch.full((2,), config.DEFAULT_NOISE_STEP, device=device, dtype=dtype)
    return lambda: model(hidden, text, timestep, noise_step=noise_step)


def real_size_flops(report: Report) -> None:
    """FLOPs of one real-size CFG forward of each stage (REAL sizes, bf16), counted on the meta device.

    No memory and no data: shapes only, in seconds, also on a CPU. The dry run thereby takes the
    real configs and sizes through the same forward call; on a GPU it is the reference the measured
    count should match (on meta, SDPA runs as its math decomposition, whose matmuls are counted).
    """
    from flashvideo_core.model.transformer import build_transformer

    meta, counts = torch.device("meta"), {}
    try:
        for stage, name, cfg in ((1, "stage1_forward", REAL.stage1), (2, "stage2_forward", REAL.stage2)):
            with built_on(meta, torch.bfloat16):
                model = build_transformer(cfg, seed=0)
            out, count = counted(_transformer_call(model, REAL, stage, meta, torch.bfloat16))
            counts[name] = {"flops": count["flops"], "output_shape": list(out.shape)}
    except Exception as exc:  # reported, the run goes on
        counts["error"] = _error_fields(exc)["error"]
        report.fail("performance/real_size_flops_meta", counts["error"])
    report.data["performance"]["real_size_flops_meta"] = counts
    report.save()


def _deadline_passed(report: Report, name: str, deadline: float) -> bool:
    if report.elapsed() <= deadline:
        return False
    report.data["performance"]["cases"][name] = {"case": name, "status": "skip",
                                                 "reason": f"--deadline-s {deadline:g} passed"}
    report.data["complete"] = False
    report.save()
    return True


def _case(report: Report, name: str, device: torch.device, measure: Callable[[dict], None]) -> None:
    """Run one performance case into report.performance.cases[name]; a failure is recorded, the run goes on."""
    case = {"case": name, "status": "running"}
    report.data["performance"]["cases"][name] = case
    try:
        measure(case)
        case["status"] = "pass"
    except Exception as exc:  # reported, the run goes on
        case.update(status="fail", **_error_fields(exc))
        report.fail(f"performance/{name}", case["error"])
    _release(device)
    report.save()


def run_transformers(report: Report, sizes: Sizes, device: torch.device, dtype: torch.dtype, wanted: set,
                     deadline: float) -> None:
    """Stage I forward; Stage II forward and the whole 4-step Stage II (one Stage II model for both)."""
    holder: dict = {}  # the Stage II model, kept from its forward for the 4-step run
    if "stage1_forward" in wanted and not _deadline_passed(report, "stage1_forward", deadline):
        _case(report, "stage1_forward", device,
              lambda case: _forward(case, report, 1, sizes, device, dtype, holder))
        holder.clear()
    if "stage2_forward" in wanted and not _deadline_passed(report, "stage2_forward", deadline):
        _case(report, "stage2_forward", device,
              lambda case: _forward(case, report, 2, sizes, device, dtype, holder))
    if "stage2_4_steps" in wanted and not _deadline_passed(report, "stage2_4_steps", deadline):
        _case(report, "stage2_4_steps", device, lambda case: _stage2_steps(case, holder, sizes, device, dtype, report))
    holder.clear()
    _release(device)


def _forward(case: dict, report: Report, stage: int, sizes: Sizes, device: torch.device, dtype: torch.dtype,
             holder: dict) -> None:
    """Build one stage's transformer on the device, count a CFG forward (the warm-up), then time one."""
    from flashvideo_core.memory_floor import transformer_floor
    from flashvideo_core.model.transformer import build_transformer

    name = case["case"]
    cfg = sizes.stage1 if stage == 1 else sizes.stage2
    height, width = sizes.stage1_size if stage == 1 else sizes.stage2_size
    start = time.perf_counter()
    with built_on(device, dtype):
        model = build_transformer(cfg, seed=0)
    _sync(device)
    holder["model"] = model
    call = _transformer_call(model, sizes, stage, device, dtype)
    case.update(shape=f"{width}x{height}x{sizes.frames} (WxHxF), batch 2 (CFG)", layers=cfg.num_layers,
                hidden=cfg.hidden_size, build_seconds=round(time.perf_counter() - start, 2), **_weights(model),
                flops_counted_in="the warm-up call", attention_processor=_processor(model))
    out, count = counted(call)  # also the warm-up
    case.update(count, output_shape=list(out.shape))
    del out
    out, timing = timed(call, device)
    case.update(timing, output_finite=bool(torch.isfinite(out).all()))
    _with_rates(case, count["flops"])
    report.data["attention"].setdefault("sdpa_kernels", {})[name] = count["sdpa_kernels"]
    report.data["memory"][name] = {
        "measured_peak_bytes": timing["peak_bytes"], "activation_peak_bytes": timing["activation_peak_bytes"],
        "weights_bytes": case["weights_bytes"],
        "memory_floor_bytes": transformer_floor(sizes.frames, height, width, cfg.hidden_size, dtype),
        "planner_prediction": _planner_prediction(stage, cfg, sizes.frames, height, width, dtype, timing["peak_bytes"])}


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
    out, timing = timed(lambda: run_stage2(model, cond, latent, settings, device=device, dtype=dtype), device)
    case.update(timing, output_finite=bool(torch.isfinite(out).all()))
    case["flops"] = settings.steps * forward_flops if forward_flops else None
    _with_rates(case, forward_flops, nfe=settings.steps)
    report.data["memory"]["stage2_4_steps"] = {"measured_peak_bytes": timing["peak_bytes"],
                                               "activation_peak_bytes": timing["activation_peak_bytes"],
                                               "memory_floor_bytes": transformer_floor(
                                                   sizes.frames, height, width, sizes.stage2.hidden_size, dtype),
                                               "planner_prediction": _planner_prediction(
                                                   2, sizes.stage2, sizes.frames, height, width, dtype,
                                                   timing["peak_bytes"])}


def _planner_prediction(stage: int, cfg, frames: int, height: int, width: int, dtype, measured: int) -> dict:
    """flashvideo_core.planning.planner.plan_peak for the case (plain mode, batch-2 CFG) beside the measured peak."""
    from flashvideo_core.planning.planner import plan_peak

    plan = plan_peak(stage, height, width, frames, dtype, config=cfg)
    return {"total_bytes": plan.total_bytes, "weights_bytes": plan.weights_bytes,
            "activation_bytes": plan.activation_bytes, "phase": plan.phase, "mode": plan.description,
            "measured_over_predicted": measured / plan.total_bytes if measured else None}


def _processor(model) -> str | None:
    blocks = getattr(getattr(model, "inner", None), "transformer_blocks", None)
    return type(blocks[0].attn1.processor).__name__ if blocks else None


def run_vae(report: Report, sizes: Sizes, device: torch.device, dtype: torch.dtype, deadline: float) -> None:
    """One sliced decode at the Stage II size: a small decode warms up, then one decode is counted and timed."""
    from flashvideo_core.layout import latent_frames
    from flashvideo_core.memory_floor import video_floor
    from flashvideo_core.vae import UNSLICED, build_vae, decode_latents
    from flashvideo_core.vae.cost import auto_slice_spec, bytes_per_output_voxel
    from flashvideo_core.vae.slicing import _tiles

    if _deadline_passed(report, "vae_decode", deadline):
        return
    height, width = sizes.stage2_size
    spec = sizes.decode_slices

    def measure(case):
        start = time.perf_counter()
        with built_on(device, dtype):
            vae = build_vae(sizes.vae, seed=0)
        _sync(device)
        gen = torch.Generator().manual_seed(5)
        frames = latent_frames(sizes.frames)
        latent = torch.randn(1, config.LATENT_CHANNELS, frames, height // 8, width // 8, generator=gen)
        tiles = _tiles(height // 8, width // 8, spec)
        per_slice = (4 * spec.chunk_frames + 2) * 64 * tiles[0][2] * tiles[0][3] * bytes_per_output_voxel(vae)
        case.update(shape=f"{width}x{height}x{sizes.frames} (WxHxF)", slices=spec.__dict__, tiles=len(tiles),
                    build_seconds=round(time.perf_counter() - start, 2), **_weights(vae),
                    flops_counted_in="the timed call (after a small warm-up decode)",
                    auto_slices_for_free_memory=auto_slice_spec(vae, tuple(latent.shape), _free(device)).__dict__)
        decode_latents(vae, torch.randn(1, config.LATENT_CHANNELS, 1, 8, 8, generator=gen), UNSLICED)  # warm-up
        (out, count), timing = timed(lambda: counted(lambda: decode_latents(vae, latent, spec)), device)
        case.update(**count, **timing, output_shape=list(out.shape), output_finite=bool(torch.isfinite(out).all()))
        _with_rates(case, count["flops"])
        report.data["memory"]["vae_decode"] = {
            "measured_peak_bytes": timing["peak_bytes"], "activation_peak_bytes": timing["activation_peak_bytes"],
            "weights_bytes": case["weights_bytes"], "memory_floor_bytes": None,
            "video_floor_host_bytes": video_floor(sizes.frames, height, width),
            "vae_cost_model_slice_bytes": int(per_slice), "planner_prediction": None,
            "note": "memory_floor has no device floor for the VAE; video_floor is the decoded video in host RAM, "
                    "vae_cost_model_slice_bytes what vae.cost plans for one slice of this spec"}

    _case(report, "vae_decode", device, measure)


def _free(device: torch.device) -> int:
    from flashvideo_core.devices import free_memory

    return free_memory(device)


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
            _sync(device)
            probe[backend] = "runs"
        except Exception as exc:  # reported, the run goes on
            probe[backend] = f"refused: {str(exc).splitlines()[0][:200]}"
    section["probe"] = {"shape": [2, heads, 1024, dim], "dtype": str(dtype).replace("torch.", ""), **probe}
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
        lines.append(f"memory {stage}: peak {_gib(mem.get('measured_peak_bytes'))} (the call added "
                     f"{_gib(mem.get('activation_peak_bytes'))}), floor {_gib(mem.get('memory_floor_bytes'))}, "
                     f"planner {mem.get('planner_prediction')}")
    lines.append(f"{'OK' if data['ok'] else 'FAILED'}{'' if data['complete'] else ' (incomplete: deadline)'}; "
                 f"{len(data['failures'])} failure(s)")
    lines += [f"  {failure}" for failure in data["failures"]]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help=f"folder for {REPORT_NAME}")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU (checks the script itself)")
    parser.add_argument("--precision", choices=("bf16", "fp32", "fp16"), default=None,
                        help="default bf16 on the GPU (the official precision), fp32 for --dry-run")
    parser.add_argument("--only", default="placement," + ",".join(CASES),
                        help=f"comma-separated parts to run (default all): placement,{','.join(CASES)}")
    parser.add_argument("--deadline-s", type=float, default=300.0,
                        help="skip the performance cases that would start after this many seconds (default 300)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.modules["imageio_ffmpeg"] = _FfmpegStub("imageio_ffmpeg")  # before anything imports flashvideo_core.video
    from flashvideo_core.devices import DTYPES

    wanted = {part.strip() for part in args.only.split(",") if part.strip()}
    unknown = wanted - {"placement", *CASES}
    if unknown:
        raise SystemExit(f"--only: unknown part(s) {', '.join(sorted(unknown))}; use placement,{','.join(CASES)}.")
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
    report.save()
    with tempfile.TemporaryDirectory(prefix="flashvideo-gpu-check-") as work:
        os.environ.setdefault("FLASHVIDEO_CACHE", str(Path(work) / "cache"))
        attention_backends(report, sizes, device, dtype)
        if "placement" in wanted:
            run_placement(report, device, precision, Path(work))
        real_size_flops(report)
        run_transformers(report, sizes, device, dtype, wanted, args.deadline_s)
        if "vae_decode" in wanted:
            run_vae(report, sizes, device, dtype, args.deadline_s)
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
