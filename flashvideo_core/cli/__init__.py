"""Command line: `python -m flashvideo_core {generate,enhance,train-stage2,convert,tiny-weights,download} ...`.

parser.py builds the argument parser (flags, help texts, TINY_SETTINGS; train_parser.py the
train-stage2 flags), commands.py runs each subcommand (train.py train-stage2, train_progress.py its
plan, bar and log), bars.py draws the progress bars (TqdmProgress), entry.py is `main` (dispatch, exit codes,
SIGTERM). The `flashvideo` console script and `python -m flashvideo_core` both call `main`.
"""

from .bars import TqdmProgress
from .commands import describe_generate, tiny_generate_settings
from .entry import main
from .parser import TINY_SETTINGS, build_parser

__all__ = ["TINY_SETTINGS", "TqdmProgress", "build_parser", "describe_generate", "main", "tiny_generate_settings"]
