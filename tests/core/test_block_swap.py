"""Block swap (modes.block_swap): the same output bit for bit, the copy of block i + 1 issued before block i
computes and waited for before block i + 1 computes, weights on the device ~ N/L, restored by disable."""

import copy

import pytest
import torch

from flashvideo_core.config import TransformerConfig
from flashvideo_core.errors import FlashVideoInputError
from flashvideo_core.model.transformer import build_transformer
from flashvideo_core.modes.block_swap import SyncTransfers, device_bytes, enable_block_swap, find_blocks
from flashvideo_core.modes.fp8 import FP8, quantize_fp8

from ..fake_cuda import FAKE_CUDA, DeviceMixError, FakeCuda

CONFIG = TransformerConfig(num_layers=4, num_heads=2, head_dim=16, time_embed_dim=32, text_dim=32,
                           stage2_extras=True)


def _inputs(device="cpu"):
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 2, 16, 8, 8, generator=generator)  # (B, T, C, h, w)
    text = torch.randn(1, 7, 32, generator=generator)  # (B, L, text_dim)
    return latents.to(device), text.to(device), torch.tensor([500.0], device=device)


def _run(model, device="cpu"):
    with torch.no_grad():
        return model(*_inputs(device), 675.0)


@pytest.fixture(scope="module")
def plain():
    return build_transformer(CONFIG, seed=0)


class Recorder(SyncTransfers):
    """SyncTransfers that logs each call; compute events come from the test's own pre-hooks."""

    def __init__(self, device, log):
        super().__init__(device)
        self.log = log

    def fetch(self, index, tensors):
        self.log.append(("fetch", index))
        return super().fetch(index, tensors)

    def wait(self, index, ticket):
        self.log.append(("wait", index))
        return super().wait(index, ticket)

    def release(self, index, ticket):
        self.log.append(("release", index))


def test_output_is_bit_identical_in_fp32(plain):
    model = copy.deepcopy(plain)
    handle = enable_block_swap(model, 1, "cpu")
    assert handle.streamed == [1, 2, 3]
    assert torch.equal(_run(model), _run(plain))
    assert torch.equal(_run(model), _run(plain))  # and again: the released blocks come back
    handle.disable()
    assert torch.equal(_run(model), _run(plain))


def test_prefetch_is_issued_before_compute_and_waited_for_before_use(plain):
    model = copy.deepcopy(plain)
    log = []
    handle = enable_block_swap(model, 1, "cpu", transfers=Recorder("cpu", log))
    masters = {i: {t.data_ptr() for t in handle._masters[i]} for i in handle.streamed}

    def computes(index):
        def hook(module, args):  # registered after the swap's own hook: runs right before the forward
            log.append(("compute", index))
            if index in masters:  # computing with the device copies, not the host masters
                assert not {p.data_ptr() for p in module.parameters()} & masters[index]
        return hook

    for i, block in enumerate(find_blocks(model)):
        block.register_forward_pre_hook(computes(i))
    _run(model)
    at = {event: n for n, event in enumerate(log)}
    assert [e for e in log if e[0] == "compute"] == [("compute", i) for i in range(4)]
    for i in (1, 2, 3):
        assert at[("fetch", i)] < at[("compute", i - 1)], log  # copied while the block before computes
        assert at[("compute", i - 1)] < at[("wait", i)] < at[("compute", i)], log
        assert at[("compute", i)] < at[("release", i)], log
    assert ("fetch", 0) not in at and ("wait", 0) not in at
    on_device = 0
    for kind, _ in log:  # never more than the current and the next streamed block on the device
        on_device += {"fetch": 1, "release": -1}.get(kind, 0)
        assert on_device <= 2
    assert on_device == 0 and not handle._tickets


def test_hooks_put_the_streamed_blocks_on_the_fake_gpu(plain):
    """meta stands in for CUDA: a block computing with its CPU masters would mix devices and raise."""
    model = copy.deepcopy(plain)
    handle = enable_block_swap(model, 2, FAKE_CUDA)
    assert all(p.device.type == "cpu" for i in handle.streamed for p in find_blocks(model)[i].parameters())
    assert model.inner.patch_embed.proj.weight.device == FAKE_CUDA
    with FakeCuda() as fake:
        out = _run(model, FAKE_CUDA)
    assert out.device == FAKE_CUDA and fake.gpu_ops > 0
    handle.disable()
    with FakeCuda():  # (a meta -> CPU copy needs the fake: meta has no data)
        find_blocks(model)[3].to("cpu")  # the check can fail: a block left in CPU memory without the swap
    with pytest.raises(DeviceMixError), FakeCuda():
        _run(model, FAKE_CUDA)


def test_device_bytes_are_n_over_l_of_the_blocks_plus_the_rest(plain):
    model = copy.deepcopy(plain)
    blocks = sum(p.numel() * 4 for p in find_blocks(model).parameters())
    total = sum(p.numel() * 4 for p in model.parameters())
    handle = enable_block_swap(model, 1, FAKE_CUDA)
    memory = handle.memory()
    assert memory.resident_blocks == blocks // 4 and memory.other == total - blocks
    assert memory.streamed == 3 * blocks // 4 and memory.in_flight == 2 * blocks // 4
    assert device_bytes(model, FAKE_CUDA) == memory.resident
    with FakeCuda():  # (a meta -> CPU copy needs the fake: meta has no data)
        handle.place("cpu")  # between uses: the resident part leaves too
    assert device_bytes(model, FAKE_CUDA) == 0
    handle.place(FAKE_CUDA)
    assert device_bytes(model, FAKE_CUDA) == memory.resident


def test_place_false_leaves_the_resident_part_where_it_is(plain):
    """place=False (the nodes: ComfyUI's load places the model later): nothing reaches the device until place()."""
    model = copy.deepcopy(plain)
    handle = enable_block_swap(model, 1, FAKE_CUDA, place=False)
    assert handle.device == FAKE_CUDA and device_bytes(model, FAKE_CUDA) == 0
    assert all(p.device.type == "cpu" for p in model.parameters())
    handle.place(FAKE_CUDA)
    assert device_bytes(model, FAKE_CUDA) == handle.memory().resident
    with FakeCuda() as fake:
        out = _run(model, FAKE_CUDA)
    assert out.device == FAKE_CUDA and fake.gpu_ops > 0


def test_disable_restores_a_plain_model(plain):
    model = copy.deepcopy(plain)
    handle = enable_block_swap(model, 1, FAKE_CUDA)
    handle.disable()
    assert all(p.device == FAKE_CUDA for p in model.parameters())
    assert all(not b._forward_pre_hooks and not b._forward_hooks for b in find_blocks(model))
    assert isinstance(find_blocks(model)[3].attn1.to_q.weight, torch.nn.Parameter)


def test_composes_with_fp8(plain):
    quantised = copy.deepcopy(plain)
    quantize_fp8(quantised, torch.float32)
    swapped = copy.deepcopy(quantised)
    handle = enable_block_swap(swapped, 2, "cpu")
    assert {t.dtype for t in handle._masters[3]} >= {FP8, torch.float32}  # fp8 streamed as fp8
    assert torch.equal(_run(swapped), _run(quantised))
    assert find_blocks(swapped)[3].ff.net[2].weight.dtype == FP8


def test_all_resident_and_bad_counts():
    model = build_transformer(CONFIG, seed=0)
    handle = enable_block_swap(model, 10, "cpu")
    assert handle.streamed == [] and handle.memory().streamed == 0
    for bad in (-1, 1.5, True, "auto"):
        with pytest.raises(FlashVideoInputError, match="resident_blocks"):
            enable_block_swap(build_transformer(CONFIG, seed=0), bad, "cpu")
    with pytest.raises(FlashVideoInputError, match="no transformer blocks"):
        find_blocks(torch.nn.Linear(2, 2))
