"""Write files so that a failed or interrupted run leaves nothing half-written, and never clobbers one.

A file is written under a hidden temporary name beside its target and published in one step when
complete. The temporary name is also the run's claim on the target:
`.<target name>.<host>-<pid>-<stamp>.partial<suffix>` (host: a short hash of this machine's name,
pid: the writing process, stamp: its creation time in ns, suffix: the target's, for writers that
sniff the format, such as ffmpeg).

- Reserving (`reserved_output`), before the expensive work: with overwrite=False the name is refused
  (FileExistsError) if the target exists or another live run holds a claim on it. Two runs that
  claim at the same instant both see each other; the older claim (stamp, then host and pid) wins.
- Publishing: with overwrite=False by a hard link, which fails if the name exists (`os.replace`
  would replace it silently); where hard links are not supported (FAT, exFAT, some network shares),
  by creating the name with O_CREAT|O_EXCL and replacing that empty placeholder. Should the target
  appear anyway (a program not using these claims), the result is kept under a free name beside
  it and FileExistsError says where. overwrite=True replaces the target (`os.replace`).
- Cleaning: each reservation removes, in its folder, the claims of this naming pattern left by runs
  that are gone: written on this machine by a process that no longer exists. Claims of another
  machine (a shared folder) are never removed; one blocks its name until deleted by hand, and the
  error names the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_HOST = hashlib.sha1(socket.gethostname().encode(errors="replace")).hexdigest()[:6]
_CLAIM = re.compile(r"^\.(?P<name>.+)\.(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-(?P<stamp>[0-9a-f]{16})\.partial"
                    r"(?P<suffix>\.[^.]*)?$")
_MAX_NAME_BYTES = 255
_live_lock = threading.Lock()
_live: set[str] = set()  # claim names this process holds (checked before a claim with our own pid is cleaned)


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
            reservation = Reservation(target, _create_claim(target), overwrite)
        if not overwrite:
            _refuse_rival(target, reservation.temp)
        yield reservation
    finally:
        if reservation is not None:
            _drop_claim(reservation.temp)
        if reservation is None or not reservation.published:
            _remove_empty(made)


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike, overwrite: bool = True, reservation: Reservation | None = None
) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success publish it as `path`.

    On any exception (including KeyboardInterrupt) the temporary file is removed and `path` is
    untouched. With overwrite=False an existing `path` (or one another live run is writing) raises
    FileExistsError before work starts, and publishing never replaces a file (see the module
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
        with signals_held():  # an interrupt between publishing and noting it would remove the result
            _publish(reservation.temp, reservation.target, reservation.overwrite)
            reservation.published = True
    finally:
        if not reservation.published:
            _truncate(reservation.temp)  # half a file must not outlive the failure, even while the claim does


def remove_stale_partials(folder: str | os.PathLike) -> list[Path]:
    """Remove, in `folder`, the claims (temporary files) of this module's naming pattern whose run is gone.

    Gone: written on this machine by a process that no longer exists (or, for this process's own
    pid, by an earlier process that had it). Returns the removed paths. Other files are never touched.
    """
    removed = []
    for path, claim in _claims_in(Path(folder)):
        if _is_stale(path.name, claim):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Delay SIGINT and SIGTERM until the block ends (where the platform allows it).

    For the few steps that must not be split by an interrupt: creating a temporary file and
    remembering it, starting a writer process and remembering it. A child process started inside
    inherits the held mask (it ignores SIGINT/SIGTERM; kill it with SIGKILL, as video_io does).
    """
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _create_claim(target: Path) -> Path:
    """Create this run's empty, uniquely named claim file beside `target` (O_EXCL) and remember it as live."""
    while True:
        name = f".{_name_part(target)}.{_HOST}-{os.getpid()}-{time.time_ns():016x}.partial{target.suffix}"
        path = target.parent / name
        with _live_lock:  # registered before it exists, so no thread of ours takes it for a stale one
            if name in _live:
                continue
            _live.add(name)
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return path
        except FileExistsError:
            _forget(name)
        except BaseException:
            _forget(name)
            raise


def _refuse_rival(target: Path, own: Path) -> None:
    """FileExistsError if a live claim on `target` older than `own` exists (the older claim wins a tie)."""
    mine = _age_key(_CLAIM.match(own.name))
    for path, claim in _claims_in(target.parent):
        if (path.name != own.name and _claims_target(claim, target) and _age_key(claim) < mine
                and not _is_stale(path.name, claim)):
            where = "this machine" if claim["host"] == _HOST else "another machine (a shared folder)"
            raise FileExistsError(
                f"{target} is being written by another run right now (claim {path.name}, process {claim['pid']} "
                f"on {where}); choose another output name, or wait for it. If no run is writing it, delete {path}."
            )


def _publish(temp: Path, target: Path, overwrite: bool) -> None:
    """Give the finished `temp` the name `target`: replacing it if overwrite, else never (see the module docstring)."""
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


def _claims_in(folder: Path) -> Iterator[tuple[Path, re.Match]]:
    """(path, parsed name) of every file in `folder` named like a claim of this module."""
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        claim = _CLAIM.match(entry.name) if entry.name.startswith(".") and ".partial" in entry.name else None
        if claim is not None and entry.is_file(follow_symlinks=False):
            yield Path(entry.path), claim


def _claims_target(claim: re.Match | None, target: Path) -> bool:
    return claim is not None and claim["name"] == _name_part(target) and (claim["suffix"] or "") == target.suffix


def _age_key(claim: re.Match | None) -> tuple:
    return (int(claim["stamp"], 16), claim["host"], int(claim["pid"])) if claim else (float("inf"),)


def _is_stale(name: str, claim: re.Match) -> bool:
    """A claim whose run is gone: made on this machine by a process that no longer exists."""
    if claim["host"] != _HOST:
        return False  # another machine's process cannot be checked from here
    pid = int(claim["pid"])
    if pid == os.getpid():
        with _live_lock:
            return name not in _live  # left by an earlier process with our pid (a restarted container)
    return not _pid_alive(pid)


def _pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    if sys.platform == "win32":
        return _pid_alive_windows(pid)
    try:
        os.kill(pid, 0)  # signal 0: only checks (on Windows it would send Ctrl-C, hence the branch above)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    except OSError:
        return True  # cannot tell: keep the file
    return True


def _pid_alive_windows(pid: int) -> bool:
    import ctypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return ctypes.get_last_error() != 87  # ERROR_INVALID_PARAMETER: no such process; else (access denied) alive
    try:
        code = ctypes.c_ulong()
        return not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)) or code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def _name_part(target: Path) -> str:
    """`target`'s name, cut so that a claim's whole name stays within the usual 255-byte limit."""
    room = _MAX_NAME_BYTES - len(f"..{_HOST}-{2**32}-{0:016x}.partial{target.suffix}".encode())
    encoded = os.fsencode(target.name)
    return target.name if len(encoded) <= room else encoded[:room].decode("utf-8", errors="ignore")


def _drop_claim(temp: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()
    _forget(temp.name)


def _forget(name: str) -> None:
    with _live_lock:
        _live.discard(name)


def _truncate(temp: Path) -> None:
    with contextlib.suppress(OSError):
        os.truncate(temp, 0)


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
    import errno
    import shutil

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
