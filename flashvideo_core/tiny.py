"""Tiny random weights in the published file layouts.

They let every code path (loading, conversion, both stages, the CLI, the ComfyUI nodes) run on a
machine without the real 17 GB of weights. Outputs are noise-like videos: the architecture and
file formats are real, the weights are not.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import config

TINY_LORA_RANK = 4
TINY_VERSION = "1"
"""Bump when the tiny layout changes, so cached tiny weights are rewritten."""


def write_tiny_weights(dest_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write stage1.pt (with an unmerged LoRA), stage2.pt, 3d-vae.pt, text_encoder/ and tokenizer/.

    Returns {"stage1", "stage2", "vae", "text_encoder", "tokenizer"} -> path. Deterministic in `seed`.
    """
    from .sat_transformer import save_sat_transformer
    from .text import write_tiny_t5
    from .transformer import build_transformer
    from .vae import build_vae, save_sat_vae

    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    paths = {"stage1": dest / "stage1.pt", "stage2": dest / "stage2.pt", "vae": dest / "3d-vae.pt"}
    save_sat_transformer(build_transformer(config.TINY_STAGE1, seed=seed), paths["stage1"], lora_rank=TINY_LORA_RANK)
    save_sat_transformer(build_transformer(config.TINY_STAGE2, seed=seed + 1), paths["stage2"])
    save_sat_vae(build_vae(config.TINY_VAE, seed=seed + 2), paths["vae"])
    encoder_dir, tokenizer_dir = write_tiny_t5(dest)
    paths["text_encoder"], paths["tokenizer"] = Path(encoder_dir), Path(tokenizer_dir)
    return paths


def default_tiny_dir() -> Path:
    """Cache folder for the embedded tiny default ($FLASHVIDEO_CACHE or ~/.cache/flashvideo)."""
    base = os.environ.get("FLASHVIDEO_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "flashvideo"
    )
    return Path(base) / f"tiny-v{TINY_VERSION}"


def ensure_tiny_weights(folder: str | Path | None = None) -> Path:
    """Write the tiny weights into `folder` (default: default_tiny_dir()) unless already complete."""
    target = Path(folder) if folder else default_tiny_dir()
    marker = target / "COMPLETE"
    if not marker.exists():
        write_tiny_weights(target)
        marker.write_text("tiny random FlashVideo weights in the published layouts\n")
    return target
