"""The Hugging Face helper is explicit and fails clearly offline."""

import pytest

from flashvideo_core.errors import FlashVideoInputError
from flashvideo_core.hub import PUBLISHED_FILES, DownloadError, download_weights


def test_published_files_are_listed():
    names = {f.filename for files in PUBLISHED_FILES.values() for f in files}
    assert {"stage1.pt", "stage2.pt", "3d-vae.pt", "tokenizer/spiece.model"} <= names


def test_offline_download_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DownloadError, match="offline"):
        download_weights(tmp_path, ["vae"])


def test_unknown_file_key(tmp_path):
    with pytest.raises(FlashVideoInputError, match="unknown"):
        download_weights(tmp_path, ["stage3"])
