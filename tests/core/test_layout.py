"""Layout conversions round-trip and the shared checks name the bad input."""

import pytest
import torch

from flashvideo_core.errors import FlashVideoInputError
from flashvideo_core.layout import (
    check_latent,
    check_num_frames,
    check_pixel_size,
    checked_images,
    image_to_video,
    latent_frames,
    latent_to_transformer,
    pixel_frames,
    transformer_to_latent,
    video_to_image,
)


def test_latent_transformer_round_trip():
    latent = torch.randn(1, 16, 3, 4, 6)
    hidden = latent_to_transformer(latent)
    assert hidden.shape == (1, 3, 16, 4, 6)
    assert torch.equal(transformer_to_latent(hidden), latent)


def test_image_video_round_trip_and_ranges():
    images = torch.rand(5, 8, 12, 3)
    video = image_to_video(images)
    assert video.shape == (1, 3, 5, 8, 12)
    assert video.min() >= -1 and video.max() <= 1
    assert torch.allclose(video_to_image(video), images, atol=1e-6)


def test_frame_arithmetic():
    assert [latent_frames(f) for f in (1, 5, 49)] == [1, 2, 13]
    assert [pixel_frames(t) for t in (1, 2, 13)] == [1, 5, 49]


@pytest.mark.parametrize("frames", [0, 2, 48, 50, -3])
def test_bad_frame_counts_name_the_input(frames):
    with pytest.raises(FlashVideoInputError, match=r"frames=.*4k\+1"):
        check_num_frames(frames, "frames")


def test_good_frame_counts_pass():
    for frames in (1, 5, 17, 49, 129):
        check_num_frames(frames)


def test_sizes_must_be_multiples_of_16():
    check_pixel_size(256, 480)
    with pytest.raises(FlashVideoInputError, match="height=270 must be a multiple of 16"):
        check_pixel_size(270, 480)
    with pytest.raises(FlashVideoInputError, match="width=8"):
        check_pixel_size(256, 8)


def test_latent_checks():
    check_latent(torch.zeros(1, 16, 2, 4, 6))
    with pytest.raises(FlashVideoInputError, match="4 dims|shape"):
        check_latent(torch.zeros(1, 4, 8, 8))
    with pytest.raises(FlashVideoInputError, match="has 4 channels.*another model family"):
        check_latent(torch.zeros(1, 4, 2, 4, 6))
    with pytest.raises(FlashVideoInputError, match="even"):
        check_latent(torch.zeros(1, 16, 2, 5, 6))


def test_checked_images_names_the_first_nan_or_inf_frame():
    images = torch.rand(7, 8, 12, 3)
    images[4, 3, 5, 1] = float("nan")
    images[6, 0, 0, 0] = float("inf")
    with pytest.raises(FlashVideoInputError, match=r"images frame 4 \(counting from 0\) holds NaN or Inf.*2 of 7"):
        checked_images(images)
    rgba = torch.cat([torch.rand(3, 8, 8, 3), torch.ones(3, 8, 8, 1)], dim=-1)
    rgba[2, 1, 1, 0] = -float("inf")  # non-contiguous after the alpha is dropped: the other reduction path
    with pytest.raises(FlashVideoInputError, match="frame 2 "):
        checked_images(rgba)


def test_checked_images_refuses_a_0_255_float_batch_with_the_range_and_the_fix():
    images = torch.rand(5, 8, 12, 3) * 255
    with pytest.raises(FlashVideoInputError, match=r"0\.\.1 .*found 0\.\d+\.\.254\.\d+.*divide them by 255"):
        checked_images(images)
    with pytest.raises(FlashVideoInputError, match=r"-1\.\.1 values.*\(x \+ 1\) / 2"):
        checked_images(torch.rand(5, 8, 12, 3) * 2 - 1)
    with pytest.raises(FlashVideoInputError, match="dtype torch.int32"):
        checked_images(torch.zeros(1, 8, 8, 3, dtype=torch.int32))


def test_checked_images_converts_uint8_as_the_float_path_does():
    pixels = torch.randint(0, 256, (5, 8, 12, 3), dtype=torch.uint8)
    as_float = checked_images(pixels.float() / 255)
    converted = checked_images(pixels)
    assert converted.dtype == torch.float32 and torch.equal(converted, as_float)
    assert converted.min() >= 0 and converted.max() <= 1 and float(converted.max()) > 0.9
    assert torch.equal(checked_images(pixels[..., :1]), checked_images(pixels[..., :1].float() / 255))


def test_checked_images_clamps_small_overshoots_and_keeps_good_batches_uncopied():
    images = torch.rand(5, 8, 12, 3)
    assert checked_images(images) is images, "a float32 batch in 0..1 is used as it is (no copy)"
    rung = images * 1.02 - 0.01  # -0.01..1.01, as a bicubic resize leaves it
    clamped = checked_images(rung)
    assert clamped.min() == 0 and clamped.max() == 1 and torch.equal(clamped, rung.clamp(0, 1))
    assert rung.min() < 0, "the input itself is not changed"
    assert checked_images(images.half()).dtype == torch.float32
