"""VAE nodes: sliced decode to IMAGE, and Prepare Stage II (any IMAGE frames -> resized, encoded LATENT)."""

from __future__ import annotations

from flashvideo_core import config
from flashvideo_core.errors import FlashVideoInputError
from flashvideo_core.layout import (
    check_latent,
    check_num_frames,
    check_pixel_size,
    checked_images,
    image_to_video,
    video_to_image,
)
from flashvideo_core.sampling.settings import SEED_MAX
from flashvideo_core.sampling.stage2_chain import video_to_stage2_latent
from flashvideo_core.vae import AUTO, UNSLICED, SliceSpec, decode_latents
from flashvideo_core.vae.cost import MIN_TILE

from . import comfy_services as services
from .common import CATEGORY, MAX_EDGE, SIZE_STEP, VAE, check_widgets, core_check

SLICE_MODES = ["auto", "manual", "off"]
OFFICIAL_SLICES = SliceSpec()
"""The official decode's slicing (2-latent-frame chunks; tiles overlap by 8 latent pixels when tiled)."""
MANUAL_TILE = 64
"""The manual tile edge offered first, in latent pixels (512 video pixels)."""


class FlashVideoVAEDecode:
    """Node: sliced VAE decode, LATENT -> IMAGE."""

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The video frames (frames, H, W, 3) in 0..1: connect to Create Video, Save Video, etc.",)
    FUNCTION = "decode"
    CATEGORY = f"{CATEGORY}/vae"
    DESCRIPTION = ("Decodes a video latent in slices (temporal chunks with the causal cache carried, spatial tiles "
                   "with blended overlaps), so memory is bounded by the slice, not the video.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": (VAE, {"tooltip": "From FlashVideo VAE Loader."}),
                "latent": ("LATENT", {"tooltip": "A FlashVideo (CogVideoX VAE) video latent, Stage I or Stage II."}),
                "slicing": (SLICE_MODES, {"default": "auto", "tooltip":
                            "auto: picks slices from free memory and retries smaller after out-of-memory. "
                            "manual: the sizes below. off: one pass (needs a lot of memory at 1080p)."}),
                "chunk_frames": ("INT", {"default": OFFICIAL_SLICES.chunk_frames, "min": 2, "max": 64, "step": 2,
                                 "tooltip": "manual: latent frames per temporal chunk (even; 1 latent frame = 4 video "
                                            "frames). Official: 2."}),
                "tile_size": ("INT", {"default": MANUAL_TILE, "min": MIN_TILE, "max": 512, "step": 2, "tooltip":
                              "manual: tile edge in latent pixels (x8 for video pixels); a tile at least as large as "
                              "the latent means no tiling."}),
                "tile_overlap": ("INT", {"default": OFFICIAL_SLICES.overlap, "min": 0, "max": 128, "tooltip":
                                 "manual: latent pixels shared by neighbouring tiles, blended linearly (no seams)."}),
            }
        }

    def decode(self, vae, latent, slicing, chunk_frames, tile_size, tile_overlap):
        """LATENT (1, 16, T, h, w) -> (IMAGE (4(T-1)+1, 8h, 8w, 3) in 0..1,)."""
        samples = latent["samples"]
        check_latent(samples, "latent", channels=vae.module.config.latent_channels)
        progress = services.Progress()
        with vae.active():
            video = decode_latents(vae.module, samples, _slices(slicing, chunk_frames, tile_size, tile_overlap),
                                   progress, free_bytes=services.free_memory(vae.device))
        services.soft_empty_cache()
        return (video_to_image(video),)


def _slices(slicing: str, chunk_frames: int, tile_size: int, tile_overlap: int):
    """The node's slicing widgets -> vae.Slices: "auto", UNSLICED ("off") or the manual SliceSpec."""
    if slicing == "auto":
        return AUTO
    if slicing == "off":
        return UNSLICED
    tile = tile_size or None
    return SliceSpec(chunk_frames=chunk_frames, tile_height=tile, tile_width=tile, overlap=tile_overlap)


class FlashVideoPrepareStage2:
    """Node: IMAGE from any source -> resized, encoded Stage II LATENT."""

    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The frames resized and encoded at the Stage II size (raw VAE latent), ready for degradation.",)
    FUNCTION = "prepare"
    CATEGORY = f"{CATEGORY}/vae"
    DESCRIPTION = ("VAE Encode for Stage II: any IMAGE frames (a Stage I preview, a loaded clip, another model's "
                   "output) -> bilinear antialiased resize -> encode (posterior sample). For clips of any length "
                   "or size, use FlashVideo Enhance Video.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": (VAE, {"tooltip": "From FlashVideo VAE Loader."}),
                "images": ("IMAGE", {"tooltip": "Video frames (4k+1 of them, e.g. 49) in 0..1 from any node "
                                                "(alpha is dropped, gray expanded). Each 1080p frame costs about "
                                                "25 MB in memory."}),
                "width": ("INT", {"default": config.STAGE2_WIDTH, "min": SIZE_STEP, "max": MAX_EDGE, "step": SIZE_STEP,
                          "tooltip": "Stage II width, multiple of 16. Official 1920 (16:9); 2K is 2560."}),
                "height": ("INT", {"default": config.STAGE2_HEIGHT, "min": SIZE_STEP, "max": MAX_EDGE,
                           "step": SIZE_STEP,
                           "tooltip": "Stage II height, multiple of 16. Official 1072 (1080 floored to 16)."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "tooltip":
                         "Seeds the posterior sample of the encoder. Same Stage II as the CLI: "
                         "`generate --seed S` uses S + 1 here and S + 2 in Latent Degradation."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, width=None, height=None):
        checks = (check_widgets(cls, width=width, height=height),
                  core_check(check_pixel_size, *(SIZE_STEP if v is None else v for v in (height, width)),
                             "Stage II size"))  # a linked (None) side is checked when the node runs
        return next((c for c in checks if c is not True), True)

    def prepare(self, vae, images, width, height, seed):
        """IMAGE (F, H, W, C) in 0..1 (or uint8), F = 4k+1 -> (LATENT (1, 16, k+1, height/8, width/8),) at the
        Stage II size. NaN/Inf and values far outside 0..1 are refused (checked_images)."""
        images = checked_images(images)
        frames = images.shape[0]
        try:
            check_num_frames(frames, "images frames")
        except FlashVideoInputError as exc:
            raise FlashVideoInputError(f"{exc} Trim the clip, or use FlashVideo Enhance Video, which handles any "
                                       "length.") from None
        progress = services.Progress()
        with vae.active():
            latent = video_to_stage2_latent(vae.module, image_to_video(images), height, width, seed, callback=progress,
                                            free_bytes=services.free_memory(vae.device))
        return ({"samples": latent, "flashvideo": {"stage": 2, "source_frames": frames}},)
