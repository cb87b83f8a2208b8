"""Validation metrics of Stage II training on pixel videos: PSNR, low-frequency PSNR, log-spectral distance.

Inputs: `pred` and `target` of one shape, either one clip (3, T, H, W) or a batch (B, 3, T, H, W),
values in [-1, 1] (the VAE's pixel range; nothing is clamped here: clamp a decoded prediction first
if it should be judged as shown). Every reduction runs in float64 on CPU, so a result is the same
number on any device and for any input dtype.

- psnr: 10 log10(1 / MSE) with the MSE of the [0, 1]-scaled values (x + 1) / 2 over every element of
  the batch (one pooled MSE, not a mean of per-clip PSNRs), i.e. peak-to-peak 2.0 of [-1, 1].
  Identical inputs give math.inf.
- lowfreq_psnr: psnr after an area downscale of every frame by an integer `factor` (box average over
  factor x factor blocks; rows and columns past the last whole block dropped): detail finer than the
  factor does not count, so it judges colour and structure (whether the model kept what the input had).
- log_spectral_distance: for every frame and channel, P = |FFT2(x01)|^2 with the orthonormal FFT
  (sum of P = sum of x01^2), then sqrt(mean over all H x W frequencies of
  (log10(P_pred + EPS) - log10(P_target + EPS))^2), averaged over batch, channels and frames.
  Units: log10 of power (bels; x10 for decibels). 0 for identical inputs; blur or missing detail
  raises it through the high frequencies.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import FlashVideoInputError

LSD_EPS = 1e-8
"""Added to every power before the log: below the power of 8-bit quantisation noise (about 1.3e-6 per
frequency on the [0, 1] scale), so it only keeps exact zeros finite."""

_LSD_CHUNK = 4
"""Frames whose spectra log_spectral_distance holds at once."""


def _pair(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pred, target) as float64 CPU batches (B, 3, T, H, W) on the [0, 1] scale, after the shape checks."""
    for name, value in (("pred", pred), ("target", target)):
        if not isinstance(value, torch.Tensor) or value.ndim not in (4, 5) or value.shape[-4] != 3:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise FlashVideoInputError(f"{name} must be a pixel video (3, frames, height, width) or a batch "
                                       f"(batch, 3, frames, height, width) in [-1, 1]; got {shape}.")
    if pred.shape != target.shape:
        raise FlashVideoInputError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have one shape.")
    if pred.numel() == 0:
        raise FlashVideoInputError(f"pred and target {tuple(pred.shape)} hold no values.")
    pair = []
    for value in (pred, target):
        value = value.detach().to("cpu", torch.float64)
        pair.append(((value + 1.0) / 2.0).reshape((-1,) + tuple(value.shape[-4:])))
    return pair[0], pair[1]


def _psnr01(pred: torch.Tensor, target: torch.Tensor) -> float:
    mse = torch.mean((pred - target) ** 2).item()
    return math.inf if mse == 0.0 else 10.0 * math.log10(1.0 / mse)


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB of pred against target ((3, T, H, W) or (B, 3, T, H, W) in [-1, 1]); math.inf if identical."""
    pred01, target01 = _pair(pred, target)
    return _psnr01(pred01, target01)


def _frames(video: torch.Tensor) -> torch.Tensor:
    """(B, 3, T, H, W) -> (B*T, 3, H, W)."""
    batch, channels, frames, height, width = video.shape
    return video.transpose(1, 2).reshape(batch * frames, channels, height, width)


def lowfreq_psnr(pred: torch.Tensor, target: torch.Tensor, factor: int = 4) -> float:
    """PSNR in dB after a factor x factor box average of every frame (area downscale; see the module).

    factor: integer >= 1 (1 = psnr), at most the smaller frame edge. math.inf if the averages agree.
    """
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise FlashVideoInputError(f"factor={factor!r} must be an integer >= 1.")
    pred01, target01 = _pair(pred, target)
    if factor > min(pred01.shape[-2:]):
        raise FlashVideoInputError(f"factor={factor} is larger than the frames {tuple(pred01.shape[-2:])}.")
    low = [F.avg_pool2d(_frames(v), kernel_size=factor) for v in (pred01, target01)]
    return _psnr01(low[0], low[1])


def log_spectral_distance(pred: torch.Tensor, target: torch.Tensor, eps: float = LSD_EPS) -> float:
    """Mean per-frame, per-channel log-spectral distance (log10 units; formula in the module docstring)."""
    if not (isinstance(eps, float) and 0.0 < eps < 1.0):
        raise FlashVideoInputError(f"eps={eps!r} must be a float between 0 and 1 (default {LSD_EPS}).")
    pred01, target01 = _pair(pred, target)
    pred_frames, target_frames = _frames(pred01), _frames(target01)
    distances = []
    for start in range(0, pred_frames.shape[0], _LSD_CHUNK):  # a few frames at a time: the spectra are complex128
        logs = [torch.log10(torch.fft.fft2(v[start:start + _LSD_CHUNK], norm="ortho").abs() ** 2 + eps)
                for v in (pred_frames, target_frames)]  # (n, 3, H, W) each
        distances.append(torch.sqrt(torch.mean((logs[0] - logs[1]) ** 2, dim=(-2, -1))))  # (n, 3)
    return torch.cat(distances).mean().item()
