"""Loading and saving FlashVideo transformers from the published files (SAT `.pt`, safetensors, diffusers folders).

The key mapping between the SAT layout and FlashVideoTransformer lives in sat_keys.py; its public
names are re-exported here, so `from flashvideo_core.model.sat_loading import sat_to_diffusers` works.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..atomic import atomic_output
from ..checkpoint import load_strict, read_folder_config, read_state_dict, require_kind
from ..config import LATENT_CHANNELS, TransformerConfig
from ..errors import CheckpointError
from ..progress import ProgressCallback
from .sat_keys import diffusers_to_sat, merge_lora, sat_to_diffusers, to_flashvideo_state
from .transformer import FlashVideoTransformer

__all__ = [
    "diffusers_to_sat",
    "infer_transformer_config",
    "load_transformer",
    "merge_lora",
    "sat_to_diffusers",
    "save_sat_transformer",
    "to_flashvideo_state",
]


def infer_transformer_config(state: dict[str, torch.Tensor]) -> TransformerConfig:
    """Read the architecture from a FlashVideoTransformer state (use sat_to_diffusers first for SAT)."""
    try:
        proj = state["inner.patch_embed.proj.weight"]  # (hidden, in_channels, p, p)
        head_dim = state["inner.transformer_blocks.0.attn1.norm_q.weight"].shape[0]
        hidden = proj.shape[0]
        patch = proj.shape[-1]
        out_features = state["inner.proj_out.weight"].shape[0]  # p * p * out_channels
        ffn = state["inner.transformer_blocks.0.ff.net.0.proj.weight"].shape[0]
        layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("inner.transformer_blocks."))
        return TransformerConfig(
            num_layers=layers,
            num_heads=hidden // head_dim,
            head_dim=head_dim,
            time_embed_dim=state["inner.time_embedding.linear_1.weight"].shape[0],
            text_dim=state["inner.patch_embed.text_proj.weight"].shape[1],
            in_channels=proj.shape[1],
            out_channels=out_features // (patch * patch),
            patch_size=patch,
            ffn_dim=None if ffn == 4 * hidden else ffn,
            stage2_extras="ref_step_time_embedding.linear_1.weight" in state,
        )
    except (KeyError, ValueError, IndexError) as exc:
        raise CheckpointError(f"Not a CogVideoX/FlashVideo transformer state (missing {exc}).") from exc


def load_transformer(
    path: str | Path, stage: int, device="cpu", dtype: torch.dtype = torch.float32,
    callback: ProgressCallback | None = None,
):
    """Load a Stage I (stage=1) or Stage II (stage=2) transformer from any supported file layout.

    path: SAT `.pt` ({'module': ...}), `.safetensors` (SAT or converted keys) or a diffusers folder.
    The config is inferred from the tensors; loading is strict (checkpoint.load_strict: missing,
    unexpected and mis-shaped keys are named in one CheckpointError). Weights are assigned without a
    second full copy. Progress of the read goes to `callback` as ProgressEvent("load <file name>",
    MB done, MB total). Returns the FlashVideoTransformer on `device`, in eval mode.
    """
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage!r}")
    state = read_state_dict(path)
    require_kind(state, f"stage{stage}", path)
    state = to_flashvideo_state(state, callback, f"merge LoRA {Path(path).name}")
    config = infer_transformer_config(state)
    _check_flashvideo_shape(config, path)
    with torch.device("meta"):
        model = FlashVideoTransformer(config)
    load_strict(model, state, path, f"stage{stage}", dtype, callback)
    return model.to(device).eval()


def _check_flashvideo_shape(config: TransformerConfig, path: str | Path) -> None:
    """Refuse CogVideoX variants FlashVideo cannot use (image-to-video inputs, no 3D RoPE)."""
    name = Path(path).name
    if config.in_channels != LATENT_CHANNELS:
        raise CheckpointError(
            f"{name} takes {config.in_channels} input channels (an image-to-video CogVideoX?); FlashVideo's "
            f"stages take {LATENT_CHANNELS}."
        )
    folder_config = read_folder_config(path) if Path(path).is_dir() else None
    if folder_config and folder_config.get("use_rotary_positional_embeddings") is False:
        raise CheckpointError(
            f"{name} is a CogVideoX model without 3D RoPE (e.g. CogVideoX-2B, sincos positions); both "
            "FlashVideo stages use RoPE. Use stage1.pt / stage2.pt."
        )


def save_sat_transformer(
    model, path: str | Path, lora_rank: int | None = None, dtype: torch.dtype = torch.bfloat16, seed: int = 0
) -> Path:
    """Write `model` as a published-layout SAT checkpoint {'module': state} (bf16 like stage1/2.pt)."""
    state = {k: v.detach().to(dtype) for k, v in model.state_dict().items()}
    sat = diffusers_to_sat(state, lora_rank=lora_rank, seed=seed)
    with atomic_output(path) as tmp:
        torch.save({"module": sat}, tmp)
    return Path(path)
