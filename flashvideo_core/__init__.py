"""FlashVideo two-stage text-to-video as a plain PyTorch library (no ComfyUI imports).

See docs/ARCHITECTURE.md for the module map and the conventions (raw-space LATENT, layouts).
"""

__version__ = "0.1.0"
