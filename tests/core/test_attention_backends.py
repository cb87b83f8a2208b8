"""Attention backends on the tiny Stage I model, with stand-in kernels for SageAttention and FlashAttention.

The stand-ins are fake `sageattention` / `flash_attn` / `flash_attn_interface` modules put in sys.modules:
their functions have the libraries' documented signatures (SageAttention 2 core.py: q, k, v,
tensor_layout="HND", is_causal=False, ...; FlashAttention 2: q, k, v, dropout_p=0.0, softmax_scale=None,
causal=False, ...; FlashAttention 3 (hopper/flash_attn_interface.py): q, k, v, softmax_scale=None,
causal=False, ... with no dropout_p), record every call and compute with torch SDPA in the layout they
were given. The kernels only run on CUDA fp16/bf16 tensors, so the tests widen KERNEL_DEVICES to the CPU
and run the model in bf16.
"""

import logging
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import CogVideoXAttnProcessor2_0

from flashvideo_core import config
from flashvideo_core.model.transformer import build_transformer
from flashvideo_core.modes import attention
from flashvideo_core.modes.attention import attention_backend, describe_backend, set_attention_backend

HEADS, HEAD_DIM, TEXT = config.TINY_STAGE1.num_heads, config.TINY_STAGE1.head_dim, 226
FRAMES, H, W = 2, 8, 8
TOKENS = TEXT + FRAMES * (H // 2) * (W // 2)


def _inputs(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1, FRAMES, 16, H, W, generator=g).to(dtype)
    text = torch.randn(1, TEXT, 32, generator=g).to(dtype)
    return latents, text, torch.tensor([500.0])


def _run(model, dtype=torch.float32):
    with torch.no_grad():
        return model(*_inputs(dtype))


def _model(dtype=torch.float32):
    return build_transformer(config.TINY_STAGE1, seed=0).to(dtype)


def _hnd_reference(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False)


def _record(calls, name, q, k, v, kwargs):
    assert q.stride(-1) == 1 and k.stride(-1) == 1 and v.stride(-1) == 1  # the real kernels assert this
    calls.append({"fn": name, "shape": tuple(q.shape), "dtype": q.dtype, "kwargs": kwargs})


def _fake_sage(calls, *, cuda_built=True, fp16_kernels=True, fp8_kernels=True):
    """A SageAttention 2 module (or 1: fp16_kernels=fp8_kernels=False, only sageattn)."""
    mod = types.ModuleType("sageattention")
    mod.core = types.SimpleNamespace(SM80_ENABLED=cuda_built)

    def kernel(name):
        def fn(q, k, v, tensor_layout="HND", is_causal=False, sm_scale=None, return_lse=False, **kwargs):
            _record(calls, name, q, k, v, {"tensor_layout": tensor_layout, "is_causal": is_causal, **kwargs})
            assert tensor_layout == "HND" and not is_causal and sm_scale is None and not return_lse
            return _hnd_reference(q, k, v)
        return fn

    mod.sageattn = kernel("sageattn")
    if fp16_kernels:
        mod.sageattn_qk_int8_pv_fp16_cuda = kernel("sageattn_qk_int8_pv_fp16_cuda")
        mod.sageattn_qk_int8_pv_fp16_triton = kernel("sageattn_qk_int8_pv_fp16_triton")
    if fp8_kernels:
        mod.sageattn_qk_int8_pv_fp8_cuda = kernel("sageattn_qk_int8_pv_fp8_cuda")
        mod.sageattn_qk_int8_pv_fp8_cuda_sm90 = kernel("sageattn_qk_int8_pv_fp8_cuda_sm90")
    return mod


def _fa2(calls):
    mod = types.ModuleType("flash_attn")

    def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                        softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
        _record(calls, "fa2", q, k, v, {"dropout_p": dropout_p, "causal": causal, "softmax_scale": softmax_scale})
        assert q.dtype in (torch.float16, torch.bfloat16)
        return _hnd_reference(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)

    mod.flash_attn_func = flash_attn_func
    return mod


def _fa3(calls):
    mod = types.ModuleType("flash_attn_interface")

    def flash_attn_func(q, k, v, softmax_scale=None, causal=False, qv=None, q_descale=None, k_descale=None,
                        v_descale=None, window_size=(-1, -1), attention_chunk=0, softcap=0.0, num_splits=1,
                        pack_gqa=None, deterministic=False, sm_margin=0, return_attn_probs=False):
        _record(calls, "fa3", q, k, v, {"causal": causal, "softmax_scale": softmax_scale})
        out = _hnd_reference(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
        return out, torch.zeros(q.shape[0], q.shape[2], q.shape[1])  # early FA3 returned (out, lse)

    mod.flash_attn_func = flash_attn_func
    return mod


@pytest.fixture
def no_kernels(monkeypatch):
    """None of the optional libraries importable, the kernels allowed on CPU (to reach the stand-ins)."""
    for name in ("sageattention", "flash_attn", "flash_attn_interface"):
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: `import` raises ImportError
    monkeypatch.setattr(attention, "KERNEL_DEVICES", frozenset({"cuda", "cpu"}))
    return monkeypatch


def test_sdpa_backend_is_bit_identical_to_the_stock_processor():
    model = _model()
    assert all(isinstance(b.attn1.processor, CogVideoXAttnProcessor2_0) for b in model.inner.transformer_blocks)
    stock = _run(model)
    assert set_attention_backend(model, "sdpa") == "sdpa"
    assert not any(isinstance(b.attn1.processor, CogVideoXAttnProcessor2_0) for b in model.inner.transformer_blocks)
    assert torch.equal(_run(model), stock)
    assert attention_backend(model) == "sdpa" and describe_backend(model) == "FlashVideo attention: sdpa"


def test_sage_runs_its_fp16_pv_cuda_kernel_in_hnd_layout_and_matches_sdpa(no_kernels):
    calls = []
    no_kernels.setitem(sys.modules, "sageattention", _fake_sage(calls))
    reference = _run(_model(torch.bfloat16), torch.bfloat16)
    model = _model(torch.bfloat16)
    assert set_attention_backend(model, "sage") == "sage"
    out = _run(model, torch.bfloat16)
    assert len(calls) == config.TINY_STAGE1.num_layers
    assert {c["fn"] for c in calls} == {"sageattn_qk_int8_pv_fp16_cuda"}  # never sageattn (fp8 on sm89/90)
    assert all(c["shape"] == (1, HEADS, TOKENS, HEAD_DIM) and c["dtype"] == torch.bfloat16 for c in calls)
    assert calls[0]["kwargs"] == {"tensor_layout": "HND", "is_causal": False, "pv_accum_dtype": "fp32"}
    torch.testing.assert_close(out, reference, rtol=0, atol=0)
    assert attention_backend(model) == "sage" and "SageAttention 2" in describe_backend(model)


def test_sage_uses_the_triton_kernel_without_the_cuda_build_and_sageattn_only_on_version_1(no_kernels):
    calls = []
    no_kernels.setitem(sys.modules, "sageattention", _fake_sage(calls, cuda_built=False))
    model = _model(torch.bfloat16)
    set_attention_backend(model, "sage")
    _run(model, torch.bfloat16)
    assert {c["fn"] for c in calls} == {"sageattn_qk_int8_pv_fp16_triton"}
    calls.clear()
    no_kernels.setitem(sys.modules, "sageattention", _fake_sage(calls, fp16_kernels=False, fp8_kernels=False))
    set_attention_backend(model, "sage")
    _run(model, torch.bfloat16)
    assert {c["fn"] for c in calls} == {"sageattn"} and "SageAttention 1" in describe_backend(model)


def test_a_sage_build_with_only_fp8_kernels_falls_back_to_sdpa(no_kernels):
    calls = []
    no_kernels.setitem(sys.modules, "sageattention", _fake_sage(calls, fp16_kernels=False))
    model = _model(torch.bfloat16)
    assert set_attention_backend(model, "sage") == "sdpa"
    _run(model, torch.bfloat16)
    assert calls == [] and "no fp16-PV kernel" in describe_backend(model)


@pytest.mark.parametrize("version", [2, 3])
def test_flash_gets_tokens_heads_layout_and_matches_sdpa(no_kernels, version):
    calls = []
    name = "flash_attn" if version == 2 else "flash_attn_interface"
    no_kernels.setitem(sys.modules, name, (_fa2 if version == 2 else _fa3)(calls))
    reference = _run(_model(torch.bfloat16), torch.bfloat16)
    model = _model(torch.bfloat16)
    assert set_attention_backend(model, "flash") == "flash"
    out = _run(model, torch.bfloat16)
    assert {c["fn"] for c in calls} == {f"fa{version}"} and len(calls) == config.TINY_STAGE1.num_layers
    assert all(c["shape"] == (1, TOKENS, HEADS, HEAD_DIM) for c in calls)  # (B, tokens, heads, head_dim)
    assert all(not c["kwargs"]["causal"] and c["kwargs"]["softmax_scale"] is None for c in calls)
    torch.testing.assert_close(out, reference, rtol=1e-2, atol=1e-2)
    assert (out - reference).abs().max() <= 1e-2
    assert describe_backend(model) == f"FlashVideo attention: flash (FlashAttention {version})"


def test_a_missing_backend_falls_back_to_sdpa_with_one_line(no_kernels, caplog):
    model = _model()
    stock = _run(model)
    with caplog.at_level(logging.INFO, logger=attention.__name__):
        assert set_attention_backend(model, "flash") == "sdpa"
        out, _ = _run(model), _run(model)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["FlashVideo attention: sdpa (flash-attn not installed)"]
    assert torch.equal(out, stock) and attention_backend(model) == "sdpa"


def test_fp32_or_cpu_tensors_run_sdpa_and_say_so_once(monkeypatch, caplog):
    calls = []
    monkeypatch.setitem(sys.modules, "flash_attn_interface", None)
    monkeypatch.setitem(sys.modules, "flash_attn", _fa2(calls))
    model = _model()
    stock = _run(model)
    with caplog.at_level(logging.INFO, logger=attention.__name__):
        assert set_attention_backend(model, "flash") == "flash"
        out, _ = _run(model), _run(model)  # CPU float32: the kernel cannot run these
    assert calls == [] and torch.equal(out, stock) and attention_backend(model) == "sdpa"
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "FlashVideo attention: flash (FlashAttention 2)",
        "FlashVideo attention: sdpa (flash (FlashAttention 2) needs fp16/bf16 CUDA tensors and no attention "
        "mask; this run has float32 on cpu)",
    ]
