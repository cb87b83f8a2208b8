"""Reserving an output name before the expensive work: the Reservation a run holds until it publishes."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .claims import create_claim, drop_claim, refuse_rival, remove_stale_partials
from .signals import signals_held


@dataclass
class Reservation:
    """A claim on `target` held while a run computes: `temp` is the hidden file it is written to."""

    target: Path
    temp: Path
    overwrite: bool
    published: bool = False


@contextlib.contextmanager
def reserved_output(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Reservation]:
    """Claim `path` for this run; yields a Reservation for atomic_output. The claim ends with the block.

    Call it before the expensive work: with overwrite=False it raises FileExistsError naming `path`
    if the file exists or another live run is writing it. Creates missing parent folders (removed
    again, if still empty, when nothing was published) and cleans stale claims in the folder.
    """
    target = Path(path)
    if not overwrite and _occupied(target):
        raise FileExistsError(f"{target} already exists; choose another output name (or allow overwriting).")
    made = _make_folders(target.parent)
    remove_stale_partials(target.parent)
    reservation: Reservation | None = None
    try:
        with signals_held():  # a Ctrl-C or SIGTERM now would leave a claim that nothing removes
            reservation = Reservation(target, create_claim(target), overwrite)
        if not overwrite:
            refuse_rival(target, reservation.temp)
        yield reservation
    finally:
        if reservation is not None:
            drop_claim(reservation.temp)
        if reservation is None or not reservation.published:
            _remove_empty(made)


def _occupied(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _make_folders(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; returns those this call made, deepest first."""
    missing = [path for path in (folder, *folder.parents) if not path.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders a failed run made, deepest first, as long as they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return
