"""An automatic latent-degradation noise step from a window's frame count and resolution.

What the paper gives (SPEC.md, paper 6.1 and Table 10): 49 frames at 1080p use noise step 675
(recommended 650-750), and 17 frames worked at 500. Fewer frames need less noise: with fewer frames
there is less redundant evidence across frames, so the same noise wipes out more of the content
Stage II must keep.

The rule (used when the user picks noise step "auto"):

    step = 675 + 127 * log2(T / 13) + 63 * log2(P / (1080 * 1920)),   clamped to [500, 750]

- T = latent frames of the window, (F - 1) / 4 + 1 rounded up (17 frames -> 5, 49 -> 13).
  The frame slope 127 = (675 - 500) / log2(13 / 5) puts both of the paper's points exactly on the
  rule: 49 frames -> 675, 17 frames -> 500 (at 1080p).
- P = output pixels per frame. Resolution acts the same way as frames (more tokens carry more
  redundant evidence, so the image survives more noise; it is why SD3 shifts its schedule toward
  noise at high resolution), on a log scale. We give it half the frame slope, 63 per doubling of
  the pixel count, as neighbouring pixels are partly redundant already inside the VAE's 8x8 patches.
  So 49 frames: 720p -> 601, 1080p -> 675, 2K (1440x2560) -> 728.
- The clamp keeps the result inside the range the paper reports results for: 500 (its 17-frame
  run) to 750 (the top of its recommended range). Outside it there is no evidence.

The manual value (default 675) stays available; "auto" is a starting point, not a measured optimum
for every source.
"""

from __future__ import annotations

import math

from ..config import DEFAULT_NOISE_STEP, VAE_TEMPORAL_COMPRESSION
from ..errors import FlashVideoInputError

REFERENCE_LATENT_FRAMES = 13
REFERENCE_PIXELS = 1080 * 1920
FRAME_SLOPE = (DEFAULT_NOISE_STEP - 500) / math.log2(13 / 5)
"""Noise steps per doubling of the latent frame count (~126.9), fitted to 17 -> 500 and 49 -> 675."""
PIXEL_SLOPE = FRAME_SLOPE / 2
"""Noise steps per doubling of the pixel count (~63.5)."""
MIN_AUTO_STEP, MAX_AUTO_STEP = 500, 750


def auto_noise_step(num_frames: int, height: int, width: int) -> int:
    """Noise step (int in [500, 750]) for a window of `num_frames` frames at width x height output pixels.

    See the module docstring for the rule and its anchors (17 frames -> 500, 49 frames at 1080p -> 675).
    """
    for name, value in (("num_frames", num_frames), ("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise FlashVideoInputError(f"{name}={value!r} must be a positive integer.")
    latent_frames = -(-(num_frames - 1) // VAE_TEMPORAL_COMPRESSION) + 1
    step = (
        DEFAULT_NOISE_STEP
        + FRAME_SLOPE * math.log2(latent_frames / REFERENCE_LATENT_FRAMES)
        + PIXEL_SLOPE * math.log2(height * width / REFERENCE_PIXELS)
    )
    return int(min(MAX_AUTO_STEP, max(MIN_AUTO_STEP, round(step))))


def resolve_noise_step(noise_step: int | str, num_frames: int, height: int, width: int) -> int:
    """`noise_step` as an int: "auto" -> auto_noise_step(...); an int 0..999 -> itself; else an error."""
    if isinstance(noise_step, str) and noise_step.strip().lower() == "auto":
        return auto_noise_step(num_frames, height, width)
    if isinstance(noise_step, bool) or not isinstance(noise_step, int) or not 0 <= noise_step <= 999:
        raise FlashVideoInputError(
            f"noise_step={noise_step!r} must be 'auto' or an integer 0-999 (default 675; paper 650-750)."
        )
    return noise_step
