"""`main`: parse the command line, run the subcommand, turn its errors into one line and an exit code."""

from __future__ import annotations

import sys

from ..errors import CheckpointError, FlashVideoInputError, NonFiniteError
from ..weights.hub import DownloadError
from .commands import COMMANDS
from .console import library_lines
from .interrupts import interrupts_recorded
from .parser import build_parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; returns the exit code (0 ok, 2 bad input or files, 1 disk, system or network
    failure (a download offline), 130 interrupted).

    Ctrl-C and SIGTERM (e.g. `kill`, a job scheduler) both stop the run with the partial output
    files removed. The library's log lines (modes chosen, fallbacks, warnings) go to stderr (console.py).
    """
    args = build_parser().parse_args(argv)
    try:
        with interrupts_recorded(), library_lines(quiet=getattr(args, "quiet", False)):
            return COMMANDS[args.command](args)
    except (FlashVideoInputError, CheckpointError, NonFiniteError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, DownloadError) as exc:  # disk full, permissions, offline: the message names the file
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: the file being written was removed (files already finished are kept).", file=sys.stderr)
        return 130
