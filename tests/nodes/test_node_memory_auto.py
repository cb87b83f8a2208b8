"""The nodes' optional `memory` input (issue 14, item 6): "auto" chooses sequential CFG and the block swap at
each run for the room ComfyUI can make (its stand-in on the fake CUDA device of tests/fake_cuda.py), the
weights as loaded; the run equals the one with those settings made by hand; fp8-only and conflicts are named."""

from types import SimpleNamespace

import pytest
import torch

from flashvideo_core.config import TransformerConfig
from flashvideo_core.errors import FlashVideoInputError
from flashvideo_core.model.transformer import build_transformer
from flashvideo_core.modes.settings import ModelModes
from flashvideo_core.planning import planner
from nodes import NODE_CLASS_MAPPINGS as N
from nodes import node_modes
from nodes.common import LoadedModel

from ..fake_cuda import FAKE_CUDA, FakeCuda
from .test_memory_manager import install_standin

SIX = TransformerConfig(num_layers=6, num_heads=2, head_dim=16, time_embed_dim=32, text_dim=32)
SIZE = (5, 256, 256)  # frames, height, width
SWAP = "flashvideo_block_swap"


@pytest.fixture()
def comfy(monkeypatch, tmp_path):
    standin = install_standin(monkeypatch, tmp_path)
    standin.get_torch_device = lambda: FAKE_CUDA
    return standin


def _need(modes=ModelModes(), sequential=False, network=SIX) -> int:
    frames, height, width = SIZE
    plan = planner.plan_peak(1, height, width, frames, torch.float32, modes, sequential, network)
    return int(plan.total_bytes * (1 + planner.FIT_MARGIN) + planner.FIT_RESERVE) + 1


def _handle(modes=ModelModes(), network=SIX) -> LoadedModel:
    handle = LoadedModel(build_transformer(network, seed=0), FAKE_CUDA, torch.device("cpu"), torch.float32, "six.pt")
    handle.modes = modes
    return handle


def _run(handle, monkeypatch, **widgets) -> tuple:
    """The Stage I Sampler on the fake GPU: (sequential CFG it sampled with, resident blocks of the swap)."""
    seen = []
    real = __import__("nodes.sampling_nodes", fromlist=["run_stage1"]).run_stage1
    monkeypatch.setattr("nodes.sampling_nodes.run_stage1",
                        lambda model, embeds, settings, **k: seen.append(settings.sequential_cfg) or
                        real(model, embeds, settings, **k))
    embeds = SimpleNamespace(stage1=torch.zeros(1, 226, 32), prompt="A fox.")
    frames, height, width = SIZE
    with FakeCuda():
        N["FlashVideoStage1Sampler"]().sample(handle, embeds, 0, 1, 8.0, 5.0, frames, width, height, **widgets)
    swap = getattr(handle.module, SWAP, None)
    return seen[0], swap.resident if swap is not None else None


@pytest.mark.parametrize("budget", ["plain", "sequential", "block swap"])
def test_auto_runs_what_the_same_settings_made_by_hand_run(comfy, monkeypatch, budget, caplog):
    free = {"plain": _need(), "sequential": _need() - 2, "block swap": _need(sequential=True) - 2}[budget]
    comfy.get_free_memory = lambda device=None: free
    with caplog.at_level("INFO", logger="nodes.node_modes"):
        sequential, blocks = _run(_handle(), monkeypatch, memory="auto")
    assert (sequential, blocks is not None) == {"plain": (False, False), "sequential": (True, False),
                                                "block swap": (True, True)}[budget]
    frames, height, width = SIZE
    expected = planner.choose_modes(1, height, width, frames, free, torch.float32, planner.Allowed(fp8=False),
                                    config=SIX)
    assert (sequential, blocks) == (expected.sequential_cfg, expected.modes.resident_blocks)
    line = next(r.getMessage() for r in caplog.records if "memory auto" in r.getMessage())
    assert line.startswith("[FlashVideo] memory auto, Stage I: ") and f"of {free / 2**30:.1f} free)" in line
    by_hand = _handle(ModelModes(resident_blocks=blocks))  # the loader's block_swap manual (or off)
    assert _run(by_hand, monkeypatch, sequential_cfg=sequential) == (sequential, blocks)


def test_as_set_after_auto_removes_the_swap_auto_attached(comfy, monkeypatch):
    handle = _handle()
    comfy.get_free_memory = lambda device=None: _need(sequential=True) - 2
    assert _run(handle, monkeypatch, memory="auto")[1] is not None
    assert _run(handle, monkeypatch) == (False, None), "the loader's block_swap off is what 'as set' runs"


def test_auto_on_the_cpu_is_the_plain_run(comfy_models, monkeypatch):
    stage1 = N["FlashVideoStage1Loader"]().load("stage1.pt", "fp32", "offload after use")[0]
    t5 = N["FlashVideoT5Loader"]().load("text_encoder/", "auto (tokenizer/ beside the encoder)", "fp32",
                                        "offload after use")[0]
    embeds = N["FlashVideoTextEncode"]().encode(t5, "A red fox runs through fresh snow.", False)[0]
    sample = N["FlashVideoStage1Sampler"]().sample
    want = sample(stage1, embeds, 0, 2, 8.0, 5.0, 5, 32, 48)[0]["samples"]
    assert torch.equal(sample(stage1, embeds, 0, 2, 8.0, 5.0, 5, 32, 48, memory="auto")[0]["samples"], want)


def test_when_only_fp8_would_fit_the_message_names_the_loaders_weights(comfy, monkeypatch):
    wide = TransformerConfig(num_layers=4, num_heads=4, head_dim=64, time_embed_dim=64, text_dim=32)
    handle = _handle(network=wide)
    frames, height, width = 5, 16, 16
    plan = planner.plan_peak(1, height, width, frames, torch.float32, ModelModes(weights="fp8_e4m3fn"), False, wide)
    comfy.get_free_memory = lambda device=None: int(plan.total_bytes * (1 + planner.FIT_MARGIN) + planner.FIT_RESERVE)
    with pytest.raises(FlashVideoInputError) as raised:
        node_modes.prepare_memory(handle, 1, (frames, height, width), False, "auto")
    assert str(raised.value).endswith(": set the loader's weights to fp8_e4m3fn.")
    assert "With fp8 weights it would fit (fp32, fp8 weights, " in str(raised.value)


def test_auto_beside_sequential_cfg_or_a_manual_block_swap_is_refused(comfy):
    with pytest.raises(FlashVideoInputError, match="turn sequential_cfg off, or set memory to 'as set'"):
        node_modes.prepare_memory(_handle(), 1, SIZE, True, "auto")
    with pytest.raises(FlashVideoInputError, match="block_swap manual fixes 3 resident blocks"):
        node_modes.prepare_memory(_handle(ModelModes(resident_blocks=3)), 1, SIZE, False, "auto")
    with pytest.raises(FlashVideoInputError, match="memory='sometimes'"):
        node_modes.prepare_memory(_handle(), 1, SIZE, False, "sometimes")


def test_enhance_video_with_auto_runs_its_windows_with_the_chosen_sequential_cfg(comfy, comfy_models, monkeypatch):
    stage2 = N["FlashVideoStage2Loader"]().load("stage2.pt", "fp32", "offload after use")[0]
    vae = N["FlashVideoVAELoader"]().load("3d-vae.pt", "fp32", "offload after use")[0]
    embeds = SimpleNamespace(stage2=torch.zeros(1, 226, stage2.module.config.text_dim), prompt="A fox.")
    network = stage2.module.config
    window = planner.plan_peak(2, 32, 64, 5, torch.float32, ModelModes(), False, network)  # x2 of 16x32, 5 frames
    comfy.get_free_memory = lambda device=None: int(window.total_bytes * (1 + planner.FIT_MARGIN)
                                                    + planner.FIT_RESERVE) - 1
    seen = []
    real = __import__("nodes.enhance_node", fromlist=["enhance_images"]).enhance_images
    monkeypatch.setattr("nodes.enhance_node.enhance_images",
                        lambda images, models, settings, **k: seen.append(settings.sequential_cfg) or
                        real(images, models, settings, **k))
    images = torch.rand(5, 16, 32, 3, generator=torch.Generator().manual_seed(4))
    with FakeCuda():
        out = N["FlashVideoEnhanceImages"]().enhance(stage2, vae, embeds, images, "x2", 64, True, 675, 1, 13.0, 2.5, 5,
                                                     0, False, 0, memory="auto")[0]
    assert out.shape == (5, 32, 64, 3) and seen == [True]


def test_auto_never_swaps_the_blocks_of_a_base_a_lora_model_shares(comfy, monkeypatch):
    handle = _handle()
    handle.shared_with_lora = True  # set by the LoRA node (tests/nodes/test_lora_node.py)
    comfy.get_free_memory = lambda device=None: _need() - 2
    assert _run(handle, monkeypatch, memory="auto") == (True, None), "sequential CFG still fits, without a swap"
    comfy.get_free_memory = lambda device=None: _need(sequential=True) - 2
    with pytest.raises(FlashVideoInputError, match="share weights, so neither swaps blocks"):
        _run(handle, monkeypatch, memory="auto")
    assert getattr(handle.module, SWAP, None) is None
