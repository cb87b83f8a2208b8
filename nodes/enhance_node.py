"""Enhance Video: Stage II on any clip (any length, size, aspect), windowed, as one node."""

from __future__ import annotations

from dataclasses import replace

from flashvideo_core import config
from flashvideo_core.enhance.plan import BLENDS, DEFAULT_BLEND, EnhanceSettings, plan_enhance
from flashvideo_core.enhance.run import enhance_images
from flashvideo_core.enhance.sizing import NAMED_SIZES, image_frame_bytes
from flashvideo_core.enhance.windows import DEFAULT_OVERLAP, DEFAULT_WINDOW
from flashvideo_core.layout import checked_images
from flashvideo_core.progress import WindowedProgress
from flashvideo_core.sampling.settings import SEED_MAX
from flashvideo_core.sampling.stage2_chain import Stage2Models

from . import comfy_services as services
from . import node_modes
from .common import (
    CATEGORY,
    EMBEDS,
    FRAME_STEP,
    MAX_EDGE,
    SEQUENTIAL_CFG,
    SIZE_STEP,
    STAGE2,
    VAE,
    check_widgets,
    core_check,
    latent_preview_fn,
)

TARGETS = ["1080p", "720p", "2K", "x2", "x4", "long edge"]
FRAME_MB = {name: image_frame_bytes(*size) / 2**20 for name, size in NAMED_SIZES.items()}
"""MiB one output IMAGE frame takes at each named size (landscape): 720p ~11, 1080p ~24, 2K ~42."""
BLEND_TOOLTIP = (
    "How windows join. pixel: crossfade the decoded frames over the overlap (each window its own noise). "
    "shared_noise: also give overlapping windows the same degradation noise per latent frame. co_denoise: run "
    "all windows' Euler steps together on one clip latent, velocities averaged where they overlap; it holds the "
    "clip's latent in RAM (~3 MB per frame at 1080p). The latent ones start windows on the VAE's 4-frame grid. "
    "Toy-scale measurements in the README."
)
IMAGES_TOOLTIP = (
    "Frames in 0..1, any count and size. ComfyUI keeps IMAGE batches in memory (float32): each output frame "
    f"costs {', '.join(f'{FRAME_MB[n]:.0f} MB at {n}' for n in ('720p', '1080p', '2K'))}, so 100 frames at 1080p "
    f"hold {100 * FRAME_MB['1080p'] / 1024:.1f} GB, on top of the input batch; a batch that would not fit in the "
    "free RAM is refused before anything runs. For long clips use the CLI "
    "`python -m flashvideo_core enhance`, which streams. Non-square-pixel (anamorphic) sources: make the pixels "
    "square first (the CLI does this itself)."
)


class FlashVideoEnhanceImages:
    """Node: Stage II on any IMAGE batch (windows, target size, auto noise, colour match)."""

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The enhanced frames, same count as the input, at exactly the requested size.",)
    FUNCTION = "enhance"
    CATEGORY = f"{CATEGORY}/enhance"
    DESCRIPTION = ("Stage II on any video: cuts the clip into overlapping 4k+1-frame windows, enhances each "
                   "(resize, encode, degrade, Euler flow, decode) and blends the overlaps. Keep fps and audio by "
                   "wiring Get Video Components -> this -> Create Video.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (STAGE2, {"tooltip": "From FlashVideo Stage II Loader."}),
                "vae": (VAE, {"tooltip": "From FlashVideo VAE Loader."}),
                "embeds": (EMBEDS, {"tooltip": "A description of the clip (FlashVideo Text Encode)."}),
                "images": ("IMAGE", {"tooltip": IMAGES_TOOLTIP}),
                "target": (TARGETS, {"default": "1080p", "tooltip":
                           "Output size: a named size sets the LONG edge (720p 1280, 1080p 1920, 2K 2560) and keeps "
                           "the aspect, so a square 1080x1080 clip at 1080p becomes 1920x1920 and portrait 1080x1920 "
                           "stays; x2/x4 scale both edges; 'long edge' uses the value below. Never stretched; must "
                           "not be smaller than the input."}),
                "long_edge": ("INT", {"default": config.STAGE2_WIDTH, "min": SIZE_STEP, "max": MAX_EDGE, "step": 2,
                              "tooltip": "Used when target is 'long edge'."}),
                "auto_noise": ("BOOLEAN", {"default": True, "tooltip":
                               "Pick the noise step from the window's frames and size (17 frames -> 500, 49 at "
                               "1080p -> 675; clamped to 500-750). Off: use noise_step."}),
                "noise_step": ("INT", {"default": config.DEFAULT_NOISE_STEP, "min": 0, "max": 999, "tooltip":
                               "Manual degradation step (paper: 650-750 for 49 frames)."}),
                "steps": ("INT", {"default": config.STAGE2_STEPS, "min": 1, "max": 100, "tooltip": "NFE (paper 4-6)."}),
                "cfg": ("FLOAT", {"default": config.STAGE2_CFG, "min": 0.0, "max": 30.0, "step": 0.1,
                        "tooltip": "Guidance (paper 10-13)."}),
                "shift": ("FLOAT", {"default": config.STAGE2_SHIFT, "min": 0.1, "max": 10.0, "step": 0.1,
                          "tooltip": "Flow time shift (2-3.5)."}),
                "window": ("INT", {"default": DEFAULT_WINDOW, "min": 5, "max": 257, "step": FRAME_STEP, "tooltip":
                           "Frames per window, 4k+1 (trained at 49)."}),
                "overlap": ("INT", {"default": DEFAULT_OVERLAP, "min": 0, "max": 64, "tooltip":
                            "Frames blended between windows (no jump at window edges)."}),
                "color_match": ("BOOLEAN", {"default": False, "tooltip":
                                "Match each window's colours to the input (Oklab mean/std) for sources that drift."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "tooltip":
                         "Seeds encode and noise: window i uses seed + 1 + 1000003 i (then + 1 for its noise), "
                         "as the CLI's `enhance --seed` does, so both give the same frames."}),
            },
            "optional": {"sequential_cfg": SEQUENTIAL_CFG,
                         "blend": (list(BLENDS), {"default": DEFAULT_BLEND, "tooltip": BLEND_TOOLTIP}),
                         "memory": node_modes.MEMORY},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, window=None, overlap=None, long_edge=None, blend=None):
        """True, or the core's message (EnhanceSettings) for a window that is not 4k+1, an overlap that is
        not less than it (by 4 frames for a latent blend) or an odd long edge; ComfyUI's own range check is
        redone for the inputs named."""
        checks = (check_widgets(cls, window=window, overlap=overlap, long_edge=long_edge),
                  core_check(EnhanceSettings, window=window, overlap=overlap, blend=blend),
                  True if long_edge is None or long_edge % 2 == 0 else
                  f"long_edge={long_edge} must be even (H.264 video needs even sizes); use {long_edge - 1} or "
                  f"{long_edge + 1}.")
        return next((c for c in checks if c is not True), True)

    def enhance(self, model, vae, embeds, images, target, long_edge, auto_noise, noise_step, steps, cfg, shift,
                window, overlap, color_match, seed, sequential_cfg=False, blend=DEFAULT_BLEND,
                memory=node_modes.MEMORY_CHOICES[0]):
        """IMAGE (F, H, W, C) in 0..1 (or uint8) -> (IMAGE (F, H', W', 3) in 0..1 at the target size,); same F."""
        images = checked_images(images)  # NaN/Inf and 0..255 floats refused before any model work
        choice = {"scale": int(target[1:])} if target.startswith("x") else (
            {"long_edge": long_edge} if target == "long edge" else {"size": target})
        settings = EnhanceSettings(**choice, noise_step="auto" if auto_noise else noise_step, steps=steps, cfg=cfg,
                                   shift=shift, seed=seed, window=window, overlap=overlap, color_match=color_match,
                                   sequential_cfg=sequential_cfg, blend=blend)
        plan = plan_enhance(images.shape[0], images.shape[1], images.shape[2], settings)
        size = (plan.windows[0].length, plan.target.work_height, plan.target.work_width)
        sequential = node_modes.prepare_memory(model, 2, size, settings.sequential_cfg, memory)  # for a window
        settings = replace(settings, sequential_cfg=sequential)  # memory "auto" may choose it
        window = (*size, sequential)
        node_modes.check_room(model, 2, *window)  # its weights too, before anything loads; ComfyUI makes room
        handles = {id(model.module): model, id(vae.module): vae}
        models = Stage2Models(model.module, vae.module, embeds.stage2, use=lambda module: handles[id(module)].active(),
                              free_memory=services.free_memory)  # one model on the GPU at a time
        out = enhance_images(images, models, settings, device=model.device, mode_words=node_modes.NODE_WORDS,
                             callback=WindowedProgress(services.Progress(latent_preview_fn(vae))))
        return (out,)
