"""One error for a write that fails because the disk is full, whichever library was writing."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

DISK_FULL_SIGNS = (
    "no space left", "os error 28", "unexpected pos", "iostream error", "file write failed", "disk quota",
)
"""How torch.save (RuntimeError "unexpected pos" or "iostream error"), safetensors (SafetensorError "os error 28") and
plain writes say the disk is full."""


@contextlib.contextmanager
def write_errors_named(path: str | os.PathLike) -> Iterator[None]:
    """Turn a write that fails for lack of space (any library's error type) into an OSError naming `path`.

    The message says how much is free on that disk and that nothing was left behind (the callers
    write through atomic_output). Other errors pass through unchanged.
    """
    target = Path(path)
    try:
        yield
    except Exception as exc:
        text = str(exc).lower()
        if not (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)) and not any(
            sign in text for sign in DISK_FULL_SIGNS
        ):
            raise
        folder = next((p for p in (target.parent, *target.parents) if p.exists()), Path("."))
        free = shutil.disk_usage(folder).free
        raise OSError(errno.ENOSPC, f"could not write {target}: the disk is full ({free / 2**20:.0f} MB free in "
                      f"{folder}); nothing was left behind. Free some space or choose another folder") from exc
