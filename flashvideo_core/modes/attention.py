"""Attention backends for the CogVideoX blocks: torch SDPA (default), SageAttention 2, FlashAttention 2/3.

set_attention_backend(model, name) installs FlashVideoAttnProcessor on every attention layer: the same
joint text+video attention as diffusers' CogVideoXAttnProcessor2_0 (text tokens first; 3D RoPE on the
video tokens of q and k only), with only the kernel that multiplies q, k, v chosen:

- "sdpa": F.scaled_dot_product_attention on (B, heads, tokens, head_dim); bit for bit the stock processor.
- "sage": SageAttention's INT8 QK / FP16 PV kernels, layout "HND" = (B, heads, tokens, head_dim):
  sageattn_qk_int8_pv_fp16_cuda(pv_accum_dtype="fp32") when its CUDA kernel is built, else
  sageattn_qk_int8_pv_fp16_triton; plain `sageattn` only on SageAttention 1 (no FP8 kernels). Never
  the FP8-PV kernels: SageAttention 2's `sageattn` picks them by itself on sm89 / sm90 / sm120 (4090,
  H100, 5090), and FP8 attention visibly ruins CogVideoX video (noise, washed-out frames); an opt-in
  would be a separate name.
- "flash": FlashAttention 3 (`flash_attn_interface.flash_attn_func`, Hopper) if installed, else
  FlashAttention 2 (`flash_attn.flash_attn_func`); both take (B, tokens, heads, head_dim), fp16/bf16.

A backend that is not installed falls back to sdpa when it is set; one that cannot run the tensors it
gets (not on CUDA, or not fp16/bf16) falls back to sdpa for those calls. Each fallback is logged once
per model as one line, "FlashVideo attention: sdpa (<why>)". attention_backend(model) names the kernel
that ran last (before any call: the one that will run), describe_backend(model) gives the console line.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import apply_rotary_emb

from ..errors import FlashVideoInputError
from .settings import ATTENTION_BACKENDS

logger = logging.getLogger(__name__)

HALF_DTYPES = (torch.float16, torch.bfloat16)
KERNEL_DEVICES = frozenset({"cuda"})
"""Device types the sage and flash kernels run on (tests widen it to reach their stand-in kernels on CPU)."""
STATE_ATTR = "_flashvideo_attention"


@dataclass(frozen=True)
class Kernel:
    """name: "sdpa" | "sage" | "flash"; label: what the console line says; run: (q, k, v), each
    (B, heads, tokens, head_dim), -> (B, heads, tokens, head_dim); half_cuda: needs fp16/bf16 CUDA tensors."""

    name: str
    label: str
    run: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None
    half_cuda: bool


SDPA = Kernel("sdpa", "sdpa", None, False)


def _import(module: str):
    """The module, or the reason it cannot be used (one line)."""
    try:
        return importlib.import_module(module), None
    except ImportError as exc:
        return None, "not installed" if exc.name == module else f"does not import: {exc}"
    except OSError as exc:  # a CUDA extension built for another torch / driver
        return None, f"does not import: {exc}"


def _sage_kernel() -> tuple[Kernel | None, str]:
    sage, why = _import("sageattention")
    if sage is None:
        return None, f"SageAttention {why}"
    cuda_built = getattr(getattr(sage, "core", None), "SM80_ENABLED", True)
    fp16_cuda = getattr(sage, "sageattn_qk_int8_pv_fp16_cuda", None)
    fp16_triton = getattr(sage, "sageattn_qk_int8_pv_fp16_triton", None)
    if fp16_cuda is not None and cuda_built:
        def run(q, k, v):
            return fp16_cuda(q, k, v, tensor_layout="HND", is_causal=False, pv_accum_dtype="fp32")
        return Kernel("sage", "sage (SageAttention 2, int8 QK / fp16 PV, CUDA)", run, True), ""
    if fp16_triton is not None:
        def run(q, k, v):
            return fp16_triton(q, k, v, tensor_layout="HND", is_causal=False)
        return Kernel("sage", "sage (SageAttention 2, int8 QK / fp16 PV, Triton)", run, True), ""
    if not any(name.startswith("sageattn_qk_int8_pv_fp8") for name in dir(sage)) and hasattr(sage, "sageattn"):
        def run(q, k, v):  # SageAttention 1: its only kernel is int8 QK / fp16 PV
            return sage.sageattn(q, k, v, tensor_layout="HND", is_causal=False)
        return Kernel("sage", "sage (SageAttention 1, int8 QK / fp16 PV)", run, True), ""
    return None, "this SageAttention build has no fp16-PV kernel; its fp8 attention is not used"


def _flash_kernel() -> tuple[Kernel | None, str]:
    module, why = _import("flash_attn_interface")  # FlashAttention 3 (Hopper build)
    version = 3
    if module is None:
        module, why = _import("flash_attn")
        version = 2
    if module is None:
        return None, f"flash-attn {why}"
    func = module.flash_attn_func

    def run(q, k, v):
        # FA2 flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, ...); FA3 has no
        # dropout_p: keywords only. Both (B, tokens, heads, head_dim); some FA3 versions return (out, lse).
        out = func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=False)
        out = out[0] if isinstance(out, tuple) else out
        return out.transpose(1, 2)

    return Kernel("flash", f"flash (FlashAttention {version})", run, True), ""


_LOADERS = {"sage": _sage_kernel, "flash": _flash_kernel}


class _Backend:
    """One per model: the requested name, the kernel installed for it, why it fell back (or ""), and what
    ran last. Processors only record (compile-friendly); the model's forward hook logs each note once."""

    def __init__(self, requested: str, kernel: Kernel, note: str):
        self.requested, self.kernel, self.note = requested, kernel, note
        self.last: tuple[str, str, torch.dtype] | None = None  # (kernel name, device type, dtype) of the last call
        self.logged: set[str] = set()
        self.hook = None

    def attend(self, query, key, value, mask):
        """query, key, value (B, heads, tokens, head_dim) -> (B, heads, tokens, head_dim)."""
        kernel = self.kernel
        if kernel.half_cuda and (mask is not None or query.device.type not in KERNEL_DEVICES
                                 or query.dtype not in HALF_DTYPES):
            kernel = SDPA
        self.last = (kernel.name, query.device.type, query.dtype)
        if kernel.run is None:
            return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False)
        return kernel.run(query, key, value)

    def fell_back(self) -> bool:
        """True when sdpa runs (or ran last) instead of the requested kernel."""
        return bool(self.note) or (self.last is not None and self.last[0] != self.kernel.name)

    def line(self) -> str:
        """The console line: "FlashVideo attention: <kernel>" plus why it is not the requested one."""
        if self.note:
            return f"FlashVideo attention: sdpa ({self.note})"
        if self.fell_back():
            _, device, dtype = self.last
            dtype_name = str(dtype).removeprefix("torch.")
            return (f"FlashVideo attention: sdpa ({self.kernel.label} needs fp16/bf16 CUDA tensors and no "
                    f"attention mask; this run has {dtype_name} on {device})")
        return f"FlashVideo attention: {self.kernel.label}"

    def log_once(self) -> None:
        """Log the current line (warning for a fallback, info otherwise) unless this model logged it before."""
        line = self.line()
        if line not in self.logged:
            self.logged.add(line)
            logger.log(logging.WARNING if self.fell_back() else logging.INFO, "%s", line)


class FlashVideoAttnProcessor:
    """CogVideoX joint attention with a chosen kernel; computes what CogVideoXAttnProcessor2_0 computes.

    hidden_states (B, N, C) video tokens, encoder_hidden_states (B, L, C) text tokens, image_rotary_emb
    (cos, sin) each (N, head_dim) -> (video (B, N, C), text (B, L, C)).
    """

    def __init__(self, backend: _Backend):
        self.backend = backend

    def __call__(self, attn: Attention, hidden_states, encoder_hidden_states, attention_mask=None,
                 image_rotary_emb=None):
        text_len = encoder_hidden_states.size(1)
        tokens = torch.cat([encoder_hidden_states, hidden_states], dim=1)  # (B, L + N, C)
        batch, length, _ = tokens.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, length, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        query, key, value = (_heads(attn, proj(tokens), batch) for proj in (attn.to_q, attn.to_k, attn.to_v))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if image_rotary_emb is not None:  # 3D RoPE on the video tokens only
            query[:, :, text_len:] = apply_rotary_emb(query[:, :, text_len:], image_rotary_emb)
            if not attn.is_cross_attention:
                key[:, :, text_len:] = apply_rotary_emb(key[:, :, text_len:], image_rotary_emb)
        out = self.backend.attend(query, key, value, attention_mask)  # (B, heads, L + N, head_dim)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * out.shape[-1])  # (B, L + N, C)
        out = attn.to_out[1](attn.to_out[0](out))
        text_out, video_out = out.split([text_len, out.size(1) - text_len], dim=1)
        return video_out, text_out


def _heads(attn: Attention, projected: torch.Tensor, batch: int) -> torch.Tensor:
    """(B, tokens, heads * head_dim) -> (B, heads, tokens, head_dim), a view."""
    head_dim = projected.shape[-1] // attn.heads
    return projected.view(batch, -1, attn.heads, head_dim).transpose(1, 2)


def _attention_layers(model: torch.nn.Module) -> list[Attention]:
    layers = [m for m in model.modules() if isinstance(m, Attention)]
    if not layers:
        raise FlashVideoInputError(
            f"{type(model).__name__} has no diffusers Attention layers; pass a FlashVideoTransformer "
            "or its CogVideoXTransformer3DModel (.inner)."
        )
    return layers


def _after_forward(module, args, output):
    getattr(module, STATE_ATTR).log_once()


def set_attention_backend(model: torch.nn.Module, name: str, *, log: bool = True) -> str:
    """Install the `name` kernel ("sdpa" | "sage" | "flash") on every attention layer of `model`.

    Returns the kernel that will run on fp16/bf16 CUDA tensors: `name`, or "sdpa" when the library is not
    installed (then one line says so, once). log=False: no log line now (print describe_backend instead);
    later run-time fallbacks (CPU, fp32) are still logged once per model after its forward.
    """
    if name not in ATTENTION_BACKENDS:
        raise FlashVideoInputError(f"attention={name!r} must be one of {', '.join(ATTENTION_BACKENDS)}.")
    kernel, note = (SDPA, "") if name == "sdpa" else _LOADERS[name]()
    backend = _Backend(name, kernel or SDPA, note)
    for layer in _attention_layers(model):
        layer.set_processor(FlashVideoAttnProcessor(backend))
    old = getattr(model, STATE_ATTR, None)
    if old is not None and old.hook is not None:
        old.hook.remove()
    setattr(model, STATE_ATTR, backend)
    backend.hook = model.register_forward_hook(_after_forward)
    if log:
        backend.log_once()
    else:
        backend.logged.add(backend.line())
    return backend.kernel.name


def attention_backend(model: torch.nn.Module) -> str:
    """"sdpa" | "sage" | "flash": the kernel that ran in the model's last call (before any call, the one
    set_attention_backend installed; "sdpa" for a model it never touched)."""
    backend = getattr(model, STATE_ATTR, None)
    if backend is None:
        return "sdpa"
    return backend.last[0] if backend.last is not None else backend.kernel.name


def describe_backend(model: torch.nn.Module) -> str:
    """The console line, e.g. "FlashVideo attention: sage (SageAttention 2, int8 QK / fp16 PV, CUDA)" or
    "FlashVideo attention: sdpa (flash-attn not installed)"."""
    backend = getattr(model, STATE_ATTR, None)
    return "FlashVideo attention: sdpa" if backend is None else backend.line()
