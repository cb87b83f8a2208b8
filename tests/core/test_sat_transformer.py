"""Published SAT transformer checkpoints: conversion equals the source model; LoRA merge is exact."""

import pytest
import torch

from flashvideo_core import config
from flashvideo_core.checkpoint import SAT_PREFIX
from flashvideo_core.errors import CheckpointError
from flashvideo_core.model.sat_loading import (
    diffusers_to_sat,
    infer_transformer_config,
    load_transformer,
    merge_lora,
    sat_to_diffusers,
    save_sat_transformer,
)
from flashvideo_core.model.transformer import FlashVideoTransformer, build_transformer
from flashvideo_core.weights.loaders import load_stage1, load_stage2

from ..equivalence import assert_same_outputs, assert_same_weights


def _run(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, 2, 16, 6, 10, generator=gen)
    text = torch.randn(1, 7, model.config.text_dim, generator=gen)
    noise_step = 675.0 if model.config.stage2_extras else None
    with torch.no_grad():
        return model(latents, text, torch.tensor([700.0]), noise_step=noise_step)


@pytest.mark.parametrize("cfg", [config.TINY_STAGE1, config.TINY_STAGE2])
def test_sat_round_trip_is_exact_in_fp32(cfg):
    model = build_transformer(cfg, seed=1)
    sat = diffusers_to_sat(model.state_dict())
    assert all(key.startswith(SAT_PREFIX) for key in sat)
    assert f"{SAT_PREFIX}transformer.layers.0.attention.query_key_value.weight" in sat
    assert sat[f"{SAT_PREFIX}mixins.adaln_layer.adaLN_modulations.0.1.weight"].shape[0] == 12 * cfg.hidden_size
    back = sat_to_diffusers(sat)
    assert set(back) == set(model.state_dict())
    assert all(torch.equal(back[k], v) for k, v in model.state_dict().items())
    assert infer_transformer_config(back) == cfg


@pytest.mark.parametrize("cfg, stage, rank", [(config.TINY_STAGE1, 1, 4), (config.TINY_STAGE2, 2, None)])
def test_published_layout_file_loads_to_the_model_it_was_made_from(tmp_path, cfg, stage, rank):
    source = build_transformer(cfg, seed=2).to(torch.bfloat16).float()  # the published files are bf16
    path = save_sat_transformer(source, tmp_path / f"stage{stage}.pt", lora_rank=rank)
    saved = torch.load(path, weights_only=True)
    assert list(saved) == ["module"]
    events = []
    loaded = load_transformer(path, stage=stage, callback=events.append)
    assert loaded.config == cfg
    merges = [(e.step, e.total) for e in events if e.phase == f"merge LoRA stage{stage}.pt"]
    loads = [e for e in events if e.phase == f"load stage{stage}.pt"]
    if rank:  # qkv, dense and adaLN per layer carry LoRA: the merge shows progress, and comes before the load
        layers = cfg.num_layers
        assert merges == [(i + 1, 3 * layers) for i in range(3 * layers)]
        assert events.index(loads[0]) > max(i for i, e in enumerate(events) if e.phase.startswith("merge"))
    else:
        assert merges == []
    assert loads and loads[-1].step == loads[-1].total
    tolerance = 0.0 if rank is None else 2e-3  # LoRA factors and the original are bf16 in the file
    assert torch.allclose(_run(loaded), _run(source), atol=tolerance)


def _save_diffusers_folder(model, folder):
    """A CogVideoX-style transformer/ folder (config.json + diffusion_pytorch_model.safetensors) of `model`.

    Stage II's two extra embeddings have no slot in CogVideoXTransformer3DModel: they go into a
    second safetensors file of the folder, with their FlashVideoTransformer names.
    """
    from safetensors.torch import save_file

    model.inner.save_pretrained(folder, safe_serialization=True)
    extras = {k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("inner.")}
    if extras:
        save_file(extras, str(folder / "flashvideo_extras.safetensors"))
    return folder


@pytest.mark.parametrize("name, loader", [("stage1", load_stage1), ("stage2", load_stage2)])
def test_diffusers_transformer_folder_loads_to_the_model_it_was_saved_from(tiny_weights, tmp_path, name, loader):
    source = loader(tiny_weights[name])  # converted from the published SAT layout (LoRA merged for Stage I)
    folder = _save_diffusers_folder(source, tmp_path / "transformer")
    assert (folder / "config.json").exists() and (folder / "diffusion_pytorch_model.safetensors").exists()
    loaded = loader(folder)
    assert loaded.config == source.config
    assert_same_weights(loaded, source)
    assert_same_outputs(_run(loaded), _run(source))


def test_stage2_folder_without_the_extra_embeddings_is_named(tiny_weights, tmp_path):
    load_stage2(tiny_weights["stage2"]).inner.save_pretrained(tmp_path / "transformer")
    with pytest.raises(CheckpointError, match="looks like FlashVideo Stage I"):
        load_stage2(tmp_path / "transformer")


def test_in_place_conversion_equals_the_copying_one_and_never_changes_the_file(tmp_path):
    source = build_transformer(config.TINY_STAGE1, seed=4).to(torch.bfloat16)
    path = save_sat_transformer(source, tmp_path / "stage1.pt", lora_rank=4)
    file_bytes = path.read_bytes()
    state = torch.load(path, weights_only=True)["module"]
    before = {k: v.clone() for k, v in state.items()}
    copied = sat_to_diffusers(state)
    assert all(torch.equal(state[k], before[k]) for k in state), "in_place=False must leave the input alone"
    mapped = torch.load(path, weights_only=True, mmap=True)["module"]
    in_place = sat_to_diffusers(mapped, in_place=True)
    assert set(in_place) == set(copied)
    assert all(torch.equal(in_place[k], copied[k]) for k in copied)
    assert path.read_bytes() == file_bytes, "writes into the copy-on-write mapping must not reach the file"
    first, second = load_transformer(path, stage=1), load_transformer(path, stage=1)
    pairs = zip(first.state_dict().values(), second.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def test_merged_lora_equals_the_unmerged_forward():
    cfg = config.TINY_STAGE1
    model = build_transformer(cfg, seed=3)
    rank = 4
    sat = diffusers_to_sat(model.state_dict(), lora_rank=rank, seed=7)
    assert any(".matrix_A.2" in k for k in sat) and any(".original.weight" in k for k in sat)
    # Unmerged reference: a model holding only the ORIGINAL weights, with hooks adding x A^T B^T / rank.
    originals = {k.replace(".original.", "."): v for k, v in sat.items() if ".matrix_" not in k}
    unmerged = FlashVideoTransformer(cfg)
    unmerged.load_state_dict(sat_to_diffusers(originals))
    plain = {k[len(SAT_PREFIX):]: v for k, v in sat.items()}
    for index in range(cfg.num_layers):
        block = unmerged.inner.transformer_blocks[index]
        base = f"transformer.layers.{index}.attention"
        adaln = f"mixins.adaln_layer.adaLN_modulations.{index}.1"
        delta_qkv = _lora_delta(plain, f"{base}.query_key_value", 3, rank)
        for part, proj in enumerate((block.attn1.to_q, block.attn1.to_k, block.attn1.to_v)):
            _hook(proj, delta_qkv.chunk(3)[part])
        _hook(block.attn1.to_out[0], _lora_delta(plain, f"{base}.dense", 1, rank))
        delta_adaln = _lora_delta(plain, adaln, 1, rank).chunk(12)
        _hook(block.norm1.linear, torch.cat([delta_adaln[i] for i in (0, 1, 2, 6, 7, 8)]))
        _hook(block.norm2.linear, torch.cat([delta_adaln[i] for i in (3, 4, 5, 9, 10, 11)]))
    merged = FlashVideoTransformer(cfg)
    merged.load_state_dict(sat_to_diffusers(sat))
    assert torch.allclose(_run(merged), _run(unmerged), atol=1e-5)
    assert torch.allclose(_run(merged), _run(model), atol=1e-5)


def _lora_delta(plain, base, parts, rank):
    """Dense weight delta of one LoRA-bearing linear: concat_k(B_k @ A_k) / rank (the official rule)."""
    return torch.cat([plain[f"{base}.matrix_B.{k}"] @ plain[f"{base}.matrix_A.{k}"] for k in range(parts)]) / rank


def _hook(linear, delta):
    linear.register_forward_hook(lambda module, args, output: output + args[0] @ delta.T)


def test_merge_rejects_orphan_lora_factors():
    with pytest.raises(CheckpointError, match="without their original"):
        merge_lora({"x.matrix_A.0": torch.zeros(2, 3), "x.matrix_B.0": torch.zeros(3, 2)})


def test_unknown_and_missing_keys_are_listed(tmp_path):
    model = build_transformer(config.TINY_STAGE2, seed=0)
    sat = diffusers_to_sat(model.state_dict())
    sat[f"{SAT_PREFIX}mixins.mystery.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="mixins.mystery"):
        sat_to_diffusers(sat)
    del sat[f"{SAT_PREFIX}mixins.mystery.weight"]
    del sat[f"{SAT_PREFIX}transformer.layers.1.mlp.dense_4h_to_h.weight"]
    torch.save({"module": sat}, tmp_path / "stage2.pt")
    with pytest.raises(CheckpointError, match="missing.*transformer_blocks.1.ff.net.2.weight"):
        load_transformer(tmp_path / "stage2.pt", stage=2)


def test_wrong_stage_file_is_named(tmp_path):
    path = save_sat_transformer(build_transformer(config.TINY_STAGE2, seed=0), tmp_path / "stage2.pt")
    with pytest.raises(CheckpointError, match="looks like FlashVideo Stage II.*Stage I transformer"):
        load_transformer(path, stage=1)


def test_known_unused_sat_keys_are_dropped():
    model = build_transformer(config.TINY_STAGE1, seed=0)
    sat = diffusers_to_sat(model.state_dict())
    sat[f"{SAT_PREFIX}mixins.pos_embed.freqs_sin"] = torch.zeros(3)
    sat[f"{SAT_PREFIX}transformer.position_embeddings.weight"] = torch.zeros(3)
    assert set(sat_to_diffusers(sat)) == set(model.state_dict())
