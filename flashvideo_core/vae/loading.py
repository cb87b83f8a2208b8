"""The CogVideoX 3D VAE: building, SAT <-> diffusers key mapping, config inference, loading, saving.

SAT (`3d-vae.pt`, {'state_dict': ...}) names differ from diffusers' `AutoencoderKLCogVideoX` in:
  down.{i}.block.{j}      <-> down_blocks.{i}.resnets.{j}
  down.{i}.downsample     <-> down_blocks.{i}.downsamplers.0
  up.{i}.block.{j}        <-> up_blocks.{n-1-i}.resnets.{j}   (up blocks are stored in reverse order)
  up.{i}.upsample         <-> up_blocks.{n-1-i}.upsamplers.0
  mid.block_{1,2}         <-> mid_block.resnets.{0,1}
  nin_shortcut            <-> conv_shortcut
and SAT files may carry training-only `loss.*` tensors, which are dropped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKLCogVideoX

from ..atomic import atomic_output
from ..checkpoint import load_strict, read_folder_config, read_safetensors_metadata, read_state_dict, require_kind
from ..config import VAEConfig
from ..errors import CheckpointError
from ..progress import ProgressCallback

SAT_BLOCK = re.compile(r"^(encoder|decoder)\.(down|up)\.(\d+)\.(block\.(\d+)|downsample|upsample)\.(.+)$")
SAT_MID = re.compile(r"^(encoder|decoder)\.mid\.block_([12])\.(.+)$")
DIFFUSERS_BLOCK = re.compile(
    r"^(encoder|decoder)\.(down|up)_blocks\.(\d+)\.(resnets\.(\d+)|downsamplers\.0|upsamplers\.0)\.(.+)$"
)
DIFFUSERS_MID = re.compile(r"^(encoder|decoder)\.mid_block\.resnets\.([01])\.(.+)$")


def build_vae(config: VAEConfig, seed: int | None = None) -> AutoencoderKLCogVideoX:
    """A randomly initialised CogVideoX VAE of this shape (deterministic for a seed), in eval mode."""
    count = len(config.block_out_channels)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        vae = AutoencoderKLCogVideoX(
            down_block_types=("CogVideoXDownBlock3D",) * count,
            up_block_types=("CogVideoXUpBlock3D",) * count,
            block_out_channels=tuple(config.block_out_channels),
            latent_channels=config.latent_channels,
            layers_per_block=config.layers_per_block,
            norm_num_groups=config.norm_num_groups,
        )
    return vae.eval()


@dataclass(frozen=True)
class _KeyLayout:
    """How one layout names the VAE's block tensors (the two layouts of the module docstring).

    block: groups (encoder|decoder, down|up, index, inner, resnet index or None for a sampler, rest);
    mid: groups (encoder|decoder, number, rest). up_index: finds an up block's index (to count them).
    resnet, sampler, block_key, mid_key: str.format templates of this layout's names; first_mid: the
    number of the first mid resnet; shortcut: the 1x1 shortcut conv's name; dropped: key prefixes of
    training-only tensors left out when reading this layout.
    """

    block: re.Pattern
    mid: re.Pattern
    up_index: str
    resnet: str
    sampler: str
    block_key: str
    mid_key: str
    first_mid: int
    shortcut: str
    dropped: tuple[str, ...] = ()


SAT_LAYOUT = _KeyLayout(
    SAT_BLOCK, SAT_MID, r"^decoder\.up\.(\d+)\.", "block.{resnet}", "{kind}sample",
    "{part}.{kind}.{index}.{inner}.{rest}", "{part}.mid.block_{number}.{rest}", 1, "nin_shortcut", ("loss.",),
)
DIFFUSERS_LAYOUT = _KeyLayout(
    DIFFUSERS_BLOCK, DIFFUSERS_MID, r"^decoder\.up_blocks\.(\d+)\.", "resnets.{resnet}", "{kind}samplers.0",
    "{part}.{kind}_blocks.{index}.{inner}.{rest}", "{part}.mid_block.resnets.{number}.{rest}", 0, "conv_shortcut",
)


def _num_up_blocks(state: dict[str, torch.Tensor], pattern: str) -> int:
    indices = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
    return max(indices) + 1 if indices else 0


def _renamed(state: dict[str, torch.Tensor], src: _KeyLayout, dst: _KeyLayout) -> dict[str, torch.Tensor]:
    """`state` named in layout `src` -> the same tensors named in layout `dst` (up blocks counted backwards
    in one of them, so index i <-> count - 1 - i; src.dropped tensors left out; other keys kept)."""
    count = _num_up_blocks(state, src.up_index)
    out = {}
    for key, tensor in state.items():
        if key.startswith(src.dropped):
            continue
        if match := src.block.match(key):
            part, kind, index, _, resnet, rest = match.groups()
            index = int(index) if kind == "down" else count - 1 - int(index)
            inner = dst.sampler.format(kind=kind) if resnet is None else dst.resnet.format(resnet=resnet)
            key = dst.block_key.format(part=part, kind=kind, index=index, inner=inner, rest=rest)
        elif match := src.mid.match(key):
            part, number, rest = match.groups()
            key = dst.mid_key.format(part=part, number=int(number) - src.first_mid + dst.first_mid, rest=rest)
        out[key.replace(src.shortcut, dst.shortcut)] = tensor
    return out


def sat_vae_to_diffusers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SAT VAE state -> diffusers AutoencoderKLCogVideoX state (training-only `loss.*` tensors dropped)."""
    return _renamed(state, SAT_LAYOUT, DIFFUSERS_LAYOUT)


def diffusers_vae_to_sat(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKLCogVideoX state -> SAT layout (the inverse of sat_vae_to_diffusers)."""
    return _renamed(state, DIFFUSERS_LAYOUT, SAT_LAYOUT)


def is_sat_vae(state: dict[str, torch.Tensor]) -> bool:
    """True if the keys are in the SAT layout (encoder.down.0...)."""
    return any(SAT_BLOCK.match(k) or SAT_MID.match(k) for k in state)


def to_diffusers_vae_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Any VAE state (SAT or diffusers layout) -> diffusers AutoencoderKLCogVideoX keys.

    The rule load_vae and `convert` share: SAT-layout states (is_sat_vae) are renamed by
    sat_vae_to_diffusers (training-only `loss.*` tensors dropped); others are returned as they are.
    """
    return sat_vae_to_diffusers(state) if is_sat_vae(state) else state


def infer_vae_config(state: dict[str, torch.Tensor], metadata: dict | None = None) -> VAEConfig:
    """Read the VAE shape from a diffusers-layout state dict.

    GroupNorm's group count is not stored in tensors: the rule is 32 if every normalised channel
    count divides by 32 (the real VAE), else the largest power of two <= 32 dividing all of them.
    A config in `metadata` (written by `convert`, or a diffusers config.json) wins.
    """
    if metadata:
        return VAEConfig(
            block_out_channels=tuple(metadata["block_out_channels"]),
            layers_per_block=int(metadata["layers_per_block"]),
            latent_channels=int(metadata["latent_channels"]),
            norm_num_groups=int(metadata["norm_num_groups"]),
        )
    try:
        count = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.down_blocks."))
        channels = tuple(state[f"encoder.down_blocks.{i}.resnets.0.conv2.conv.weight"].shape[0] for i in range(count))
        layers = 1 + max(int(k.split(".")[4]) for k in state if k.startswith("encoder.down_blocks.0.resnets."))
        latent = state["encoder.conv_out.conv.weight"].shape[0] // 2
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"Not a CogVideoX VAE state (missing {exc}).") from exc
    norm_sizes = {v.shape[0] for k, v in state.items() if ("norm" in k and k.endswith("weight") and v.ndim == 1)}
    groups = 32
    while groups > 1 and any(size % groups for size in norm_sizes):
        groups //= 2
    return VAEConfig(
        block_out_channels=channels, layers_per_block=layers, latent_channels=latent, norm_num_groups=groups
    )


def _config_from_files(path: Path) -> dict | None:
    if path.is_dir():
        folder_config = read_folder_config(path)
        return folder_config if folder_config and "block_out_channels" in folder_config else None
    if path.suffix == ".safetensors":
        raw = read_safetensors_metadata(path).get("flashvideo_vae_config")
        return json.loads(raw) if raw else None
    return None


def load_vae(
    path: str | Path, device="cpu", dtype: torch.dtype = torch.float32, callback: ProgressCallback | None = None
) -> AutoencoderKLCogVideoX:
    """Load the VAE from `3d-vae.pt` (SAT), a `.safetensors` (either layout) or a diffusers `vae/` folder.

    Strict (checkpoint.load_strict): missing, unexpected and mis-shaped tensors are named in one CheckpointError.
    Progress of the read goes to `callback` as ProgressEvent("load <file name>", MB done, MB total).
    """
    path = Path(path)
    state = read_state_dict(path)
    require_kind(state, "vae", path)
    state = to_diffusers_vae_state(state)
    config = infer_vae_config(state, _config_from_files(path))
    with torch.device("meta"):
        vae = build_vae(config)
    load_strict(vae, state, path, "vae", dtype, callback)
    return vae.to(device).eval()


def save_sat_vae(vae: AutoencoderKLCogVideoX, path: str | Path) -> Path:
    """Write `vae` in the published `3d-vae.pt` layout: {'state_dict': SAT state}, fp32."""
    state = {k: v.detach().float() for k, v in vae.state_dict().items()}
    with atomic_output(path) as tmp:
        torch.save({"state_dict": diffusers_vae_to_sat(state)}, tmp)
    return Path(path)
