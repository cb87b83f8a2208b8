"""Strict loading of a state dict into a model built on the meta device, with one error message.

The transformer, VAE and T5 loaders all end here: the file's tensors must be exactly the model's
(no missing, no unexpected, no mis-shaped one), checked from the shapes before any weight is read,
then cast (progress reported) and assigned without a second copy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..progress import ProgressCallback
from .files import cast_state
from .identify import MODEL_KINDS

SHOWN_KEYS = 5
"""How many keys of each kind (missing, unexpected, mis-shaped) a message lists."""


def check_state_fits(
    state: Mapping[str, torch.Tensor], model: torch.nn.Module, path: str | Path, kind: str,
    tied: Mapping[str, str] | None = None,
) -> None:
    """Raise CheckpointError unless `state` has exactly the tensor names and shapes of `model`.

    state: {name: tensor} read from `path` (only shapes are looked at, so mmapped or meta tensors
    are fine). model: the architecture to fill (its state_dict gives the expected names and shapes).
    kind: a MODEL_KINDS key naming the model. tied: {name: twin} for tensors the model shares under
    two names (either in the file is enough). The message names the file, the model, how many keys
    are missing / unexpected / mis-shaped with the first few of each, and the fix.
    """
    expected = model.state_dict()
    state = _with_twins(state, tied, expected)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(state) & set(expected) if state[k].shape != expected[k].shape
    )
    if missing or unexpected or wrong:
        raise CheckpointError(mismatch_message(path, kind, missing, unexpected, wrong))


def mismatch_message(path: str | Path, kind: str, missing: list[str], unexpected: list[str], wrong: list[str]) -> str:
    """The one message for a state dict that does not fit its model (see check_state_fits).

    path: the file read; kind: a MODEL_KINDS key; missing / unexpected: key names; wrong: lines
    "key: file (shape) vs model (shape)". Returns the message text.
    """
    model = MODEL_KINDS[kind].split(" (")[0]
    parts = []
    if missing:
        parts.append(f"missing {_count(missing, 'tensor')} the model needs: {_first(missing)}")
    if unexpected:
        parts.append(f"{_count(unexpected, 'unexpected tensor')} the model does not have: {_first(unexpected)}")
    if wrong:
        parts.append(f"{_count(wrong, 'tensor')} of the wrong shape: {_first(wrong)}")
    return (
        f"{Path(path).name} does not fit the {model} architecture: {'; '.join(parts)}. "
        f"Use the {MODEL_KINDS[kind]} as published, or a file `convert` made from it; a file cut short, pruned "
        "or of another model variant does not load, so download it again from the model's source."
    )


def load_strict(
    model: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path, kind: str, dtype: torch.dtype,
    callback: ProgressCallback | None = None, convert: Callable[[str, torch.Tensor], torch.Tensor | None] | None = None,
    tied: Mapping[str, str] | None = None,
) -> torch.nn.Module:
    """check_state_fits, then cast_state and assign every tensor to `model` (no second copy).

    model: built on the meta device; state: {name: tensor} read from `path`; kind: a MODEL_KINDS key;
    dtype, convert: see cast_state (convert must keep every key of `state`); callback receives
    ProgressEvent("load <file name>", MB done, MB total). tied: see check_state_fits; the missing
    twin is given the same tensor. Returns `model` (same object, now holding the weights, on CPU).
    """
    check_state_fits(state, model, path, kind, tied)
    cast = cast_state(state, dtype, callback, f"load {Path(path).name}", convert)
    model.load_state_dict(_with_twins(cast, tied, model.state_dict()), assign=True)
    return model


def _with_twins(state: Mapping, tied: Mapping[str, str] | None, expected: Mapping) -> Mapping:
    """`state` plus, for each tied pair the model expects, the name it lacks given its twin's tensor."""
    if not tied:
        return state
    filled = dict(state)
    for name, twin in {**tied, **{b: a for a, b in tied.items()}}.items():
        if name in expected and name not in filled and twin in filled:
            filled[name] = filled[twin]
    return filled


def _count(items: list[str], noun: str) -> str:
    """'1 tensor' / '3 tensors'."""
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _first(items: list[str]) -> str:
    """The first SHOWN_KEYS items joined, with how many more were left out."""
    shown = ", ".join(items[:SHOWN_KEYS])
    return shown if len(items) <= SHOWN_KEYS else f"{shown} and {len(items) - SHOWN_KEYS} more"
