"""The SAT key mapping: published SAT transformer state dicts <-> FlashVideoTransformer state dicts.

A rename table maps SAT names to diffusers names; two special handlers split the fused qkv
projection and regroup the 12-chunk adaLN modulation. Stage I's unmerged LoRA is merged first
(merge_lora); diffusers_to_sat can write LoRA factors back (tests, tiny weights). Loading and saving
files: sat_loading.py.
"""

from __future__ import annotations

import re

import torch

from ..checkpoint import SAT_PREFIX
from ..errors import CheckpointError
from ..progress import ProgressCallback, report

LAYER_RENAMES = {
    "input_layernorm": "norm1.norm",
    "post_attention_layernorm": "norm2.norm",
    "attention.dense": "attn1.to_out.0",
    "mlp.dense_h_to_4h": "ff.net.0.proj",
    "mlp.dense_4h_to_h": "ff.net.2",
}
GLOBAL_RENAMES = {
    "time_embed.0": "inner.time_embedding.linear_1",
    "time_embed.2": "inner.time_embedding.linear_2",
    "mixins.patch_embed.proj": "inner.patch_embed.proj",
    "mixins.patch_embed.text_proj": "inner.patch_embed.text_proj",
    "transformer.final_layernorm": "inner.norm_final",
    "mixins.final_layer.norm_final": "inner.norm_out.norm",
    "mixins.final_layer.adaLN_modulation.1": "inner.norm_out.linear",
    "mixins.final_layer.linear": "inner.proj_out",
    "ref_step_time_embedding.0": "ref_step_time_embedding.linear_1",
    "ref_step_time_embedding.2": "ref_step_time_embedding.linear_2",
    "time_size_embedding.0": "time_size_embedding.linear_1",
    "time_size_embedding.2": "time_size_embedding.linear_2",
}
DROPPED = ("transformer.position_embeddings", "mixins.pos_embed.freqs_", "word_embeddings", "embed_tokens")
ADALN_NORM1_CHUNKS = (0, 1, 2, 6, 7, 8)
"""SAT adaLN order: shift/scale/gate msa, shift/scale/gate mlp, then the same for text.
diffusers norm1 (attention) takes image msa + text msa; norm2 (FFN) the mlp ones."""
ADALN_NORM2_CHUNKS = (3, 4, 5, 9, 10, 11)
LAYER_KEY = re.compile(r"^transformer\.layers\.(\d+)\.(.+)\.(weight|bias)$")
ADALN_KEY = re.compile(r"^mixins\.adaln_layer\.adaLN_modulations\.(\d+)\.1\.(weight|bias)$")
QK_NORM_KEY = re.compile(r"^mixins\.adaln_layer\.(query|key)_layernorm_list\.(\d+)\.(weight|bias)$")


def merge_lora(
    state: dict[str, torch.Tensor], in_place: bool = False, callback: ProgressCallback | None = None,
    phase: str = "merge LoRA",
) -> dict[str, torch.Tensor]:
    """Fold `<linear>.original` + `matrix_A.k` / `matrix_B.k` into plain `<linear>.weight/bias`.

    W = original + concat_k(B_k @ A_k) / rank along the output dim, computed in fp32 and cast back
    (lora_alpha = 1 as in the official ResLoraMixin, so the scale is 1 / rank).
    in_place=True writes W into the `original` tensors (no second copy of the merged weights; for a
    state the caller owns, e.g. just read from a copy-on-write mmap); False leaves `state` untouched.
    Merging reads every LoRA'd weight (most of Stage I's file), so it reports
    ProgressEvent(phase, weights merged, weights with LoRA) to `callback`.
    """
    merged: dict[str, torch.Tensor] = {}
    bases = {key[: -len(".original.weight")] for key in state if key.endswith(".original.weight")}
    with_lora = {key.split(".matrix_A.")[0] for key in state if ".matrix_A." in key} & bases
    done = 0
    for key, tensor in state.items():
        if ".matrix_A." in key or ".matrix_B." in key:
            continue
        if ".original." in key:
            base = key.split(".original.")[0]
            key = f"{base}.{key.rsplit('.', 1)[1]}"
            if key.endswith(".weight"):
                tensor = _merged_weight(state, base, tensor, in_place)
                if base in with_lora:
                    done += 1
                    report(callback, phase, done, len(with_lora))
        merged[key] = tensor
    orphans = [k for k in state if (".matrix_A." in k or ".matrix_B." in k) and k.split(".matrix_")[0] not in bases]
    if orphans:
        raise CheckpointError(f"LoRA factors without their original weights: {orphans[:3]}")
    return merged


def _merged_weight(
    state: dict[str, torch.Tensor], base: str, original: torch.Tensor, in_place: bool
) -> torch.Tensor:
    parts = sorted(int(k.rsplit(".", 1)[1]) for k in state if k.startswith(f"{base}.matrix_A."))
    if not parts:
        return original
    deltas = []
    for part in parts:
        down = state[f"{base}.matrix_A.{part}"].float()  # (rank, in)
        up = state[f"{base}.matrix_B.{part}"].float()  # (out / parts, rank)
        deltas.append(up @ down / down.shape[0])
    delta = torch.cat(deltas, dim=0)
    if delta.shape != original.shape:
        raise CheckpointError(f"LoRA of {base} gives {tuple(delta.shape)}, weight is {tuple(original.shape)}.")
    merged = original.float() + delta
    return original.copy_(merged) if in_place else merged.to(original.dtype)


def sat_to_diffusers(
    state: dict[str, torch.Tensor], in_place: bool = False, callback: ProgressCallback | None = None,
    phase: str = "merge LoRA",
) -> dict[str, torch.Tensor]:
    """SAT checkpoint (prefix `model.diffusion_model.`, LoRA merged or not) -> FlashVideoTransformer state.

    The result shares memory with `state` where it can (q/k/v are views of the fused qkv weight), so
    loading needs no second copy of the weights. in_place=True also merges LoRA and regroups the adaLN
    chunks inside the given tensors (for a state the caller owns); False never modifies `state`.
    Raises CheckpointError on any key it does not know. LoRA merge progress: see merge_lora.
    """
    plain = {k[len(SAT_PREFIX):] if k.startswith(SAT_PREFIX) else k: v for k, v in state.items()}
    plain = merge_lora(plain, in_place, callback, phase)
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, tensor in plain.items():
        if any(fragment in key for fragment in DROPPED):
            continue
        if not _convert_key(key, tensor, out, in_place):
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"Unknown keys in the transformer checkpoint: {unknown[:5]} ({len(unknown)} in all).")
    return out


def _convert_key(key: str, tensor: torch.Tensor, out: dict[str, torch.Tensor], in_place: bool) -> bool:
    stem, _, leaf = key.rpartition(".")
    if stem in GLOBAL_RENAMES:
        out[f"{GLOBAL_RENAMES[stem]}.{leaf}"] = tensor
        return True
    if match := LAYER_KEY.match(key):
        index, name, leaf = match.groups()
        block = f"inner.transformer_blocks.{index}"
        if name == "attention.query_key_value":
            for proj, chunk in zip(("to_q", "to_k", "to_v"), tensor.chunk(3, dim=0), strict=True):
                out[f"{block}.attn1.{proj}.{leaf}"] = chunk
            return True
        if name in LAYER_RENAMES:
            out[f"{block}.{LAYER_RENAMES[name]}.{leaf}"] = tensor
            return True
        return False
    if match := ADALN_KEY.match(key):
        index, leaf = match.groups()
        chunks = tensor.chunk(12, dim=0)
        regrouped = torch.cat([chunks[i] for i in ADALN_NORM1_CHUNKS + ADALN_NORM2_CHUNKS])
        if in_place:
            regrouped = tensor.copy_(regrouped)
        block = f"inner.transformer_blocks.{index}"
        out[f"{block}.norm1.linear.{leaf}"], out[f"{block}.norm2.linear.{leaf}"] = regrouped.chunk(2, dim=0)
        return True
    if match := QK_NORM_KEY.match(key):
        which, index, leaf = match.groups()
        out[f"inner.transformer_blocks.{index}.attn1.norm_{which[0]}.{leaf}"] = tensor
        return True
    return False


def diffusers_to_sat(
    state: dict[str, torch.Tensor], lora_rank: int | None = None, seed: int = 0
) -> dict[str, torch.Tensor]:
    """FlashVideoTransformer state -> SAT checkpoint keys (with prefix); the inverse of sat_to_diffusers.

    With lora_rank, qkv / attention dense / adaLN linears are written as `original` + random LoRA
    factors whose merge gives back exactly the given weights (up to fp32 rounding).
    """
    inverse_global = {v: k for k, v in GLOBAL_RENAMES.items()}
    inverse_layer = {v: k for k, v in LAYER_RENAMES.items()}
    sat: dict[str, torch.Tensor] = {}
    blocks: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        stem, _, leaf = key.rpartition(".")
        if stem in inverse_global:
            sat[f"{inverse_global[stem]}.{leaf}"] = tensor
            continue
        match = re.match(r"^inner\.transformer_blocks\.(\d+)\.(.+)$", key)
        if not match:
            raise CheckpointError(f"Cannot map {key} to the SAT layout.")
        blocks.setdefault(int(match.group(1)), {})[match.group(2)] = tensor
    for index, block in blocks.items():
        layer = f"transformer.layers.{index}"
        for leaf in ("weight", "bias"):
            sat[f"{layer}.attention.query_key_value.{leaf}"] = torch.cat(
                [block[f"attn1.{p}.{leaf}"] for p in ("to_q", "to_k", "to_v")]
            )
            n1, n2 = block[f"norm1.linear.{leaf}"].chunk(6), block[f"norm2.linear.{leaf}"].chunk(6)
            order = dict(zip(ADALN_NORM1_CHUNKS, n1, strict=True)) | dict(zip(ADALN_NORM2_CHUNKS, n2, strict=True))
            adaln = torch.cat([order[c] for c in range(12)])
            sat[f"mixins.adaln_layer.adaLN_modulations.{index}.1.{leaf}"] = adaln
            for which in ("query", "key"):
                norm = block[f"attn1.norm_{which[0]}.{leaf}"]
                sat[f"mixins.adaln_layer.{which}_layernorm_list.{index}.{leaf}"] = norm
            for name, sat_name in inverse_layer.items():
                sat[f"{layer}.{sat_name}.{leaf}"] = block[f"{name}.{leaf}"]
    if lora_rank:
        sat = _split_lora(sat, lora_rank, seed)
    return {SAT_PREFIX + k: v for k, v in sat.items()}


def _split_lora(sat: dict[str, torch.Tensor], rank: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for key, tensor in sat.items():
        base, _, leaf = key.rpartition(".")
        targeted = base.endswith((".attention.query_key_value", ".attention.dense")) or ADALN_KEY.match(key)
        if not targeted:
            out[key] = tensor
            continue
        out[f"{base}.original.{leaf}"] = tensor
        if leaf != "weight":
            continue
        parts = 3 if base.endswith("query_key_value") else 1
        deltas = []
        for part in range(parts):
            down = torch.randn(rank, tensor.shape[1], generator=gen) * 0.1
            up = torch.randn(tensor.shape[0] // parts, rank, generator=gen) * 0.1
            out[f"{base}.matrix_A.{part}"] = down.to(tensor.dtype)
            out[f"{base}.matrix_B.{part}"] = up.to(tensor.dtype)
            deltas.append(up.to(tensor.dtype).float() @ down.to(tensor.dtype).float() / rank)
        out[f"{base}.original.{leaf}"] = (tensor.float() - torch.cat(deltas)).to(tensor.dtype)
    return out


def to_flashvideo_state(
    state: dict[str, torch.Tensor], callback: ProgressCallback | None = None, phase: str = "merge LoRA"
) -> dict[str, torch.Tensor]:
    """Any transformer state (SAT, diffusers, ours) -> FlashVideoTransformer keys.

    SAT states are converted in place (the caller must own them, as after read_state_dict); a LoRA
    merge reports its progress to `callback` as `phase` (see merge_lora).
    """
    if any(k.startswith(SAT_PREFIX) or k.startswith("transformer.layers.") for k in state):
        return sat_to_diffusers(state, in_place=True, callback=callback, phase=phase)
    if any(k.startswith("inner.") for k in state):
        return state
    return {f"inner.{k}" if not k.startswith(("ref_step", "time_size")) else k: v for k, v in state.items()}
