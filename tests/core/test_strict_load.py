"""Strict loading: the three loaders refuse a state that does not fit their model with one message."""

import re

import pytest
import torch
from safetensors.torch import save_file

from flashvideo_core import config
from flashvideo_core.checkpoint import read_state_dict
from flashvideo_core.errors import CheckpointError

FIX = r"Use the .* as published, or a file `convert` made from it; .*download it again.*"


def _stage2_state(tiny_weights):
    """(a FlashVideoTransformer state, a key to drop, a key to reshape, a key to add)."""
    from flashvideo_core.model.transformer import build_transformer

    state = build_transformer(config.TINY_STAGE2, seed=0).state_dict()
    return state, "inner.transformer_blocks.1.ff.net.2.bias", "inner.norm_final.weight", "inner.extra.weight"


def _vae_state(tiny_weights):
    from flashvideo_core.vae import build_vae

    state = build_vae(config.TINY_VAE, seed=0).state_dict()
    return state, "decoder.conv_out.conv.bias", "decoder.conv_in.conv.bias", "decoder.extra.weight"


def _t5_state(tiny_weights):
    state = read_state_dict(tiny_weights["text_encoder"])
    return state, "encoder.final_layer_norm.weight", "encoder.block.0.layer.0.SelfAttention.o.weight", "encoder.extra"


def _loader(kind):
    from flashvideo_core.weights import loaders

    return {"stage2": loaders.load_stage2, "vae": loaders.load_vae, "t5": loaders.load_text_encoder}[kind]


MODELS = {"stage2": ("stage2", _stage2_state, "FlashVideo Stage II transformer"),
          "vae": ("3d-vae", _vae_state, "CogVideoX 3D VAE"),
          "t5": ("t5xxl", _t5_state, "T5 text encoder")}


@pytest.mark.parametrize("kind", list(MODELS))
def test_missing_extra_and_mis_shaped_keys_are_named_alike_by_every_loader(tiny_weights, tmp_path, kind):
    stem, make_state, model = MODELS[kind]
    state, missing, reshaped, extra = make_state(tiny_weights)
    state = {key: tensor.clone() for key, tensor in state.items()}
    shape = tuple(state[reshaped].shape)
    bigger = (shape[0] + 1, *shape[1:])
    del state[missing]
    state[reshaped] = torch.zeros(bigger)
    state[extra] = torch.zeros(2)
    path = tmp_path / f"{stem}.safetensors"
    save_file(state, str(path))
    load = _loader(kind)
    args = (path, tiny_weights["tokenizer"]) if kind == "t5" else (path,)
    events = []
    with pytest.raises(CheckpointError) as caught:
        load(*args, callback=events.append)
    expected = (
        rf"{path.name} does not fit the {model} architecture: "
        rf"missing 1 tensor the model needs: {re.escape(missing)}; "
        rf"1 unexpected tensor the model does not have: {re.escape(extra)}; "
        rf"1 tensor of the wrong shape: {re.escape(f'{reshaped}: file {bigger} vs model {shape}')}\. {FIX}"
    )
    assert re.fullmatch(expected, str(caught.value)), str(caught.value)
    assert not [e for e in events if e.phase.startswith("load")], "refused before any weight is read"


class Tiny(torch.nn.Module):
    def __init__(self, layers=8):
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(2, 3) for _ in range(layers))


def test_each_kind_is_listed_only_when_present_and_long_lists_are_cut():
    from flashvideo_core.checkpoint import check_state_fits

    model = Tiny()
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("bias")}
    with pytest.raises(CheckpointError) as caught:
        check_state_fits(state, model, "stage1.pt", "stage1")
    message = str(caught.value)
    assert message.startswith("stage1.pt does not fit the FlashVideo Stage I transformer architecture: missing "
                              "8 tensors the model needs: layers.0.bias, layers.1.bias, layers.2.bias, "
                              "layers.3.bias, layers.4.bias and 3 more. Use the FlashVideo Stage I transformer "
                              "(stage1.pt) as published")
    assert "unexpected" not in message and "wrong shape" not in message


class Tied(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.shared = torch.nn.Embedding(4, 2)
        self.embed = self.shared  # one tensor under two names, as in T5


def test_either_name_of_a_tied_tensor_is_enough():
    from flashvideo_core.checkpoint import check_state_fits

    model = Tied()
    weight = model.shared.weight.detach()
    tied = {"embed.weight": "shared.weight"}
    check_state_fits({"shared.weight": weight, "embed.weight": weight}, model, "t5.safetensors", "t5")
    check_state_fits({"shared.weight": weight}, model, "t5.safetensors", "t5", tied=tied)
    check_state_fits({"embed.weight": weight}, model, "t5.safetensors", "t5", tied=tied)
    with pytest.raises(CheckpointError, match="t5.safetensors does not fit the T5 text encoder architecture: "
                                              "missing 1 tensor the model needs: embed.weight. Use"):
        check_state_fits({"shared.weight": weight}, model, "t5.safetensors", "t5")
