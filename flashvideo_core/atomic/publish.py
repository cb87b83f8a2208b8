"""Writing through a hidden temporary file and publishing it under its name in one step."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from .reserve import Reservation, reserved_output
from .signals import signals_held

_umask_lock = threading.Lock()


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike, overwrite: bool = True, reservation: Reservation | None = None
) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success publish it as `path`.

    On any exception (including KeyboardInterrupt) the temporary file is removed and `path` is
    untouched. With overwrite=False an existing `path` (or one another live run is writing) raises
    FileExistsError before work starts, and publishing never replaces a file (see the package
    docstring). `reservation`: a claim made earlier with reserved_output(path, overwrite), before
    the run's expensive work; without one, the claim is made here.
    """
    if reservation is None:
        with reserved_output(path, overwrite) as own, atomic_output(path, overwrite, own) as tmp:
            yield tmp
        return
    if Path(path) != reservation.target or reservation.published or overwrite != reservation.overwrite:
        raise ValueError(f"the reservation {reservation} is not an open claim on {path} (overwrite={overwrite}).")
    try:
        yield reservation.temp
        _ordinary_mode(reservation.temp)
        with signals_held():  # an interrupt between publishing and noting it would remove the result
            _publish(reservation.temp, reservation.target, reservation.overwrite)
            reservation.published = True
    finally:
        if not reservation.published:
            _truncate(reservation.temp)  # half a file must not outlive the failure, even while the claim does


def _ordinary_mode(temp: Path) -> None:
    """Give the finished file the mode a plain open() would have given it (0666 less the umask): some writers
    create files readable by their owner only (safetensors 0.8: 0600), which another user running ComfyUI
    (a service account, a container) could then not load."""
    with contextlib.suppress(FileNotFoundError):  # a writer that wrote nothing publishes nothing either
        os.chmod(temp, 0o666 & ~current_umask())


def current_umask() -> int:
    """This process's umask. It can only be read by setting it, so under a lock: two threads reading at once
    would otherwise leave the placeholder value set."""
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _publish(temp: Path, target: Path, overwrite: bool) -> None:
    """Give the finished `temp` the name `target`: replacing it if overwrite, else never (see the package docstring)."""
    if overwrite:
        os.replace(temp, target)
        return
    try:
        _link_no_replace(temp, target)
    except FileExistsError:
        kept = _keep_beside(temp, target)
        raise FileExistsError(
            f"{target} appeared while this run was writing it (made by a program not using this run's claim); "
            f"it was not overwritten. This run's result is kept as {kept}."
        ) from None


def _link_no_replace(src: Path, dst: Path) -> None:
    """Rename `src` to `dst` unless `dst` exists (FileExistsError, `src` kept)."""
    try:
        os.link(src, dst)
    except FileExistsError:
        raise
    except OSError:  # no hard links on this file system: claim the name itself, then move onto the claim
        os.close(os.open(dst, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        try:
            os.replace(src, dst)
        except BaseException:
            dst.unlink()
            raise
    else:
        os.unlink(src)


def _keep_beside(temp: Path, target: Path) -> Path:
    """Publish `temp` under the first free name `<stem>_<n><suffix>` beside `target`; returns that name."""
    for number in range(2, 10_000):
        kept = target.with_name(f"{target.stem}_{number}{target.suffix}")
        with contextlib.suppress(FileExistsError):
            _link_no_replace(temp, kept)
            return kept
    raise FileExistsError(f"{target} appeared while this run was writing it, and no free name was left beside it.")


def _truncate(temp: Path) -> None:
    with contextlib.suppress(OSError):
        os.truncate(temp, 0)
