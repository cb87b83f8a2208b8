"""Spies shared by the core and node tests."""

from types import SimpleNamespace

import torch

from flashvideo_core.devices import model_device


def spy_on_t5_forward(encoder) -> list:
    """Record (ids device, weights device) of every T5 forward of a TextEncoder; answer CPU zeros shaped like the
    real output (meta, which stands in for a GPU, cannot be copied out). Returns the list the calls go to."""
    seen = []
    original = encoder.model.forward

    def spy(*, input_ids, **kwargs):
        seen.append((input_ids.device, model_device(encoder.model)))
        hidden = original(input_ids=input_ids, **kwargs).last_hidden_state
        return SimpleNamespace(last_hidden_state=torch.zeros(hidden.shape, dtype=hidden.dtype))

    encoder.model.forward = spy
    return seen
