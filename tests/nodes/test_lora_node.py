"""The Stage II LoRA node: lists LoRA files, applies one without touching the loader's (cached, shared) model."""

import shutil

import pytest
import torch

from flashvideo_core import config
from flashvideo_core.errors import CheckpointError
from flashvideo_core.model.transformer import build_transformer
from flashvideo_core.training.lora import LoraSettings, attach_lora, save_lora
from flashvideo_core.weights.loaders import load_stage2
from nodes import NODE_CLASS_MAPPINGS as N
from nodes import comfy_memory

from .comfy_validation import validate_like_comfyui

TEXT = torch.randn(1, 5, 32, generator=torch.Generator().manual_seed(1))
LATENTS = torch.randn(1, 3, 16, 8, 8, generator=torch.Generator().manual_seed(2))


def _lora(model, path, scale=0.5):
    params = attach_lora(model, LoraSettings(rank=4))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn(p.shape, generator=generator) * scale)
    save_lora(model, path)


@pytest.fixture()
def lora_models(tiny_weights, tmp_path, monkeypatch):
    """A models folder: FlashVideo/stage2.pt, flashvideo_loras/style.safetensors, loras/stage1_lora.safetensors."""
    (tmp_path / "FlashVideo").mkdir()
    shutil.copy(tiny_weights["stage2"], tmp_path / "FlashVideo" / "stage2.pt")
    (tmp_path / "flashvideo_loras").mkdir()
    (tmp_path / "loras").mkdir()
    _lora(load_stage2(tiny_weights["stage2"]), tmp_path / "flashvideo_loras" / "style.safetensors")
    _lora(build_transformer(config.TINY_STAGE1, seed=0), tmp_path / "loras" / "stage1_lora.safetensors")
    (tmp_path / "loras" / "notes.txt").write_text("not a LoRA")
    monkeypatch.setenv("FLASHVIDEO_MODELS_DIR", str(tmp_path))
    return tmp_path


def _run(handle):
    with torch.no_grad(), handle.active() as module:
        return module(LATENTS, TEXT, 500.0, 675.0)


def test_the_node_never_changes_the_loaders_model_and_strengths_do_not_accumulate(lora_models):
    node = N["FlashVideoStage2LoRA"]
    assert node.INPUT_TYPES()["required"]["lora_name"][0] == ["stage1_lora.safetensors", "style.safetensors"]
    base = N["FlashVideoStage2Loader"]().load("stage2.pt", "fp32", "keep on device")[0]
    before = {k: v.clone() for k, v in base.module.state_dict().items()}
    plain = _run(base)
    full = node().apply(base, "style.safetensors", 1.0)[0]
    half = node().apply(base, "style.safetensors", 0.5)[0]
    again = node().apply(base, "style.safetensors", 1.0)[0]
    zero = node().apply(base, "style.safetensors", 0.0)[0]
    assert full is not base and full.module is not base.module
    assert not torch.allclose(_run(full), plain) and not torch.allclose(_run(half), _run(full))
    assert torch.equal(_run(again), _run(full)), "a second run with the same strength: the same model, nothing added"
    assert torch.equal(_run(zero), plain)
    assert torch.equal(_run(base), plain), "the loader's output gives the base model's result after the node ran"
    assert list(base.module.state_dict()) == list(before)
    assert all(torch.equal(v, before[k]) for k, v in base.module.state_dict().items())
    assert (full.device, full.offload_to, full.dtype) == (base.device, base.offload_to, base.dtype)
    assert "style.safetensors" in comfy_memory.model_name(full)


def test_the_node_output_runs_in_the_stage2_sampler(lora_models, tiny_weights):
    shutil.copy(tiny_weights["vae"], lora_models / "FlashVideo" / "3d-vae.pt")
    shutil.copytree(tiny_weights["text_encoder"], lora_models / "FlashVideo" / "text_encoder")
    shutil.copytree(tiny_weights["tokenizer"], lora_models / "FlashVideo" / "tokenizer")
    base = N["FlashVideoStage2Loader"]().load("stage2.pt", "fp32", "offload after use")[0]
    vae = N["FlashVideoVAELoader"]().load("3d-vae.pt", "fp32", "offload after use")[0]
    t5 = N["FlashVideoT5Loader"]().load("text_encoder/", "auto (tokenizer/ beside the encoder)", "auto",
                                        "offload after use")[0]
    embeds = N["FlashVideoTextEncode"]().encode(t5, "A lake.", False)[0]
    prepared = N["FlashVideoPrepareStage2"]().prepare(vae, torch.rand(5, 32, 32, 3), 32, 32, 0)[0]
    degraded = N["FlashVideoLatentDegradation"]().degrade(prepared, 675, 0)[0]
    lora = N["FlashVideoStage2LoRA"]().apply(base, "style.safetensors", 0.8)[0]

    def sample(model):
        return N["FlashVideoStage2Sampler"]().sample(model, embeds, degraded, 1, 13.0, 2.5, "euler")[0]["samples"]

    plain = sample(base)
    with_lora = sample(lora)
    assert with_lora.shape == plain.shape and not torch.allclose(with_lora, plain)
    assert torch.equal(sample(base), plain), "the loader's model still samples the base result"


def test_wrong_files_are_named(lora_models):
    node = N["FlashVideoStage2LoRA"]
    base = N["FlashVideoStage2Loader"]().load("stage2.pt", "fp32", "keep on device")[0]
    with pytest.raises(CheckpointError, match=r"stage1_lora.safetensors is a LoRA for Stage I.*stage2.pt is Stage II"):
        node().apply(base, "stage1_lora.safetensors", 1.0)
    assert validate_like_comfyui(node, {"lora_name": "style.safetensors", "strength": 1.0}) is True
    assert "strength=3.0 is outside -2.0..2.0" in validate_like_comfyui(node, {"lora_name": "style.safetensors",
                                                                                "strength": 3.0})
    assert "not found in the lora model folders" in validate_like_comfyui(node, {"lora_name": "../x.safetensors",
                                                                                  "strength": 1.0})
    stage2 = lora_models / "flashvideo_loras" / "model.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(stage2))
    assert "model.safetensors is not a FlashVideo LoRA file" in validate_like_comfyui(
        node, {"lora_name": "model.safetensors", "strength": 1.0})


def test_inside_comfyui_the_base_and_its_lora_model_are_never_loaded_at_once(lora_models, tiny_weights, monkeypatch,
                                                                               tmp_path):
    """They share tensors: with both listed as loaded, ComfyUI unloading one would pull the other's weights away."""
    from nodes.common import LoadedModel

    from .test_memory_manager import META, install_standin

    mm = install_standin(monkeypatch, tmp_path)
    base = LoadedModel(load_stage2(tiny_weights["stage2"]), META, None, torch.float32, "stage2.pt")  # keep on device
    lora = N["FlashVideoStage2LoRA"]().apply(base, "style.safetensors", 1.0)[0]
    with base.active():
        assert mm.loaded(base)
    for _ in range(2):
        with lora.active() as module:
            assert mm.loaded(lora) and not mm.loaded(base)
            assert {p.device.type for p in module.parameters()} == {"meta"}, "base and adapter weights on the device"
    with base.active():
        assert mm.loaded(base)


def test_a_swap_a_sampler_attached_to_the_base_is_removed_and_never_attached_again(lora_models):
    """memory "auto" may have given the loader's model a block swap; a LoRA model shares its blocks, so the LoRA
    node makes the base whole again and marks it: auto never swaps a base that a LoRA model shares."""
    from flashvideo_core.modes.apply import SWAP_ATTR
    from flashvideo_core.modes.block_swap import enable_block_swap

    node = N["FlashVideoStage2LoRA"]
    plain_base = N["FlashVideoStage2Loader"]().load("stage2.pt", "fp32", "keep on device")[0]
    want = _run(node().apply(plain_base, "style.safetensors", 1.0)[0])
    base = N["FlashVideoStage2Loader"]().load("stage2.pt", "fp32", "keep on device")[0]
    setattr(base.module, SWAP_ATTR, enable_block_swap(base.module, 1, "cpu"))  # as node_modes attaches it
    assert not base.shared_with_lora
    lora = node().apply(base, "style.safetensors", 1.0)[0]
    assert getattr(base.module, SWAP_ATTR, None) is None and base.shared_with_lora
    assert torch.equal(_run(lora), want)
