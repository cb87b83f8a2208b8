"""Claim files: the hidden temporary name a run writes to is also its claim on the target.

Name: `.<target name>.<host>-<pid>-<stamp>.partial<suffix>` (HOST: a short hash of this machine's
name, pid: the writing process, stamp: its creation time in ns as 16 hex digits, suffix: the
target's). Here: making and dropping this process's claims, finding a rival's, and removing the
stale claims of runs that are gone (this machine, process no longer exists).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

HOST = hashlib.sha1(socket.gethostname().encode(errors="replace")).hexdigest()[:6]
"""This machine in claim names: the first 6 hex digits of the SHA-1 of its host name."""
_CLAIM = re.compile(r"^\.(?P<name>.+)\.(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-(?P<stamp>[0-9a-f]{16})\.partial"
                    r"(?P<suffix>\.[^.]*)?$")
_MAX_NAME_BYTES = 255
_live_lock = threading.Lock()
_live: set[str] = set()  # claim names this process holds (checked before a claim with our own pid is cleaned)


def create_claim(target: Path) -> Path:
    """Create this run's empty, uniquely named claim file beside `target` (O_EXCL) and remember it as live."""
    while True:
        name = f".{_name_part(target)}.{HOST}-{os.getpid()}-{time.time_ns():016x}.partial{target.suffix}"
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


def drop_claim(temp: Path) -> None:
    """Remove this run's claim file `temp` (if still there) and stop counting it as live."""
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()
    _forget(temp.name)


def refuse_rival(target: Path, own: Path) -> None:
    """FileExistsError if a live claim on `target` older than `own` exists (the older claim wins a tie)."""
    mine = _age_key(_CLAIM.match(own.name))
    for path, claim in _claims_in(target.parent):
        if (path.name != own.name and _claims_target(claim, target) and _age_key(claim) < mine
                and not _is_stale(path.name, claim)):
            where = "this machine" if claim["host"] == HOST else "another machine (a shared folder)"
            raise FileExistsError(
                f"{target} is being written by another run right now (claim {path.name}, process {claim['pid']} "
                f"on {where}); choose another output name, or wait for it. If no run is writing it, delete {path}."
            )


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
    if claim["host"] != HOST:
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
    room = _MAX_NAME_BYTES - len(f"..{HOST}-{2**32}-{0:016x}.partial{target.suffix}".encode())
    encoded = os.fsencode(target.name)
    return target.name if len(encoded) <= room else encoded[:room].decode("utf-8", errors="ignore")


def _forget(name: str) -> None:
    with _live_lock:
        _live.discard(name)
