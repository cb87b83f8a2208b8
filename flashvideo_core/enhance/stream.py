"""Enhance frames as a stream, window by window: only one window of input frames and one overlap of
output frames are held, so memory does not grow with the clip's length.

Per window (windows.py: 4k+1 frames, overlapping): frames are resized to the exact target size and
edge-padded to multiples of 16 (sizing.fit_frames), refined by a `Refine` (the Stage II chain,
sampling.stage2_chain), cropped back to the exact size, optionally colour-matched to the input window
(color.py), trimmed of padded frames and crossfaded into the output (windows.WindowBlender). The
layout changes once in (layout.image_to_video) and once out (layout.video_to_image); fit_frames and
the crop work on views in between.

plan.blend picks how windows join (latent_windows.py): "pixel" and "shared_noise" run as above (the
latter with noise keyed by latent frame); "co_denoise" encodes every window first (input streams past),
integrates the clip latent once, then decodes window by window (output streams out); the latent blends
need the chain split at its latent (a sampling.stage2_chain.LatentStage2), not a bare Refine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from ..errors import FlashVideoInputError
from ..layout import image_to_video, video_to_image
from ..progress import ProgressCallback, report
from ..sampling.degradation import add_degradation_noise
from ..sampling.settings import stage2_seeds
from ..sampling.stage2_chain import LatentStage2, Stage2Chain, Stage2Models, refine_latent_chain
from ..vae import AUTO, Slices
from .color import color_stats, match_color_stats
from .latent_windows import (
    LatentLayout,
    LatentMean,
    averaged_velocity,
    check_clip_latent_fits,
    frame_noise,
    latent_frames_of,
)
from .plan import EnhancePlan, window_seed
from .sizing import crop_to_target, fit_frames
from .windows import Window, WindowBlender

Refine = Callable[[torch.Tensor, int, EnhancePlan], torch.Tensor]
"""The per-window model step: (video (1, 3, L, work_h, work_w) in [-1, 1], the window's Stage II seed,
the plan) -> pixels of the same layout, float32 on CPU. `stage2_refiner` makes the real one; tests
and other models may give their own."""


class ChainRefine:
    """A LatentStage2 as a Refine: refine_latent_chain at the plan's work size and Stage II settings (what
    refine_video runs); `chain` stays reachable for the latent blends."""

    def __init__(self, chain: LatentStage2):
        self.chain = chain

    def __call__(self, video: torch.Tensor, seed: int, plan: EnhancePlan) -> torch.Tensor:
        return refine_latent_chain(self.chain, video, _work_size(plan), plan.stage2, seed).video


def stage2_refiner(models: Stage2Models, *, slices: Slices = AUTO, device=None, dtype: torch.dtype | None = None,
                   callback: ProgressCallback | None = None) -> Refine:
    """The Refine that runs the Stage II chain (stage2_chain.refine_video's steps) with `models` at the plan's
    work size and Stage II settings; slices/device/dtype/callback as refine_video takes them. It is a
    ChainRefine, so the latent blends run the same models."""
    return ChainRefine(Stage2Chain(models, slices, device, dtype, callback))


def enhance_stream(frames: Iterator[torch.Tensor], plan: EnhancePlan, refine: Refine | LatentStage2,
                   callback: ProgressCallback | None = None) -> Iterator[torch.Tensor]:
    """Frames (H, W, 3), uint8 or float in [0, 1] -> enhanced float frames (H', W', 3) in [0, 1], in order.

    Exactly plan.num_frames frames are read and given back. refine: a Refine, or a LatentStage2 (or
    a ChainRefine: stage2_refiner) - the latent blends need one of the latter two, refused here, before
    any frame is read, otherwise. Progress: ("enhance", 0, n) first, then ("enhance", i, n) when window
    i is done (the chain reports its phases in between; co_denoise: window i decoded).
    """
    if isinstance(refine, LatentStage2):
        refine = ChainRefine(refine)
    chain = refine.chain if isinstance(refine, ChainRefine) else None
    if plan.blend == "pixel":
        return _windowed(frames, plan, lambda window: refine, callback)
    if chain is None:
        raise FlashVideoInputError(
            f"blend={plan.blend!r} works on the latent: give the Stage II models (or a LatentStage2), not a Refine "
            "callable; or use blend 'pixel'.")
    if plan.blend == "shared_noise":
        return _windowed(frames, plan, lambda window: _shared_noise_refine(chain, window), callback)
    return _co_denoised(frames, plan, chain, callback)


def _windowed(frames: Iterator[torch.Tensor], plan: EnhancePlan, refine_for: Callable[[Window], Refine],
              callback: ProgressCallback | None) -> Iterator[torch.Tensor]:
    """Each window refined alone by refine_for(window), crossfaded into the output as it comes."""
    blender = WindowBlender(plan.windows)
    report(callback, "enhance", 0, len(plan.windows))
    for index, window, clip in _window_clips(frames, plan):
        output = enhance_window(clip, window, window_seed(plan.seed, index), plan, refine_for(window))
        report(callback, "enhance", index + 1, len(plan.windows))
        yield from blender.push(output)


def _shared_noise_refine(chain: LatentStage2, window: Window) -> Refine:
    """The chain on one window, its degradation noise keyed by the pixel frames of each latent frame."""
    keys = latent_frames_of(window, chain.frames_per_latent)

    def refine(video: torch.Tensor, seed: int, plan: EnhancePlan) -> torch.Tensor:
        noise = lambda shape: frame_noise(plan.seed, keys, shape)  # noqa: E731
        return refine_latent_chain(chain, video, _work_size(plan), plan.stage2, seed, noise).video

    return refine


def _co_denoised(frames: Iterator[torch.Tensor], plan: EnhancePlan, chain: LatentStage2,
                 callback: ProgressCallback | None) -> Iterator[torch.Tensor]:
    """Encode every window into the clip latent, degrade it with keyed noise, integrate it once with the
    windows' velocities averaged (latent_windows.averaged_velocity), then decode and crossfade by window."""
    layout = LatentLayout.of(plan.windows, chain.frames_per_latent)
    report(callback, "enhance", 0, len(plan.windows))
    mean, colours = LatentMean(layout), []
    for index, window, clip in _window_clips(frames, plan):
        video, window_colours = _window_input(clip, window, plan)
        latent = chain.encode(video, _work_size(plan), stage2_seeds(window_seed(plan.seed, index))[0])
        del video
        if index == 0:
            check_clip_latent_fits(layout, latent)
        mean.add(index, latent)
        colours.append(window_colours)
    start = mean.result()
    noise = frame_noise(plan.seed, layout.frames, tuple(start.shape))
    degraded = add_degradation_noise(start, plan.stage2.noise_step, None, chain.scale, noise)
    del start, noise
    refined = chain.sample(degraded, plan.stage2, averaged_velocity(layout))
    del degraded
    blender = WindowBlender(plan.windows)
    for index, window in enumerate(plan.windows):
        decoded = chain.decode(refined[:, :, layout.indices[index]])
        output = _window_output(decoded, window, plan, colours[index])
        report(callback, "enhance", index + 1, len(plan.windows))
        yield from blender.push(output)


def _window_clips(frames: Iterator[torch.Tensor], plan: EnhancePlan) -> Iterator[tuple[int, Window, torch.Tensor]]:
    """(index, window, its input frames (n, H, W, 3)) in order, holding one window of input frames."""
    held: list[torch.Tensor] = []  # input frames [held_start, held_start + len(held))
    held_start = 0
    for index, window in enumerate(plan.windows):
        while held_start + len(held) < window.stop:
            held.append(_next_frame(frames, held_start + len(held), plan))
        yield index, window, torch.stack(held[window.start - held_start : window.stop - held_start])
        next_start = plan.windows[index + 1].start if index + 1 < len(plan.windows) else window.stop
        del held[: next_start - held_start]
        held_start = next_start


def enhance_window(clip: torch.Tensor, window: Window, seed: int, plan: EnhancePlan, refine: Refine) -> torch.Tensor:
    """One window: clip (n, H, W, 3), uint8 or float in [0, 1] -> enhanced (n, H', W', 3) in [0, 1]."""
    video, colours = _window_input(clip, window, plan)
    decoded = refine(video, seed, plan)
    del video
    return _window_output(decoded, window, plan, colours)


def _window_input(clip: torch.Tensor, window: Window, plan: EnhancePlan):
    """clip (n, H, W, 3) -> (video (1, 3, L, work_h, work_w) in [-1, 1]: the clip padded to the window length L,
    resized and edge-padded, what the model gets; the colour statistics of the clip's own frames for
    color_match, None without it)."""
    source = image_to_video(clip.float() / 255.0 if clip.dtype == torch.uint8 else clip)  # (1, 3, n, H, W)
    colours = color_stats(source) if plan.color_match else None
    if window.padding:
        source = torch.cat([source, source[:, :, -1:].expand(-1, -1, window.padding, -1, -1)], dim=2)
    return fit_frames(source, plan.target), colours


def _window_output(decoded: torch.Tensor, window: Window, plan: EnhancePlan, colours) -> torch.Tensor:
    """Decoded window (1, 3, L', work_h, work_w) -> (n, H', W', 3) in [0, 1]: cropped to the exact size,
    trimmed of padding, colour-matched to `colours` (color.color_stats of the input; None: not)."""
    if decoded.shape[2] < window.num_frames:
        raise FlashVideoInputError(
            f"the VAE decoded {decoded.shape[2]} frames for a {window.length}-frame window; expected "
            f"{window.length}. Use a window of 8k+1 frames (9, 17, ..., 49)."
        )
    out = crop_to_target(decoded, plan.target)[:, :, : window.num_frames]  # (1, 3, n, H', W')
    if colours is not None:
        out = match_color_stats(out, colours)
    return video_to_image(out)  # (n, H', W', 3) in [0, 1]


def _work_size(plan: EnhancePlan) -> tuple[int, int]:
    return plan.target.work_height, plan.target.work_width


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
