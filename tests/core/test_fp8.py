"""fp8 weights (modes.fp8): the blocks' Linear weights in float8_e4m3fn, everything else as it was,
outputs close to the unquantised model's, the format kept through moves, state dicts and T5 files."""

import copy

import pytest
import torch
from safetensors.torch import load_file, save_file

from flashvideo_core.config import TransformerConfig
from flashvideo_core.errors import CheckpointError, FlashVideoInputError
from flashvideo_core.model.transformer import build_transformer
from flashvideo_core.modes.fp8 import FP8, Fp8Linear, fp8_layers, quantize_fp8, to_fp8, weight_bytes
from flashvideo_core.text.encoder import load_text_encoder, write_tiny_t5, write_tiny_t5_single_file
from flashvideo_core.text.loading import load_t5_encoder

from ..equivalence import assert_same_outputs

FP8_RTOL = 0.02
"""Largest ||fp8 output - output|| / ||output|| on the tiny random models (e4m3 keeps 3 mantissa bits:
~2-3% per weight, far less on a whole model's output, whose residual path is not quantised)."""

T5_RTOL = 0.08
"""The same for the tiny random T5 (measured 3.6-5%): every one of its layers writes into the residual
stream ungated, and d_model 32 averages little rounding away. A float T5 holding the same rounded weights
gives the same error, so it is the format's, not the code's (see the test)."""

CONFIG = TransformerConfig(num_layers=2, num_heads=2, head_dim=32, time_embed_dim=32, text_dim=32,
                           stage2_extras=True)


def _relative(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.float() - expected.float()).norm() / expected.float().norm()).item()


def _inputs():
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 2, 16, 8, 8, generator=generator)  # (B, T, C, h, w)
    text = torch.randn(1, 7, 32, generator=generator)  # (B, L, text_dim)
    return latents, text


def _run(model, dtype=torch.float32):
    latents, text = _inputs()
    with torch.no_grad():
        return model(latents.to(dtype), text.to(dtype), torch.tensor([500.0]), 675.0)


@pytest.fixture(scope="module")
def stage2():
    return build_transformer(CONFIG, seed=0)


def test_blocks_linears_are_fp8_and_the_rest_stays(stage2):
    model = copy.deepcopy(stage2)
    stats = quantize_fp8(model, torch.float32)
    per_block = {"attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "ff.net.0.proj", "ff.net.2"}
    assert set(stats.quantized) == {f"inner.transformer_blocks.{i}.{n}" for i in range(2) for n in per_block}
    assert set(stats.skipped) == {f"inner.transformer_blocks.{i}.norm{j}.linear" for i in range(2) for j in (1, 2)}
    assert fp8_layers(model) == list(stats.quantized)
    fp8 = {name for name, p in model.named_parameters() if p.dtype == FP8}
    assert fp8 == {f"{name}.weight" for name in stats.quantized}
    for name in ("inner.patch_embed.proj.weight", "inner.time_embedding.linear_1.weight", "inner.proj_out.weight",
                 "inner.norm_out.linear.weight", "ref_step_time_embedding.linear_1.weight",
                 "inner.transformer_blocks.0.norm1.linear.weight", "inner.transformer_blocks.0.attn1.to_q.bias"):
        assert model.get_parameter(name).dtype == torch.float32, name


def test_output_within_two_percent_and_weight_bytes_drop(stage2):
    model = copy.deepcopy(stage2)
    stats = quantize_fp8(model, torch.float32)
    error = _relative(_run(model), _run(stage2))
    assert 0 < error <= FP8_RTOL, error  # > 0: the quantised layers do run
    # fp32 -> fp8: a quarter, plus one float32 scale per output channel
    assert 0.25 < stats.ratio < 0.3, stats.ratio
    assert weight_bytes(stage2) - weight_bytes(model) == stats.bytes_before - stats.bytes_after


def test_bf16_compute_keeps_fp8_storage_through_moves(stage2):
    model = copy.deepcopy(stage2).to(torch.bfloat16)
    quantize_fp8(model, torch.bfloat16)
    model.to(dtype=torch.float32)  # a dtype conversion must not upcast the fp8 weights ...
    model.to(torch.bfloat16).half().bfloat16()
    layer = model.inner.transformer_blocks[0].attn1.to_q
    assert layer.weight.dtype == FP8 and layer.weight_scale.dtype == torch.float32
    assert layer.bias.dtype == torch.bfloat16  # ... only the bias and the unquantised layers
    model.to("meta")  # a device move keeps the format too
    assert layer.weight.device.type == "meta" and layer.weight.dtype == FP8
    assert isinstance(layer.weight, torch.nn.Parameter)


def test_bf16_output_close_to_fp32(stage2):
    model = copy.deepcopy(stage2).to(torch.bfloat16)
    quantize_fp8(model, torch.bfloat16)
    assert _relative(_run(model, torch.bfloat16), _run(stage2)) <= FP8_RTOL


def test_skip_list_is_honoured(stage2):
    model = copy.deepcopy(stage2)
    stats = quantize_fp8(model, torch.float32, skip=("*.ff.*", "*.norm1.linear", "*.norm2.linear"))
    assert not any(".ff." in name for name in stats.quantized) and stats.quantized
    assert isinstance(model.inner.transformer_blocks[1].ff.net[2], torch.nn.Linear)
    everything = copy.deepcopy(stage2)
    assert "inner.transformer_blocks.0.norm1.linear" in quantize_fp8(everything, torch.float32, skip=()).quantized


def test_per_channel_scale_keeps_small_rows():
    """A row 1e6 times smaller than another keeps its precision (a per-tensor scale would flush it to 0)."""
    weight = torch.randn(4, 64)
    weight[1] *= 1e-6
    weight[2] *= 1e3  # beyond e4m3's 448
    fp8, scale = to_fp8(weight)
    back = fp8.float() * scale[:, None]
    rows = (back - weight).norm(dim=1) / weight.norm(dim=1)
    assert rows.max() < 0.05, rows
    zero, one = to_fp8(torch.zeros(2, 3))
    assert torch.equal(one, torch.ones(2)) and torch.equal(zero.float(), torch.zeros(2, 3))
    with pytest.raises(CheckpointError, match="inf or NaN"):
        to_fp8(torch.tensor([[1.0, float("inf")]]))


def test_state_dict_round_trip(stage2, tmp_path):
    model = copy.deepcopy(stage2)
    quantize_fp8(model, torch.float32)
    state = model.state_dict()
    assert state["inner.transformer_blocks.0.ff.net.2.weight"].dtype == FP8
    assert state["inner.transformer_blocks.0.ff.net.2.weight_scale"].shape == (CONFIG.hidden_size,)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "fp8.safetensors"))
    other = build_transformer(CONFIG, seed=5)
    quantize_fp8(other, torch.float32)
    other.load_state_dict(load_file(str(tmp_path / "fp8.safetensors")))
    assert torch.equal(_run(other), _run(model))
    again = copy.deepcopy(model)
    assert quantize_fp8(again, torch.float32).quantized == ()  # already fp8: left alone


def test_fp8_linear_refuses_a_conversion_that_would_change_its_format():
    layer = Fp8Linear.from_linear(torch.nn.Linear(4, 3), torch.float32)
    with pytest.raises(FlashVideoInputError, match="format of an fp8 layer"):
        layer.type(torch.float16)  # Tensor.type converts integer tensors too
    x = torch.randn(2, 4)
    assert torch.allclose(layer(x), torch.nn.functional.linear(x, layer.dequantized_weight(torch.float32),
                                                               layer.bias))


@pytest.fixture(scope="module")
def t5_dirs(tmp_path_factory):
    return write_tiny_t5(tmp_path_factory.mktemp("t5"))


def test_t5_quantised_at_load_computes_the_quantised_weights(t5_dirs):
    """The fp8 encoder equals the float encoder holding the same rounded weights (so upcast, scale and T5's
    feed-forward without its cast to wo's dtype are right), and stays within T5_RTOL of the plain one."""
    plain = load_text_encoder(t5_dirs[0])
    fp8 = load_text_encoder(t5_dirs[0], weights="fp8_e4m3fn")
    names = fp8_layers(fp8.model)
    assert len(names) == 2 * 7 and all(n.startswith("encoder.block.") for n in names)  # q k v o wi_0 wi_1 wo
    assert fp8.model.shared.weight.dtype == torch.float32 and fp8.dtype == torch.float32
    rounded = copy.deepcopy(plain)
    for name in names:
        layer = rounded.model.get_submodule(name)
        layer.weight.data = fp8.model.get_submodule(name).dequantized_weight(torch.float32)
    got, want = fp8.encode("a red fox").stage1, rounded.encode("a red fox").stage1
    assert_same_outputs(got, want)
    assert 0 < _relative(got, plain.encode("a red fox").stage1) <= T5_RTOL
    with pytest.raises(FlashVideoInputError, match="weights='int4'"):
        load_t5_encoder(t5_dirs[0], weights="int4")


def test_an_fp8_t5_file_stays_fp8_bit_for_bit(t5_dirs, tmp_path):
    """ComfyUI's t5xxl_fp8_e4m3fn layout, one file scaled ("scale_weight"): fp8 tensors are kept, not upcast
    and quantised again; the encoder built in bf16 on the "GPU" still holds them."""
    single = write_tiny_t5_single_file(tmp_path / "t5.safetensors", t5_dirs[0])
    state = load_file(str(single))
    key = "encoder.block.0.layer.0.SelfAttention.q"
    fp8 = {k: (v.to(FP8) if v.ndim == 2 and k.startswith("encoder.block.") and "relative" not in k else v)
           for k, v in state.items()}
    fp8[f"{key}.scale_weight"] = torch.tensor(0.5)
    save_file(fp8, str(tmp_path / "t5_fp8.safetensors"))
    kept = load_text_encoder(tmp_path / "t5_fp8.safetensors", t5_dirs[1], device="meta", dtype=torch.bfloat16,
                             weights="fp8_e4m3fn")
    layer = kept.model.get_submodule(key)
    assert layer.weight.dtype == FP8 and layer.weight.device.type == "meta"
    assert layer.weight_scale.dtype == torch.float32 and kept.model.shared.weight.dtype == torch.bfloat16
    cpu = load_t5_encoder(tmp_path / "t5_fp8.safetensors", weights="fp8_e4m3fn")
    assert torch.equal(cpu.get_submodule(key).weight_scale, torch.full((layer.out_features,), 0.5))
    assert torch.equal(cpu.get_submodule(key).weight.view(torch.uint8), fp8[f"{key}.weight"].view(torch.uint8))
    upcast = load_t5_encoder(tmp_path / "t5_fp8.safetensors")  # default: upcast with the scale, as before
    assert torch.equal(upcast.get_submodule(key).weight, fp8[f"{key}.weight"].float() * 0.5)
