"""The toy-scale Stage II of bench_stage2_training.py: a narrow real FlashVideoTransformer trained by the
library's training loop (Algorithm 1) on pan/zoom clips of real photos, sampled with the library's sampler.

Everything that is the method comes from the library: the loop (training.loop.train_stage2: DEG_pixel,
encode, DEG_latent, t ~ U[0, 1), stage2_loss, AdamW, gradient clipping), the degradations
(training.pixel_degradation, training.latent_degradation), the sampler (sampling.stage2_sampler.
sample_euler_flow with sampling.guidance.stage2_velocity over sampling.schedule.stage2_time_grid) and the
metrics (training.metrics). This module supplies the data (PanZoomClips, a Sequence[TrainingSample] of
clips made on demand), the toy model's config, the stand-in latent space and a stepwise lr schedule
(LR_PHASES: the library loop keeps one lr per call, so train() calls it once per phase).

The stand-in latent space (no VAE weights exist here): ScaledCodec, the library's fixed 2x2
pixel-unshuffle (training.codec.PixelUnshuffleCodec, 12 channels at half size) x LATENT_SCALE, so its
spread is about 1 like the VAE latent x STAGE2_SCALE_FACTOR that DEG_latent's noise steps are made for.
What it does NOT reproduce: DEG_latent's noise decodes to pixel-scale noise here (2x2 cells), where a VAE
decodes it to coarse perturbations; even noise step 0 (sqrt(1 - a_0) = 0.029, 0.015 on the pixel scale)
is then as strong as the finest detail of these clips.

Claim 4's artefact (bench_stage2_training's docstring has the protocol): block_dct_quantise, JPEG-like 8x8
block DCT quantisation, at the scale block_scale_for_rms finds for a given RMS change of the input.

Captions are empty: the text embedding is zeros (8 tokens of width TEXT_DIM), the same as the
unconditional one, so CFG has nothing to separate and runs at cfg = 1.0 (v = v_cond).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import toy_footage

TEXT_DIM, TEXT_TOKENS = 32, 8
CFG = 1.0
"""Empty captions: cond == uncond (zeros), so any scale gives v_cond; 1.0 says so."""
SHIFT = 2.5
"""The Stage II time-grid shift (config.STAGE2_SHIFT)."""
LATENT_SCALE = 1.93
"""ScaledCodec's one scale: 1 / 0.517, the standard deviation of the bare unshuffle latent (= of the pixels)
over training clips."""


def library():
    """The library pieces the toy uses, imported here so a missing one is named clearly."""
    try:
        from flashvideo_core.training import codec, latent_degradation, loop, metrics, pixel_degradation, settings
    except ImportError as error:
        raise SystemExit(f"the Stage II training library is incomplete here: {error}") from error
    return codec, latent_degradation, loop, metrics, pixel_degradation, settings


def toy_config(layers: int = 4, heads: int = 2):
    """TransformerConfig of the toy Stage II: `layers` x (heads x 64) hidden, patch 2, 12 latent channels.

    patch^2 x channels = 48 <= hidden (128 at 2 heads), so a token can carry its patch and the noise.
    """
    from flashvideo_core.config import TransformerConfig

    return TransformerConfig(num_layers=layers, num_heads=heads, head_dim=64, time_embed_dim=128,
                             text_dim=TEXT_DIM, in_channels=12, out_channels=12, patch_size=2,
                             stage2_extras=True)


class ScaledCodec:
    """The toy's latent space: the library's PixelUnshuffleCodec (2x2, 12 channels) x LATENT_SCALE.

    encode: pixels (B, 3, F, H, W) in [-1, 1] -> (B, 12, F, H/2, W/2) x scale; decode inverts it exactly.
    """

    def __init__(self, scale: float = LATENT_SCALE):
        self.inner = library()[0].PixelUnshuffleCodec(factor=2)
        self.scale, self.channels = float(scale), self.inner.channels

    def encode(self, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.inner.encode(pixels, generator) * self.scale

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.inner.decode(latent / self.scale)


class PanZoomClips(Sequence):
    """A Sequence[TrainingSample] of `count` pan/zoom clips made on demand: clip i moves over photo
    i mod len(photos) along a path drawn from a generator seeded with (seed, i), so clip i is always the
    same clip. pixels (3, frames, size, size) in [-1, 1]; text (1, TEXT_TOKENS, TEXT_DIM) zeros."""

    def __init__(self, photos: list[torch.Tensor], frames: int, size: int, count: int = 1_000_000, seed: int = 0):
        self.photos, self.frames, self.size, self.count, self.seed = photos, frames, size, count, seed
        self.text = torch.zeros(1, TEXT_TOKENS, TEXT_DIM)
        self.sample_type = library()[2].TrainingSample

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int):
        if not -self.count <= index < self.count:
            raise IndexError(index)
        index %= self.count
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        clip = toy_footage.pan_zoom_clip(self.photos[index % len(self.photos)], self.frames, self.size, generator)
        return self.sample_type(clip, self.text)


def measure_latent_std(frames: int, size: int, clips: int = 256) -> float:
    """Standard deviation of the UNSCALED stand-in latent (= of the pixels) over `clips` training clips."""
    data = PanZoomClips(toy_footage.load_photos(toy_footage.TRAIN_PHOTOS), frames, size, seed=12345)
    return float(torch.stack([data[i].pixels for i in range(clips)]).std())


LR_PHASES = ((0.03, 0.1), (0.57, 1.0), (0.25, 0.3), (0.15, 0.1))
"""(share of the steps, lr factor) of each phase: a short warm-up, the peak, then two decays. The library
loop keeps one lr per call, so train() calls it once per phase (a fresh AdamW each time)."""


@dataclass(frozen=True)
class ToyRun:
    """One toy training run: clip size (pixels, square), frames, batch, optimiser steps in all, peak lr
    (stepped down by LR_PHASES), gradient clip, and the DEG_latent range ((0, 0) = DEG_pixel only:
    noise step 0, the smallest noise the schedule has, sqrt(1 - a_0) = 0.029)."""

    size: int = 16
    frames: int = 5
    batch: int = 8
    steps: int = 1500
    lr: float = 5e-4
    grad_clip: float = 1.0
    noise_steps: tuple[int, int] = (0, 0)
    seed: int = 0


def pixel_settings():
    """DEG_pixel of the toy: the library's default ranges, upscaled back with bicubic (the baseline)."""
    return library()[4].PixelDegradation(upscale_mode="bicubic")


def phase_settings(run: ToyRun) -> list:
    """The library's TrainSettings of each LR_PHASES phase of `run`: its steps, lr and seed (run.seed + phase,
    so every phase draws new clips); no unconditional share (every caption is the zero embedding)."""
    _, latent_degradation, _, _, _, settings = library()
    counts = [round(share * run.steps) for share, _ in LR_PHASES]
    counts[1] += run.steps - sum(counts)
    return [settings.TrainSettings(steps=count, batch=run.batch, lr=run.lr * factor, grad_clip=run.grad_clip,
                                   uncond_fraction=0.0, checkpoint_every=count, seed=run.seed + index,
                                   pixel=pixel_settings(), latent=latent_degradation.LatentDegradation(run.noise_steps))
            for index, (count, (_, factor)) in enumerate(zip(counts, LR_PHASES, strict=True)) if count > 0]


def train(run: ToyRun, log=print, data=None):
    """Train a fresh toy Stage II with training.loop.train_stage2 (once per lr phase) on `data` (a
    training.loop SampleSource; None: PanZoomClips of toy_footage.TRAIN_PHOTOS at run's frames and size).
    Returns (model in eval mode, wall seconds). The loop's checkpoints go to a temporary folder, deleted
    afterwards."""
    from flashvideo_core.model.transformer import build_transformer

    loop = library()[2]
    model = build_transformer(toy_config(), seed=run.seed)
    if data is None:
        data = PanZoomClips(toy_footage.load_photos(toy_footage.TRAIN_PHOTOS), run.frames, run.size, seed=run.seed)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="toy-stage2-") as out_dir:
        for index, settings in enumerate(phase_settings(run)):
            losses = loop.train_stage2(model, ScaledCodec(), data, settings, f"{out_dir}/phase-{index}").losses
            log(f"    phase {index}: {settings.steps} steps at lr {settings.lr:.2g}, mean loss "
                f"{sum(losses) / len(losses):.4f} (last 50: {sum(losses[-50:]) / len(losses[-50:]):.4f}), "
                f"{time.perf_counter() - start:.0f} s")
    return model.eval(), time.perf_counter() - start


def enhance_pixels(model, lr_pixels: torch.Tensor, steps: int, noise_step: int, seed: int = 7) -> torch.Tensor:
    """LR pixel clips (B, 3, T, H, W) in [-1, 1] -> the toy Stage II's output clips, clamped to [-1, 1].

    As the library's Stage II chain: encode (ScaledCodec), DEG_latent at `noise_step` (every step,
    0 included) from a generator seeded with `seed`, Euler over stage2_time_grid(steps, SHIFT) with
    stage2_velocity at CFG and `noise_step` fed to the model, decode.
    """
    from flashvideo_core.sampling.guidance import stage2_velocity
    from flashvideo_core.sampling.schedule import stage2_time_grid
    from flashvideo_core.sampling.stage2_sampler import sample_euler_flow

    latent_degradation = library()[1]
    codec, generator = ScaledCodec(), torch.Generator().manual_seed(seed)
    z = latent_degradation.degrade_latents(codec.encode(lr_pixels), torch.full((lr_pixels.shape[0],), noise_step),
                                           generator)
    velocity = stage2_velocity(model, torch.zeros(1, TEXT_TOKENS, TEXT_DIM), CFG, noise_step, torch.float32)
    with torch.no_grad():
        z = sample_euler_flow(velocity, z.float(), stage2_time_grid(steps, SHIFT))
    return codec.decode(z).clamp(-1.0, 1.0)


def scores(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """PSNR, low-frequency PSNR (4x4 box) and log-spectral distance of pred against target, library metrics."""
    metrics = library()[3]
    return {"psnr": metrics.psnr(pred, target), "lf_psnr": metrics.lowfreq_psnr(pred, target),
            "lsd": metrics.log_spectral_distance(pred, target)}


JPEG_LUMINANCE = torch.tensor([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55], [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62], [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], dtype=torch.float64)
"""The JPEG luminance quantisation table (ITU-T T.81 Annex K.1), 0-255 pixel units; IJG quality 50 = scale 1."""


def _dct_matrix(n: int = 8) -> torch.Tensor:
    """The orthonormal DCT-II matrix (n, n): row k is basis k, so coefficients = D @ block @ D.T."""
    k, i = torch.arange(n, dtype=torch.float64)[:, None], torch.arange(n, dtype=torch.float64)[None, :]
    matrix = torch.cos(torch.pi * (2 * i + 1) * k / (2 * n)) * (2.0 / n) ** 0.5
    matrix[0] /= 2.0 ** 0.5
    return matrix


def block_dct_quantise(pixels: torch.Tensor, scale: float) -> torch.Tensor:
    """JPEG-like blocking artefact: (B, 3, F, H, W) in [-1, 1], H and W multiples of 8 -> the same layout.

    Every frame and channel separately: 8x8 blocks on a fixed grid from the top-left, orthonormal DCT-II of
    pixels x 127.5 (JPEG's level-shifted 0-255 scale), each coefficient rounded to a multiple of
    scale x JPEG_LUMINANCE (steps below 1 become 1; no clamp at 255), inverse DCT, clamped to [-1, 1].
    """
    b, c, f, h, w = pixels.shape
    if h % 8 or w % 8:
        raise ValueError(f"block_dct_quantise needs frames of a multiple of 8 pixels, got {h}x{w}")
    d = _dct_matrix(8)
    blocks = (pixels.double() * 127.5).reshape(b, c, f, h // 8, 8, w // 8, 8).transpose(4, 5)
    step = (JPEG_LUMINANCE * scale).clamp(min=1.0)
    coefficients = torch.round(d @ blocks @ d.T / step) * step
    out = (d.T @ coefficients @ d).transpose(4, 5).reshape(b, c, f, h, w) / 127.5
    return out.to(pixels.dtype).clamp(-1.0, 1.0)


def rms_change(before: torch.Tensor, after: torch.Tensor) -> float:
    """Root mean square of after - before (pixel units of [-1, 1])."""
    return float((after.double() - before.double()).pow(2).mean().sqrt())


def block_scale_for_rms(pixels: torch.Tensor, target_rms: float, iterations: int = 40) -> float:
    """The block_dct_quantise scale whose rms_change of `pixels` is `target_rms`: bisection over log2(scale)
    in [-6, 12] (the change grows with the scale)."""
    low, high = -6.0, 12.0
    for _ in range(iterations):
        middle = (low + high) / 2.0
        if rms_change(pixels, block_dct_quantise(pixels, 2.0 ** middle)) < target_rms:
            low = middle
        else:
            high = middle
    return 2.0 ** ((low + high) / 2.0)
