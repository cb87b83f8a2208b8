"""The weight flags of a command (--weights and one flag per file) -> weights.loaders.WeightPaths."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from ..weights import tiny as tiny_files
from ..weights.loaders import WeightPaths, find_weights


def resolve_weights(args, names: tuple[str, ...], tiny_note: str) -> tuple[WeightPaths, bool]:
    """(WeightPaths, is_tiny_default): the --weights folder (or none) with each of `names` given as its own flag
    (args.<name>) overriding it; with neither, the embedded tiny random weights, saying `tiny_note` on stderr."""
    if args.weights is None and not any(getattr(args, n) for n in names):
        print(tiny_note, file=sys.stderr)
        return find_weights(tiny_files.ensure_tiny_weights()), True
    paths = find_weights(args.weights) if args.weights else WeightPaths()
    return replace(paths, **{n: Path(getattr(args, n)) for n in names if getattr(args, n)}), False
