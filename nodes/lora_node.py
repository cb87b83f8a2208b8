"""Stage II LoRA node: a loaded Stage II model + a LoRA file -> a new Stage II model with the LoRA applied.

The loader's model is cached by ComfyUI and may feed other branches, so it is never changed: the
node returns a new handle whose module shares the loader's weight tensors (no copy) and holds the
adapter unmerged at its own strength (flashvideo_core.model.lora_adapter.apply_lora).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from flashvideo_core.errors import CheckpointError, FlashVideoInputError
from flashvideo_core.model.lora_adapter import apply_lora, read_lora
from flashvideo_core.modes.apply import SWAP_ATTR

from . import comfy_memory
from . import comfy_services as services
from .common import CATEGORY, STAGE2, LoadedModel, check_widgets

NO_LORAS = "(no LoRA files found)"


def lora_choices() -> list[str]:
    """The .safetensors files in models/flashvideo_loras and models/loras (and their extra_model_paths)."""
    return [name for name in services.list_models("lora") if name.endswith(".safetensors")] or [NO_LORAS]


@dataclass
class LoraModel(LoadedModel):
    """A LoadedModel whose module shares its base weight tensors with `base` (the loader's handle).

    Inside ComfyUI the two are separate patchers over the same tensors, so before this one loads, a
    loaded `base` is unloaded through ComfyUI (and this one too, when ComfyUI lists it: unloading
    the base moved the shared tensors off the device), then this one loads whole.
    """

    base: LoadedModel | None = field(default=None, repr=False, compare=False)

    def active(self, memory_required: int = 0):
        comfy = comfy_memory.comfy_memory_manager()
        if comfy is not None and self.base is not None and _listed(self.base.comfy_patcher, comfy[0]):
            comfy_memory.unload(self.base.comfy_patcher, comfy[0])
            if _listed(self.comfy_patcher, comfy[0]):
                comfy_memory.unload(self.comfy_patcher, comfy[0])
        return comfy_memory.in_use(self, memory_required)


def _check_modes(base: LoadedModel) -> None:
    """Refuse a base model loaded with fp8 weights (fp8 layers are no LoRA targets) or block swap (the LoRA
    model shares the base's parameter objects, and a swap on either would move the other's blocks)."""
    if base.modes.weights != "default":
        raise FlashVideoInputError(f"This Stage II model was loaded with weights {base.modes.weights}; a LoRA needs "
                                   "the loader's weights set to default (fp8 layers cannot take a LoRA).")
    if base.modes.resident_blocks is not None:
        raise FlashVideoInputError("This Stage II model was loaded with block swap; a LoRA shares the loader's "
                                   "weights and cannot be combined with block swap yet: set the loader's block_swap "
                                   "to off (sequential_cfg on the samplers also saves memory).")


def _listed(patcher, mm) -> bool:
    """True when ComfyUI lists `patcher` as loaded."""
    return patcher is not None and any(entry.model is patcher for entry in mm.current_loaded_models)


@functools.lru_cache(maxsize=16)
def _checked_lora(path: str, size: int, mtime_ns: int) -> bool | str:
    """read_lora as a validation answer, cached per file version (validation runs on every queue)."""
    try:
        read_lora(path)
    except CheckpointError as exc:
        return str(exc)
    return True


class FlashVideoStage2LoRA:
    """Node: applies a Stage II LoRA (written by train-stage2 --lora) to a loaded Stage II model."""

    RETURN_TYPES = (STAGE2,)
    RETURN_NAMES = ("stage2_model",)
    OUTPUT_TOOLTIPS = ("The Stage II model with the LoRA applied (the loader's model itself is unchanged).",)
    FUNCTION = "apply"
    CATEGORY = f"{CATEGORY}/loaders"
    DESCRIPTION = ("Applies a FlashVideo Stage II LoRA to a Stage II model at a strength. The input model is not "
                   "changed (other branches using it keep the base model); the weights are shared, not copied.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "stage2_model": (STAGE2, {"tooltip": "A Stage II model from the Stage II Loader."}),
                "lora_name": (lora_choices(), {"tooltip": "A FlashVideo Stage II LoRA (.safetensors from "
                                               "train-stage2 --lora) in models/flashvideo_loras or models/loras."}),
                "strength": ("FLOAT", {"default": 1.0, "min": -2.0, "max": 2.0, "step": 0.05,
                                       "tooltip": "1 = as trained, 0 = the base model, negative reverses the LoRA; "
                                                  "typical 0.5-1.2."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, lora_name, strength):
        widgets = check_widgets(cls, strength=strength)
        if widgets is not True or lora_name is None:
            return widgets
        path = services.resolve_model("lora", lora_name)
        if path is None or path.is_dir():
            return services.rejected_model_message("lora", lora_name)
        stat = path.stat()
        return _checked_lora(str(path), stat.st_size, stat.st_mtime_ns)

    def apply(self, stage2_model, lora_name, strength):
        """(LoadedModel of Stage II, LoRA file name, strength) -> (a new LoraModel with the LoRA applied,)."""
        _check_modes(stage2_model)
        path = services.model_path("lora", lora_name)
        lora = read_lora(path)
        if getattr(stage2_model.module, SWAP_ATTR, None) is not None:  # a sampler's memory "auto" attached it
            comfy_memory.drop_swap(stage2_model)  # the blocks are shared from now on: whole again
        stage2_model.shared_with_lora = True
        module = apply_lora(stage2_model.module, lora, float(strength), model_name=Path(stage2_model.source).name)
        handle = LoraModel(module, stage2_model.device, stage2_model.offload_to, stage2_model.dtype,
                           f"{stage2_model.source} + {lora_name} @ {float(strength):g}", base=stage2_model)
        return (handle,)
