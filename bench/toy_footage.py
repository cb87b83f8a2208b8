"""Real footage for the toy-scale Stage II bench: pan/zoom clips of the photos bundled in scikit-image.

scikit-image's wheel ships a few real photographs inside the package (skimage/data/*.png|jpg; the
others in skimage.data are downloaded by pooch and are NOT used here, so this works offline). Each
clip is a smooth camera move over one photo: per frame an affine sampling grid (sub-pixel pan, slow
zoom, a small rotation) read with bicubic grid_sample, so consecutive frames hold the same content
shifted by fractions of a pixel, as real footage does. The photo is area-downscaled first so one
output pixel covers about one photo pixel (no aliasing, no blur from magnification).

Training, validation and test clips come from DIFFERENT photos (TRAIN_PHOTOS / VALIDATION_PHOTOS /
TEST_PHOTOS): the bench chooses settings on validation clips and reports on test clips, content the
model never saw and the choice never looked at.

Install: pip install -r bench/requirements-bench.txt (into the project's .venv).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

TRAIN_PHOTOS = ("astronaut.png", "motorcycle_left.png", "hubble_deep_field.jpg", "ihc.png", "retina.jpg",
                "color.png", "brick.png", "grass.png", "gravel.png", "camera.png", "moon.png")
VALIDATION_PHOTOS = ("rocket.jpg", "coins.png")
"""Kept out of training, used only to choose settings (a rocket on its pad; coins, grey)."""
TEST_PHOTOS = ("chelsea.png", "coffee.png")
"""Colour photos kept out of training and of every choice (a cat; a cup of coffee)."""

INSTALL_HINT = ("this bench needs scikit-image's bundled sample photos: "
                ".venv/bin/python -m pip install -r bench/requirements-bench.txt")


def _data_dir() -> Path:
    try:
        import skimage
    except ImportError as error:  # the bench's own dependency, not the project's
        raise SystemExit(INSTALL_HINT) from error
    return Path(skimage.__file__).parent / "data"


def load_photo(name: str, photo_px_per_out_px: float = 1.0, long_edge: int = 320) -> torch.Tensor:
    """One bundled photo as (3, H, W) float32 in [-1, 1], area-downscaled so its long edge is <= long_edge.

    Grey photos are repeated to 3 channels, an alpha channel is dropped.
    """
    from skimage import io

    array = io.imread(_data_dir() / name)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    image = torch.from_numpy(np.ascontiguousarray(array[..., :3])).permute(2, 0, 1).float() / 127.5 - 1.0
    factor = long_edge / max(image.shape[1:]) / photo_px_per_out_px
    if factor < 1.0:
        size = (max(8, round(image.shape[1] * factor)), max(8, round(image.shape[2] * factor)))
        image = F.interpolate(image[None], size=size, mode="area")[0]
    return image.clamp(-1.0, 1.0)


def load_photos(names: tuple[str, ...]) -> list[torch.Tensor]:
    """load_photo for each name."""
    return [load_photo(name) for name in names]


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def pan_zoom_clip(photo: torch.Tensor, frames: int, size: int, generator: torch.Generator,
                  speed: float = 1.5) -> torch.Tensor:
    """A (3, frames, size, size) clip in [-1, 1]: a smooth camera move over `photo` (3, H, W).

    The camera starts at a random point with a random scale (0.8-1.25 photo pixels per output pixel),
    moves up to `speed` output pixels per frame in a random direction, zooms by up to +-1.5 % and
    turns by up to +-0.4 degrees per frame. Reflection padding covers the rare frame that leaves the photo.
    """
    _, height, width = photo.shape
    scale = _uniform(generator, 0.8, 1.25)
    half_h, half_w = size * scale / height, size * scale / width  # half window in normalised coords
    cy, cx = _uniform(generator, -1 + half_h, 1 - half_h), _uniform(generator, -1 + half_w, 1 - half_w)
    angle0, direction = _uniform(generator, -0.1, 0.1), _uniform(generator, 0, 2 * math.pi)
    step = _uniform(generator, 0.0, speed) * 2.0 / size  # output px/frame in normalised output coords
    zoom, turn = _uniform(generator, -0.015, 0.015), math.radians(_uniform(generator, -0.4, 0.4))
    thetas = []
    for i in range(frames):
        s, a = (1.0 + zoom) ** i, angle0 + turn * i
        dy, dx = step * i * math.sin(direction), step * i * math.cos(direction)
        cos, sin = math.cos(a) * s, math.sin(a) * s
        thetas.append([[cos * half_w, -sin * half_w, cx + dx * half_w],
                       [sin * half_h, cos * half_h, cy + dy * half_h]])
    theta = torch.tensor(thetas, dtype=torch.float32)  # (frames, 2, 3)
    grid = F.affine_grid(theta, (frames, 3, size, size), align_corners=False)
    video = F.grid_sample(photo[None].expand(frames, -1, -1, -1), grid, mode="bicubic",
                          padding_mode="reflection", align_corners=False)
    return video.clamp(-1.0, 1.0).permute(1, 0, 2, 3).contiguous()


def held_out_clips(count: int, frames: int, size: int, photos: tuple[str, ...] = TEST_PHOTOS,
                   seed: int = 1234) -> torch.Tensor:
    """(count, 3, frames, size, size) clips of `photos` (TEST_PHOTOS or VALIDATION_PHOTOS), alternating
    between them, the same for every run (fixed seed)."""
    images = load_photos(photos)
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([pan_zoom_clip(images[i % len(images)], frames, size, generator) for i in range(count)])
