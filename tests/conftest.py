"""Shared fixtures: tiny random weights in the published layouts, written once per test session."""

from __future__ import annotations

import os
import tempfile

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The embedded tiny default (CLI runs without --weights) caches its files in a temp folder of this
# run, not in the user's ~/.cache/flashvideo: the suite writes nothing outside the system temp folder.
os.environ["FLASHVIDEO_CACHE"] = tempfile.mkdtemp(prefix="flashvideo-test-cache-")


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """{"stage1", "stage2", "vae", "text_encoder", "tokenizer"} -> Path of tiny published-layout files."""
    from flashvideo_core.weights.tiny import write_tiny_weights

    return write_tiny_weights(tmp_path_factory.mktemp("tiny_weights"))


@pytest.fixture(scope="session")
def tiny_weights_dir(tiny_weights):
    """The folder holding the tiny weights (as a user's weights folder would)."""
    return tiny_weights["stage1"].parent
