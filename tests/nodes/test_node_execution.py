"""Every node executed on tiny published-layout weights, wired as the shipped workflows wire them."""

import pytest
import torch

from flashvideo_core.errors import CheckpointError, FlashVideoInputError
from nodes import NODE_CLASS_MAPPINGS as N

from .comfy_validation import validate_like_comfyui


@pytest.fixture()
def models(comfy_models):
    stage1 = N["FlashVideoStage1Loader"]().load("stage1.pt", "auto", "offload after use")[0]
    stage2 = N["FlashVideoStage2Loader"]().load("stage2.pt", "auto", "keep on device")[0]
    vae = N["FlashVideoVAELoader"]().load("3d-vae.pt", "fp32", "offload after use")[0]
    t5 = N["FlashVideoT5Loader"]().load("text_encoder/", "auto (tokenizer/ beside the encoder)", "auto",
                                        "offload after use")[0]
    return stage1, stage2, vae, t5


def test_loaders_list_the_published_files(comfy_models):
    names = N["FlashVideoStage1Loader"].INPUT_TYPES()["required"]["model_name"][0]
    assert {"stage1.pt", "stage2.pt", "3d-vae.pt"} <= set(names)
    t5_names = N["FlashVideoT5Loader"].INPUT_TYPES()["required"]["encoder_name"][0]
    assert "text_encoder/" in t5_names and not any(n.endswith("model.safetensors") for n in t5_names)
    assert N["FlashVideoVAELoader"].VALIDATE_INPUTS(vae_name="missing.pt").startswith("'missing.pt' not found")


def test_full_two_stage_graph(models):
    stage1, stage2, vae, t5 = models
    embeds = N["FlashVideoTextEncode"]().encode(t5, "A red fox runs through fresh snow at sunrise.", True)[0]
    assert not torch.equal(embeds.stage1, embeds.stage2)
    latent1 = N["FlashVideoStage1Sampler"]().sample(stage1, embeds, 0, 3, 8.0, 5.0, 9, 48, 32, vae=vae)[0]
    assert latent1["samples"].shape == (1, 16, 3, 4, 6) and latent1["flashvideo"]["stage"] == 1
    preview = N["FlashVideoVAEDecode"]().decode(vae, latent1, "auto", 2, 64, 8)[0]
    assert preview.shape == (9, 32, 48, 3) and 0 <= preview.min() and preview.max() <= 1
    prepared = N["FlashVideoPrepareStage2"]().prepare(vae, preview, 96, 64, 0)[0]
    assert prepared["samples"].shape == (1, 16, 3, 8, 12)
    degraded = N["FlashVideoLatentDegradation"]().degrade(prepared, 675, 0)[0]
    assert degraded["flashvideo"]["noise_step"] == 675
    final = N["FlashVideoStage2Sampler"]().sample(stage2, embeds, degraded, 2, 13.0, 2.5, "euler")[0]
    video = N["FlashVideoVAEDecode"]().decode(vae, final, "manual", 2, 8, 4)[0]
    assert video.shape == (9, 64, 96, 3)


def test_stage2_refuses_an_undegraded_latent(models):
    _, stage2, vae, t5 = models
    embeds = N["FlashVideoTextEncode"]().encode(t5, "A lake.", False)[0]
    images = torch.rand(5, 32, 32, 3)
    prepared = N["FlashVideoPrepareStage2"]().prepare(vae, images, 64, 64, 0)[0]
    with pytest.raises(FlashVideoInputError, match="connect FlashVideo Latent Degradation"):
        N["FlashVideoStage2Sampler"]().sample(stage2, embeds, prepared, 2, 13.0, 2.5, "euler")


def test_bad_widget_values_are_named_at_validation():
    stage1, prepare = N["FlashVideoStage1Sampler"], N["FlashVideoPrepareStage2"]
    defaults = {"seed": 0, "steps": 51, "cfg": 8.0, "cfg_exponent": 5.0, "frames": 49, "width": 480, "height": 256}
    assert validate_like_comfyui(stage1, defaults) is True
    # the core's own checks and messages (Stage1Settings), as the CLI prints them
    message = validate_like_comfyui(stage1, {**defaults, "frames": 50})
    assert "frames=50 is not a frame count of the form 4k+1 (valid: 1, 5, 9, ..., 49, ...; nearest below: 49" in message
    message = validate_like_comfyui(stage1, {**defaults, "width": 270})
    assert "Stage I size width=270 must be a multiple of 16" in message
    # ComfyUI skips its own range check for inputs VALIDATE_INPUTS names, so the node does it
    assert "width=0 is outside 16..4096" in validate_like_comfyui(stage1, {**defaults, "width": 0})
    assert "frames=-3 is outside 1..1025" in validate_like_comfyui(stage1, {**defaults, "frames": -3})
    assert validate_like_comfyui(stage1, {**defaults}, linked={"frames", "width"}) is True
    assert "multiple of 16" in validate_like_comfyui(prepare, {"width": 1080, "height": 1920, "seed": 0})
    assert "height=8 is outside 16..8192" in validate_like_comfyui(prepare, {"width": 1920, "height": 8, "seed": 0})


@pytest.mark.parametrize(("loader", "name", "looks_like"), [
    ("FlashVideoStage2Loader", "3d-vae.pt", "CogVideoX 3D VAE"),
    ("FlashVideoStage1Loader", "stage2.pt", "FlashVideo Stage II transformer"),
    ("FlashVideoVAELoader", "stage1.pt", "FlashVideo Stage I transformer"),
])
def test_a_model_in_the_wrong_loader_is_named_at_validation(comfy_models, loader, name, looks_like):
    field = {"FlashVideoVAELoader": "vae_name"}.get(loader, "model_name")
    message = validate_like_comfyui(N[loader], {field: name, "precision": "auto", "offload": "keep on device"})
    assert message.startswith(f"{name} looks like {looks_like}") and "right loader" in message


def test_a_truncated_weight_file_is_named_at_validation(comfy_models):
    broken = comfy_models / "FlashVideo" / "stage2_truncated.pt"
    data = (comfy_models / "FlashVideo" / "stage2.pt").read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    try:
        message = validate_like_comfyui(N["FlashVideoStage2Loader"], {"model_name": broken.name})
        assert "could not be read (truncated or corrupt file?)" in message
        assert validate_like_comfyui(N["FlashVideoStage2Loader"], {"model_name": "stage2.pt"}) is True
    finally:
        broken.unlink()


def test_bad_inputs_are_clear(models, comfy_models):
    stage1, stage2, vae, _ = models
    with pytest.raises(FlashVideoInputError, match="images frames=48 is not a frame count of the form 4k\\+1.*Trim"):
        N["FlashVideoPrepareStage2"]().prepare(vae, torch.rand(48, 32, 32, 3), 64, 64, 0)
    with pytest.raises(FlashVideoInputError, match="channels.*another model family"):
        N["FlashVideoVAEDecode"]().decode(vae, {"samples": torch.zeros(1, 4, 2, 8, 8)}, "auto", 2, 64, 8)
    with pytest.raises(FlashVideoInputError, match="has no frames"):
        N["FlashVideoPrepareStage2"]().prepare(vae, torch.rand(0, 32, 32, 3), 64, 64, 0)
    with pytest.raises(FlashVideoInputError, match="Image latents .* not FlashVideo"):
        N["FlashVideoStage2Sampler"]().sample(stage2, None, {"samples": torch.zeros(1, 4, 64, 64)}, 2, 13.0, 2.5,
                                              "euler")
    with pytest.raises(CheckpointError, match="looks like CogVideoX 3D VAE"):
        N["FlashVideoStage2Loader"]().load("3d-vae.pt", "auto", "keep on device")


def test_prepare_stage2_takes_rgba_and_gray_frames(models):
    vae = models[2]
    rgb = torch.rand(5, 32, 32, 3)
    rgba = torch.cat([rgb, torch.rand(5, 32, 32, 1)], dim=-1)
    as_rgb = N["FlashVideoPrepareStage2"]().prepare(vae, rgb, 64, 64, 0)[0]["samples"]
    as_rgba = N["FlashVideoPrepareStage2"]().prepare(vae, rgba, 64, 64, 0)[0]["samples"]
    assert torch.equal(as_rgb, as_rgba), "alpha is dropped, the colours are used as they are"
    gray = N["FlashVideoPrepareStage2"]().prepare(vae, rgb[..., :1], 64, 64, 0)[0]["samples"]
    same = N["FlashVideoPrepareStage2"]().prepare(vae, rgb[..., :1].expand(-1, -1, -1, 3), 64, 64, 0)[0]["samples"]
    assert torch.equal(gray, same)


def test_enhance_node_keeps_frame_count_and_exact_size(models):
    _, stage2, vae, t5 = models
    embeds = N["FlashVideoTextEncode"]().encode(t5, "A lake.", False)[0]
    images = torch.rand(6, 30, 40, 3)
    out = N["FlashVideoEnhanceImages"]().enhance(stage2, vae, embeds, images, "x2", 1920, True, 675, 1, 13.0, 2.5,
                                                 5, 2, False, 0)[0]
    assert out.shape == (6, 60, 80, 3)


class _RecordingBar:
    """Stands in for comfy.utils.ProgressBar: records every (value, total, has preview) it is given."""

    made: list = []

    def __init__(self, total):
        self.total = total
        self.values = []
        _RecordingBar.made.append(self)

    def update_absolute(self, value, total=None, preview=None):
        self.values.append((value, total, preview is not None))


def test_enhance_node_drives_one_progress_bar_for_the_whole_clip(models, monkeypatch, tmp_path):
    """Several windows x (encode, Stage II, decode) must show as one bar that only moves forward, with previews."""
    import sys
    import types

    comfy = types.ModuleType("comfy")
    comfy.__file__ = str(tmp_path / "comfy" / "__init__.py")
    comfy.utils = types.SimpleNamespace(ProgressBar=_RecordingBar)
    monkeypatch.setitem(sys.modules, "comfy", comfy)
    monkeypatch.setitem(sys.modules, "comfy.utils", comfy.utils)
    _RecordingBar.made = []
    _, stage2, vae, t5 = models
    embeds = N["FlashVideoTextEncode"]().encode(t5, "A lake.", False)[0]
    images = torch.rand(13, 24, 32, 3)  # window 5, overlap 1: 3 windows
    N["FlashVideoEnhanceImages"]().enhance(stage2, vae, embeds, images, "x2", 1920, True, 675, 2, 13.0, 2.5,
                                           5, 1, False, 0)
    (bar,) = _RecordingBar.made
    values = [value for value, _, _ in bar.values]
    assert {total for _, total, _ in bar.values} == {bar.total} == {3000}
    assert values == sorted(values) and values[0] == 0 and values[-1] == bar.total
    assert len(set(values)) > 9, "the bar must move inside each window, not only between windows"
    assert any(has_preview for _, _, has_preview in bar.values), "Stage II steps show previews"


def test_download_node_is_clear_offline(tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    from flashvideo_core.weights.hub import DownloadError

    monkeypatch.setenv("FLASHVIDEO_MODELS_DIR", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DownloadError, match="offline"):
        N["FlashVideoDownloadWeights"]().download("vae")


def test_single_file_t5_uses_comfyuis_bundled_tokenizer(comfy_models, tiny_weights, tmp_path, monkeypatch):
    from flashvideo_core.text.encoder import write_tiny_t5_single_file
    from flashvideo_core.text.loading import load_t5_tokenizer
    from nodes import comfy_services

    write_tiny_t5_single_file(comfy_models / "text_encoders" / "t5xxl_tiny.safetensors", tiny_weights["text_encoder"])
    bundled = tmp_path / "t5_tokenizer"
    load_t5_tokenizer(tiny_weights["tokenizer"]).save_pretrained(bundled)  # writes tokenizer.json as ComfyUI ships
    (bundled / "spiece.model").unlink(missing_ok=True)
    loader = N["FlashVideoT5Loader"]()
    auto = "auto (tokenizer/ beside the encoder)"
    monkeypatch.setattr(comfy_services, "bundled_t5_tokenizer", lambda: None)
    with pytest.raises(CheckpointError, match="No T5 tokenizer found"):
        loader.load("t5xxl_tiny.safetensors", auto, "auto", "offload after use")
    monkeypatch.setattr(comfy_services, "bundled_t5_tokenizer", lambda: bundled)
    t5 = loader.load("t5xxl_tiny.safetensors", auto, "auto", "offload after use")[0]
    embeds = N["FlashVideoTextEncode"]().encode(t5, "A red fox runs through fresh snow.", False)[0]
    folder = N["FlashVideoT5Loader"]().load("text_encoder/", auto, "auto", "offload after use")[0]
    reference = N["FlashVideoTextEncode"]().encode(folder, "A red fox runs through fresh snow.", False)[0]
    assert torch.allclose(embeds.stage1, reference.stage1, atol=1e-5)


def test_a_sampler_that_cannot_fit_is_refused_before_sampling(models, monkeypatch):
    from nodes import comfy_services

    stage1, _, vae, t5 = models
    embeds = N["FlashVideoTextEncode"]().encode(t5, "A lake.", False)[0]
    monkeypatch.setattr(comfy_services, "free_memory", lambda device: 2**10)
    calls = []
    monkeypatch.setattr(stage1.module, "forward", lambda *a, **k: calls.append(a))
    with pytest.raises(FlashVideoInputError, match=r"Stage I at 48x32 \(WxH\) with 9 frames needs at least"):
        N["FlashVideoStage1Sampler"]().sample(stage1, embeds, 0, 2, 8.0, 5.0, 9, 48, 32)
    assert calls == []


def test_enhance_window_settings_are_named_at_validation():
    enhance = N["FlashVideoEnhanceImages"]
    assert validate_like_comfyui(enhance, {"window": 49, "overlap": 8, "long_edge": 1920}) is True
    assert "window=50 is not a frame count of the form 4k+1" in validate_like_comfyui(enhance, {"window": 50})
    assert "overlap=9 must be an integer from 0 to 8" in validate_like_comfyui(enhance, {"window": 9, "overlap": 9})
    assert "long_edge=1001 must be even" in validate_like_comfyui(enhance, {"long_edge": 1001})
    assert "window=3 is outside 5..257" in validate_like_comfyui(enhance, {"window": 3})


def test_sequential_cfg_in_the_samplers_gives_the_batched_latents(models):
    from tests.equivalence import assert_same_outputs

    stage1, stage2, vae, t5 = models
    embeds = N["FlashVideoTextEncode"]().encode(t5, "A lake.", False)[0]
    one = N["FlashVideoStage1Sampler"]().sample(stage1, embeds, 0, 2, 8.0, 5.0, 5, 32, 32)[0]
    two = N["FlashVideoStage1Sampler"]().sample(stage1, embeds, 0, 2, 8.0, 5.0, 5, 32, 32, sequential_cfg=True)[0]
    assert_same_outputs(two["samples"], one["samples"])
    degraded = N["FlashVideoLatentDegradation"]().degrade(one, 675, 2)[0]
    a = N["FlashVideoStage2Sampler"]().sample(stage2, embeds, degraded, 2, 13.0, 2.5, "euler")[0]
    b = N["FlashVideoStage2Sampler"]().sample(stage2, embeds, degraded, 2, 13.0, 2.5, "euler", sequential_cfg=True)[0]
    assert_same_outputs(b["samples"], a["samples"])
