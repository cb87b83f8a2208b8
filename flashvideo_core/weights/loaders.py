"""Find and load the four models from the files users have.

Every load_* takes an optional ProgressCallback: ProgressEvent("load <file name>", MB read, MB total).

A weights folder in the published layout holds:
    stage1.pt   stage2.pt   3d-vae.pt   text_encoder/   tokenizer/
`convert` writes `<name>.safetensors` beside a `.pt`; those are preferred when present.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import check_compatible, check_weight_file
from ..errors import CheckpointError
from ..text.encoder import load_text_encoder as _load_text_encoder

WEIGHT_NAMES = {"stage1": "stage1", "stage2": "stage2", "vae": "3d-vae"}


WEIGHT_KINDS = {"stage1": "stage1", "stage2": "stage2", "vae": "vae", "text_encoder": "t5"}
"""WeightPaths field -> checkpoint.detect_kind name."""


@dataclass(frozen=True)
class WeightPaths:
    """Where each model's weights are. None = not available (that stage cannot run)."""

    stage1: Path | None = None
    stage2: Path | None = None
    vae: Path | None = None
    text_encoder: Path | None = None
    tokenizer: Path | None = None

    def require(self, *names: str) -> None:
        """Raise CheckpointError listing every named model whose path is missing."""
        missing = [name for name in names if getattr(self, name) is None]
        if missing:
            raise CheckpointError(
                f"Missing weights for: {', '.join(missing)}. Put the published files in the weights folder "
                "(stage1.pt, stage2.pt, 3d-vae.pt, text_encoder/, tokenizer/) or pass their paths."
            )

    def check(self, *names: str) -> None:
        """require(*names), then read each file's tensor names and shapes (not its weights) and raise
        CheckpointError for a truncated or corrupt file, one that holds another model, or models that
        do not fit together (text width, latent channels), before anything runs. Each file's header is
        read once (checkpoint.read_shapes remembers it), so later width look-ups read nothing again."""
        self.require(*names)
        for name in names:
            check_weight_file(getattr(self, name), WEIGHT_KINDS[name])
        check_compatible({WEIGHT_KINDS[name]: getattr(self, name) for name in names})


def find_weights(folder: str | Path) -> WeightPaths:
    """Look in `folder` for the published layout; converted .safetensors win over .pt."""
    root = Path(folder)
    if not root.is_dir():
        raise CheckpointError(f"Weights folder not found: {root}")
    found: dict[str, Path | None] = {}
    for key, stem in WEIGHT_NAMES.items():
        candidates = [root / f"{stem}.safetensors", root / f"{stem}.pt"]
        found[key] = next((c for c in candidates if c.exists()), None)
    found["text_encoder"] = root / "text_encoder" if (root / "text_encoder").is_dir() else None
    found["tokenizer"] = root / "tokenizer" if (root / "tokenizer").is_dir() else None
    return WeightPaths(**found)


def load_stage1(path: str | Path, device="cpu", dtype: torch.dtype = torch.float32, callback=None):
    """Stage I transformer from stage1.pt (LoRA merged), a converted .safetensors or a diffusers folder."""
    from ..model.sat_loading import load_transformer  # diffusers: imported when a model loads, not for --help

    model = load_transformer(path, stage=1, device=device, dtype=dtype, callback=callback)
    model.source_file = str(path)
    return model


def load_stage2(path: str | Path, device="cpu", dtype: torch.dtype = torch.float32, callback=None):
    """Stage II transformer (with its two extra embeddings) from stage2.pt, .safetensors or a folder."""
    from ..model.sat_loading import load_transformer  # diffusers: imported when a model loads

    model = load_transformer(path, stage=2, device=device, dtype=dtype, callback=callback)
    model.source_file = str(path)
    return model


def load_vae(path: str | Path, device="cpu", dtype: torch.dtype = torch.float32, callback=None):
    """CogVideoX VAE from 3d-vae.pt, a .safetensors file or a diffusers vae/ folder."""
    from ..vae import load_vae as _load_vae  # diffusers: imported when a model loads

    return _load_vae(path, device=device, dtype=dtype, callback=callback)


def load_text_encoder(
    path: str | Path, tokenizer: str | Path | None = None, device="cpu", dtype=torch.float32, callback=None,
    weights: str = "default",
):
    """T5 encoder + tokenizer (text_encoder/ folder or a single t5xxl .safetensors); weights "fp8_e4m3fn"
    stores its block linears in fp8 (an fp8 file stays fp8), see text.loading.load_t5_encoder."""
    return _load_text_encoder(path, tokenizer, device=device, dtype=dtype, callback=callback, weights=weights)
