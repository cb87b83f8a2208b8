"""Prompt checks and encoding with the official rules: T5 v1.1, exactly 226 tokens, no attention mask.

The unconditional embedding is not encoded: it is all zeros, built by sampling.guidance.

Imports no transformers until a model is loaded, so check_prompt is cheap to import (CLI, nodes).
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm
import torch
from safetensors.torch import save_file

from ..config import STAGE2_PROMPT_PREFIX, TEXT_TOKENS
from ..devices import model_device, model_dtype
from ..errors import FlashVideoInputError


@dataclass(frozen=True)
class PromptEmbeds:
    """One prompt's embeddings for both stages (so the two stages cannot get different prompts).

    stage1, stage2: (1, 226, D) float32 on CPU; stage2 is the "medium motion," prefixed encoding when
    stage2_prefix is on, else the same tensor as stage1. num_tokens counts the prompt's tokens
    (with EOS) before truncation; num_truncated how many of them were cut; stage2_truncated how many
    were cut from the Stage II text (the prefix takes room too, so it can be more).
    """

    stage1: torch.Tensor
    stage2: torch.Tensor
    prompt: str
    num_tokens: int
    num_truncated: int
    stage2_prefix: bool = False
    stage2_truncated: int = 0

    @property
    def width(self) -> int:
        """The embedding width d_model (4096 for T5 v1.1 XXL)."""
        return self.stage1.shape[-1]


EMPTY_PROMPT = "prompt is empty; FlashVideo needs a (preferably long, detailed) description."


def check_prompt(prompt, name: str = "prompt", required: bool = True) -> str:
    """Return `prompt` if it is text the tokenizer can read; raise FlashVideoInputError otherwise.

    Refused: anything but a str; with `required`, an empty or blank prompt (the CLI's generate and
    the Text Encode node need a description; enhance may go without); characters that are not valid
    Unicode text (lone surrogates such as '\\udcff', which Python makes of bytes that are not UTF-8,
    e.g. in a command-line argument), named by position with the fix.
    """
    if not isinstance(prompt, str):
        raise FlashVideoInputError(f"{name} must be text; got {type(prompt).__name__}.")
    if required and not prompt.strip():
        raise FlashVideoInputError(EMPTY_PROMPT.replace("prompt", name, 1))
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as exc:
        before = prompt[max(0, exc.start - 20):exc.start]
        raise FlashVideoInputError(
            f"{name} has a character that is not valid text at position {exc.start} (counting from 0, after "
            f"{before!r}): {prompt[exc.start]!r} is a lone surrogate, what Python makes of bytes that are not "
            "UTF-8. Save the prompt as UTF-8 (or set the terminal's locale to UTF-8) and give it again."
        ) from None
    return prompt


class TextEncoder:
    """A T5 encoder and its tokenizer, applying the FlashVideo encode rules.

    The model is placed on `device` in `dtype` once, here; after that the encoder keeps no device of its
    own: encode sends the token ids to wherever the weights are now (devices.model_device), so a handle
    that moves the weights (devices.on_device, a node's offload) needs no second place to update.
    """

    def __init__(self, tokenizer, model, device="cpu", dtype: torch.dtype = torch.float32):
        self.tokenizer = tokenizer
        self.model = model.to(device=device, dtype=dtype).eval()

    @property
    def device(self) -> torch.device:
        """Where the T5 weights are now (read from them, never stored)."""
        return model_device(self.model)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the T5 weights now (read from them, never stored)."""
        return model_dtype(self.model)

    def count_tokens(self, prompt: str) -> int:
        """Tokens the prompt needs including EOS, before truncation."""
        return len(self.tokenizer(prompt, add_special_tokens=True).input_ids)

    def _encode_text(self, text: str) -> torch.Tensor:
        """text -> (1, 226, d_model) float32 on CPU; the ids go to the device the weights are on now."""
        ids = self.tokenizer(
            text, padding="max_length", max_length=TEXT_TOKENS, truncation=True, add_special_tokens=True,
            return_tensors="pt",
        ).input_ids
        with torch.no_grad():
            hidden = self.model(input_ids=ids.to(self.device)).last_hidden_state  # no attention mask, as official
        return hidden.float().cpu()

    def encode(self, prompt: str, stage2_prefix: bool = False) -> PromptEmbeds:
        """prompt -> PromptEmbeds (1, 226, d_model) for both stages; check_prompt(required=False) first."""
        check_prompt(prompt, required=False)
        stage1 = self._encode_text(prompt)
        stage2 = self._encode_text(STAGE2_PROMPT_PREFIX + prompt) if stage2_prefix else stage1
        count = self.count_tokens(prompt)
        count2 = self.count_tokens(STAGE2_PROMPT_PREFIX + prompt) if stage2_prefix else count
        return PromptEmbeds(stage1, stage2, prompt, count, max(0, count - TEXT_TOKENS), stage2_prefix,
                            max(0, count2 - TEXT_TOKENS))


def load_text_encoder(
    encoder_path, tokenizer_path=None, device="cpu", dtype: torch.dtype = torch.float32, callback=None,
    weights: str = "default",
):
    """TextEncoder from a text_encoder/ folder or a single T5 safetensors, with its tokenizer.

    weights: "default" or "fp8_e4m3fn" (fp8 Linear weights in the blocks, see loading.load_t5_encoder).

    tokenizer_path None: look for tokenizer/ beside the encoder (the CogVideoX layout).
    callback: ProgressEvent("load <name>", MB done, MB total) while the weights are read.
    """
    from .loading import find_tokenizer, load_t5_encoder, load_t5_tokenizer  # transformers: only when needed

    tokenizer = load_t5_tokenizer(find_tokenizer(encoder_path, tokenizer_path))
    model = load_t5_encoder(encoder_path, dtype=dtype, callback=callback, weights=weights)
    if len(tokenizer) > model.config.vocab_size:
        raise FlashVideoInputError(
            f"The tokenizer has {len(tokenizer)} tokens but the encoder only {model.config.vocab_size}: "
            "they do not belong together."
        )
    return TextEncoder(tokenizer, model, device=device, dtype=dtype)


TINY_WORDS = (
    "a red fox runs through fresh snow at sunrise long shadows cinematic the camera pans slowly across quiet "
    "lake with mountains in background woman blue coat walks along busy city street night neon lights small "
    "cube rotates on wooden table soft morning light lighthouse storm waves crashing medium motion"
).split()


def _tiny_spiece_model(seed: int = 0) -> bytes:
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(TINY_WORDS) for _ in range(12)) for _ in range(300)]
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buffer, vocab_size=100, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False, minloglevel=2,
        num_threads=1,
    )
    return buffer.getvalue()


def _tiny_t5_config(vocab_size: int):
    from transformers import T5Config  # transformers: only when a model is made (module docstring)

    return T5Config(
        vocab_size=vocab_size, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
        feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False,
    )


def write_tiny_t5(dest_dir: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """Write a tiny random T5 encoder and a real SentencePiece tokenizer in the CogVideoX layout.

    dest_dir/text_encoder/{config.json, model.safetensors}, dest_dir/tokenizer/{spiece.model,
    tokenizer_config.json, special_tokens_map.json}. Deterministic in seed. Returns both folders.
    """
    from transformers import T5EncoderModel  # transformers: only when a model is made (module docstring)

    from .loading import load_t5_tokenizer  # (transformers, as above)

    dest = Path(dest_dir)
    tokenizer_dir, encoder_dir = dest / "tokenizer", dest / "text_encoder"
    tokenizer_dir.mkdir(parents=True, exist_ok=True)
    (tokenizer_dir / "spiece.model").write_bytes(_tiny_spiece_model(seed))
    special = {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    (tokenizer_dir / "special_tokens_map.json").write_text(json.dumps(special))
    (tokenizer_dir / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "T5Tokenizer", "model_max_length": TEXT_TOKENS, "extra_ids": 0, **special})
    )
    vocab = len(load_t5_tokenizer(tokenizer_dir))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = T5EncoderModel(_tiny_t5_config(vocab))
    model.save_pretrained(encoder_dir, safe_serialization=True)
    return encoder_dir, tokenizer_dir


def write_tiny_t5_single_file(path: str | Path, encoder_dir: str | Path) -> Path:
    """Save the encoder of `encoder_dir` as one ComfyUI-style safetensors file (encoder.* + shared.weight)."""
    from .loading import load_t5_encoder  # imports transformers: only when a model is loaded

    model = load_t5_encoder(encoder_dir)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}
    save_file(state, str(path))
    return Path(path)
