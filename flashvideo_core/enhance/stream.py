"""Enhance frames as a stream, window by window: only one window of input frames and one overlap of
output frames are held, so memory does not grow with the clip's length.

Per window (windows.py: 4k+1 frames, overlapping): frames are resized to the exact target size and
edge-padded to multiples of 16 (sizing.fit_frames), refined by a `Refine` (the Stage II chain,
sampling.stage2_chain), cropped back to the exact size, optionally colour-matched to the input window
(color.py), trimmed of padded frames and crossfaded into the output (windows.WindowBlender). The
layout changes once in (layout.image_to_video) and once out (layout.video_to_image); fit_frames and
the crop work on views in between.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from ..errors import FlashVideoInputError
from ..layout import image_to_video, video_to_image
from ..progress import ProgressCallback, report
from ..sampling.stage2_chain import Stage2Models, refine_video
from ..vae import AUTO, Slices
from .color import match_color
from .plan import EnhancePlan, window_seed
from .sizing import crop_to_target, fit_frames
from .windows import Window, WindowBlender

Refine = Callable[[torch.Tensor, int, EnhancePlan], torch.Tensor]
"""The per-window model step: (video (1, 3, L, work_h, work_w) in [-1, 1], the window's Stage II seed,
the plan) -> pixels of the same layout, float32 on CPU. `stage2_refiner` makes the real one; tests
and other models may give their own."""


def stage2_refiner(models: Stage2Models, *, slices: Slices = AUTO, device=None, dtype: torch.dtype | None = None,
                   callback: ProgressCallback | None = None) -> Refine:
    """The Refine that runs the Stage II chain (stage2_chain.refine_video) with `models` at the plan's
    work size and Stage II settings; slices/device/dtype/callback as refine_video takes them."""

    def refine(video: torch.Tensor, seed: int, plan: EnhancePlan) -> torch.Tensor:
        size = (plan.target.work_height, plan.target.work_width)
        return refine_video(models, video, size, plan.stage2, seed, slices=slices, device=device, dtype=dtype,
                            callback=callback).video

    return refine


def enhance_stream(frames: Iterator[torch.Tensor], plan: EnhancePlan, refine: Refine,
                   callback: ProgressCallback | None = None) -> Iterator[torch.Tensor]:
    """Frames (H, W, 3), uint8 or float in [0, 1] -> enhanced float frames (H', W', 3) in [0, 1], in order.

    Exactly plan.num_frames frames are read and given back. Progress: ("enhance", 0, n) first, then
    ("enhance", i, n) when window i is done (the chain reports its phases in between).
    """
    blender = WindowBlender(plan.windows)
    report(callback, "enhance", 0, len(plan.windows))
    held: list[torch.Tensor] = []  # input frames [held_start, held_start + len(held))
    held_start = 0
    for index, window in enumerate(plan.windows):
        while held_start + len(held) < window.stop:
            held.append(_next_frame(frames, held_start + len(held), plan))
        clip = torch.stack(held[window.start - held_start : window.stop - held_start])  # (n, H, W, 3)
        output = enhance_window(clip, window, window_seed(plan.seed, index), plan, refine)
        report(callback, "enhance", index + 1, len(plan.windows))
        yield from blender.push(output)
        next_start = plan.windows[index + 1].start if index + 1 < len(plan.windows) else window.stop
        del held[: next_start - held_start]
        held_start = next_start


def enhance_window(clip: torch.Tensor, window: Window, seed: int, plan: EnhancePlan, refine: Refine) -> torch.Tensor:
    """One window: clip (n, H, W, 3), uint8 or float in [0, 1] -> enhanced (n, H', W', 3) in [0, 1]."""
    target = plan.target
    source = image_to_video(clip.float() / 255.0 if clip.dtype == torch.uint8 else clip)  # (1, 3, n, H, W)
    if window.padding:
        source = torch.cat([source, source[:, :, -1:].expand(-1, -1, window.padding, -1, -1)], dim=2)
    video = fit_frames(source, target)  # (1, 3, L, work_h, work_w), a view of the resized frames
    decoded = refine(video, seed, plan)
    del video
    if decoded.shape[2] < window.num_frames:
        raise FlashVideoInputError(
            f"the VAE decoded {decoded.shape[2]} frames for a {window.length}-frame window; expected "
            f"{window.length}. Use a window of 8k+1 frames (9, 17, ..., 49)."
        )
    out = crop_to_target(decoded, target)[:, :, : window.num_frames]  # (1, 3, n, H', W')
    if plan.color_match:
        out = match_color(out, source[:, :, : window.num_frames])
    return video_to_image(out)  # (n, H', W', 3) in [0, 1]


def _next_frame(frames: Iterator[torch.Tensor], index: int, plan: EnhancePlan) -> torch.Tensor:
    """Frame `index` of the stream, refusing an early end or a frame of another size."""
    frame = next(frames, None)
    if frame is None:
        raise FlashVideoInputError(f"the video ended after {index} frames; {plan.num_frames} were expected.")
    if frame.shape != (plan.in_height, plan.in_width, 3):
        raise FlashVideoInputError(
            f"frame {index} is {_frame_size(frame)}; all frames must be "
            f"{plan.in_width}x{plan.in_height} (WxH) RGB, as the first one."
        )
    return frame


def _frame_size(frame: torch.Tensor) -> str:
    """'48x32 (WxH) RGB' for an (H, W, 3) frame, else its shape."""
    if frame.ndim == 3 and frame.shape[-1] == 3:
        return f"{frame.shape[1]}x{frame.shape[0]} (WxH) RGB"
    return f"of shape {tuple(frame.shape)}"
