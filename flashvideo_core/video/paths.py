"""Output names write_video can write: the container types it accepts and a writable folder."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import FlashVideoInputError

OUTPUT_CONTAINERS = {".mp4", ".m4v", ".mov", ".mkv"}
"""Output file types write_video accepts (all hold H.264)."""


def check_output_path(path: str | os.PathLike, overwrite: bool = True) -> Path:
    """`path` as a Path if write_video can write it; else FlashVideoInputError / FileExistsError.

    Call it before expensive work so a bad output name fails at once.
    """
    target = Path(path)
    if target.suffix.lower() not in OUTPUT_CONTAINERS:
        raise FlashVideoInputError(
            f"output {target} must end in one of {', '.join(sorted(OUTPUT_CONTAINERS))} (H.264 video)."
        )
    if target.is_dir():
        raise FlashVideoInputError(f"output {target} is a folder; give a file name such as {target / 'out.mp4'}.")
    check_writable_folder(target.parent, f"output {target}")
    if not overwrite and target.exists():
        raise FileExistsError(f"{target} already exists; choose another output name (or allow overwriting).")
    return target


def check_writable_folder(folder: str | os.PathLike, what: str) -> None:
    """Raise FlashVideoInputError unless `folder` is (or can be created as) a folder this user can write.

    what: how the error names the folder's use (e.g. "output out.mp4"). Returns None.
    """
    folder = Path(folder)
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None:
        return
    if not existing.is_dir():
        raise FlashVideoInputError(f"{what}: {existing} is a file, so it cannot hold the folder {folder}.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise FlashVideoInputError(f"{what}: cannot write into {existing} (permission denied); choose another place.")
