"""FlashVideo ComfyUI nodes: thin adapters over flashvideo_core (no math here).

Node ids are a public contract (saved workflows name them): never rename one without a migration.
"""

from .enhance_node import FlashVideoEnhanceImages
from .loader_nodes import (
    FlashVideoDownloadWeights,
    FlashVideoStage1Loader,
    FlashVideoStage2Loader,
    FlashVideoT5Loader,
    FlashVideoVAELoader,
)
from .lora_node import FlashVideoStage2LoRA
from .sampling_nodes import (
    FlashVideoLatentDegradation,
    FlashVideoStage1Sampler,
    FlashVideoStage2Sampler,
    FlashVideoTextEncode,
)
from .vae_nodes import FlashVideoPrepareStage2, FlashVideoVAEDecode

NODE_CLASS_MAPPINGS = {
    "FlashVideoStage1Loader": FlashVideoStage1Loader,
    "FlashVideoStage2Loader": FlashVideoStage2Loader,
    "FlashVideoVAELoader": FlashVideoVAELoader,
    "FlashVideoT5Loader": FlashVideoT5Loader,
    "FlashVideoDownloadWeights": FlashVideoDownloadWeights,
    "FlashVideoTextEncode": FlashVideoTextEncode,
    "FlashVideoStage1Sampler": FlashVideoStage1Sampler,
    "FlashVideoVAEDecode": FlashVideoVAEDecode,
    "FlashVideoPrepareStage2": FlashVideoPrepareStage2,
    "FlashVideoLatentDegradation": FlashVideoLatentDegradation,
    "FlashVideoStage2Sampler": FlashVideoStage2Sampler,
    "FlashVideoEnhanceImages": FlashVideoEnhanceImages,
    "FlashVideoStage2LoRA": FlashVideoStage2LoRA,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "FlashVideoStage1Loader": "FlashVideo Stage I Loader",
    "FlashVideoStage2Loader": "FlashVideo Stage II Loader",
    "FlashVideoVAELoader": "FlashVideo VAE Loader",
    "FlashVideoT5Loader": "FlashVideo T5 Loader",
    "FlashVideoDownloadWeights": "FlashVideo Download Weights",
    "FlashVideoTextEncode": "FlashVideo Text Encode",
    "FlashVideoStage1Sampler": "FlashVideo Stage I Sampler (270p)",
    "FlashVideoVAEDecode": "FlashVideo VAE Decode (sliced)",
    "FlashVideoPrepareStage2": "FlashVideo Prepare Stage II (VAE Encode)",
    "FlashVideoLatentDegradation": "FlashVideo Latent Degradation",
    "FlashVideoStage2Sampler": "FlashVideo Stage II Sampler (1080p)",
    "FlashVideoEnhanceImages": "FlashVideo Enhance Video (any length/size)",
    "FlashVideoStage2LoRA": "FlashVideo Stage II LoRA",
}
