"""An out-of-memory error raised mid-run, turned into a clear message (issue 12), never a raw trace.

The up-front refusal (lower_bound.py) is a lower bound, and other programs may take device memory while a
run works, so a run can still run out. MemoryWatch turns that error into a DeviceMemoryError naming the
stage that ran (the caller says which with `at`), its last progress event (phase and step: `track` wraps
the run's callback), what was free when the run started and the stage's least need, and ends with a hint
(room.smaller_mode_hint: the fastest mode that needs less than the one that ran). Before raising it drops
the error's traceback (its frames hold the models and activations), collects garbage and empties the CUDA
cache, so the memory is given back even while the caller keeps the error.

DeviceMemoryError is a FlashVideoInputError (the CLI's memory errors: one line, exit code 2) and a
torch.OutOfMemoryError: ComfyUI (0.3.64 execution.py) treats it as its own out-of-memory (unloads every
model, shows its panel with this text), and code that catches torch.OutOfMemoryError still does.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..devices import empty_cache
from ..errors import FlashVideoInputError
from ..memory_floor import GIB
from ..progress import ProgressCallback, ProgressEvent
from ..vae.retry import is_out_of_memory

VAE_HINT = "The VAE slices itself to the free memory and retries smaller tiles: free memory first."
"""The hint while the VAE alone runs (generate's preview decode)."""


class DeviceMemoryError(FlashVideoInputError, torch.OutOfMemoryError):
    """The device ran out of memory mid-run; the message names the stage, its last progress, the free
    memory at the start and a mode that needs less (MemoryWatch)."""


@dataclass
class MemoryWatch:
    """What a run knows for its out-of-memory message. device: where it runs; free_at_start: bytes free
    there when it started (the up-front check's count); held: bytes of the model's weights already there
    then (a loaded node model); stage, need (its least bytes, weights included; None if unknown) and hint
    (a callable, called only on an error): set by `at` as the run goes; last: the last progress event."""

    device: torch.device = torch.device("cpu")
    free_at_start: int = 0
    held: int = 0
    stage: str = "the run"
    need: int | None = None
    hint: Callable[[], str] | None = None
    last: ProgressEvent | None = None

    def at(self, stage: str, need: int | None = None, hint: Callable[[], str] | None = None) -> None:
        """The run now works on `stage` (e.g. 'Stage I'), needing at least `need` bytes, with its hint. A new
        stage forgets the last progress event: it was the previous stage's, not where this one ran out."""
        if stage != self.stage:
            self.last = None
        self.stage, self.need, self.hint = stage, need, hint

    def track(self, callback: ProgressCallback | None) -> ProgressCallback:
        """`callback` (or none) wrapped to remember the last event (its phase and step; not its preview, a
        tensor maybe on the device); pass the result to the run."""
        def tracked(event: ProgressEvent) -> None:
            self.last = ProgressEvent(event.phase, event.step, event.total)
            if callback is not None:
                callback(event)

        return tracked

    def guard(self) -> _Guard:
        """Context manager: an out-of-memory error (vae.retry.is_out_of_memory; not a FlashVideoInputError)
        raised inside becomes a DeviceMemoryError with message(), the memory released first; other errors
        pass unchanged."""
        return _Guard(self)

    def message(self, cause: str = "") -> str:
        """'<stage> ran out of memory on <device> (last progress: ...): <free at start>, <least need>;
        <why it may happen>. <hint>' plus the error's first line."""
        last = self.last
        where = (f"last progress: {last.phase} {last.step}/{last.total}" if last is not None
                 else "before its first progress report")
        held = f" besides the {self.held / GIB:.1f} GiB of its weights already there" if self.held else ""
        need = f", and it needs at least {self.need / GIB:.1f} GiB" if self.need else ""
        try:
            hint = self.hint() if self.hint is not None else ""
        except Exception as failed:  # the planner must never hide the out-of-memory message itself
            hint = f"(No mode hint: {failed})"
        return " ".join(part for part in (
            f"{self.stage} ran out of memory on {self.device} ({where}). {self.free_at_start / GIB:.1f} GiB was free "
            f"when the run started{held}{need}: another program may have taken memory since, or the run needed "
            "more than that least amount.", hint, f"(The memory is released. Error: {cause})") if part)


def release(device: torch.device | str) -> None:
    """Collect garbage and give the CUDA allocator's cached blocks back to the driver."""
    gc.collect()
    empty_cache(device)


class _Guard:
    """MemoryWatch.guard's context manager. A class, not contextlib's generator: contextlib's __exit__ keeps the
    error's traceback in a local, and that frame would be in the new error's traceback, holding every frame of
    the run (its models, its activations) for as long as the caller keeps the error."""

    def __init__(self, watch: MemoryWatch):
        self.watch = watch

    def __enter__(self) -> MemoryWatch:
        return self.watch

    def __exit__(self, kind, error, traceback) -> bool:
        del traceback
        if not isinstance(error, Exception) or isinstance(error, FlashVideoInputError) or not is_out_of_memory(error):
            return False  # ours already say what to do (this one, the VAE's smallest tiles, the up-front checks)
        cause = (str(error).strip().splitlines() or [type(error).__name__])[0]
        error.__traceback__ = None  # its frames hold the models and activations
        del error
        release(self.watch.device)
        raise DeviceMemoryError(self.watch.message(cause)) from None
