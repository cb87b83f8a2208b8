"""Enhance Video's optional `blend` input (EnhanceSettings.blend): checked at validation, run on tiny weights."""

import pytest
import torch

from nodes import NODE_CLASS_MAPPINGS as N

from .comfy_validation import validate_like_comfyui


def test_blend_is_checked_with_the_overlap_at_validation():
    enhance = N["FlashVideoEnhanceImages"]
    assert enhance.INPUT_TYPES()["optional"]["blend"][0] == ["pixel", "shared_noise", "co_denoise"]
    assert validate_like_comfyui(enhance, {"window": 9, "overlap": 6, "blend": "pixel"}) is True
    message = validate_like_comfyui(enhance, {"window": 9, "overlap": 6, "blend": "co_denoise"})
    assert "overlap=6 is too large for window=9 with latent blending" in message and "overlap <= 5" in message
    assert "blend='latent' must be one of pixel, shared_noise, co_denoise" in validate_like_comfyui(
        enhance, {"blend": "latent"})


@pytest.mark.parametrize("blend", ["shared_noise", "co_denoise"])
def test_the_node_runs_the_latent_blends(comfy_models, blend):
    stage2 = N["FlashVideoStage2Loader"]().load("stage2.pt", "auto", "keep on device")[0]
    vae = N["FlashVideoVAELoader"]().load("3d-vae.pt", "fp32", "offload after use")[0]
    t5 = N["FlashVideoT5Loader"]().load("text_encoder/", "auto (tokenizer/ beside the encoder)", "auto",
                                        "offload after use")[0]
    embeds = N["FlashVideoTextEncode"]().encode(t5, "A lake.", False)[0]
    images = torch.rand(13, 16, 16, 3, generator=torch.Generator().manual_seed(0))
    run = N["FlashVideoEnhanceImages"]().enhance
    args = (stage2, vae, embeds, images, "long edge", 16, True, 675, 1, 13.0, 2.5, 9, 5, False, 0, False)
    out = run(*args, blend=blend)[0]
    assert out.shape == (13, 16, 16, 3) and not torch.equal(out, run(*args)[0])  # not the pixel blend
