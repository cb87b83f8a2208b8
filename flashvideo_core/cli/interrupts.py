"""Ctrl-C and SIGTERM for the CLI, robust to Python dropping the KeyboardInterrupt they raise.

A signal that lands while the interpreter runs a hook whose exceptions are ignored (the at-fork
handlers logging registers, run each time a subprocess such as ffmpeg starts; weakref callbacks)
loses its KeyboardInterrupt ("Exception ignored in ..."), and the run would finish with exit code 0.
So each signal is also recorded, and every progress event raises again until the run stops.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_received: list[int] = []


def _interrupt(signum, frame) -> None:
    _received.append(signum)
    raise KeyboardInterrupt(f"signal {signum}")


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt if a SIGINT/SIGTERM arrived during this run (its first raise may be lost)."""
    if _received:
        raise KeyboardInterrupt(f"signal {_received[0]}")


@contextlib.contextmanager
def interrupts_recorded() -> Iterator[None]:
    """For the block: SIGINT and SIGTERM raise KeyboardInterrupt and are recorded (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    _received.clear()
    for sig in previous:
        signal.signal(sig, _interrupt)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _received.clear()
