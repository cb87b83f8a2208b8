"""Layout conversions round-trip and the shared checks name the bad input."""

import pytest
import torch

from flashvideo_core.errors import FlashVideoInputError
from flashvideo_core.layout import (
    check_latent,
    check_num_frames,
    check_pixel_size,
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
