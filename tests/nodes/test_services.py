"""comfy_services: inside ComfyUI its model_management answers; without it the core's own rules do.

The fallbacks must call flashvideo_core.devices (one rule for free memory, the default device, the
cache), not a second copy that can drift from it. And the T5 handle's encoder follows its weights
wherever the handle moves them.
"""

import sys
from types import ModuleType

import pytest
import torch

from flashvideo_core import devices
from flashvideo_core.devices import model_device
from nodes import NODE_CLASS_MAPPINGS as N
from nodes import comfy_services

from ..spies import spy_on_t5_forward

AUTO_TOKENIZER = "auto (tokenizer/ beside the encoder)"


@pytest.fixture()
def fake_comfy(monkeypatch):
    """A stand-in comfy.model_management that records what it was asked."""
    calls = []
    mm = ModuleType("comfy.model_management")
    mm.get_free_memory = lambda device: calls.append(("get_free_memory", device)) or 1234
    mm.get_torch_device = lambda: calls.append(("get_torch_device",)) or torch.device("cpu")
    mm.soft_empty_cache = lambda: calls.append(("soft_empty_cache",))
    comfy = ModuleType("comfy")
    comfy.model_management = mm
    monkeypatch.setitem(sys.modules, "comfy", comfy)
    monkeypatch.setitem(sys.modules, "comfy.model_management", mm)
    return calls


def test_without_comfyui_free_memory_is_the_cores_rule(monkeypatch):
    assert "comfy" not in sys.modules, "these tests run without ComfyUI"
    asked = []
    monkeypatch.setattr(devices, "free_memory", lambda device: asked.append(torch.device(device)) or 777)
    assert comfy_services.free_memory(torch.device("cpu")) == 777
    assert comfy_services.free_memory("cpu") == 777
    assert asked == [torch.device("cpu")] * 2


def test_without_comfyui_device_and_cache_are_the_cores(monkeypatch):
    emptied = []
    monkeypatch.setattr(devices, "default_device", lambda: torch.device("meta"))
    monkeypatch.setattr(devices, "empty_cache", lambda device: emptied.append(device))
    assert comfy_services.torch_device() == torch.device("meta")
    comfy_services.soft_empty_cache()
    assert emptied == [torch.device("meta")]


def test_inside_comfyui_model_management_answers(fake_comfy, monkeypatch):
    monkeypatch.setattr(devices, "free_memory", lambda device: pytest.fail("the core's rule was used in ComfyUI"))
    assert comfy_services.free_memory(torch.device("cpu")) == 1234
    assert comfy_services.torch_device() == torch.device("cpu")
    comfy_services.soft_empty_cache()
    assert fake_comfy == [("get_free_memory", torch.device("cpu")), ("get_torch_device",), ("soft_empty_cache",)]


def test_t5_loader_encoder_follows_the_weights_when_they_move(comfy_models, monkeypatch):
    """Offloading handle: built on the offload device (CPU); active() moves the weights, encode follows them.

    meta stands in for ComfyUI's GPU; the move back to the CPU (active()'s exit) is not possible from
    meta, so the test does what active() does on entry.
    """
    monkeypatch.setattr(comfy_services, "torch_device", lambda: torch.device("meta"))
    t5 = N["FlashVideoT5Loader"]().load("text_encoder/", AUTO_TOKENIZER, "fp32", "offload after use")[0]
    assert t5.text_encoder.model is t5.module
    assert model_device(t5.module) == torch.device("cpu"), "an offloading handle rests on the offload device"
    seen = spy_on_t5_forward(t5.text_encoder)
    t5.module.to(t5.device)  # what t5.active() does first
    t5.text_encoder.encode("a lake")
    assert seen == [(torch.device("meta"), torch.device("meta"))]


def test_t5_text_encode_node_sends_the_ids_to_the_compute_device(comfy_models, monkeypatch):
    monkeypatch.setattr(comfy_services, "torch_device", lambda: torch.device("meta"))
    t5 = N["FlashVideoT5Loader"]().load("text_encoder/", AUTO_TOKENIZER, "fp32", "keep on device")[0]
    seen = spy_on_t5_forward(t5.text_encoder)
    embeds = N["FlashVideoTextEncode"]().encode(t5, "A red fox runs through fresh snow.", True)[0]
    meta = torch.device("meta")
    assert seen == [(meta, meta), (meta, meta)], f"token ids went to {[ids for ids, _ in seen]}, weights on meta"
    assert embeds.stage1.device.type == "cpu" and embeds.stage1.dtype == torch.float32
