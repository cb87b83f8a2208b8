"""The memory planner (issue 14, item 6): its formulas against a live-bytes count (fake tensors at real
widths, real tensors on tiny models), weights per mode, the choice at each budget boundary, the error."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from flashvideo_core import config
from flashvideo_core.errors import FlashVideoInputError
from flashvideo_core.model.transformer import build_transformer
from flashvideo_core.modes.settings import ModelModes
from flashvideo_core.planning import memory_model, planner
from flashvideo_core.planning.live_bytes import LiveBytes, fake_transformer, guided_call_peak

TOLERANCE = 0.15
"""The issue's bar for planner vs measured."""
REAL_WIDTH_TOLERANCE = 0.03
"""At the real widths the phases match the count to ~1%: a missed phase term (e.g. RoPE's fp32 copies,
12 vs 13 uS) must fail, which 15% would let pass. Tiny widths keep 15% (their small fixed tensors weigh more)."""
FP8 = ModelModes(weights="fp8_e4m3fn")


def _need(plan: planner.MemoryPlan) -> int:
    """The smallest free memory the plan fits in."""
    return math.ceil(plan.total_bytes * (1 + planner.FIT_MARGIN) + planner.FIT_RESERVE)


@pytest.mark.parametrize(("cfg", "frames", "height", "width", "dtype", "sequential", "tolerance"), [
    (config.STAGE2_2B, 17, 480, 720, torch.bfloat16, False, REAL_WIDTH_TOLERANCE),  # RoPE's fp32 copies peak
    (config.STAGE2_2B, 17, 480, 720, torch.float32, True, REAL_WIDTH_TOLERANCE),  # fp32: the feed-forward peaks
    (config.STAGE1_5B, 9, 256, 480, torch.bfloat16, True, REAL_WIDTH_TOLERANCE),
    (config.TINY_STAGE2, 9, 64, 96, torch.float32, False, TOLERANCE),
])
def test_activation_formula_matches_the_fake_tensor_count(cfg, frames, height, width, dtype, sequential, tolerance):
    fake = FakeTensorMode()
    model = fake_transformer(cfg, dtype, fake, layers=1)
    with fake:
        measured = guided_call_peak(model, frames, height, width, sequential)
    planned = memory_model.activation_peak(cfg, frames, height, width, dtype, sequential)
    assert abs(planned.bytes / measured.peak_bytes - 1) < tolerance, (planned, measured)
    assert any("flash_attention" in op for op in measured.attention_ops)  # no S x S scores were planned or held


@pytest.mark.parametrize("sequential", [False, True])
def test_prediction_matches_real_live_bytes_of_a_tiny_model_run_on_cpu(sequential):
    shape = dataclasses.replace(config.TINY_STAGE2, num_heads=2, head_dim=32)  # 64 wide: big enough to dominate
    model = build_transformer(shape, seed=0)
    measured = guided_call_peak(model, 9, 128, 192, sequential)
    planned = memory_model.activation_peak(shape, 9, 128, 192, torch.float32, sequential)
    assert abs(planned.bytes / measured.peak_bytes - 1) < TOLERANCE, (planned.bytes, measured.peak_bytes)


def test_live_bytes_counts_a_storage_once_and_frees_it():
    with LiveBytes() as count:
        x = torch.zeros(1000)  # 4000 bytes
        view = x[:10]  # the same storage: not counted again
        assert count.live == 4000
        y = x + 1
        del x, view
        z = y * 2  # x is gone: two 4000-byte tensors at most
        del y, z
    assert count.peak == 8000 and count.live == 0


def test_live_bytes_counts_only_the_given_device():
    with LiveBytes(device="cpu") as count:
        x = torch.zeros(1000)  # 4000 bytes on the CPU
        host = torch.zeros(500, device="meta")  # another device (block swap's host masters): not counted
        assert count.live == 4000
    assert count.peak == 4000
    with LiveBytes(device="meta") as count:
        y = x + 1
        copy = host + 1
        del y, copy
    assert count.peak == 2000


def test_block_swap_device_peak_matches_the_plan():
    """Real Stage II widths, 5 blocks, 1 resident: enable_block_swap's own hooks stream blocks 1-4 from a host
    (meta) to the compute device (the fake CPU); the device peak is the resident part + 2 blocks in flight +
    the activations, as plan_peak says (a plan with 1 or 3 blocks in flight fails)."""
    from flashvideo_core.modes.block_swap import device_bytes, enable_block_swap

    cfg, args = dataclasses.replace(config.STAGE2_2B, num_layers=5), (17, 480, 720)
    fake = FakeTensorMode(allow_non_fake_inputs=True)
    with fake:
        plain = guided_call_peak(fake_transformer(cfg, torch.bfloat16, fake), *args, True).peak_bytes
    model = fake_transformer(cfg, torch.bfloat16, fake)
    with fake:
        handle = enable_block_swap(model, 1, "cpu", offload_device="meta", place=False)
        resident = device_bytes(model, "cpu")
        swapped = guided_call_peak(model, *args, True).peak_bytes
    block = memory_model.block_bytes(memory_model.param_counts(cfg), torch.bfloat16, fp8=False)
    assert resident == handle.memory().resident and swapped - plain == 2 * block  # the hooks' copies, on the device
    plan = planner.plan_peak(2, 480, 720, 17, torch.bfloat16, ModelModes(resident_blocks=1), True, config=cfg)
    assert plan.weights_bytes == resident + 2 * block
    assert abs(plan.total_bytes / (resident + swapped) - 1) < REAL_WIDTH_TOLERANCE


def test_weight_bytes_per_mode():
    counts = memory_model.param_counts(config.STAGE2_2B)
    with torch.device("meta"):
        full = build_transformer(config.STAGE2_2B)
    assert counts.total == sum(p.numel() for p in full.parameters())
    bf16 = memory_model.weights_bytes(config.STAGE2_2B, torch.bfloat16, ModelModes())
    assert bf16 == 2 * counts.total
    fp8 = memory_model.weights_bytes(config.STAGE2_2B, torch.bfloat16, FP8)
    assert 0.55 < fp8 / bf16 < 0.65  # blocks' linears at 1 byte; adaLN modulation (1/5 of a block), norms,
    # embeddings stay bf16
    swapped = memory_model.weights_bytes(config.STAGE2_2B, torch.bfloat16, ModelModes(resident_blocks=10))
    per_block = memory_model.block_bytes(counts, torch.bfloat16, fp8=False)
    assert swapped == bf16 - (30 - 12) * per_block  # 10 resident + the running and the prefetched block


def test_fp8_weight_bytes_match_quantize_fp8():
    fp8 = pytest.importorskip("flashvideo_core.modes.fp8")
    model = build_transformer(config.TINY_STAGE2, seed=0).to(torch.bfloat16)
    fp8.quantize_fp8(model, torch.bfloat16)
    counts = memory_model.param_counts(config.TINY_STAGE2)
    planned = memory_model.weights_bytes(config.TINY_STAGE2, torch.bfloat16, FP8)
    assert planned - counts.largest_linear * 2 == fp8.weight_bytes(model)  # less the one upcast layer


def test_choice_at_each_budget_boundary():
    args = (2, config.STAGE2_HEIGHT, config.STAGE2_WIDTH, 49)
    plain = planner.plan_peak(*args, torch.bfloat16)
    sequential = planner.plan_peak(*args, torch.bfloat16, sequential_cfg=True)
    fp8_sequential = planner.plan_peak(*args, torch.bfloat16, FP8, sequential_cfg=True)
    assert planner.choose_modes(*args, _need(plain), torch.bfloat16) == plain
    assert planner.choose_modes(*args, _need(plain) - 1, torch.bfloat16) == sequential
    # fp8 alone (batch 2) does not fit below sequential CFG's need at 1080p: fp8 + sequential is next
    assert planner.choose_modes(*args, _need(sequential) - 1, torch.bfloat16) == fp8_sequential
    swap = planner.choose_modes(*args, _need(fp8_sequential) - 1, torch.bfloat16)
    blocks = swap.modes.resident_blocks
    assert swap.modes.weights == "default" and swap.sequential_cfg and isinstance(blocks, int) and blocks < 30
    more = dataclasses.replace(swap.modes, resident_blocks=blocks + 1)
    assert not planner.plan_peak(*args, torch.bfloat16, more, True).fits(_need(fp8_sequential) - 1)
    no_tools = planner.Allowed(sequential_cfg=False, fp8=False, block_swap=False)
    with pytest.raises(FlashVideoInputError, match="Stage II"):
        planner.choose_modes(*args, _need(plain) - 1, torch.bfloat16, allow=no_tools)


def test_auto_resident_blocks_resolves_to_the_most_that_fit():
    args = (1, config.STAGE1_HEIGHT, config.STAGE1_WIDTH, 49)
    auto = ModelModes(resident_blocks="auto")
    assert planner.resolve_resident_blocks(*args, 80 * 2**30, torch.bfloat16, auto, False).resident_blocks is None
    resolved = planner.resolve_resident_blocks(*args, 6 * 2**30, torch.bfloat16, auto, False)
    assert planner.plan_peak(*args, torch.bfloat16, resolved).fits(6 * 2**30)
    bigger = dataclasses.replace(resolved, resident_blocks=resolved.resident_blocks + 1)
    assert not planner.plan_peak(*args, torch.bfloat16, bigger).fits(6 * 2**30)
    with pytest.raises(FlashVideoInputError, match="resolve"):
        planner.plan_peak(*args, torch.bfloat16, auto)


def test_nothing_fits_names_stage_need_free_and_a_setting_that_fits():
    args = (2, config.STAGE2_HEIGHT, config.STAGE2_WIDTH, 49)
    free = 3 * 2**30
    with pytest.raises(FlashVideoInputError) as raised:
        planner.choose_modes(*args, free, torch.bfloat16)
    text = str(raised.value)
    smallest = planner.smallest_plan(*args, torch.bfloat16)
    assert "Stage II at 1920x1072 (WxH) with 49 frames" in text and "3.0 GiB is free" in text
    assert f"{(_need(smallest) - 1) / 2**30:.1f} GiB" in text and smallest.description in text
    assert "frames at 1920x1072" in text and "at 49 frames" in text
    fewer = int(text.split("use ")[1].split(" frames")[0])
    assert planner.smallest_plan(2, 1072, 1920, fewer, torch.bfloat16).fits(free)
    assert not planner.smallest_plan(2, 1072, 1920, fewer + 4, torch.bfloat16).fits(free)
    chosen = planner.choose_modes(*args, 12 * 2**30, torch.bfloat16)
    assert chosen.sequential_cfg and chosen.modes == ModelModes()  # 12 GiB: sequential CFG is enough at 1080p
