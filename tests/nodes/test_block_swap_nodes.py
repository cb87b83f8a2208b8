"""Block swap inside ComfyUI's memory manager (issue 14 item 2 in the nodes), with the stand-in of the
manager from test_memory_manager.py and the fake CUDA device of tests/fake_cuda.py (meta with CUDA's
device checks), so where each block is, and that no op mixes devices, is proven without a GPU.

The patcher's holder holds only the resident part (ComfyUI's size = the resident bytes; its .to() never
touches a streamed block), the two blocks in flight are added to memory_required, the streamed blocks
stay in CPU memory between calls and are on the device while they run, and unload, free_memory, Cancel
and a new 'auto' block count at another size each leave a model that runs. The output with block swap
equals the plain output bit for bit (on a CPU compute device, where data is real: block swap is refused on
the CPU for users, so that test lifts the refusal)."""

import pytest
import torch

from flashvideo_core.config import TransformerConfig
from flashvideo_core.model.transformer import build_transformer
from flashvideo_core.modes.block_swap import find_blocks
from flashvideo_core.modes.settings import ModelModes
from flashvideo_core.planning import planner
from nodes import NODE_CLASS_MAPPINGS as N
from nodes import node_modes
from nodes.common import LoadedModel
from nodes.sampling_nodes import _forward_floor

from ..fake_cuda import FAKE_CUDA, FakeCuda
from .test_memory_manager import Interrupted, install_standin

AUTO_TOKENIZER = "auto (tokenizer/ beside the encoder)"
KEEP, OFFLOAD = "keep on device", "offload after use"
SWAP = "flashvideo_block_swap"


@pytest.fixture()
def comfy(monkeypatch, tmp_path):
    """ComfyUI's memory manager, stood in (test_memory_manager.install_standin)."""
    return install_standin(monkeypatch, tmp_path)


@pytest.fixture()
def embeds(comfy_models):
    """Prompt embeddings made on the CPU before the fake GPU is the compute device."""
    t5 = N["FlashVideoT5Loader"]().load("text_encoder/", AUTO_TOKENIZER, "fp32", OFFLOAD)[0]
    return N["FlashVideoTextEncode"]().encode(t5, "A red fox runs through fresh snow.", False)[0]


def _latent():
    return {"samples": torch.randn(1, 16, 2, 8, 6, generator=torch.Generator().manual_seed(3)),
            "flashvideo": {"noise_step": 675, "degraded": True}}


def _sample(stage2, embeds):
    return N["FlashVideoStage2Sampler"]().sample(stage2, embeds, _latent(), 2, 13.0, 2.5, "euler")[0]["samples"]


def _devices(tensors) -> set:
    return {t.device.type for t in tensors}


def _watch_streamed(module, seen: list) -> None:
    """Record the devices of block 1's weights while it computes (a forward hook registered before the swap's
    runs before the swap points the block back at its CPU masters)."""
    find_blocks(module)[1].register_forward_hook(lambda m, a, o: seen.append(_devices(m.parameters())))


def test_the_holder_is_the_resident_part_and_streamed_blocks_visit_the_gpu_only_to_run(embeds, comfy, monkeypatch):
    comfy.get_torch_device = lambda: FAKE_CUDA
    stage2 = N["FlashVideoStage2Loader"]().load("stage2.pt", "fp32", KEEP, block_swap="manual", resident_blocks=1)[0]
    blocks, seen = find_blocks(stage2.module), []
    _watch_streamed(stage2.module, seen)
    with FakeCuda() as fake:  # raises on any op that mixes the fake GPU with CPU tensors
        _sample(stage2, embeds)
    swap, patcher = getattr(stage2.module, SWAP), stage2.comfy_patcher
    assert swap.resident == 1 and swap.streamed == [1] and fake.gpu_ops > 100
    assert seen and all(devices == {"meta"} for devices in seen), "block 1 computed on the GPU"
    streamed = {id(p) for p in blocks[1].parameters()}
    assert not streamed & {id(p) for p in patcher.model.parameters()}, "ComfyUI never sees a streamed block"
    assert patcher.model_size() == swap.memory().resident and swap.memory().in_flight > 0
    assert comfy.required == [_forward_floor(stage2, False, 5, 64, 48) + swap.memory().in_flight]
    assert _devices(blocks[1].parameters()) == {"cpu"} and _devices(blocks[0].parameters()) == {"meta"}
    assert stage2.module.inner.patch_embed.proj.weight.device == FAKE_CUDA and comfy.loaded(stage2)

    comfy.free_memory(10 * 2**30, FAKE_CUDA)  # another node needs the memory: ComfyUI unloads ours
    assert _devices(stage2.module.parameters()) == {"cpu"} and comfy.current_loaded_models == []
    with FakeCuda():
        _sample(stage2, embeds)  # the next run loads the resident part again; streaming still works
    assert comfy.loaded(stage2) and getattr(stage2.module, SWAP) is swap and len(seen) == 4
    assert _devices(blocks[1].parameters()) == {"cpu"} and _devices(blocks[0].parameters()) == {"meta"}


def test_offload_after_use_leaves_the_whole_swapped_model_in_cpu_memory(embeds, comfy):
    comfy.get_torch_device = lambda: FAKE_CUDA
    stage2 = N["FlashVideoStage2Loader"]().load("stage2.pt", "fp32", OFFLOAD, block_swap="manual", resident_blocks=1)[0]
    with FakeCuda():
        _sample(stage2, embeds)
    assert _devices(stage2.module.parameters()) == {"cpu"} and comfy.current_loaded_models == []
    assert getattr(stage2.module, SWAP).resident == 1


def test_cancel_leaves_the_swapped_model_registered_with_its_streamed_blocks_in_cpu_memory(embeds, comfy):
    comfy.get_torch_device = lambda: FAKE_CUDA
    stage2 = N["FlashVideoStage2Loader"]().load("stage2.pt", "fp32", KEEP, block_swap="manual", resident_blocks=1)[0]
    comfy.interrupt_after = 0  # the first progress event cancels, after a model call
    with pytest.raises(Interrupted), FakeCuda():
        _sample(stage2, embeds)
    swap, blocks = getattr(stage2.module, SWAP), find_blocks(stage2.module)
    assert comfy.loaded(stage2) and stage2.comfy_patcher.model_size() == swap.memory().resident, "keep on device"
    assert _devices(blocks[1].parameters()) == {"cpu"} and _devices(blocks[0].parameters()) == {"meta"}
    with FakeCuda():
        _sample(stage2, embeds)
    assert getattr(stage2.module, SWAP) is swap and comfy.loaded(stage2)


def test_an_error_inside_a_streamed_block_drops_the_swap_and_the_next_run_attaches_it_again(embeds, comfy):
    comfy.get_torch_device = lambda: FAKE_CUDA
    stage2 = N["FlashVideoStage2Loader"]().load("stage2.pt", "fp32", KEEP, block_swap="manual", resident_blocks=1)[0]
    assert node_modes.prepare_run(stage2, 5, 64, 48, False) == 1  # the sampler's size: it keeps this swap
    blocks = find_blocks(stage2.module)

    def fail(module, args):  # runs after the swap's own pre-hook pointed the block at its device copy
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    hook = blocks[1].register_forward_pre_hook(fail)
    with pytest.raises(RuntimeError, match="illegal memory access"), FakeCuda():
        _sample(stage2, embeds)
    hook.remove()
    assert not hasattr(stage2.module, SWAP) and stage2.comfy_patcher is None and comfy.current_loaded_models == []
    assert _devices(stage2.module.parameters()) == {"cpu"}, "no block left on the GPU"
    assert not any(block._forward_pre_hooks or block._forward_hooks for block in blocks)
    with FakeCuda():
        _sample(stage2, embeds)
    assert getattr(stage2.module, SWAP).resident == 1 and comfy.loaded(stage2)


def test_block_swap_gives_the_plain_output_bit_for_bit(embeds, comfy, monkeypatch):
    """On a CPU compute device (real data; the refusal lifted), through ComfyUI's stand-in and its holder."""
    monkeypatch.setattr("nodes.node_modes.check_modes_device", lambda *a: None)
    monkeypatch.setattr("nodes.loader_nodes.check_modes_device", lambda *a: None)
    plain = N["FlashVideoStage2Loader"]().load("stage2.pt", "fp32", KEEP)[0]
    swapped = N["FlashVideoStage2Loader"]().load("stage2.pt", "fp32", KEEP, block_swap="manual",
                                                 resident_blocks=1)[0]
    want = _sample(plain, embeds)
    first, second = _sample(swapped, embeds), _sample(swapped, embeds)
    assert getattr(swapped.module, SWAP).resident == 1 and comfy.loaded(swapped)
    assert torch.equal(first, want) and torch.equal(second, want)


def _enhance(stage2, vae, embeds):
    images = torch.rand(5, 16, 32, 3, generator=torch.Generator().manual_seed(4))
    return N["FlashVideoEnhanceImages"]().enhance(stage2, vae, embeds, images, "x2", 64, True, 675, 1, 13.0, 2.5, 5,
                                                  0, False, 0)[0]


def test_enhance_video_streams_the_blocks_on_the_fake_gpu_and_matches_the_plain_model_on_the_cpu(embeds, comfy,
                                                                                               monkeypatch):
    comfy.get_torch_device = lambda: FAKE_CUDA
    stage2 = N["FlashVideoStage2Loader"]().load("stage2.pt", "fp32", KEEP, block_swap="manual", resident_blocks=1)[0]
    vae = N["FlashVideoVAELoader"]().load("3d-vae.pt", "fp32", OFFLOAD)[0]
    seen = []
    _watch_streamed(stage2.module, seen)
    with FakeCuda():
        assert _enhance(stage2, vae, embeds).shape == (5, 32, 64, 3)
    assert seen == [{"meta"}] and getattr(stage2.module, SWAP).resident == 1 and comfy.loaded(stage2)
    assert _devices(find_blocks(stage2.module)[1].parameters()) == {"cpu"}

    comfy.get_torch_device = lambda: torch.device("cpu")  # real data: the CPU with the refusal lifted
    monkeypatch.setattr("nodes.node_modes.check_modes_device", lambda *a: None)
    monkeypatch.setattr("nodes.loader_nodes.check_modes_device", lambda *a: None)
    vae = N["FlashVideoVAELoader"]().load("3d-vae.pt", "fp32", OFFLOAD)[0]
    plain = N["FlashVideoStage2Loader"]().load("stage2.pt", "fp32", KEEP)[0]
    swapped = N["FlashVideoStage2Loader"]().load("stage2.pt", "fp32", KEEP, block_swap="manual", resident_blocks=1)[0]
    assert torch.equal(_enhance(swapped, vae, embeds), _enhance(plain, vae, embeds))
    assert getattr(swapped.module, SWAP).resident == 1


SIX = TransformerConfig(num_layers=6, num_heads=2, head_dim=16, time_embed_dim=32, text_dim=32)
"""A tiny Stage I network with enough blocks for 'auto' to choose among (the published tiny one has 2)."""


def _need(plan) -> int:
    return int(plan.total_bytes * (1 + planner.FIT_MARGIN) + planner.FIT_RESERVE)


def _forward(handle):
    generator = torch.Generator().manual_seed(0)
    inputs = (torch.randn(1, 2, 16, 4, 6, generator=generator), torch.randn(1, 3, 32, generator=generator))
    with handle.active() as module, FakeCuda(), torch.no_grad():
        return module(*(t.to(FAKE_CUDA) for t in inputs), torch.tensor([500.0], device=FAKE_CUDA))


def test_auto_is_resolved_at_each_run_for_its_size_and_the_model_follows(comfy):
    """The planner's block count for the free memory at three sizes: 3, then 1 (a larger size), then none
    (a small one), then 3 again; every change unloads the old layout and the model runs after each."""
    handle = LoadedModel(build_transformer(SIX, seed=0), FAKE_CUDA, torch.device("cpu"), torch.float32, "six.pt")
    handle.modes = ModelModes(resident_blocks="auto")
    comfy.get_torch_device = lambda: FAKE_CUDA
    free = _need(planner.plan_peak(1, 256, 256, 5, torch.float32, ModelModes(resident_blocks=3), False, SIX)) + 1
    comfy.get_free_memory = lambda device=None: free
    sizes = [(5, 256, 256), (5, 256, 272), (5, 32, 32), (5, 256, 256)]
    expected = [planner.resolve_resident_blocks(1, h, w, f, free, torch.float32, handle.modes, False, SIX)
                .resident_blocks for f, h, w in sizes]
    assert expected == [3, 1, None, 3], "the sizes must ask for different counts"
    for (frames, height, width), want in zip(sizes, expected, strict=True):
        assert node_modes.prepare_run(handle, frames, height, width, False) == want
        swap = getattr(handle.module, SWAP, None)
        assert (swap.resident if swap is not None else None) == want
        assert comfy.freed[-1] == _need(planner.plan_peak(1, height, width, frames, torch.float32, ModelModes(),
                                                          False, SIX)), "ComfyUI was asked for the plain mode's room"
        assert _forward(handle).device == FAKE_CUDA
        held = {id(p) for p in handle.comfy_patcher.model.parameters()}
        streamed = {id(p) for i in (swap.streamed if swap else []) for p in find_blocks(handle.module)[i].parameters()}
        assert len(held) + len(streamed) == len(list(handle.module.parameters())) and not held & streamed
        assert _devices(handle.module.parameters()) == {"cpu"}, "offload after use: all back in CPU memory"
