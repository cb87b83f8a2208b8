"""Loaders use only names inside the model folders: no '..', no absolute path, no link leading out.

ComfyUI skips its own "value not in list" check for an input VALIDATE_INPUTS names, so anyone who
can queue a prompt through the API could otherwise load any weight file on the disk, and tell from
the error text whether a path exists. Every refused name gets one message, at validation and when
the node runs, whether or not the file exists.
"""

import os
import shutil

import pytest

from flashvideo_core.errors import CheckpointError
from nodes import NODE_CLASS_MAPPINGS as N
from nodes import comfy_services

from .comfy_validation import validate_like_comfyui

AUTO_TOKENIZER = "auto (tokenizer/ beside the encoder)"
LOADERS = {  # node id -> (name input, kind, tiny weight key of a loadable target outside the folder)
    "FlashVideoStage1Loader": ("model_name", "stage1", "stage1"),
    "FlashVideoStage2Loader": ("model_name", "stage2", "stage2"),
    "FlashVideoVAELoader": ("vae_name", "vae", "vae"),
    "FlashVideoT5Loader": ("encoder_name", "t5", "text_encoder"),
}


def _link_or_copy(src, dst):
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@pytest.fixture()
def layout(tiny_weights, tmp_path, monkeypatch):
    """models/FlashVideo with the tiny files (hard links: real files inside), and real, loadable files outside.

    outside/ holds the tiny files, a diffusers-style vae/ folder and a tokenizer/ folder; models/ holds
    links that lead out to them, and one link that stays inside.
    """
    root, pack, outside = tmp_path / "models", tmp_path / "models" / "FlashVideo", tmp_path / "outside"
    pack.mkdir(parents=True)
    (root / "text_encoders").mkdir()
    outside.mkdir()
    for key in ("stage1", "stage2", "vae"):
        _link_or_copy(tiny_weights[key], pack / tiny_weights[key].name)
        _link_or_copy(tiny_weights[key], outside / tiny_weights[key].name)
    for key in ("text_encoder", "tokenizer"):
        shutil.copytree(tiny_weights[key], pack / key, copy_function=_link_or_copy)
        shutil.copytree(tiny_weights[key], outside / key, copy_function=_link_or_copy)
    (outside / "vae").mkdir()
    (outside / "vae" / "config.json").write_text("{}")
    (outside / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"\0" * 16)
    (outside / "secret.txt").write_text("not a model")
    (pack / "linked_out.pt").symlink_to(outside / "stage1.pt")
    (pack / "linked_vae").symlink_to(outside / "vae", target_is_directory=True)
    (pack / "linked_encoder").symlink_to(outside / "text_encoder", target_is_directory=True)
    (pack / "linked_tokenizer").symlink_to(outside / "tokenizer", target_is_directory=True)
    (pack / "everything").symlink_to(outside, target_is_directory=True)
    (pack / "alias.pt").symlink_to(pack / "stage1.pt")  # stays inside: allowed
    monkeypatch.setenv("FLASHVIDEO_MODELS_DIR", str(root))
    return root, pack, outside


def _refused_names(layout, tiny_weights, weight_key):
    """Names that must all be refused: traversal, absolute, links out; existing and missing targets alike."""
    _, pack, outside = layout
    target = outside / tiny_weights[weight_key].name  # a real, loadable model of the right kind
    rel = os.path.relpath(target, pack)
    folder = "/" if target.is_dir() else ""
    return [
        "missing.pt",
        rel + folder,
        "../" + rel + folder,
        "sub/../" + rel + folder,
        str(target) + folder,
        os.path.relpath(outside / "nowhere.pt", pack),
        str(outside / "nowhere.pt"),
        str(outside / "secret.txt"),
        "/etc/shadow", "/etc/nonexistent", "../../../../../../etc/passwd",
        "linked_out.pt", "linked_vae/", "linked_encoder/", "linked_tokenizer/",
        "everything/" + target.name + folder, "everything/secret.txt", "everything/nowhere.pt",
        "../outside/vae/", "linked_vae", str(outside / "vae") + "/",
        "", "/", ".", "./", "stage1.pt\x00.txt", 7, ["stage1.pt"],
    ]


def _same_message(message, name):
    assert isinstance(message, str) and message.startswith(repr(name)), (name, message)
    return "NAME" + message[len(repr(name)):]


@pytest.mark.parametrize("node_id", sorted(LOADERS))
def test_every_name_outside_the_folders_gets_one_message_at_validation(layout, tiny_weights, node_id):
    field, kind, weight_key = LOADERS[node_id]
    messages = {}
    for name in _refused_names(layout, tiny_weights, weight_key):
        message = validate_like_comfyui(N[node_id], {field: name, "precision": "auto", "offload": "keep on device"})
        messages[repr(name)] = _same_message(message, name)
    assert len(set(messages.values())) == 1, "one text for every refused name: no hint whether a path exists"
    text = next(iter(messages.values()))
    assert text.startswith("NAME not found in the") and "no '..', no absolute path, no link leading out" in text


@pytest.mark.parametrize("node_id", sorted(LOADERS))
def test_every_name_outside_the_folders_is_refused_when_the_loader_runs(layout, tiny_weights, node_id):
    field, kind, weight_key = LOADERS[node_id]
    texts = set()
    for name in _refused_names(layout, tiny_weights, weight_key):
        args = (name, AUTO_TOKENIZER, "auto", "keep on device") if kind == "t5" else (name, "auto", "keep on device")
        with pytest.raises(CheckpointError) as caught:
            N[node_id]().load(*args)
        texts.add(_same_message(str(caught.value), name))
    assert texts == {_same_message(comfy_services.rejected_model_message(kind, "x"), "x")}


def test_the_t5_tokenizer_name_is_held_to_the_folders_too(layout):
    loader = N["FlashVideoT5Loader"]()
    for tokenizer in ("../outside/tokenizer/", "linked_tokenizer/", "/etc/", "everything/tokenizer/"):
        with pytest.raises(CheckpointError, match="not found in the t5 model folders"):
            loader.load("text_encoder/", tokenizer, "auto", "keep on device")
    assert loader.load("text_encoder/", "tokenizer/", "auto", "keep on device")[0].text_encoder is not None


def test_names_inside_the_folders_still_load_and_links_out_are_not_listed(layout):
    stage1 = N["FlashVideoStage1Loader"]
    names = stage1.INPUT_TYPES()["required"]["model_name"][0]
    assert {"stage1.pt", "alias.pt", "text_encoder/"} <= set(names)
    assert not any(n.startswith(("linked", "everything")) for n in names), names
    tokenizers = N["FlashVideoT5Loader"].INPUT_TYPES()["required"]["tokenizer"][0]
    assert "tokenizer/" in tokenizers and "linked_tokenizer/" not in tokenizers
    assert validate_like_comfyui(stage1, {"model_name": "alias.pt"}) is True, "a link that stays inside is fine"
    assert validate_like_comfyui(stage1, {"model_name": "./stage1.pt"}) is True
    assert validate_like_comfyui(N["FlashVideoT5Loader"], {"encoder_name": "text_encoder/"}) is True
    assert stage1().load("alias.pt", "auto", "keep on device")[0].module is not None
