"""Pixel formats: what an ffmpeg pix_fmt name holds (alpha, gray, bit depth) and one frame as uint8 RGB."""

from __future__ import annotations

import re

import numpy as np
import torch

from ..errors import FlashVideoInputError
from ..layout import to_uint8


def to_rgb_uint8(frame) -> np.ndarray:
    """One frame from anywhere -> uint8 RGB (H, W, 3).

    Accepts (H, W), (H, W, 1) gray (expanded), (H, W, 3) RGB, (H, W, 4) RGBA (alpha dropped);
    uint8, uint16 (/257) or float in [0, 1]. Anything else raises FlashVideoInputError.
    """
    array = np.asarray(frame)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise FlashVideoInputError(f"a frame must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {array.shape}.")
    array = array[:, :, :3] if array.shape[2] == 4 else array
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype == np.uint16:
        return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        return to_uint8(torch.from_numpy(np.ascontiguousarray(array))).numpy()  # the one float -> 8-bit rule
    raise FlashVideoInputError(f"frame dtype {array.dtype} is not supported (use uint8, uint16 or float 0-1).")


def format_notes(pix_fmt: str) -> list[str]:
    """What reading as uint8 RGB changes about frames stored as `pix_fmt` (alpha, gray, bit depth); [] if nothing."""
    notes = []
    if has_alpha(pix_fmt):
        notes.append(f"alpha channel dropped ({pix_fmt}; colours kept as stored, not composited)")
    if is_gray(pix_fmt):
        notes.append(f"grayscale frames ({pix_fmt}) expanded to RGB")
    if bit_depth(pix_fmt) > 8:
        notes.append(f"{bit_depth(pix_fmt)}-bit frames ({pix_fmt}) reduced to 8-bit")
    return notes


def has_alpha(pix_fmt: str) -> bool:
    """Whether the ffmpeg pixel format `pix_fmt` ("yuva420p", "rgba", ...) has an alpha channel."""
    return pix_fmt.startswith(("yuva", "gbrap", "ya")) or any(
        key in pix_fmt for key in ("rgba", "bgra", "argb", "abgr")
    )


def is_gray(pix_fmt: str) -> bool:
    """Whether the ffmpeg pixel format `pix_fmt` ("gray", "gray16be", "ya8", ...) is grayscale."""
    return pix_fmt.startswith(("gray", "ya", "monob", "monow"))


def bit_depth(pix_fmt: str) -> int:
    """Bits per sample of an ffmpeg pixel format name (8 unless the name says more)."""
    for pattern, bits in ((r"(rgb|bgr)24", 8), (r"(rgb|bgr)48", 16), (r"(rgba|bgra)64", 16), (r"^ya16", 16)):
        if re.search(pattern, pix_fmt):
            return bits
    match = re.search(r"(\d+)(le|be)?$", pix_fmt)
    depth = int(match.group(1)) if match else 8
    return depth if 8 < depth <= 32 else 8
