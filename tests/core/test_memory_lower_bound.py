"""The up-front memory refusal counts the weights (issue 12, planning.lower_bound): a stage's weights on the
device in the run's modes + one call's activation floor, T5's weights alone, the VAE's beside Stage II in
enhance; refused before any model loads, and never a run whose least need fits (a lower bound, not the
planner's prediction with its margin). The fake accelerator is the meta device (weights count off the CPU)."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from flashvideo_core import config
from flashvideo_core.enhance.plan import EnhanceSettings, plan_enhance
from flashvideo_core.enhance.run import enhance_video_file
from flashvideo_core.errors import FlashVideoInputError
from flashvideo_core.memory_floor import transformer_floor
from flashvideo_core.model.transformer import build_transformer
from flashvideo_core.modes.apply import SWAP_ATTR, apply_model_modes
from flashvideo_core.modes.block_swap import enable_block_swap
from flashvideo_core.modes.settings import ModelModes
from flashvideo_core.pipeline import GenerateSettings, generate
from flashvideo_core.planning import lower_bound, planner
from flashvideo_core.planning.call import DeviceRoom, StageCall
from flashvideo_core.planning.room import fitting_hint
from flashvideo_core.sampling.settings import Stage1Settings
from flashvideo_core.weights import loaders
from flashvideo_core.weights.loaders import find_weights

from .test_enhance_inputs import _clip

GIB = 2**30
BF16 = torch.bfloat16
FAKE_GPU = "meta"
FP8 = ModelModes(weights="fp8_e4m3fn")


class Loaded(Exception):
    """Raised by a patched loader: the run got past its up-front checks."""


def test_the_counts_are_the_loaded_models_bytes(tiny_weights):
    """file_config reads the network from the header; the planner's weight count, T5's and the VAE's equal
    what the loaders put in memory (bf16; fp8; block swap's resident part + the blocks in flight)."""
    for stage, load in ((1, loaders.load_stage1), (2, loaders.load_stage2)):
        path = tiny_weights[f"stage{stage}"]
        network = lower_bound.file_config(path)
        for modes in (ModelModes(), FP8):
            model = load(path, dtype=BF16)
            assert model.config == network
            apply_model_modes(model, modes, BF16)
            assert lower_bound.planned_weight_bytes(network, BF16, modes, FAKE_GPU) == \
                lower_bound.loaded_weight_bytes(model, FAKE_GPU), (stage, modes)
    six = dataclasses.replace(config.TINY_STAGE2, num_layers=6)
    for modes in (ModelModes(resident_blocks=2), ModelModes(weights="fp8_e4m3fn", resident_blocks=3)):
        model = build_transformer(six, seed=0).to(BF16)
        apply_model_modes(model, modes, BF16)
        setattr(model, SWAP_ATTR, enable_block_swap(model, modes.resident_blocks, FAKE_GPU))
        assert lower_bound.planned_weight_bytes(six, BF16, modes, FAKE_GPU) == \
            lower_bound.loaded_weight_bytes(model, FAKE_GPU), modes
    assert lower_bound.planned_weight_bytes(network, BF16, ModelModes(resident_blocks="auto"), FAKE_GPU) == \
        lower_bound.planned_weight_bytes(network, BF16, ModelModes(resident_blocks=1), FAKE_GPU), "auto: 1 resident"
    assert lower_bound.planned_weight_bytes(network, BF16, ModelModes(), "cpu") == 0, "memory-mapped on the CPU"
    for weights in ("default", "fp8_e4m3fn"):
        encoder = loaders.load_text_encoder(tiny_weights["text_encoder"], tiny_weights["tokenizer"], dtype=BF16,
                                            weights=weights).model
        assert lower_bound.t5_weight_bytes(tiny_weights["text_encoder"], BF16, weights) == _bytes(encoder)
    assert lower_bound.vae_weight_bytes(tiny_weights["vae"], BF16) == _bytes(loaders.load_vae(tiny_weights["vae"],
                                                                                               dtype=BF16))


def _bytes(module: torch.nn.Module) -> int:
    tensors = {id(t): t for t in [*module.parameters(), *module.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def test_weights_alone_too_big_are_refused_naming_the_mode_that_fits_and_a_lower_bound_is_never_refused():
    """Stage I 5B in bf16 (10.4 GiB of weights) on a card with 8 GiB free: refused, the weights named, the
    planner's mode for 8 GiB given; fp8 and 'auto' block swap at the same 8 GiB are not; and the refusal's
    edge is the least need, not the planner's prediction with its margin."""
    size, free = (49, 256, 480, False), 8 * GIB
    network = config.STAGE1_5B

    def check(modes: ModelModes, room: int) -> None:
        weights = lower_bound.planned_weight_bytes(network, BF16, modes, "cuda")
        call = StageCall(1, *size[:3], BF16, "cuda", modes, size[3], network)
        assert lower_bound.planned_room(call, room) == DeviceRoom(room, weights)
        lower_bound.check_stage("Stage I", call, DeviceRoom(room, weights))

    with pytest.raises(FlashVideoInputError) as refused:
        check(ModelModes(), free)
    text = str(refused.value)
    weights = lower_bound.planned_weight_bytes(network, BF16, ModelModes(), "cuda")
    assert f"needs at least {(weights + transformer_floor(49, 256, 480, 3072, BF16)) / GIB:.1f} GiB on cuda " \
           f"({weights / GIB:.1f} GiB of weights + " in text and "and 8.0 GiB is free: " in text
    assert "the weights alone do not fit in this mode; free memory first." in text
    assert text.endswith(fitting_hint(StageCall(1, 49, 256, 480, BF16, "cuda", config=network), DeviceRoom(free))())
    assert "--block-swap" in text or "--fp8" in text
    check(FP8, free)
    check(ModelModes(resident_blocks="auto"), free)
    least = lower_bound.planned_weight_bytes(network, BF16, FP8, "cuda") + transformer_floor(49, 256, 480, 3072, BF16)
    check(FP8, least)  # exactly the least need: runs
    assert not planner.plan_peak(1, 256, 480, 49, BF16, FP8, config=network).fits(least), \
        "the planner with its margin would have refused it"
    with pytest.raises(FlashVideoInputError, match="needs at least"):
        check(FP8, least - 1)


def _gpu_free(monkeypatch, target: str, free: int) -> list:
    """Free memory `free` on the fake GPU (64 GiB of RAM) for `target`'s free_memory; T5's loader records and
    stops the run (Loaded). Returns the record."""
    monkeypatch.setattr(target, lambda device: free if torch.device(device).type == FAKE_GPU else 64 * GIB)
    loads = []

    def load(*args, **kwargs):
        loads.append(args)
        raise Loaded()

    monkeypatch.setattr("flashvideo_core.weights.loaders.load_text_encoder", load)
    return loads


def _stage1_need(weights) -> tuple[int, int]:
    """(weights, activation floor) of the tiny Stage I at 9 x 64 x 96 in bf16 on the fake GPU."""
    network = lower_bound.file_config(weights.stage1)
    return (lower_bound.planned_weight_bytes(network, BF16, ModelModes(), FAKE_GPU),
            transformer_floor(9, 64, 96, network.hidden_size, BF16))


def test_generate_counts_the_weights_before_any_model_loads(tiny_weights_dir, tmp_path, monkeypatch):
    weights = find_weights(tiny_weights_dir)
    settings = GenerateSettings(stage1=Stage1Settings(num_frames=9, height=64, width=96), preview_only=True,
                                device=FAKE_GPU, precision="bf16")
    stage1, floor = _stage1_need(weights)
    for free, refused in ((stage1 + floor - 1, "Stage I at 96x64 (WxH) with 9 frames needs at least"),
                          (stage1 - 1, "the weights alone do not fit in this mode")):
        loads = _gpu_free(monkeypatch, "flashvideo_core.pipeline.free_memory", free)
        with pytest.raises(FlashVideoInputError, match=re.escape(refused)):
            generate("A red fox in the snow.", weights, tmp_path / "out", settings)
        assert not loads, "refused before T5 loads"
    loads = _gpu_free(monkeypatch, "flashvideo_core.pipeline.free_memory", stage1 + floor)
    with pytest.raises(Loaded):  # the least need fits: not refused
        generate("A red fox in the snow.", weights, tmp_path / "out", settings)
    assert loads


def test_t5_too_big_alone_is_refused_first_naming_fp8(tiny_weights_dir, tmp_path, monkeypatch):
    weights = find_weights(tiny_weights_dir)
    settings = GenerateSettings(stage1=Stage1Settings(num_frames=9, height=64, width=96), preview_only=True,
                                device=FAKE_GPU, precision="bf16")
    fp8 = lower_bound.t5_weight_bytes(weights.text_encoder, BF16, "fp8_e4m3fn")
    plain = lower_bound.t5_weight_bytes(weights.text_encoder, BF16)
    assert fp8 < plain
    loads = _gpu_free(monkeypatch, "flashvideo_core.pipeline.free_memory", fp8)
    with pytest.raises(FlashVideoInputError, match=rf"^T5 \(text_encoder\) needs at least {plain / GIB:.1f} GiB on "
                                                   r"meta for its weights, .* --fp8 stores its block linears in fp8"):
        generate("A red fox in the snow.", weights, tmp_path / "out", settings)
    assert not loads
    # what a run's out-of-memory message names as T5's least need: its weights on an accelerator only
    assert lower_bound.check_t5(weights.text_encoder, BF16, "default", FAKE_GPU, plain) == plain
    assert lower_bound.check_t5(weights.text_encoder, BF16, "default", "cpu", 0) is None


def test_enhance_counts_stage2_and_the_vae_before_any_model_loads(tiny_weights_dir, tmp_path, monkeypatch):
    """The CLI's enhance keeps Stage II and the VAE on the device together: both weights count, before T5."""
    weights, clip = find_weights(tiny_weights_dir), _clip(tmp_path / "in.mp4")
    settings = EnhanceSettings(scale=2, window=5, overlap=0, steps=1)
    plan = plan_enhance(5, 32, 48, settings)
    network = lower_bound.file_config(weights.stage2)
    need = (lower_bound.planned_weight_bytes(network, BF16, ModelModes(), FAKE_GPU)
            + lower_bound.vae_weight_bytes(weights.vae, BF16)
            + transformer_floor(5, plan.target.work_height, plan.target.work_width, network.hidden_size, BF16))

    def run():
        enhance_video_file(clip, tmp_path / "out.mp4", settings, weights=weights, device=FAKE_GPU, precision="bf16")

    loads = _gpu_free(monkeypatch, "flashvideo_core.devices.free_memory", need - 1)
    with pytest.raises(FlashVideoInputError, match=r"^Stage II \(one enhance window\) at 96x64 .* of weights \+ "):
        run()
    assert not loads and not (tmp_path / "out.mp4").exists()
    loads = _gpu_free(monkeypatch, "flashvideo_core.devices.free_memory", need)
    with pytest.raises(Loaded):
        run()
    assert loads
