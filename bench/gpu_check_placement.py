"""bench/gpu_check.py's placement section: every node of nodes.NODE_CLASS_MAPPINGS, wired as the shipped
text-to-video workflow wires them (NODE_GRAPH), and pipeline.generate, on tiny weights on the run's device;
each item's pass/fail, seconds, error (and whether it is a device or dtype mismatch) and a summary of what came
out (describe). A node with no case is a failure, so a new node cannot go unchecked."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch
from gpu_check_tools import Report, dtype_name, error_fields, sync

from flashvideo_core.devices import model_device
from flashvideo_core.planning.out_of_memory import release

PROMPT = "A red fox runs through fresh snow at sunrise, its breath visible in the cold air."
TINY_LORA = "tiny_stage2_lora.safetensors"
"""The LoRA the placement run writes to its models folder (flashvideo_loras/) for the Stage II LoRA node."""


def describe(value) -> object:
    """A node output or handle -> a JSON-able summary (shapes, dtypes, devices), never the data."""
    if isinstance(value, torch.Tensor):
        return {"shape": list(value.shape), "dtype": dtype_name(value.dtype), "device": str(value.device)}
    if isinstance(value, dict) and "samples" in value:
        return {"latent": describe(value["samples"]), "flashvideo": {k: v for k, v in (value.get("flashvideo") or {})
                                                                  .items() if isinstance(v, int | float | bool)}}
    module = getattr(value, "module", None)
    if isinstance(module, torch.nn.Module):
        return {"model": type(module).__name__, "rests_on": str(model_device(module)),
                "runs_on": str(getattr(value, "device", None)), "dtype": str(getattr(value, "dtype", None))}
    if hasattr(value, "stage1") and hasattr(value, "stage2"):
        return {"stage1": describe(value.stage1), "stage2": describe(value.stage2)}
    if isinstance(value, str):
        return {"text_chars": len(value)}
    return type(value).__name__


def _absent(name: str) -> list[str]:
    """[name] when the package is not installed here, else []."""
    return [] if importlib.util.find_spec(name) is not None else [name]


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
    ("stage2_lora", "FlashVideoStage2LoRA", {"stage2_model": Link("stage2_model"), "lora_name": TINY_LORA,
                                             "strength": 0.8}),
    ("latent2_lora", "FlashVideoStage2Sampler", {"model": Link("stage2_lora"), "embeds": Link("embeds"),
                                                 "latent": Link("degraded"), "steps": 1}),
    ("video", "FlashVideoVAEDecode", {"vae": Link("vae"), "latent": Link("latent2"), "slicing": "manual",
                                      "chunk_frames": 2, "tile_size": 8, "tile_overlap": 4}),
    ("enhanced", "FlashVideoEnhanceImages", {"model": Link("stage2_model"), "vae": Link("vae"),
                                             "embeds": Link("embeds"), "images": Link("clip"), "target": "x2",
                                             "steps": 1, "window": 5, "overlap": 2, "seed": 3}),
]
"""(item, node id, inputs): the text-to-video workflow's wiring at tiny sizes, a second Stage II branch through
the LoRA node (a tiny LoRA written beside the weights), then Enhance Video on a clip. Inputs not named take their
widget default; loaders get the run's precision."""

GRAPH_WHERE = "bench/gpu_check_placement.py NODE_GRAPH"

OPTIONAL = {"stage2_lora": "peft"}
"""Items that need a package beyond NEEDED (the LoRA node's adapter layers are peft's): skipped, saying so, where
it is not installed."""

SKIPPED_NODES = {
    "FlashVideoDownloadWeights": "downloads from Hugging Face (needs the network); its offline refusal is "
                                 "tested in tests/nodes/test_node_execution.py",
}
"""Nodes that cannot run here, with the reason (the network)."""


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
    if not _absent("peft"):
        _tiny_lora(tiny["stage2"], root / "flashvideo_loras" / TINY_LORA)
    return root


def _tiny_lora(stage2: Path, path: Path) -> None:
    """A rank-2 LoRA of the tiny Stage II at `path`, as `train-stage2 --lora` writes one (B nonzero, so it
    changes the model's output)."""
    from flashvideo_core.training.lora import LoraSettings, attach_lora, save_lora
    from flashvideo_core.weights.loaders import load_stage2

    model = load_stage2(stage2)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in attach_lora(model, LoraSettings(rank=2)):
            param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    path.parent.mkdir(parents=True)
    save_lora(model, path)


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
        sync(device)
        record.update(status="pass", output=describe(value))
    except Exception as exc:  # every failure is reported, the run goes on
        record.update(status="fail", **error_fields(exc))
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
        items.append({"item": "import nodes", "status": "fail", **error_fields(exc)})
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
        absent = _absent(OPTIONAL[item]) if item in OPTIONAL else []
        if missing or absent:
            items.append({"item": item, "node": node_id, "status": "skip", "reason":
                          f"needs {', '.join(missing)}, which did not run" if missing else
                          f"needs {absent[0]}, not installed here"})
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
                          "error_kind": "missing", "reason": f"no placement case in {GRAPH_WHERE}"})
            report.fail(f"placement/{node_id}", f"no placement case in {GRAPH_WHERE} (add one)")
    resting = {name: describe(values[name]) for name in ("stage1_model", "stage2_model", "vae", "t5")
               if values.get(name) is not None}
    section["models_after_the_graph"] = resting
    _attempt(items, report, "pipeline.generate", device,
             lambda: _generate(tiny["stage1"].parent, device, precision, work / "generated", section))
    values.clear()
    release(device)
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
