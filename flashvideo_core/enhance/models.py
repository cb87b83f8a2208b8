"""The models an enhance run loads from a weights folder: the prompt encoded by T5 (then released),
Stage II and the VAE, as one Stage2Models bundle."""

from __future__ import annotations

import gc
import logging

import torch

from .. import config
from ..devices import move_model
from ..model.lora_adapter import LoraChoice
from ..modes.settings import ModelModes
from ..planning.use import apply_modes
from ..progress import ProgressCallback
from ..sampling.stage2_chain import Stage2Models
from ..weights import loaders

logger = logging.getLogger(__name__)


def load_stage2_models(weights: loaders.WeightPaths, prompt: str, stage2_prefix: bool, device: torch.device,
                       dtype: torch.dtype, callback: ProgressCallback | None = None,
                       stage2_lora: LoraChoice | None = None, modes: ModelModes = ModelModes(),
                       size: tuple | None = None, t5_weights: str | None = None) -> Stage2Models:
    """Encode `prompt` for Stage II with T5 (then released), load Stage II (with stage2_lora applied, if
    given, then `modes`, resolved for size = (window frames, height, width, sequential_cfg)) and the VAE:
    a Stage2Models. T5's weights are t5_weights ('default' or 'fp8_e4m3fn'; None: modes.weights, so fp8
    stores T5's block linears in fp8 too)."""
    encoder = loaders.load_text_encoder(weights.text_encoder, weights.tokenizer, device=device, dtype=dtype,
                                        callback=callback,
                                        weights=modes.weights if t5_weights is None else t5_weights)
    embeds = encoder.encode(prompt, stage2_prefix=stage2_prefix)
    if embeds.stage2_truncated:  # Stage II's text, with the prefix when it is on
        logger.warning("the prompt had %d tokens; %d beyond %d were cut.", embeds.num_tokens,
                       embeds.stage2_truncated, config.TEXT_TOKENS)
    del encoder
    gc.collect()
    transformer = loaders.load_stage2(weights.stage2, device=device, dtype=dtype, callback=callback)
    if stage2_lora is not None:
        transformer = stage2_lora.apply(transformer)
    if modes != ModelModes():
        transformer.to("cpu")  # fp8 is made and blocks stream from host memory
        apply_modes(transformer, modes, device, dtype, size)
        move_model(transformer, device)
    vae = loaders.load_vae(weights.vae, device=device, dtype=dtype, callback=callback)
    return Stage2Models(transformer, vae, embeds.stage2)
