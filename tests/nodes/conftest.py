"""Node tests run without ComfyUI: model folders come from FLASHVIDEO_MODELS_DIR."""

import shutil

import pytest


@pytest.fixture(scope="session")
def models_dir(tiny_weights, tmp_path_factory):
    """A ComfyUI-like models folder: FlashVideo/ with the tiny published files, text_encoders/ with T5."""
    root = tmp_path_factory.mktemp("models")
    pack = root / "FlashVideo"
    pack.mkdir()
    for name in ("stage1", "stage2", "vae"):
        shutil.copy(tiny_weights[name], pack / tiny_weights[name].name)
    shutil.copytree(tiny_weights["text_encoder"], pack / "text_encoder")
    shutil.copytree(tiny_weights["tokenizer"], pack / "tokenizer")
    (root / "text_encoders").mkdir()
    return root


@pytest.fixture()
def comfy_models(models_dir, monkeypatch):
    monkeypatch.setenv("FLASHVIDEO_MODELS_DIR", str(models_dir))
    return models_dir
