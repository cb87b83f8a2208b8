"""ModelModes reach the models: the CLI flags build them, loading applies them, block swap moves right."""

from __future__ import annotations

import argparse

import pytest
import torch

from flashvideo_core import config
from flashvideo_core.cli import main
from flashvideo_core.cli.commands import model_modes
from flashvideo_core.devices import move_model
from flashvideo_core.errors import FlashVideoInputError
from flashvideo_core.model.transformer import build_transformer
from flashvideo_core.modes.fp8 import fp8_layers
from flashvideo_core.modes.settings import ModelModes
from flashvideo_core.planning.use import apply_modes, load_with_modes
from flashvideo_core.weights.loaders import load_stage1


def _args(**given):
    base = {"fp8": False, "block_swap": None, "attention": "sdpa", "compile": False}
    return argparse.Namespace(**{**base, **given})


def test_flags_build_the_modes_and_bad_values_are_named():
    assert model_modes(_args()) == ModelModes()
    modes = model_modes(_args(fp8=True, block_swap="3", attention="flash"))
    assert modes == ModelModes(weights="fp8_e4m3fn", resident_blocks=3, attention="flash")
    assert model_modes(_args(block_swap="auto")).resident_blocks == "auto"
    with pytest.raises(FlashVideoInputError, match="--block-swap"):
        model_modes(_args(block_swap="many"))


def _run(model):
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 2, model.config.in_channels, 4, 6, generator=gen)
    text = torch.randn(1, 3, model.config.text_dim, generator=gen)
    with torch.no_grad():
        return model(latents, text, torch.tensor([500.0]))


def test_loading_with_fp8_stores_the_block_linears_in_fp8_close_to_plain(tiny_weights):
    plain = load_stage1(tiny_weights["stage1"])
    size = (9, 64, 96, False)
    fp8 = load_with_modes(load_stage1, tiny_weights["stage1"], ModelModes(weights="fp8_e4m3fn"), "cpu", torch.float32,
                          None, size)
    assert fp8_layers(fp8) and not fp8_layers(plain)
    want, got = _run(plain), _run(fp8)
    assert (got - want).norm() / want.norm() < 0.05


def test_auto_block_swap_on_the_cpu_is_no_swap_and_a_fixed_one_is_refused():
    model = build_transformer(config.TINY_STAGE1, seed=0)
    resolved = apply_modes(model, ModelModes(resident_blocks="auto"), "cpu", torch.float32, (9, 64, 96, False))
    assert resolved.resident_blocks is None and not hasattr(model, "flashvideo_block_swap")
    with pytest.raises(FlashVideoInputError, match="block swap"):
        apply_modes(model, ModelModes(resident_blocks=1), "cpu", torch.float32, (9, 64, 96, False))


def test_cli_refuses_block_swap_on_the_cpu_before_any_work(tmp_path, capsys):
    out = tmp_path / "videos"
    assert main(["generate", "A fox in the snow.", "-o", str(out), "--block-swap", "1", "--device", "cpu",
                 "--quiet"]) == 2
    assert "block swap" in capsys.readouterr().err and not out.exists()


def test_a_swapped_model_moves_without_its_streamed_blocks():
    class Swap:
        placed = []

        def place(self, device):
            self.placed.append(torch.device(device))

    model = torch.nn.Linear(2, 2)
    model.flashvideo_block_swap = Swap()
    move_model(model, "meta")
    assert Swap.placed == [torch.device("meta")] and model.weight.device.type == "cpu"
