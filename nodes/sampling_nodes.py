"""Text encoding, Stage I sampling, latent degradation and Stage II sampling nodes."""

from __future__ import annotations

import logging
from dataclasses import replace

from flashvideo_core import config
from flashvideo_core.errors import FlashVideoInputError
from flashvideo_core.layout import check_latent, pixel_frames
from flashvideo_core.memory_floor import cfg_batch, check_fits, transformer_floor
from flashvideo_core.modes.block_swap import device_bytes
from flashvideo_core.planning.call import DeviceRoom, StageCall
from flashvideo_core.planning.room import fitting_hint, modes_of
from flashvideo_core.sampling.degradation import degrade_latent
from flashvideo_core.sampling.settings import SEED_MAX, Stage1Settings, Stage2Settings
from flashvideo_core.sampling.stages import run_stage1, run_stage2
from flashvideo_core.text.encoder import check_prompt

from . import comfy_services as services
from . import node_modes
from .common import (
    CATEGORY,
    EMBEDS,
    FRAME_STEP,
    SEQUENTIAL_CFG,
    SIZE_STEP,
    STAGE1,
    STAGE2,
    T5,
    VAE,
    check_widgets,
    core_check,
    flashvideo_info,
    latent_preview_fn,
)

logger = logging.getLogger(__name__)
VAE_PREVIEW_TIP = "Optional: connect the VAE to see each step's x0 as a decoded frame (otherwise a gray map)."


class FlashVideoTextEncode:
    """Node: one prompt -> the embeddings of both stages."""

    RETURN_TYPES = (EMBEDS,)
    RETURN_NAMES = ("embeds",)
    OUTPUT_TOOLTIPS = ("One prompt's T5 embeddings for BOTH stages (so the stages cannot get different prompts).",)
    FUNCTION = "encode"
    CATEGORY = f"{CATEGORY}/conditioning"
    DESCRIPTION = ("Encodes the prompt with the official rules: 226 T5 tokens, no attention mask, zero "
                   "unconditional embedding. Both stages were trained on long, detailed captions.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "t5": (T5, {"tooltip": "From FlashVideo T5 Loader."}),
                "prompt": ("STRING", {"multiline": True, "default": "", "tooltip":
                           "A long, detailed description (subject, motion, camera, light). Up to 226 tokens; "
                           "longer prompts are cut and the console says how many tokens were dropped."}),
                "stage2_prefix": ("BOOLEAN", {"default": False, "tooltip":
                                  'Prefix the Stage II prompt with "medium motion," as the official batch script '
                                  "does (the official notebook does not)."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, prompt=None):
        """True, or check_prompt's message for an empty or unreadable prompt (None = linked, checked when run)."""
        return True if prompt is None else core_check(check_prompt, prompt)

    def encode(self, t5, prompt, stage2_prefix):
        """Prompt text -> (PromptEmbeds: (1, 226, 4096) for Stage I and for Stage II,); empty prompts refused."""
        check_prompt(prompt)  # the CLI's rule: a description is needed
        with t5.active():
            embeds = t5.text_encoder.encode(prompt, stage2_prefix=stage2_prefix)
        if embeds.num_truncated or embeds.stage2_truncated:
            logger.warning("[FlashVideo] prompt has %d tokens; the last %d were cut for Stage I and %d for Stage II "
                           "(limit %d).", embeds.num_tokens, embeds.num_truncated, embeds.stage2_truncated,
                           config.TEXT_TOKENS)
        return (embeds,)


class FlashVideoStage1Sampler:
    """Node: Stage I text-to-video sampling (official DPM++, dynamic CFG) -> LATENT."""

    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("Stage I video latent (B, 16, T, H/8, W/8), raw VAE space: decode it for the 270p preview.",)
    FUNCTION = "sample"
    CATEGORY = f"{CATEGORY}/sampling"
    DESCRIPTION = "Stage I: prompt -> 49-frame 270p video latent (official DPM++ with v-prediction, dynamic CFG)."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (STAGE1, {"tooltip": "From FlashVideo Stage I Loader."}),
                "embeds": (EMBEDS, {"tooltip": "From FlashVideo Text Encode."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "tooltip":
                         "Seeds the initial noise and every sampler noise (drawn on the CPU: same on any GPU)."}),
                "steps": ("INT", {"default": config.STAGE1_STEPS, "min": 1, "max": 1000, "tooltip":
                          "Sampler steps. Official: 51 (paper: NFE 50)."}),
                "cfg": ("FLOAT", {"default": config.STAGE1_CFG, "min": 0.0, "max": 30.0, "step": 0.1, "tooltip":
                        "Guidance scale; dynamic CFG ramps it over the run. Official: 8."}),
                "cfg_exponent": ("FLOAT", {"default": config.STAGE1_CFG_EXPONENT, "min": 0.0, "max": 20.0,
                                 "step": 0.1, "tooltip": "Dynamic-CFG exponent (official 5)."}),
                "frames": ("INT", {"default": config.DEFAULT_NUM_FRAMES, "min": 1, "max": 1025, "step": FRAME_STEP,
                           "tooltip": "Frame count, 4k+1. Trained at 49 (about 6 s at 8 fps)."}),
                "width": ("INT", {"default": config.STAGE1_WIDTH, "min": SIZE_STEP, "max": 4096, "step": SIZE_STEP,
                          "tooltip": "Multiple of 16. Trained at 480."}),
                "height": ("INT", {"default": config.STAGE1_HEIGHT, "min": SIZE_STEP, "max": 4096, "step": SIZE_STEP,
                           "tooltip": "Multiple of 16. Trained at 256 (270 floored to 16, as the official code)."}),
            },
            "optional": {"vae": (VAE, {"tooltip": VAE_PREVIEW_TIP}), "sequential_cfg": SEQUENTIAL_CFG,
                         "memory": node_modes.MEMORY},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, frames=None, width=None, height=None):
        # Named inputs skip ComfyUI's own range check, so check_widgets does it; no **kwargs here, which
        # would switch off ComfyUI's checks of every other input.
        checks = (check_widgets(cls, frames=frames, width=width, height=height),
                  core_check(Stage1Settings, num_frames=frames, width=width, height=height))
        return next((c for c in checks if c is not True), True)

    def sample(self, model, embeds, seed, steps, cfg, cfg_exponent, frames, width, height, vae=None,
               sequential_cfg=False, memory=node_modes.MEMORY_CHOICES[0]):
        """Embeds -> (LATENT {"samples": RAW (1, 16, (frames-1)/4+1, height/8, width/8), "flashvideo": info},)."""
        settings = Stage1Settings(num_frames=frames, height=height, width=width, steps=steps, cfg=cfg,
                                  cfg_exponent=cfg_exponent, sequential_cfg=sequential_cfg)
        sequential = node_modes.prepare_memory(model, 1, (frames, height, width), settings.sequential_cfg, memory)
        settings = replace(settings, sequential_cfg=sequential)  # memory "auto" may choose it
        need = _forward_floor(model, settings.sequential_cfg, frames, height, width)
        progress = services.Progress(latent_preview_fn(vae))
        watch = node_modes.check_room(model, 1, frames, height, width, settings.sequential_cfg)
        with model.active(memory_required=need), watch.guard():  # an out-of-memory: a clear message
            _check_room(1, model, need, frames, height, width)
            latent = run_stage1(model.module, embeds.stage1, settings, seed=seed, callback=watch.track(progress))
        services.soft_empty_cache()
        return ({"samples": latent, "flashvideo": {"stage": 1, "seed": seed, "prompt": embeds.prompt}},)


class FlashVideoLatentDegradation:
    """Node: DEG_latent, noise at a DDPM step, recorded in the LATENT for Stage II."""

    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("degraded_latent",)
    OUTPUT_TOOLTIPS = ("The noised latent Stage II starts from; it records the noise step for Stage II.",)
    FUNCTION = "degrade"
    CATEGORY = f"{CATEGORY}/sampling"
    DESCRIPTION = "Latent degradation (DEG_latent): adds noise at a DDPM step so Stage II can rebuild detail."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "latent": ("LATENT", {"tooltip": "From FlashVideo Prepare Stage II (the re-encoded video)."}),
                "noise_step": ("INT", {"default": config.DEFAULT_NOISE_STEP, "min": 0, "max": 999, "tooltip":
                               "Degradation strength. Default 675; the paper recommends 650-750 for 49 frames "
                               "(fewer frames need less: 17 frames worked at 500). Higher = more new detail, less "
                               "faithful to the input."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "tooltip":
                         "Seeds the added noise. Same Stage II as the CLI: set this to Prepare Stage II's seed + 1 "
                         "(`generate --seed S` uses S + 1 there and S + 2 here)."}),
            }
        }

    def degrade(self, latent, noise_step, seed):
        """LATENT (B, 16, T, h, w) -> (degraded LATENT of the same shape, recording noise_step,)."""
        samples = latent["samples"]
        check_latent(samples, "latent")
        degraded = degrade_latent(samples, noise_step, seed=seed)  # the chain's rule: stage2_seeds
        info = {**flashvideo_info(latent), "noise_step": noise_step, "degraded": True}
        return ({**latent, "samples": degraded, "flashvideo": info},)


class FlashVideoStage2Sampler:
    """Node: Stage II flow-matching Euler sampling on a degraded LATENT."""

    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The high-resolution video latent; decode it with FlashVideo VAE Decode (sliced).",)
    FUNCTION = "sample"
    CATEGORY = f"{CATEGORY}/sampling"
    DESCRIPTION = "Stage II: flow-matching Euler from the degraded latent to 1080p detail in a few steps."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (STAGE2, {"tooltip": "From FlashVideo Stage II Loader."}),
                "embeds": (EMBEDS, {"tooltip": "The SAME Text Encode output as Stage I (its Stage II half)."}),
                "latent": ("LATENT", {"tooltip": "From FlashVideo Latent Degradation."}),
                "steps": ("INT", {"default": config.STAGE2_STEPS, "min": 1, "max": 100, "tooltip":
                          "Euler steps = NFE. Paper: 4 (recommended 4-6); the official scripts use 5."}),
                "cfg": ("FLOAT", {"default": config.STAGE2_CFG, "min": 0.0, "max": 30.0, "step": 0.1, "tooltip":
                        "Guidance scale. Default 13 (paper: 10-13)."}),
                "shift": ("FLOAT", {"default": config.STAGE2_SHIFT, "min": 0.1, "max": 10.0, "step": 0.1,
                          "tooltip": "Time shift of the flow grid. Default 2.5 (official range 2-3.5)."}),
                "solver": (["euler", "heun"], {"default": "euler", "tooltip":
                           "euler: the paper's sampler, one model call per step. heun: 2nd order, two calls."}),
            },
            "optional": {"vae": (VAE, {"tooltip": VAE_PREVIEW_TIP}), "sequential_cfg": SEQUENTIAL_CFG,
                         "memory": node_modes.MEMORY},
        }

    def sample(self, model, embeds, latent, steps, cfg, shift, solver, vae=None, sequential_cfg=False,
               memory=node_modes.MEMORY_CHOICES[0]):
        """Degraded LATENT (B, 16, T, h, w) -> (Stage II LATENT of the same shape,)."""
        check_latent(latent["samples"], "latent")
        info = flashvideo_info(latent)
        if "noise_step" not in info:
            raise FlashVideoInputError(
                "This latent was not degraded: connect FlashVideo Latent Degradation between Prepare Stage II "
                "and the Stage II Sampler (it records the noise step Stage II must be told)."
            )
        settings = Stage2Settings(noise_step=info["noise_step"], steps=steps, cfg=cfg, shift=shift, solver=solver,
                                  sequential_cfg=sequential_cfg)
        _, _, frames, height, width = latent["samples"].shape
        size = (pixel_frames(frames), height * config.VAE_SPATIAL_COMPRESSION, width * config.VAE_SPATIAL_COMPRESSION)
        sequential = node_modes.prepare_memory(model, 2, size, settings.sequential_cfg, memory)
        settings = replace(settings, sequential_cfg=sequential)  # memory "auto" may choose it
        need = _forward_floor(model, settings.sequential_cfg, *size)
        progress = services.Progress(latent_preview_fn(vae))
        watch = node_modes.check_room(model, 2, *size, settings.sequential_cfg)
        with model.active(memory_required=need), watch.guard():  # an out-of-memory: a clear message
            _check_room(2, model, need, *size)
            out = run_stage2(model.module, embeds.stage2, latent["samples"], settings, callback=watch.track(progress))
        services.soft_empty_cache()
        result_info = {**info, "stage": 2, "degraded": False}
        return ({**latent, "samples": out, "flashvideo": result_info},)


def _forward_floor(model, sequential_cfg: bool, frames: int, height: int, width: int) -> int:
    """Bytes one model call at this size needs at least (memory_floor.transformer_floor; batch 1 when the
    CFG halves run one after the other)."""
    return transformer_floor(frames, height, width, model.module.config.hidden_size, model.dtype,
                             cfg_batch(sequential_cfg))


def _check_room(stage: int, model, need: int, frames: int, height: int, width: int) -> None:
    """Raise FlashVideoInputError before sampling if the forward's least memory is not free where the
    model now runs (after ComfyUI loaded it: node_modes.check_room counted its weights before that; this
    catches memory taken since), naming sizes that fit and the memory mode that would fit (planning.room,
    in the nodes' inputs) for the free memory plus what the model holds on the device."""
    free = services.free_memory(model.device)
    call = StageCall(stage, frames, height, width, model.dtype, model.device, modes_of(model.module),
                     config=model.module.config)
    room = DeviceRoom(free, held=device_bytes(model.module, model.device))
    hint = fitting_hint(call, room, node_modes.NODE_WORDS)
    check_fits(f"Stage {'I' * stage}", need, free, model.device, frames, height, width, hint)
