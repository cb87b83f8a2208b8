"""Write files so that a failed or interrupted run leaves nothing half-written."""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it onto `path`.

    On any exception (including KeyboardInterrupt) the temporary file is removed and `path`
    is untouched. With overwrite=False an existing `path` raises FileExistsError before work starts.
    The temporary name keeps the suffix of `path` so format-sniffing writers (ffmpeg) still work.
    """
    target = Path(path)
    if not overwrite and target.exists():
        raise FileExistsError(f"{target} already exists; choose another output name.")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp: Path | None = None
    try:
        with signals_held():  # a Ctrl-C or SIGTERM now would leave a file that nothing removes
            fd, tmp_name = tempfile.mkstemp(
                prefix=f".{target.stem}.", suffix=f".partial{target.suffix}", dir=target.parent
            )
            tmp = Path(tmp_name)
        os.close(fd)
        yield tmp
        if not overwrite and target.exists():
            raise FileExistsError(f"{target} appeared while writing; not overwriting it.")
        _chmod_default(tmp)
        os.replace(tmp, target)
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


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


def _chmod_default(path: Path) -> None:
    """Give the file the permissions a plainly created file gets (mkstemp makes it private, 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
