"""Hold SIGINT and SIGTERM over the few steps an interrupt must not split."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator


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
