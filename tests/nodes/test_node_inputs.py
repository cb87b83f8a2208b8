"""IMAGE and prompt inputs are checked at the node entry, with the same core checks as the CLI."""

import re

import pytest
import torch

from flashvideo_core.errors import FlashVideoInputError
from nodes import NODE_CLASS_MAPPINGS as N

from .comfy_validation import validate_like_comfyui

AUTO_TOKENIZER = "auto (tokenizer/ beside the encoder)"


@pytest.fixture()
def models(comfy_models):
    stage2 = N["FlashVideoStage2Loader"]().load("stage2.pt", "auto", "keep on device")[0]
    vae = N["FlashVideoVAELoader"]().load("3d-vae.pt", "fp32", "offload after use")[0]
    t5 = N["FlashVideoT5Loader"]().load("text_encoder/", AUTO_TOKENIZER, "auto", "offload after use")[0]
    return stage2, vae, t5


def _enhance(models, images):
    stage2, vae, t5 = models
    embeds = N["FlashVideoTextEncode"]().encode(t5, "A lake.", False)[0]
    return N["FlashVideoEnhanceImages"]().enhance(stage2, vae, embeds, images, "x2", 1920, True, 675, 1, 13.0, 2.5,
                                                  5, 0, False, 0)[0]


def _prepare(vae, images):
    return N["FlashVideoPrepareStage2"]().prepare(vae, images, 32, 32, 0)[0]["samples"]


def _no_model_call(module, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model ran on a refused input")

    monkeypatch.setattr(module, "forward", refuse)


def test_one_nan_pixel_is_refused_by_enhance_naming_the_frame(models, monkeypatch):
    images = torch.rand(5, 16, 16, 3)
    images[3, 7, 7, 2] = float("nan")
    _no_model_call(models[0].module, monkeypatch)
    with pytest.raises(FlashVideoInputError, match=r"images frame 3 \(counting from 0\) holds NaN"):
        _enhance(models, images)


def test_a_0_255_float_batch_is_refused_by_enhance_and_prepare(models):
    images = torch.rand(5, 16, 16, 3) * 255
    with pytest.raises(FlashVideoInputError, match="divide them by 255"):
        _enhance(models, images)
    with pytest.raises(FlashVideoInputError, match=r"found .*\.\.2\d\d.*divide them by 255"):
        _prepare(models[1], images)
    nan = torch.rand(5, 16, 16, 3)
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(FlashVideoInputError, match="frame 0 "):
        _prepare(models[1], nan)


def test_uint8_images_give_what_the_same_frames_in_0_1_give(models):
    pixels = torch.randint(0, 256, (5, 16, 16, 3), dtype=torch.uint8)
    as_float = pixels.float() / 255
    assert torch.equal(_prepare(models[1], pixels), _prepare(models[1], as_float))
    assert torch.equal(_enhance(models, pixels), _enhance(models, as_float))


def test_small_overshoots_are_clamped_not_refused(models):
    images = torch.rand(5, 16, 16, 3)
    rung = images * 1.02 - 0.01  # -0.01..1.01, as a bicubic resize leaves it
    assert torch.equal(_prepare(models[1], rung), _prepare(models[1], rung.clamp(0, 1)))


@pytest.mark.parametrize(("prompt", "message"), [
    ("", "prompt is empty; FlashVideo needs"), (" \n ", "prompt is empty"),
    ("a \udcff cat", r"position 2 \(counting from 0, after 'a '\).*Save the prompt as UTF-8"),
])
def test_text_encode_refuses_what_the_cli_refuses(models, prompt, message):
    encode = N["FlashVideoTextEncode"]
    answer = validate_like_comfyui(encode, {"prompt": prompt, "stage2_prefix": False})
    assert isinstance(answer, str) and re.search(message, answer), answer
    with pytest.raises(FlashVideoInputError, match=message):
        encode().encode(models[2], prompt, False)


def test_text_encode_validation_passes_good_and_linked_prompts():
    encode = N["FlashVideoTextEncode"]
    assert validate_like_comfyui(encode, {"prompt": "A lake at dawn.", "stage2_prefix": True}) is True
    assert validate_like_comfyui(encode, {"stage2_prefix": True}, linked={"prompt"}) is True
