"""ComfyUI entry point of the FlashVideo node pack.

The pack folder is added to the END of sys.path so `flashvideo_core` imports by name without
shadowing ComfyUI's own modules (ComfyUI has a top-level `nodes` module; ours is imported relatively).
"""

import os
import sys

_PACK_DIR = os.path.dirname(os.path.abspath(__file__))
if _PACK_DIR not in sys.path:
    sys.path.append(_PACK_DIR)

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402
from .nodes.comfy_services import register_model_folder  # noqa: E402

register_model_folder()

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
