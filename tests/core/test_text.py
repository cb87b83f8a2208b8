"""Prompt encoding follows the official rules; T5 loads from folders and single files."""

import pytest
import torch

from flashvideo_core.devices import on_device
from flashvideo_core.errors import CheckpointError, FlashVideoInputError
from flashvideo_core.text.encoder import check_prompt, load_text_encoder, write_tiny_t5, write_tiny_t5_single_file
from flashvideo_core.text.loading import load_t5_tokenizer

from ..equivalence import assert_same_outputs, assert_same_weights
from ..spies import spy_on_t5_forward


@pytest.fixture(scope="module")
def t5_dirs(tmp_path_factory):
    return write_tiny_t5(tmp_path_factory.mktemp("t5"))


@pytest.fixture(scope="module")
def encoder(t5_dirs):
    return load_text_encoder(t5_dirs[0])


def test_encoding_is_226_tokens_without_attention_mask(encoder):
    calls = []
    original = encoder.model.forward

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    encoder.model.forward = spy
    try:
        embeds = encoder.encode("a red fox runs through fresh snow")
    finally:
        del encoder.model.forward
    assert embeds.stage1.shape == (1, 226, 32) and embeds.stage1.dtype == torch.float32
    assert calls[0]["input_ids"].shape == (1, 226)
    assert calls[0].get("attention_mask") is None
    ids = encoder.tokenizer("a red fox runs through fresh snow", padding="max_length", max_length=226,
                            truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        direct = encoder.model(input_ids=ids).last_hidden_state
    assert torch.equal(embeds.stage1, direct)
    with torch.no_grad():
        masked = encoder.model(input_ids=ids, attention_mask=(ids != 0).long()).last_hidden_state
    assert not torch.allclose(embeds.stage1, masked)  # the padding tokens do take part, as in the official code


def test_encode_sends_the_ids_to_the_device_the_weights_are_on_now(t5_dirs):
    """Built for the CPU, then moved (as LoadedModel.active / on_device move it to a GPU): the ids follow.

    meta stands in for the GPU on a CPU-only machine; an encoder that kept the device it was built for
    would send the ids to the CPU ("Expected all tensors to be on the same device" on CUDA).
    """
    encoder = load_text_encoder(t5_dirs[0])  # device="cpu", as the T5 loader node builds it
    assert encoder.device == torch.device("cpu") and encoder.dtype == torch.float32
    seen = spy_on_t5_forward(encoder)
    meta = torch.device("meta")
    with on_device(encoder.model, meta, None):
        embeds = encoder.encode("a red fox runs through fresh snow", stage2_prefix=True)
        assert seen == [(meta, meta), (meta, meta)], f"token ids went to {[i for i, _ in seen]}, weights on meta"
        assert encoder.device == meta, "the encoder reads its device from its weights"
    assert embeds.stage1.device.type == "cpu" and embeds.stage1.dtype == torch.float32
    assert embeds.stage1.shape == (1, 226, 32)


def test_the_encoder_dtype_is_its_weights_dtype(t5_dirs):
    encoder = load_text_encoder(t5_dirs[0], dtype=torch.bfloat16)
    assert encoder.dtype == torch.bfloat16
    encoder.model.float()
    assert encoder.dtype == torch.float32
    assert encoder.encode("a lake").stage1.dtype == torch.float32


def test_token_count_and_truncation_are_reported(encoder):
    short = encoder.encode("a red fox")
    assert short.num_truncated == 0 and 2 <= short.num_tokens < 226
    long = encoder.encode(" ".join(["snow"] * 300))
    assert long.num_tokens > 226 and long.num_truncated == long.num_tokens - 226
    assert long.stage2_truncated == long.num_truncated  # no prefix: the same text
    text = " ".join(["snow"] * 300)
    prefixed = encoder.encode(text, stage2_prefix=True)
    extra = encoder.count_tokens("medium motion," + text) - encoder.count_tokens(text)  # the official prefix
    assert extra > 0 and prefixed.stage2_truncated == prefixed.num_truncated + extra
    fits = " ".join(["snow"] * 225)  # 225 + EOS = 226: fits alone, not with the prefix
    edge = encoder.encode(fits, stage2_prefix=True)
    assert edge.num_truncated == 0 and edge.stage2_truncated > 0, "the prefix alone can push a prompt over"


def test_prefix_changes_only_stage2(encoder):
    """(The zero unconditional embedding is built by sampling.guidance and tested there.)"""
    plain = encoder.encode("a lake at night")
    prefixed = encoder.encode("a lake at night", stage2_prefix=True)
    assert plain.stage1.shape == (1, 226, 32)
    assert plain.stage2 is plain.stage1
    assert torch.equal(prefixed.stage1, plain.stage1)
    assert not torch.equal(prefixed.stage2, plain.stage2)
    assert torch.equal(prefixed.stage2, encoder.encode("medium motion,a lake at night").stage1)


def test_single_file_and_folder_give_the_same_embedding(t5_dirs, encoder, tmp_path):
    single = write_tiny_t5_single_file(tmp_path / "t5xxl_tiny.safetensors", t5_dirs[0])
    other = load_text_encoder(single, t5_dirs[1])
    assert_same_weights(other.model, encoder.model)
    assert_same_outputs(other.encode("a red fox").stage1, encoder.encode("a red fox").stage1)


def test_fp8_single_file_is_upcast(t5_dirs, encoder, tmp_path):
    from safetensors.torch import load_file, save_file

    single = write_tiny_t5_single_file(tmp_path / "t5.safetensors", t5_dirs[0])
    state = load_file(str(single))
    fp8 = {k: (v.to(torch.float8_e4m3fn) if v.ndim == 2 else v) for k, v in state.items()}
    save_file(fp8, str(tmp_path / "t5_fp8.safetensors"))
    other = load_text_encoder(tmp_path / "t5_fp8.safetensors", t5_dirs[1])
    assert other.model.shared.weight.dtype == torch.float32
    assert torch.allclose(other.encode("a red fox").stage1, encoder.encode("a red fox").stage1, atol=0.5)


def test_tokenizer_json_folder_works(t5_dirs, tmp_path):
    tokenizer = load_t5_tokenizer(t5_dirs[1])
    tokenizer.save_pretrained(tmp_path / "tok")
    (tmp_path / "tok" / "spiece.model").unlink(missing_ok=True)
    assert (tmp_path / "tok" / "tokenizer.json").exists()
    again = load_t5_tokenizer(tmp_path / "tok")
    assert again("a red fox").input_ids == tokenizer("a red fox").input_ids


def test_missing_tokenizer_and_wrong_kind_are_clear(t5_dirs, tmp_path):
    (tmp_path / "alone").mkdir()
    single = write_tiny_t5_single_file(tmp_path / "alone" / "t5.safetensors", t5_dirs[0])
    with pytest.raises(CheckpointError, match="No T5 tokenizer found.*Searched"):
        load_text_encoder(single)
    torch.save({"state_dict": {"encoder.conv_in.conv.weight": torch.zeros(1)}}, tmp_path / "3d-vae.pt")
    with pytest.raises(CheckpointError, match="looks like CogVideoX 3D VAE"):
        load_text_encoder(tmp_path / "3d-vae.pt", t5_dirs[1])


def test_prompt_must_be_text(encoder):
    with pytest.raises(FlashVideoInputError, match="prompt must be text"):
        encoder.encode(["a", "list"])


def test_check_prompt_refuses_empty_prompts_unless_optional():
    for blank in ("", "   ", "\n\t"):
        with pytest.raises(FlashVideoInputError, match="prompt is empty; FlashVideo needs"):
            check_prompt(blank)
        assert check_prompt(blank, required=False) == blank  # enhance may run without a description
    assert check_prompt("a red fox") == "a red fox"
    assert check_prompt("un renard roux, 赤い狐 🦊") == "un renard roux, 赤い狐 🦊"  # any real Unicode is text


def test_a_non_utf8_prompt_is_named_by_position_not_a_tokenizer_type_error(encoder):
    bad = "a red \udcff fox"  # what Python's argv makes of the byte 0xff
    with pytest.raises(FlashVideoInputError, match=r"position 6 \(counting from 0, after 'a red '\).*UTF-8"):
        check_prompt(bad)
    with pytest.raises(FlashVideoInputError, match="position 6"):
        encoder.encode(bad)
    with pytest.raises(FlashVideoInputError, match="position 0"):
        encoder.encode("\ud83d", stage2_prefix=True)  # half an emoji from a JSON API
    assert encoder.encode("").num_tokens >= 1, "an empty text still encodes (enhance without a prompt)"
