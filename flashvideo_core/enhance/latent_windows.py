"""The latent-level window blends (EnhanceSettings.blend "shared_noise" and "co_denoise"): which latent
frames overlapping windows hold in common, the degradation noise drawn per latent frame of the clip, and
the averaging of the windows' velocities.

The same latent frame. A window that starts at pixel frame s with c pixel frames per latent frame (the
CogVideoX VAE: c = 4, causal) has latent frame 0 encoding pixel frame s alone and latent frame j >= 1
encoding frames s + c(j-1) + 1 .. s + cj. Two latent frames of two windows are "the same" when they
encode the same pixel frames: with window starts on multiples of c (plan.window_align) window B =
A + cm shares A's latent frames m+1.. as its frames 1.., but B's frame 0 (one pixel frame) matches none
of A's (four pixel frames): it stays B's own. With c = 1 (a stand-in codec) every frame is shared. The
VAE's causal context still differs (B's encoder never saw the frames before s), so two windows'
encodes of a shared frame are close, not equal; co_denoise starts from their weighted mean.

- shared_noise: each window is still refined alone (streaming, one window in memory), but its
  degradation noise comes from seeds keyed by the pixel frames each latent frame encodes
  (`frame_noise`), so overlapping windows start from the same noise in the frames they share.
- co_denoise: every window is encoded into one clip latent (`LatentLayout`: the clip's distinct
  latent frames; shared frames averaged with the crossfade weights), degraded with the keyed noise,
  and integrated as one ODE whose velocity is, at every step and in every frame, the weighted mean of
  the velocities of the windows covering it (`averaged_velocity`); each window is then decoded from
  its frames of the result and crossfaded in pixels as before (its overlap frames now agree). Input
  and output frames still stream, but the clip's latent is held in RAM: CO_DENOISE_BYTES_PER_VALUE
  bytes per latent value at the peak of the ODE, ~12.5 MB per latent frame (~3.1 MB per output frame)
  at 1080p (16 x 136 x 240 values), so ~4.5 GB for a minute at 24 fps, checked against the free RAM at
  plan time for the VAE's latent (`check_planned_clip_fits`, before any model work) and again after the
  first window's encode (`check_clip_latent_fits`: a chain with another latent; RAM the models took since).
  The device holds one window's model call, as with the other blends.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import LATENT_CHANNELS, VAE_SPATIAL_COMPRESSION, VAE_TEMPORAL_COMPRESSION
from ..devices import free_memory
from ..errors import FlashVideoInputError
from ..rng import cpu_generator, randn
from ..sampling.settings import offset_seed
from ..sampling.stage2_sampler import Velocity
from ..sampling.stages import VelocityWrap
from .windows import Window

CO_DENOISE_BYTES_PER_VALUE = 24
"""Peak bytes per clip-latent value while co-denoising, fp32 state: the degraded latent, the ODE state,
the Euler step's next state, the averaged velocity, its fp32 accumulator and the preview (4 B each)."""
CO_DENOISE_RAM_FRACTION = 0.8
"""Largest share of the free RAM the clip latent may take; the rest is for the windows' own work."""


def latent_frames_of(window: Window, frames_per_latent: int) -> tuple[tuple[int, int], ...]:
    """(first, last) clip pixel frame each latent frame of `window` encodes (see the module docstring).

    Raises FlashVideoInputError unless the window starts on the latent grid and its length is
    1 + a multiple of frames_per_latent.
    """
    c = frames_per_latent
    if window.start % c or (window.length - 1) % c:
        raise FlashVideoInputError(
            f"window {window.start}..{window.stop - 1} ({window.length} frames) is not on the {c}-frame latent "
            "grid; plan it with plan_windows(..., align=frames_per_latent).")
    s = window.start
    return ((s, s),) + tuple((s + c * (j - 1) + 1, s + c * j) for j in range(1, (window.length - 1) // c + 1))


@dataclass(frozen=True)
class LatentLayout:
    """A clip's windows on one latent: `frames` are the clip's distinct latent frames in order, each as
    the (first, last) pixel frame it encodes; window k's latent frames are frames[indices[k]] (a long
    tensor, (T_k,)), blended with weights[k] (float32 (T_k,), > 0: the crossfade of windows.blend_weights
    over the frames it shares with its neighbours, 1 elsewhere); total[g] = the sum of the weights
    on frame g."""

    frames: tuple[tuple[int, int], ...]
    indices: tuple[torch.Tensor, ...]
    weights: tuple[torch.Tensor, ...]
    total: torch.Tensor

    @classmethod
    def of(cls, windows: tuple[Window, ...] | list[Window], frames_per_latent: int) -> LatentLayout:
        """The layout of planned windows (in clip order) for a chain of frames_per_latent."""
        per_window = [latent_frames_of(w, frames_per_latent) for w in windows]
        frames = tuple(sorted({key for keys in per_window for key in keys}, key=lambda k: (k[1], k[0])))
        position = {key: g for g, key in enumerate(frames)}
        indices = tuple(torch.tensor([position[key] for key in keys], dtype=torch.long) for keys in per_window)
        weights = tuple(_crossfade(per_window, k) for k in range(len(windows)))
        total = torch.zeros(len(frames))
        for index, weight in zip(indices, weights, strict=True):
            total.index_add_(0, index, weight)
        return cls(frames, indices, weights, total)


def _crossfade(per_window: list[tuple[tuple[int, int], ...]], k: int) -> torch.Tensor:
    """Window k's weights: ramps over the latent frames it shares with window k-1 (up) and k+1 (down)."""
    keys = per_window[k]
    weight = torch.ones(len(keys))
    for other, up in ((k - 1, True), (k + 1, False)):
        if not 0 <= other < len(per_window):
            continue
        shared = [j for j, key in enumerate(keys) if key in set(per_window[other])]
        n = len(shared)
        for rank, j in enumerate(shared):
            ramp = (rank + 1) / (n + 1) if up else (n - rank) / (n + 1)
            weight[j] = min(float(weight[j]), ramp)
    return weight


class LatentMean:
    """Adds window latents (B, C, T_k, h, w) into the clip latent (B, C, G, h, w) as weighted sums; `result`
    divides by the weights. Window k's latent goes in with add(k, latent) in any order."""

    def __init__(self, layout: LatentLayout):
        self.layout = layout
        self.sums: torch.Tensor | None = None

    def add(self, k: int, latent: torch.Tensor) -> None:
        """Accumulate window k's latent (fp32 CPU)."""
        index, weight = self.layout.indices[k], self.layout.weights[k]
        if latent.shape[2] != index.numel():
            raise FlashVideoInputError(f"window {k} encoded {latent.shape[2]} latent frames; its layout has "
                                       f"{index.numel()}.")
        if self.sums is None:
            b, c, _, h, w = latent.shape
            self.sums = torch.zeros(b, c, len(self.layout.frames), h, w)
        self.sums.index_add_(2, index, latent.float() * weight.view(1, 1, -1, 1, 1))

    def result(self) -> torch.Tensor:
        """The clip latent (B, C, G, h, w) fp32: the weighted mean of the windows covering each frame."""
        sums, self.sums = self.sums, None
        return sums.div_(self.layout.total.view(1, 1, -1, 1, 1))


def frame_noise(seed: int, frames: tuple[tuple[int, int], ...], shape: tuple[int, ...]) -> torch.Tensor:
    """Degradation noise (B, C, len(frames), h, w) fp32 for latent frames given as (first, last) pixel frames.

    shape: the latent's (B, C, T, h, w) (T is ignored). Each latent frame's noise is drawn alone from
    rng.cpu_generator(noise_seed(seed, first, last)), so a frame gets the same noise in every window
    that holds it, whatever else the window holds.
    """
    b, c, _, h, w = shape
    return torch.cat([randn((b, c, 1, h, w), cpu_generator(noise_seed(seed, *key))) for key in frames], dim=2)


def noise_seed(seed: int, first: int, last: int) -> int:
    """Seed of the noise of the latent frame encoding pixel frames first..last: seed - 1 - 2 last, less 1 more
    for a latent frame of one pixel frame other than the clip's first (under a 4-frame grid a window's lone
    frame 0 ends where a 4-frame latent frame of the previous window ends). Unique per (first, last) on
    a grid; counting down keeps clear of the window seeds (seed + 1 + 1000003 i)."""
    lone = 1 if first == last > 0 else 0
    return offset_seed(seed, -(1 + 2 * last + lone))


def averaged_velocity(layout: LatentLayout) -> VelocityWrap:
    """A stages.VelocityWrap integrating the clip latent (B, C, G, h, w) on the CPU: the model's velocity of
    each window's frames z[:, :, indices[k]] (moved to the model's device), weighted by weights[k] and
    divided by total, frame by frame; fp32 accumulation, returned in the state's dtype."""

    def wrap(velocity: Velocity, device: torch.device) -> Velocity:
        def combined(z: torch.Tensor, t: float) -> torch.Tensor:
            total = torch.zeros(z.shape, dtype=torch.float32, device=z.device)
            for index, weight in zip(layout.indices, layout.weights, strict=True):
                v = velocity(z[:, :, index.to(z.device)].to(device), t)
                total.index_add_(2, index.to(z.device), v.float().to(z.device) * weight.view(1, 1, -1, 1, 1))
            return total.div_(layout.total.view(1, 1, -1, 1, 1)).to(z.dtype)

        return combined

    return wrap


def check_clip_latent_fits(layout: LatentLayout, latent: torch.Tensor, free_bytes: int | None = None) -> None:
    """Raise FlashVideoInputError if co-denoising the clip needs more than CO_DENOISE_RAM_FRACTION of the free
    RAM. latent: one window's encoded latent (B, C, T, h, w), giving the values per latent frame (the VAE's
    is also checked at plan time, check_planned_clip_fits; this covers other chains and RAM taken since).
    free_bytes: None = devices.free_memory("cpu")."""
    _check_ram(len(layout.frames), latent[:, :, :1].numel(), free_bytes)


def planned_clip_latent_values(windows: tuple[Window, ...] | list[Window], work_height: int,
                               work_width: int) -> tuple[int, int]:
    """(latent frames, values per latent frame) of the clip latent co_denoise holds for these windows with the
    VAE's chain (the real one: 4 pixel frames per latent frame after the first, 16 channels, 8x smaller
    frames) at the work size: exactly LatentLayout.of(windows, 4) and the encoded latent's frame."""
    keys = {key for window in windows for key in latent_frames_of(window, VAE_TEMPORAL_COMPRESSION)}
    scale = VAE_SPATIAL_COMPRESSION
    return len(keys), LATENT_CHANNELS * (work_height // scale) * (work_width // scale)


def check_planned_clip_fits(windows: tuple[Window, ...] | list[Window], work_height: int, work_width: int,
                            free_bytes: int | None = None) -> None:
    """check_clip_latent_fits before any model work, from the plan alone (plan.plan_enhance calls it for
    blend 'co_denoise'): the VAE chain's clip latent (planned_clip_latent_values) against the free RAM."""
    _check_ram(*planned_clip_latent_values(windows, work_height, work_width), free_bytes)


def _check_ram(frames: int, values_per_frame: int, free_bytes: int | None) -> None:
    """The co-denoise RAM rule: frames x values_per_frame x CO_DENOISE_BYTES_PER_VALUE within
    CO_DENOISE_RAM_FRACTION of the free RAM (free_bytes, None: devices.free_memory("cpu"))."""
    need = frames * values_per_frame * CO_DENOISE_BYTES_PER_VALUE
    free = free_memory("cpu") if free_bytes is None else free_bytes
    if need > CO_DENOISE_RAM_FRACTION * free:
        raise FlashVideoInputError(
            f"blend='co_denoise' holds the whole clip's latent in RAM: {frames} latent frames take "
            f"about {need / 2**30:.1f} GB at the peak, but {free / 2**30:.1f} GB is free. Use blend 'shared_noise' "
            "or 'pixel' (one window in memory), or enhance the clip in parts.")
