"""The planner's analytic memory model of one FlashVideoTransformer call: weight bytes per mode and the
activation peak from shapes alone, in microseconds (checked against live_bytes' fake-tensor count by
tests/core/test_planner.py; within 15% is the bar, the phases below match it to about 1%).

Units: uS = B x S x D x b bytes (batch x all tokens x hidden x bytes per value), uV the same over the video
tokens only, r = 4 / b (an fp32 copy over a compute-dtype one; 1 in fp32). Phases of one block, as
diffusers 0.42's CogVideoX block runs them (what is alive at each one's worst moment):
- RoPE: block input, norm1 out, the joined [text, video] states, q, k, v (6 uS), then on the video part
  of q (then k) the rotated copy (uV) and three fp32 tensors (x.float() * cos, x_rot.float() * sin, sum):
  6 uS + (1 + 3 r) uV. This is the peak in bf16/fp16 (13 uS).
- attention: 6 uS + the output (uS) + log-sum-exp (B x heads x S x 4 bytes) + the backend's copies
  (sage: int8 q, k and fp8 v ~1.5 uS; flash: (B, S, H, d) copies of q, k, v, 3 uS). SDPA is assumed to run
  a flash / memory-efficient kernel that never holds the S x S scores: CUDA's for fp16/bf16 (memory-
  efficient also for fp32), the CPU's flash kernel. A math fallback (old GPUs, odd head sizes) would add
  B x heads x S^2 x b and is not planned: at 1080p that alone is tens of GiB, the run could not work.
- feed-forward: block input, attention out, the new states, the joined normed states (4 uS), the 4x
  projection and its GELU (2 x ffn/D uS): 12 uS; the peak in fp32.
Plus what lives through the whole call: the inputs (latents, text), the cached RoPE cos/sin tables
(fp32, 2 x video tokens x head_dim) and the output. torch.compile is planned as eager (Inductor may
fuse the RoPE element-wise chain and lower the peak, never raise it).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch

from .. import config as fv_config
from ..config import TransformerConfig
from ..modes.settings import ModelModes

ATTENTION_COPIES = {"sdpa": 0.0, "sage": 1.5, "flash": 3.0}
"""uS the backend adds during attention (see module)."""
FP8_SCALE_BYTES = 4
"""An fp8 linear's scale: assumed one float32 per output row (a per-tensor scale needs less)."""


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of a transformer, split as the modes treat them.

    block_linear: the weights of one block's attention and MLP linears (fp8-able); block_linear_rows: their
    output rows (one fp8 scale each); block_other: the rest of one block (biases, norms, adaLN modulation);
    outside: every parameter not in a block (embeddings, patch embedding, final norm and projection);
    largest_linear: the biggest block linear (its upcast copy exists while it runs in fp8).
    """

    num_layers: int
    block_linear: int
    block_linear_rows: int
    block_other: int
    outside: int
    largest_linear: int

    @property
    def total(self) -> int:
        """All parameters."""
        return self.outside + self.num_layers * (self.block_linear + self.block_other)


@functools.lru_cache(maxsize=16)
def param_counts(config: TransformerConfig) -> ParamCounts:
    """Count `config`'s parameters by building its 1-block network on the meta device (no memory, ~50 ms)."""
    from ..model.transformer import FlashVideoTransformer  # imports diffusers: only when planning

    with torch.device("meta"):
        model = FlashVideoTransformer(dataclasses.replace(config, num_layers=1))
    block = model.inner.transformer_blocks[0]
    linears = [m for name, m in block.named_modules()
               if isinstance(m, torch.nn.Linear) and not name.startswith(("norm1", "norm2"))]
    block_params = sum(p.numel() for p in block.parameters())
    linear = sum(m.weight.numel() for m in linears)
    return ParamCounts(
        num_layers=config.num_layers,
        block_linear=linear,
        block_linear_rows=sum(m.weight.shape[0] for m in linears),
        block_other=block_params - linear,
        outside=sum(p.numel() for p in model.parameters()) - block_params,
        largest_linear=max(m.weight.numel() for m in linears),
    )


def itemsize(dtype: torch.dtype) -> int:
    """Bytes per value of `dtype`."""
    return torch.empty((), dtype=dtype).element_size()


def block_bytes(counts: ParamCounts, dtype: torch.dtype, fp8: bool) -> int:
    """Bytes of one block's weights: all in `dtype`, or with `fp8` its linears at 1 byte + a scale per row."""
    if not fp8:
        return (counts.block_linear + counts.block_other) * itemsize(dtype)
    return counts.block_linear + counts.block_linear_rows * FP8_SCALE_BYTES + counts.block_other * itemsize(dtype)


def device_blocks(num_layers: int, resident_blocks: int | None) -> int:
    """Blocks on the device at once: all without block swap; with it the N resident ones plus the block
    being run and the next one being prefetched (both streamed), at most all of them."""
    if resident_blocks is None or resident_blocks >= num_layers:
        return num_layers
    return min(num_layers, resident_blocks + 2)


def stored_weights_bytes(config: TransformerConfig, dtype: torch.dtype, modes: ModelModes) -> int:
    """Device bytes of the stored weights in `modes` (resident_blocks None or a number, not 'auto'): everything
    outside the blocks, and the blocks on the device at once (device_blocks), fp8 ones at block_bytes'."""
    counts = param_counts(config)
    blocks = device_blocks(counts.num_layers, modes.resident_blocks)
    return counts.outside * itemsize(dtype) + blocks * block_bytes(counts, dtype, modes.weights == "fp8_e4m3fn")


def weights_bytes(config: TransformerConfig, dtype: torch.dtype, modes: ModelModes) -> int:
    """Device bytes of the weights in `modes` (resident_blocks must be None or a number, not 'auto'):
    stored_weights_bytes, plus with fp8 the compute-dtype copy of the largest linear while it runs."""
    upcast = param_counts(config).largest_linear * itemsize(dtype) if modes.weights == "fp8_e4m3fn" else 0
    return stored_weights_bytes(config, dtype, modes) + upcast


@dataclass(frozen=True)
class ActivationPeak:
    """bytes: the call's live bytes at its peak (no weights); phase: where ('rope', 'attention' or
    'feed-forward'); persistent: the part alive through the call (inputs, RoPE tables, output)."""

    bytes: int
    phase: str
    persistent: int


def activation_peak(config: TransformerConfig, frames: int, height: int, width: int, dtype: torch.dtype,
                    sequential_cfg: bool, batch: int = 1, attention: str = "sdpa") -> ActivationPeak:
    """Peak live bytes of one guided call (live_bytes.guided_call_peak's) for `batch` (frames, height, width)
    pixel videos: the CFG batch 2B in one model call, or with `sequential_cfg` two calls of B (module)."""
    b = itemsize(dtype)
    calls = batch if sequential_cfg else 2 * batch
    patch = fv_config.PIXEL_MULTIPLE  # one token: 2x2 latent pixels of 8x8 video pixels
    latent_t = (frames - 1) // fv_config.VAE_TEMPORAL_COMPRESSION + 1
    video = latent_t * (height // patch) * (width // patch)
    tokens = video + fv_config.TEXT_TOKENS
    hidden, ratio = config.hidden_size, 4 / b if b < 4 else 1.0
    u_all, u_video = calls * tokens * hidden * b, calls * video * hidden * b
    ffn = (config.ffn_dim or 4 * hidden) / hidden
    phases = {
        "rope": 6 * u_all + (1 + 3 * ratio) * u_video,
        "attention": 7 * u_all + calls * config.num_heads * tokens * 4 + ATTENTION_COPIES[attention] * u_all,
        "feed-forward": (4 + 2 * ffn) * u_all,
    }
    latent_values = video * config.in_channels * config.patch_size**2
    inputs = 2 * batch * (latent_values + fv_config.TEXT_TOKENS * config.text_dim) * b  # the CFG pair
    first_half = batch * latent_values * b if sequential_cfg else 0  # held while the second call runs
    persistent = inputs + first_half + 2 * video * config.head_dim * 4  # + RoPE cos and sin, fp32
    phase = max(phases, key=phases.get)
    return ActivationPeak(int(persistent + phases[phase]), phase, int(persistent))
