"""Caption embeddings computed once and kept on disk, so T5 (about 9.5 GB in bf16) can leave memory.

Use: build a CaptionCache with the loaded encoder's `encode`, call `precompute(all captions)` once
before training, then free the encoder (del it, empty the device cache) and train with
`cache.get(caption)`, which reads the stored file and never calls `encode` for a caption already
stored. Files are `<sha256(encoder_id + "\\0" + caption)>.safetensors` (one tensor "embedding",
(1, L, D), as `encode` returned it, on CPU), written atomically (atomic.atomic_output): a killed run
leaves no half file. `encoder_id` names the encoder and its settings (e.g. "t5-v1_1-xxl/226"), so
another encoder never reads these embeddings. The unconditional embedding of training is not a
caption: it is all zeros, as at inference (the loop zeroes a share of the batch).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..atomic import atomic_output, write_errors_named
from ..errors import FlashVideoInputError


class CaptionCache:
    """Caption -> embedding (1, L, D), from `encode` once, then from `cache_dir`."""

    def __init__(self, cache_dir: str | os.PathLike, encoder_id: str, encode: Callable[[str], torch.Tensor] | None):
        if not isinstance(encoder_id, str) or not encoder_id:
            raise FlashVideoInputError(f"encoder_id={encoder_id!r} must be a non-empty name of the text encoder.")
        self.cache_dir = Path(cache_dir)
        self.encoder_id = encoder_id
        self.encode = encode
        self.cache_dir.mkdir(parents=True, exist_ok=True)

    def path_of(self, caption: str) -> Path:
        """The file holding `caption`'s embedding (it may not exist yet)."""
        digest = hashlib.sha256(f"{self.encoder_id}\0{caption}".encode()).hexdigest()
        return self.cache_dir / f"{digest}.safetensors"

    def get(self, caption: str) -> torch.Tensor:
        """(1, L, D) embedding of `caption` on CPU: read if stored, else encoded, stored and returned.

        Raises FlashVideoInputError if it is not stored and the encoder was freed (encode=None), or if
        `encode` returns anything but a (1, L, D) tensor.
        """
        path = self.path_of(caption)
        if path.is_file():
            return load_file(path)["embedding"]
        if self.encode is None:
            raise FlashVideoInputError(f"caption {caption[:60]!r} has no stored embedding in {self.cache_dir} and "
                                       "no encoder is loaded; precompute every caption before freeing the encoder.")
        embedding = self.encode(caption)
        if not isinstance(embedding, torch.Tensor) or embedding.ndim != 3 or embedding.shape[0] != 1:
            shape = tuple(embedding.shape) if isinstance(embedding, torch.Tensor) else type(embedding).__name__
            raise FlashVideoInputError(f"the text encoder returned {shape} for a caption; expected (1, tokens, dim).")
        embedding = embedding.detach().to("cpu").contiguous()
        with write_errors_named(path), atomic_output(path) as temp:  # a full disk: OSError naming the file
            save_file({"embedding": embedding}, str(temp))
        return embedding

    def precompute(self, captions: Iterable[str], callback: Callable[[int, int], None] | None = None) -> int:
        """Store the embedding of every distinct caption (in first-seen order); returns how many were new.

        callback(done, total) after each distinct caption. Afterwards the encoder may be freed.
        """
        distinct = list(dict.fromkeys(captions))
        new = 0
        for done, caption in enumerate(distinct, start=1):
            if not self.path_of(caption).is_file():
                self.get(caption)
                new += 1
            if callback is not None:
                callback(done, len(distinct))
        return new
