"""Constants of the FlashVideo pipeline and the frozen configs of its networks.

Numbers come from the official implementation (see SPEC.md in the developers' workspace).
"""

from __future__ import annotations

from dataclasses import dataclass

TEXT_TOKENS = 226
"""T5 sequence length: prompts are padded or truncated to exactly this many tokens."""

STAGE1_SCALE_FACTOR = 0.7
"""Stage I works on raw VAE latents multiplied by this."""

STAGE2_SCALE_FACTOR = 1.15258426
"""Stage II (and latent degradation) work on raw VAE latents multiplied by this."""

STAGE1_HEIGHT, STAGE1_WIDTH = 256, 480
"""270x480 floored to multiples of 16, as the official code does."""

STAGE2_HEIGHT, STAGE2_WIDTH = 1072, 1920
"""1080x1920 floored to multiples of 16, as the official code does."""

DEFAULT_NUM_FRAMES = 49
DEFAULT_FPS = 8

STAGE1_STEPS = 51
STAGE1_CFG = 8.0
STAGE1_CFG_EXPONENT = 5.0

STAGE2_STEPS = 4
STAGE2_CFG = 13.0
STAGE2_SHIFT = 2.5
DEFAULT_NOISE_STEP = 675

STAGE2_PROMPT_PREFIX = "medium motion,"
"""The official batch script prefixes Stage II prompts with this (no trailing space)."""

VAE_SPATIAL_COMPRESSION = 8
VAE_TEMPORAL_COMPRESSION = 4
LATENT_CHANNELS = 16
PIXEL_MULTIPLE = 16
"""Pixel sizes must be multiples of this (VAE factor 8 x transformer patch 2)."""
MAX_PIXEL_EDGE = 8192
"""Largest height or width: H.264's largest level (6.2) holds frames up to 8192x4320, and the models were
trained at 1080p at most (the paper's Table 5 goes to 2K), so a larger edge is a typo, not a request."""


@dataclass(frozen=True)
class TransformerConfig:
    """Shape of a CogVideoX-style transformer (Stage I or Stage II)."""

    num_layers: int
    num_heads: int
    head_dim: int = 64
    time_embed_dim: int = 512
    text_dim: int = 4096
    in_channels: int = 16
    out_channels: int = 16
    patch_size: int = 2
    ffn_dim: int | None = None
    """Feed-forward inner size; None means 4 x hidden (the CogVideoX default)."""
    stage2_extras: bool = False
    """True for Stage II: adds `ref_step_time_embedding` and `time_size_embedding`."""

    @property
    def hidden_size(self) -> int:
        """num_heads x head_dim (1920 for Stage II, 3072 for Stage I)."""
        return self.num_heads * self.head_dim


@dataclass(frozen=True)
class VAEConfig:
    """Shape of the CogVideoX 3D causal VAE."""

    block_out_channels: tuple[int, ...] = (128, 256, 256, 512)
    layers_per_block: int = 3
    latent_channels: int = LATENT_CHANNELS
    norm_num_groups: int = 32


STAGE1_5B = TransformerConfig(num_layers=42, num_heads=48)
STAGE2_2B = TransformerConfig(num_layers=30, num_heads=30, stage2_extras=True)
VAE_COGVIDEOX = VAEConfig()

TINY_STAGE1 = TransformerConfig(num_layers=2, num_heads=2, head_dim=16, time_embed_dim=32, text_dim=32)
TINY_STAGE2 = TransformerConfig(
    num_layers=2, num_heads=2, head_dim=16, time_embed_dim=32, text_dim=32, stage2_extras=True
)
TINY_VAE = VAEConfig(block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=8)
