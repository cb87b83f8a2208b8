"""The least memory a run needs, from its sizes alone, checked against free memory before any compute.

Not a planner (which would predict each mode's peak): a floor that any run of the size must pass, so
an impossible size (a 100000-px width, thousands of frames) is refused at once, naming the size that
would fit, instead of computing for minutes and ending in an allocator traceback (once only after
Stage I). Counted, nothing else:
- a transformer forward: the hidden states plus one block's attention and MLP intermediates for the
  CFG batch, 8 x batch x tokens x hidden x bytes per value (the real peak is higher);
- a decoded video: float32 (3, F, H, W) plus its uint8 copy for the writer (5 x F x H x W x 3 bytes).
check_fits also takes the bytes that do not grow with the size (`fixed`: the weights on the device, which
planning.lower_bound counts for the run's memory modes; this module may not import the planner).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from . import config
from .errors import FlashVideoInputError
from .layout import latent_frames, pixel_frames

GIB = 2**30
ACTIVATION_FACTOR = 8
"""Values per token x hidden held at least during one block (x, q, k, v, attention out, 2 of the 4x MLP)."""


def transformer_tokens(num_frames: int, height: int, width: int) -> int:
    """Tokens of one forward: latent frames x (H/16) x (W/16) video patches + the 226 text tokens."""
    patch = config.PIXEL_MULTIPLE  # one transformer token: 2x2 latent pixels of 8x8 video pixels
    return latent_frames(num_frames) * (height // patch) * (width // patch) + config.TEXT_TOKENS


def cfg_batch(sequential_cfg: bool) -> int:
    """The batch of one guided model call: 2 (prompt and empty prompt together), 1 with sequential CFG."""
    return 1 if sequential_cfg else 2


def transformer_floor(num_frames: int, height: int, width: int, hidden: int, dtype: torch.dtype,
                      batch: int = 2) -> int:
    """Bytes a transformer forward of hidden width `hidden` needs at least at this size (batch 2 = CFG)."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    return ACTIVATION_FACTOR * batch * transformer_tokens(num_frames, height, width) * hidden * itemsize


def video_floor(num_frames: int, height: int, width: int) -> int:
    """Bytes of a decoded video held as float32 (3, F, H, W) plus its uint8 frames."""
    return 5 * 3 * num_frames * height * width


def check_fits(what: str, need: int, free: int, device: torch.device | str, num_frames: int, height: int,
               width: int, hint: Callable[[], str] | None = None, fixed: int = 0, held: int = 0) -> None:
    """Raise FlashVideoInputError if need + fixed bytes exceed free + held, naming sizes that would fit.

    need: the bytes that grow with the size (activations); fixed: those that do not (the weights on the
    device: planning.lower_bound); held: the part of fixed already on the device (a loaded model), which
    the free memory no longer counts. The suggestion keeps the aspect ratio (multiples of 16, same frame
    count) or keeps the size with fewer frames (4k+1), scaling only `need` (proportional to the pixel
    count); when the weights alone exceed the room, no size can fit and the message says so. hint: called
    only when the check fails, its sentence ends the message (planning.room.fitting_hint: the memory mode
    that would fit; this module may not import the planner).
    """
    room = free + held
    if need + fixed <= room:
        return
    share = (0.95 * room - fixed) / need  # a margin for the parts that do not scale (text tokens)
    parts = f" ({fixed / GIB:.1f} GiB of weights + {need / GIB:.1f} GiB for one model call)" if fixed else ""
    loaded = f" (+ {held / GIB:.1f} GiB of its weights already there)" if held else ""
    raise FlashVideoInputError(
        f"{what} at {width}x{height} (WxH) with {num_frames} frames needs at least {(need + fixed) / GIB:.1f} GiB "
        f"on {torch.device(device)}{parts}, and {free / GIB:.1f} GiB is free{loaded}: "
        + (_smaller_sizes(share, num_frames, height, width) if share > 0 else
           "the weights alone do not fit in this mode; free memory first.")
        + (f" {hint()}" if hint is not None else "")
    )


def _smaller_sizes(share: float, num_frames: int, height: int, width: int) -> str:
    """'use a smaller size (about WxH at F frames, or F' frames at WxH) or free memory first.' for a run
    whose scaling part must shrink to `share` of itself."""
    side = math.sqrt(min(share, 1.0))
    step = config.PIXEL_MULTIPLE
    fit_w, fit_h = max(step, int(width * side) // step * step), max(step, int(height * side) // step * step)
    fit_latent = int(latent_frames(num_frames) * share)  # the floor grows with latent frames, 4 video frames each
    fit_frames = pixel_frames(fit_latent)
    frames_hint = f", or {fit_frames} frames at {width}x{height}" if fit_latent >= 2 else ""
    return f"use a smaller size (about {fit_w}x{fit_h} at {num_frames} frames{frames_hint}) or free memory first."
