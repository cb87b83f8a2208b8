"""The models an enhance run loads from a weights folder: the prompt encoded by T5 (then released),
Stage II and the VAE, as one Stage2Models bundle."""

from __future__ import annotations

import gc
import logging

import torch

from .. import config
from ..model.lora_adapter import LoraChoice
from ..progress import ProgressCallback
from ..sampling.stage2_chain import Stage2Models
from ..weights import loaders

logger = logging.getLogger(__name__)


def load_stage2_models(weights: loaders.WeightPaths, prompt: str, stage2_prefix: bool, device: torch.device,
                       dtype: torch.dtype, callback: ProgressCallback | None = None,
                       stage2_lora: LoraChoice | None = None) -> Stage2Models:
    """Encode `prompt` for Stage II with T5 (then released), load Stage II (with stage2_lora applied, if
    given) and the VAE: a Stage2Models."""
    encoder = loaders.load_text_encoder(weights.text_encoder, weights.tokenizer, device=device, dtype=dtype,
                                        callback=callback)
    embeds = encoder.encode(prompt, stage2_prefix=stage2_prefix)
    if embeds.stage2_truncated:  # Stage II's text, with the prefix when it is on
        logger.warning("the prompt had %d tokens; %d beyond %d were cut.", embeds.num_tokens,
                       embeds.stage2_truncated, config.TEXT_TOKENS)
    del encoder
    gc.collect()
    transformer = loaders.load_stage2(weights.stage2, device=device, dtype=dtype, callback=callback)
    if stage2_lora is not None:
        transformer = stage2_lora.apply(transformer)
    vae = loaders.load_vae(weights.vae, device=device, dtype=dtype, callback=callback)
    return Stage2Models(transformer, vae, embeds.stage2)
