"""The library's own log lines on the terminal while a command runs, in the CLI's form.

The library reports what it chose through `logging` (loggers under `flashvideo_core.`: the memory and
attention modes that will run, a missing attention kernel's fallback to sdpa, the memory modes `--memory
auto` picked, a prompt that was cut). A command shows them on stderr: INFO lines as they are (like the run's
summary), WARNING and above as 'warning: ...'; `--quiet` keeps the warnings only. They are written through
tqdm, which clears an open progress bar, prints the line and draws the bar again below it, so no bar is
garbled. Only the `flashvideo_core` logger is touched (a handler and its level, both undone when the command
ends): the root logger, and so the logging of a program that calls `main`, stays as it was.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

from tqdm import tqdm

LIBRARY_LOGGER = "flashvideo_core"


class ConsoleHandler(logging.Handler):
    """Writes each record through tqdm.write on the current sys.stderr (so a progress bar is redrawn)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.levelno >= logging.WARNING:
                text = f"{record.levelname.lower()}: {text}"
            tqdm.write(text, file=sys.stderr)
        except Exception:  # a broken stderr must not stop the run (logging's own rule)
            self.handleError(record)


@contextlib.contextmanager
def library_lines(quiet: bool = False) -> Iterator[ConsoleHandler]:
    """Show the flashvideo_core loggers' INFO lines (WARNING with quiet) on stderr for the block."""
    logger = logging.getLogger(LIBRARY_LOGGER)
    handler = ConsoleHandler()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
