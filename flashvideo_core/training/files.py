"""File modes of the model files training writes.

safetensors (0.8) creates its files readable by their owner only (0600), unlike torch.save and every
other writer here, which follow the umask (usually 0644). A trained model copied into a ComfyUI run by
another user (a service account, a container) could then not be read, so the model files a run
publishes get the mode the umask gives a new file.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

_umask_lock = threading.Lock()


def umask_mode(path: str | os.PathLike) -> None:
    """chmod `path` to 0666 less the process umask (what a plain open() would have created)."""
    with _umask_lock:  # os.umask can only be read by setting it
        mask = os.umask(0o022)
        os.umask(mask)
    os.chmod(Path(path), 0o666 & ~mask)
