"""LoRA adapters on the Stage II transformer (through `peft`): settings, the LoRA file, applying one.

A LoRA adds, beside a frozen linear layer W (out, in), a low-rank update: y = W x + s (alpha / r) B A x
with A (r, in), B (out, r), r the rank, s the strength (1 = as trained). `peft` injects these layers
into the diffusers CogVideoX transformer inside FlashVideoTransformer (FlashVideoTransformer.inner).

The LoRA file (read_lora; training.lora.save_lora writes it) is a small .safetensors holding only the
A and B matrices, named `<module>.lora_A.weight` / `<module>.lora_B.weight` with <module> the layer's
name inside the diffusers transformer (e.g. transformer_blocks.3.attn1.to_q), and string metadata:
  flashvideo_lora_format = "flashvideo-lora", flashvideo_lora_version = "1",
  rank, alpha, targets (JSON list of module names inside a block), dropout,
  architecture (JSON: stage, hidden_size, num_layers, num_heads, in_channels),
  plus any other entries the trainer stored (steps, data, ...).

apply_lora never changes the model it is given: it returns a new FlashVideoTransformer whose module
tree is its own but whose base tensors are the given model's (no copy of the weights), with the
adapter unmerged at scale strength * alpha / rank. So a cached model shared by other users (ComfyUI's
loader output) keeps giving the same output, and each strength is a new model, never accumulated.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..checkpoint import detect_kind, read_safetensors_metadata, read_shapes, read_state_dict
from ..config import TransformerConfig
from ..errors import CheckpointError, FlashVideoInputError

FORMAT = "flashvideo-lora"
VERSION = "1"
ADAPTER = "flashvideo_lora"
"""peft's name of the adapter on a FlashVideoTransformer."""

DEFAULT_TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "ff.net.0.proj", "ff.net.2")
"""Linear layers of each CogVideoX transformer block: attention q, k, v and output, the FFN's two linears."""

ARCHITECTURE_FIELDS = ("stage", "hidden_size", "num_layers", "num_heads", "in_channels")


@dataclass(frozen=True)
class LoraSettings:
    """A LoRA's shape, valid by construction.

    rank: r of A (r, in) and B (out, r), >= 1; alpha: the scale numerator (None -> rank, so scale 1);
    target_modules: names of linear layers inside each transformer block (DEFAULT_TARGETS);
    dropout: dropout on the adapter's input during training, 0 <= dropout < 1.
    """

    rank: int
    alpha: float | None = None
    target_modules: tuple[str, ...] = DEFAULT_TARGETS
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise FlashVideoInputError(f"LoRA rank={self.rank!r} must be an integer >= 1 (e.g. 16 to 128).")
        alpha = float(self.rank if self.alpha is None else self.alpha)
        if not math.isfinite(alpha) or alpha <= 0:
            raise FlashVideoInputError(f"LoRA alpha={self.alpha!r} must be a finite number > 0 (default: the rank).")
        object.__setattr__(self, "alpha", alpha)
        targets = tuple(self.target_modules)
        if not targets or not all(isinstance(t, str) and re.fullmatch(r"[\w.]+", t) for t in targets):
            raise FlashVideoInputError(f"LoRA target_modules={self.target_modules!r} must be a non-empty list of "
                                       f"layer names inside a transformer block, e.g. {list(DEFAULT_TARGETS)}.")
        object.__setattr__(self, "target_modules", targets)
        if not 0 <= self.dropout < 1:
            raise FlashVideoInputError(f"LoRA dropout={self.dropout!r} must be in [0, 1).")

    def peft_config(self):
        """The peft.LoraConfig of these settings (targets restricted to the transformer blocks)."""
        from peft import LoraConfig  # peft imports accelerate: only when a LoRA is used

        names = "|".join(re.escape(name) for name in self.target_modules)
        return LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=rf"transformer_blocks\.\d+\.({names})")


@dataclass(frozen=True)
class LoraChoice:
    """A LoRA to apply to Stage II after it loads: the file (read and checked at construction) and its strength.

    path: the LoRA .safetensors; strength: finite, 1 = as trained, 0 = the base model (typical 0-1.5).
    """

    path: Path
    strength: float = 1.0
    lora: LoraFile = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.strength, bool) or not isinstance(self.strength, (int, float)) or not math.isfinite(
                self.strength):
            raise FlashVideoInputError(f"LoRA strength={self.strength!r} must be a finite number (1 = as trained).")
        object.__setattr__(self, "path", Path(self.path))
        object.__setattr__(self, "lora", read_lora(self.path))

    def check_weights(self, path: str | Path) -> None:
        """Raise CheckpointError naming both files when the weights at `path` are another architecture."""
        check_architecture(self.lora, architecture_of_file(path), Path(path).name)

    def apply(self, model):
        """apply_lora(model, self.lora, self.strength): a new model, `model` unchanged."""
        return apply_lora(model, self.lora, self.strength)


@dataclass(frozen=True)
class LoraFile:
    """A read and checked LoRA file: path, settings, architecture (ARCHITECTURE_FIELDS -> value),
    tensors ({"<module>.lora_A.weight": (r, in), "<module>.lora_B.weight": (out, r)}) and all its metadata."""

    path: Path
    settings: LoraSettings
    architecture: dict
    tensors: dict = field(repr=False)
    metadata: dict = field(repr=False)


def architecture_of(model) -> dict:
    """A FlashVideoTransformer -> {stage, hidden_size, num_layers, num_heads, in_channels}."""
    return config_architecture(model.config)


def config_architecture(cfg: TransformerConfig) -> dict:
    """The architecture_of a transformer built from `cfg` (stage 2 when it has the Stage II extras)."""
    return {"stage": 2 if cfg.stage2_extras else 1, "hidden_size": cfg.hidden_size, "num_layers": cfg.num_layers,
            "num_heads": cfg.num_heads, "in_channels": cfg.in_channels}


def describe_architecture(arch: dict) -> str:
    """E.g. "Stage II, 30 layers x 1920 wide (30 heads), 16 input channels"."""
    stage = {1: "Stage I", 2: "Stage II"}.get(arch.get("stage"), f"stage {arch.get('stage')}")
    heads = f" ({arch['num_heads']} heads)" if "num_heads" in arch else ""
    return (f"{stage}, {arch.get('num_layers')} layers x {arch.get('hidden_size')} wide{heads}, "
            f"{arch.get('in_channels')} input channels")


def architecture_of_file(path: str | Path) -> dict:
    """A Stage I/II weight file or folder -> {stage, hidden_size, num_layers, in_channels} (header only).

    The head count is not in the tensor shapes of every layout; apply_lora checks it on the model.
    """
    shapes = read_shapes(path)
    proj = next((shape for name, shape in shapes.items() if name.endswith("patch_embed.proj.weight")), None)
    blocks = [int(m.group(1)) for name in shapes if (m := re.search(r"(?:layers|transformer_blocks)\.(\d+)\.", name))]
    if proj is None or not blocks:
        raise CheckpointError(f"{Path(path).name} is not a FlashVideo transformer (no patch embedding or blocks).")
    stage = {"stage1": 1, "stage2": 2}.get(detect_kind(shapes))
    return {"stage": stage, "hidden_size": proj[0], "num_layers": 1 + max(blocks), "in_channels": proj[1]}


def check_architecture(lora: LoraFile, arch: dict, model_name: str) -> None:
    """Raise CheckpointError naming both when the LoRA was trained for another architecture than `arch`
    (the ARCHITECTURE_FIELDS that `arch` holds are compared)."""
    if any(lora.architecture.get(key) != arch[key] for key in ARCHITECTURE_FIELDS if key in arch):
        raise CheckpointError(
            f"{lora.path.name} is a LoRA for {describe_architecture(lora.architecture)}, but {model_name} is "
            f"{describe_architecture(arch)}. Use a LoRA trained on this model."
        )


def read_lora(path: str | Path) -> LoraFile:
    """Read and check a FlashVideo LoRA file (see the module docstring for the layout).

    Raises CheckpointError naming the file for a missing or unreadable file, a file that is not a
    FlashVideo LoRA (no or another format, e.g. a model or another tool's LoRA), a version this code
    does not know, or tensors that do not match the stored rank and targets.
    """
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        what = "not found" if not path.exists() else "not a LoRA file (a FlashVideo LoRA is a .safetensors file)"
        raise CheckpointError(f"LoRA {path}: {what}.")
    meta = read_safetensors_metadata(path)
    if meta.get("flashvideo_lora_format") != FORMAT:
        raise CheckpointError(f"{path.name} is not a FlashVideo LoRA file (no '{FORMAT}' format in its metadata): "
                              "give a LoRA written by train-stage2 --lora.")
    if meta.get("flashvideo_lora_version") != VERSION:
        raise CheckpointError(f"{path.name}: LoRA format version {meta.get('flashvideo_lora_version')!r} is not "
                              f"supported (this version reads {VERSION}); update FlashVideo.")
    try:
        settings = LoraSettings(rank=int(meta["rank"]), alpha=float(meta["alpha"]),
                                target_modules=tuple(json.loads(meta["targets"])), dropout=float(meta["dropout"]))
        arch = json.loads(meta["architecture"])
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path.name}: damaged LoRA metadata ({exc}).") from exc
    tensors = read_state_dict(path)
    _check_tensors(path, tensors, settings, arch)
    return LoraFile(path, settings, arch, tensors, meta)


def _check_tensors(path: Path, tensors: dict, settings: LoraSettings, arch: dict) -> None:
    """Every module of every block has an A (rank, in) and a B (out, rank), and nothing else is there."""
    layers = arch.get("num_layers") if isinstance(arch, dict) else None
    if not isinstance(layers, int):
        raise CheckpointError(f"{path.name}: damaged LoRA metadata (architecture without num_layers).")
    wanted = {f"transformer_blocks.{i}.{name}" for i in range(layers) for name in settings.target_modules}
    keys = {f"{module}.lora_{part}.weight" for module in wanted for part in "AB"}
    if set(tensors) != keys:
        extra, missing = sorted(set(tensors) - keys), sorted(keys - set(tensors))
        raise CheckpointError(f"{path.name}: LoRA tensors do not match its targets (missing {missing[:3]}, "
                              f"unexpected {extra[:3]}); the file is damaged or not a FlashVideo LoRA.")
    for module in wanted:
        a, b = tensors[f"{module}.lora_A.weight"], tensors[f"{module}.lora_B.weight"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != settings.rank or b.shape[1] != settings.rank:
            raise CheckpointError(f"{path.name}: {module} has A {tuple(a.shape)} and B {tuple(b.shape)}, not rank "
                                  f"{settings.rank}; the file is damaged.")


def lora_layers(model) -> dict:
    """{module name inside model.inner: peft LoraLayer} of a model with the adapter injected."""
    from peft.tuners.lora import LoraLayer

    return {name: module for name, module in model.inner.named_modules()
            if isinstance(module, LoraLayer) and ADAPTER in module.lora_A}


def inject(model, settings: LoraSettings) -> dict:
    """Add the (zero-B, so output-preserving) adapter to model.inner in place; returns lora_layers(model).

    Raises FlashVideoInputError when a target names no layer of the blocks.
    """
    if lora_layers(model):
        raise FlashVideoInputError("this model already has a FlashVideo LoRA; apply or attach one LoRA per model.")
    try:
        model.inner.add_adapter(settings.peft_config(), adapter_name=ADAPTER)
    except ValueError as exc:  # peft's NoMatchingPeftModuleError: no target matched at all
        raise FlashVideoInputError(f"LoRA target_modules {list(settings.target_modules)} name no linear layer of "
                                   f"the transformer blocks; choose from {list(DEFAULT_TARGETS)}.") from exc
    layers = lora_layers(model)
    found = {name.split(".", 2)[2] for name in layers}
    missing = sorted(set(settings.target_modules) - found)
    if missing:
        raise FlashVideoInputError(f"LoRA target_modules {missing} name no linear layer of the transformer blocks; "
                                   f"choose from {list(DEFAULT_TARGETS)}.")
    return layers


def shared_copy(model):
    """A new module tree over the same parameter and buffer tensors (nothing is copied but the structure)."""
    memo = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    return copy.deepcopy(model, memo)


def set_strength(model, strength: float) -> None:
    """Scale of the adapter on every layer: strength * alpha / rank (0: the base model's output exactly)."""
    if not math.isfinite(strength):
        raise FlashVideoInputError(f"LoRA strength={strength!r} must be a finite number (1 = as trained).")
    for layer in lora_layers(model).values():
        layer.set_scale(ADAPTER, float(strength))


def apply_lora(model, lora: LoraFile, strength: float = 1.0, model_name: str | None = None):
    """A FlashVideoTransformer with `lora` applied at `strength`; `model` itself is left unchanged.

    The result shares every base tensor with `model` (see the module docstring) and holds the adapter
    (in the base's dtype, on its device) unmerged: y = W x + strength (alpha / rank) B A x.
    Raises CheckpointError naming both when lora was made for another architecture (stage, width,
    layers, heads, channels); FlashVideoInputError for a non-finite strength.
    """
    name = model_name or Path(str(model.source_file or "the model")).name
    check_architecture(lora, architecture_of(model), name)
    if not math.isfinite(strength):
        raise FlashVideoInputError(f"LoRA strength={strength!r} must be a finite number (1 = as trained).")
    result = shared_copy(model)
    layers = inject(result, lora.settings)
    with torch.no_grad():
        for module, layer in layers.items():
            a, b = layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight
            a.copy_(_matching(lora, f"{module}.lora_A.weight", a))
            b.copy_(_matching(lora, f"{module}.lora_B.weight", b))
            base = layer.get_base_layer().weight
            layer.lora_A[ADAPTER].to(device=base.device, dtype=base.dtype)
            layer.lora_B[ADAPTER].to(device=base.device, dtype=base.dtype)
            for parameter in (*layer.lora_A[ADAPTER].parameters(), *layer.lora_B[ADAPTER].parameters()):
                parameter.requires_grad_(False)  # only the adapter's: the base tensors are the caller's
    set_strength(result, strength)
    return result.eval()  # the adapter's own dropout modules; the shared tensors are not touched


def _matching(lora: LoraFile, key: str, like: torch.Tensor) -> torch.Tensor:
    tensor = lora.tensors[key]
    if tuple(tensor.shape) != tuple(like.shape):
        raise CheckpointError(f"{lora.path.name}: {key} is {tuple(tensor.shape)}, the model needs "
                              f"{tuple(like.shape)}; the LoRA was made for another model.")
    return tensor
