"""Convert published weight files into safetensors that load faster (no LoRA merge, no unpickling).

Transformers are written with diffusers-style keys (LoRA merged), the VAE with diffusers keys.
The header metadata records the model kind so loaders can check it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..atomic import atomic_output, write_errors_named
from ..checkpoint import detect_kind, read_state_dict, verify_checksums
from ..errors import CheckpointError
from ..progress import ProgressCallback


def convert_checkpoint(
    src: str | Path, dst: str | Path | None = None, overwrite: bool = False, callback: ProgressCallback | None = None
) -> Path:
    """Read `src` (SAT .pt, safetensors or folder), write `dst` (default: src with .safetensors).

    `dst` may be an existing folder: the file is written into it as <src stem>.safetensors.

    Returns the written path. Refuses to overwrite an existing file unless overwrite=True.
    Stage I/II -> FlashVideoTransformer state (LoRA merged); VAE -> diffusers AutoencoderKLCogVideoX state.
    A .pt source is first checked against its stored checksums (checkpoint.verify_checksums, progress
    to `callback`): safetensors stores none, so damage converted now would never be caught later.
    """
    src = Path(src)
    dst = Path(dst) if dst else src.with_suffix(".safetensors")
    if dst.is_dir():  # `convert stage1.pt -o weights/`: into that folder, under the source's name
        dst = dst / src.with_suffix(".safetensors").name
    if dst.resolve() == src.resolve():
        raise CheckpointError(f"Output {dst} would overwrite the input; choose another name.")
    if dst.exists() and not overwrite:
        raise CheckpointError(f"{dst} already exists; pass overwrite (--force) to replace it.")
    verify_checksums(src, callback)
    state = read_state_dict(src)
    kind = detect_kind(state)
    metadata = {"flashvideo_kind": kind, "flashvideo_source": src.name}
    if kind in ("stage1", "stage2"):
        from ..model.sat_loading import infer_transformer_config, to_flashvideo_state  # diffusers: when needed

        converted = to_flashvideo_state(state)
        metadata["flashvideo_transformer_config"] = json.dumps(infer_transformer_config(converted).__dict__)
    elif kind == "vae":
        from ..vae.loading import infer_vae_config, to_diffusers_vae_state  # diffusers: when needed

        converted = to_diffusers_vae_state(state)  # load_vae's own rule, so both read a file alike
        vae_config = infer_vae_config(converted)
        metadata["flashvideo_vae_config"] = json.dumps(
            {**vae_config.__dict__, "block_out_channels": list(vae_config.block_out_channels)}
        )
    else:
        raise CheckpointError(f"{src.name}: cannot tell which FlashVideo model this is; nothing converted.")
    _save(converted, dst, metadata, overwrite)
    return dst


def _save(state: dict[str, torch.Tensor], dst: Path, metadata: dict[str, str], overwrite: bool) -> None:
    from safetensors.torch import save_file  # looked up per call: the disk-full test replaces it

    with write_errors_named(dst), atomic_output(dst, overwrite) as tmp:
        save_file({key: _own_storage(tensor) for key, tensor in state.items()}, str(tmp), metadata=metadata)


def _own_storage(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` if it is contiguous and alone in its storage, else a compact copy (safetensors refuses
    tensors that share memory, such as the q/k/v views of a fused qkv weight)."""
    whole = tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
    return tensor if whole and tensor.is_contiguous() and tensor.storage_offset() == 0 else tensor.clone()
