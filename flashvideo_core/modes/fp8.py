"""fp8 weights: the blocks' linear weights stored as float8_e4m3fn, upcast per layer when it runs.

Which layers: every nn.Linear inside the repeated blocks (diffusers' `transformer_blocks.<i>`, T5's
`encoder.block.<i>`), except the adaLN modulation (`norm1.linear`, `norm2.linear` of CogVideoX's
LayerNormZero). Everything else (patch and text embedding, time embeddings, Stage II's extra
embeddings, norms, the final norm and projection, T5's token embedding and relative bias) stays in the
compute dtype: they are small, and the modulation and projections set every activation's scale.

Scale: one float32 scale per output channel (row of the (out, in) weight), scale = max|row| / 448, so
each row uses e4m3's whole range (real weights exceed 448 or sit below its 2^-9 subnormal floor;
per-channel keeps a row of small weights from being flushed by one large row). Cost: 4 bytes per output
channel. Use: W = fp8.to(dtype) * scale[:, None], then F.linear; the upcast copy lives for one layer.
ComfyUI's "scaled fp8" files carry one scale per tensor: it is broadcast to the per-channel vector.

Storage stays fp8 when the module is moved: Fp8Linear._apply moves the fp8 weight (and the float32
scale) as raw bytes, so `.to(device)`, `.to(dtype=bf16)`, `.half()`, `.float()` change where they are,
never their format (a dtype conversion applies to the bias only). The state dict holds `weight`
(float8_e4m3fn, (out, in)), `weight_scale` (float32, (out,)) and `bias`.
"""

from __future__ import annotations

import fnmatch
import types
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import CheckpointError, FlashVideoInputError

FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)  # 448
BLOCK_PATTERNS = ("*transformer_blocks.*", "encoder.block.*", "*.encoder.block.*")
"""Qualified names of the Linear layers that may be stored in fp8: those inside the repeated blocks."""
DEFAULT_SKIP = ("*.norm1.linear", "*.norm2.linear")
"""Layers kept in the compute dtype although inside a block: CogVideoX's adaLN modulation."""
_RAW = {FP8: torch.uint8, torch.float32: torch.int32}
"""Integer dtypes of the same width: what a dtype-converting _apply leaves alone."""


@dataclass(frozen=True)
class Fp8Stats:
    """What quantize_fp8 did: names of the Linear layers now fp8 and of those skipped inside blocks;
    weight bytes of those layers before (their old dtype) and after (fp8 weight + float32 scale)."""

    quantized: tuple[str, ...]
    skipped: tuple[str, ...]
    bytes_before: int
    bytes_after: int

    @property
    def ratio(self) -> float:
        """bytes_after / bytes_before (about 0.5 from bf16, 0.25 from fp32)."""
        return self.bytes_after / max(1, self.bytes_before)


def to_fp8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, in) weight -> (float8_e4m3fn weight, float32 scale (out,)) with weight ~ fp8 * scale[:, None].

    A row of zeros gets scale 1; a weight that is not finite raises CheckpointError.
    """
    wide = weight.detach().to(torch.float32)
    amax = wide.abs().amax(dim=1)
    if not torch.isfinite(amax).all():
        raise CheckpointError("A linear weight holds inf or NaN and cannot be stored in fp8: the file is damaged.")
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    return (wide / scale[:, None]).clamp_(-FP8_MAX, FP8_MAX).to(FP8), scale


class Fp8Linear(torch.nn.Module):
    """A Linear whose weight is float8_e4m3fn with a per-output-channel float32 scale.

    forward: x (..., in) in the compute dtype -> (..., out) in x's dtype; the weight is upcast to x's
    dtype for the call only. The bias (if any) stays in the compute dtype.
    """

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        if weight.dtype != FP8 or weight.ndim != 2 or scale.shape != weight.shape[:1]:
            raise FlashVideoInputError(f"Fp8Linear needs an fp8 (out, in) weight and an (out,) scale; got "
                                       f"{weight.dtype} {tuple(weight.shape)}, scale {tuple(scale.shape)}.")
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.weight = torch.nn.Parameter(weight, requires_grad=False)
        self.register_buffer("weight_scale", scale.to(torch.float32))
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach(), requires_grad=False)

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear, compute_dtype: torch.dtype,
                    scale: torch.Tensor | None = None) -> Fp8Linear:
        """Quantise `linear` (to_fp8); a weight that is already fp8 is kept as it is, with `scale` (a
        number, a (1,) or (out,) tensor; default 1) as its scale."""
        weight = linear.weight.detach()
        if weight.dtype == FP8:
            given = torch.ones(()) if scale is None else torch.as_tensor(scale, dtype=torch.float32)
            values = given.to(torch.float32).reshape(-1).expand(weight.shape[0]).clone()
        else:
            weight, values = to_fp8(weight)
        bias = None if linear.bias is None else linear.bias.detach().to(compute_dtype)
        return cls(weight, values.to(weight.device), bias)

    def dequantized_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """The (out, in) weight in `dtype`: fp8 value x its row's scale."""
        return self.weight.to(dtype).mul_(self.weight_scale.to(dtype)[:, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantized_weight(x.dtype), bias)

    def _apply(self, fn, recurse=True):
        """Move the fp8 weight and its float32 scale without changing their dtype (see module)."""
        for store, name in ((self._parameters, "weight"), (self._buffers, "weight_scale")):
            tensor = store[name]
            raw = _RAW[tensor.dtype]
            moved = fn(tensor.detach().view(raw))
            if moved.dtype != raw:
                raise FlashVideoInputError(f"This conversion would change the format of an fp8 layer "
                                           f"(to {moved.dtype}); move it with .to(device) or .to(dtype) instead.")
            if name == "weight":
                _set_param(self, name, moved.view(FP8))
            else:
                store[name] = moved.view(torch.float32)
        if self.bias is not None:
            _set_param(self, "bias", fn(self.bias.detach()))
        return self

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fp8_e4m3fn, per-channel scale"


def _set_param(module: torch.nn.Module, name: str, value: torch.Tensor) -> None:
    """module.<name> = value: in place where the tensor types allow it (the Parameter object stays, as
    nn.Module._apply does), else a new Parameter (e.g. between the CPU and the meta device)."""
    param = module._parameters[name]
    if torch._has_compatible_shallow_copy_type(param, value):
        param.data = value
    else:
        module._parameters[name] = torch.nn.Parameter(value, requires_grad=False)


def _matches(name: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _t5_ff_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    """T5's feed-forward without transformers' cast of the hidden states to wo's weight dtype
    (that would turn them into fp8); Fp8Linear upcasts its weight to the hidden states' dtype instead."""
    if hasattr(self, "wi_0"):
        hidden = self.act(self.wi_0(hidden_states)) * self.wi_1(hidden_states)
    else:
        hidden = self.act(self.wi(hidden_states))
    return self.wo(self.dropout(hidden))


def _fix_t5_feed_forward(module: torch.nn.Module) -> None:
    """Give each T5 feed-forward whose wo is now Fp8Linear the forward above (an instance attribute)."""
    for sub in module.modules():
        if isinstance(getattr(sub, "wo", None), Fp8Linear) and hasattr(sub, "act") and hasattr(sub, "dropout"):
            sub.forward = types.MethodType(_t5_ff_forward, sub)


def quantize_fp8(
    module: torch.nn.Module,
    compute_dtype: torch.dtype,
    skip: tuple[str, ...] = DEFAULT_SKIP,
    blocks: tuple[str, ...] = BLOCK_PATTERNS,
    scales: Mapping[str, torch.Tensor] | None = None,
) -> Fp8Stats:
    """Replace, in place, the nn.Linear layers of `module` whose qualified name matches `blocks` and
    none of `skip` (fnmatch patterns) by Fp8Linear. Works for FlashVideoTransformer, diffusers'
    CogVideoXTransformer3DModel and transformers' T5EncoderModel.

    compute_dtype: the bias's dtype (the weight is upcast to the input's dtype when the layer runs).
    scales: {layer name: scale} for layers whose weight is already fp8 (a ComfyUI fp8 file); such
    weights are kept bit for bit. Returns Fp8Stats. Layers that are already Fp8Linear are left alone.
    """
    scales = scales or {}
    quantized, skipped, before, after = [], [], 0, 0
    for name, linear in list(module.named_modules()):
        if not isinstance(linear, torch.nn.Linear) or not _matches(name, blocks):
            continue
        if _matches(name, skip):
            skipped.append(name)
            continue
        before += linear.weight.numel() * linear.weight.element_size()
        replacement = Fp8Linear.from_linear(linear, compute_dtype, scales.get(name))
        parent_name, _, child = name.rpartition(".")
        setattr(module.get_submodule(parent_name) if parent_name else module, child, replacement)
        after += replacement.weight.numel() + replacement.weight_scale.numel() * 4
        quantized.append(name)
    _fix_t5_feed_forward(module)
    return Fp8Stats(tuple(quantized), tuple(skipped), before, after)


def fp8_layers(module: torch.nn.Module) -> list[str]:
    """Qualified names of the Fp8Linear layers of `module`."""
    return [name for name, sub in module.named_modules() if isinstance(sub, Fp8Linear)]


def weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of every parameter and buffer of `module` (each tensor once)."""
    seen = {id(t): t for t in [*module.parameters(), *module.buffers()]}
    return sum(t.numel() * t.element_size() for t in seen.values())
