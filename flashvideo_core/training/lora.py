"""LoRA training of Stage II: attach an adapter to a FlashVideoTransformer, save only the adapter.

The adapter and file layout are model.lora_adapter's (read_lora and apply_lora live there, for the
inference side, and are re-exported here): y = W x + (alpha / rank) B A x on the linear layers of
every block, B zero at the start so a fresh adapter changes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..atomic import atomic_output, write_errors_named
from ..errors import CheckpointError, FlashVideoInputError
from ..model.lora_adapter import (
    ADAPTER,
    FORMAT,
    VERSION,
    LoraFile,
    LoraSettings,
    apply_lora,
    architecture_of,
    check_architecture,
    inject,
    lora_layers,
    read_lora,
)

__all__ = ["LoraFile", "LoraSettings", "apply_lora", "attach_lora", "check_lora_settings", "has_lora",
           "load_lora_state", "lora_state", "read_lora", "save_lora"]


def attach_lora(model, settings: LoraSettings) -> list[torch.nn.Parameter]:
    """Add a trainable LoRA to `model` (a FlashVideoTransformer) in place; returns the adapter's parameters.

    Every other parameter of `model` is frozen (requires_grad False), so an optimiser given the
    returned list trains only A (rank, in) and B (out, rank) of each target layer. B starts at zero:
    the model's output is unchanged until training moves it. The adapter is in fp32 on the model's device.
    """
    model.requires_grad_(False)
    params: list[torch.nn.Parameter] = []
    for layer in inject(model, settings).values():
        device = layer.get_base_layer().weight.device
        for part in (layer.lora_A[ADAPTER], layer.lora_B[ADAPTER]):
            part.to(device=device, dtype=torch.float32)
            for parameter in part.parameters():
                parameter.requires_grad_(True)
                params.append(parameter)
    return params


def has_lora(model) -> bool:
    """True when `model` has a FlashVideo LoRA attached (attach_lora or apply_lora)."""
    return bool(lora_layers(model))


def load_lora_state(model, lora: LoraFile, settings: LoraSettings) -> None:
    """Copy the A and B matrices of `lora` (a read LoRA file) into the adapter attached to `model` with `settings`.

    Raises CheckpointError naming the file when it was made for another architecture (stage, width,
    layers, heads, channels) or with another rank, alpha or targets than `settings`.
    """
    check_architecture(lora, architecture_of(model), "the model being trained")
    check_lora_settings(lora, settings)
    with torch.no_grad():
        for module, layer in lora_layers(model).items():
            for part, name in ((layer.lora_A[ADAPTER], "A"), (layer.lora_B[ADAPTER], "B")):
                part.weight.copy_(lora.tensors[f"{module}.lora_{name}.weight"])


def check_lora_settings(lora: LoraFile, settings: LoraSettings) -> None:
    """Raise CheckpointError naming both when `lora` (a read LoRA file) has another rank, alpha or target
    modules than `settings` (the LoRA a resumed run trains)."""
    ours = (settings.rank, settings.alpha, tuple(settings.target_modules))
    theirs = (lora.settings.rank, lora.settings.alpha, tuple(lora.settings.target_modules))
    if ours != theirs:
        raise CheckpointError(f"{lora.path.name} is a LoRA of rank {theirs[0]}, alpha {theirs[1]:g} on "
                              f"{list(theirs[2])}; this run trains rank {ours[0]}, alpha {ours[1]:g} on "
                              f"{list(ours[2])}. Resume with the run's own --lora settings.")


def lora_state(model) -> dict[str, torch.Tensor]:
    """{"<module>.lora_A.weight": (rank, in), "<module>.lora_B.weight": (out, rank)} of an attached LoRA (CPU)."""
    state = {}
    for module, layer in lora_layers(model).items():
        state[f"{module}.lora_A.weight"] = layer.lora_A[ADAPTER].weight.detach().to("cpu").contiguous()
        state[f"{module}.lora_B.weight"] = layer.lora_B[ADAPTER].weight.detach().to("cpu").contiguous()
    if not state:
        raise FlashVideoInputError("this model has no LoRA attached (attach_lora first).")
    return state


def save_lora(model, path: str | Path, metadata: dict | None = None, settings: LoraSettings | None = None) -> Path:
    """Write the attached LoRA of `model` as a small .safetensors at `path`, atomically; returns path.

    metadata: extra entries (e.g. steps, data) stored as strings (JSON for non-strings); the format,
    version, rank, alpha, targets, dropout and the base architecture (stage, hidden size, layers,
    heads, in channels) are always written, so read_lora can refuse a LoRA for another model.
    settings: the LoraSettings it was attached with (default: read back from the adapter).
    A failed or interrupted write leaves any earlier file at `path` as it was.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise FlashVideoInputError(f"LoRA output {path} must end in .safetensors.")
    settings = settings or _settings_of(model)
    info = {key: value if isinstance(value, str) else json.dumps(value) for key, value in (metadata or {}).items()}
    info.update({
        "flashvideo_lora_format": FORMAT, "flashvideo_lora_version": VERSION, "rank": str(settings.rank),
        "alpha": repr(settings.alpha), "targets": json.dumps(list(settings.target_modules)),
        "dropout": repr(settings.dropout), "architecture": json.dumps(architecture_of(model)),
    })
    state = lora_state(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    with write_errors_named(path), atomic_output(path, overwrite=True) as tmp:
        save_file(state, str(tmp), metadata=info)
    return path


def _settings_of(model) -> LoraSettings:
    """The LoraSettings of the adapter attached to `model` (rank, alpha, targets, dropout from peft's config)."""
    config = model.inner.peft_config[ADAPTER]
    targets = dict.fromkeys(name.split(".", 2)[2] for name in lora_layers(model))
    return LoraSettings(rank=config.r, alpha=config.lora_alpha, target_modules=tuple(targets),
                        dropout=config.lora_dropout)
