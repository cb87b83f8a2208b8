"""Device placement as on a GPU, proven on CPU: every node (tiny weights, bf16; the Stage II LoRA node on a tiny
LoRA, its model run by the Stage II sampler) and generate/enhance run
with the compute device faked as CUDA (tests/fake_cuda.py) and fail on any op that mixes devices.

This caught the T5 path: built for the CPU, moved to the GPU by the node, token ids still sent to the
CPU (aten.embedding with CPU ids and GPU weights)."""

import subprocess

import imageio_ffmpeg
import pytest
import torch

from flashvideo_core.enhance.plan import EnhanceSettings
from flashvideo_core.enhance.run import enhance_video_file
from flashvideo_core.pipeline import GenerateSettings, generate
from flashvideo_core.sampling.settings import Stage1Settings, Stage2Settings
from flashvideo_core.training.lora import LoraSettings, attach_lora, save_lora
from flashvideo_core.weights.loaders import find_weights, load_stage2
from nodes import NODE_CLASS_MAPPINGS as N
from nodes import comfy_services

from ..fake_cuda import FAKE_CUDA, DeviceMixError, FakeCuda

OFFLOAD_MODES = ["offload after use", "keep on device"]


LORA = "tiny_stage2_lora.safetensors"


@pytest.fixture()
def fake_gpu(comfy_models, tiny_weights, monkeypatch):
    """The nodes' compute device is the fake GPU; models/flashvideo_loras holds a tiny Stage II LoRA (B nonzero)."""
    monkeypatch.setattr(comfy_services, "torch_device", lambda: FAKE_CUDA)
    path = comfy_models / "flashvideo_loras" / LORA
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        model = load_stage2(tiny_weights["stage2"])
        with torch.no_grad():
            for param in attach_lora(model, LoraSettings(rank=2)):
                param.copy_(torch.randn(param.shape, generator=torch.Generator().manual_seed(0)) * 0.1)
        save_lora(model, path)


def _load(offload):
    t5 = N["FlashVideoT5Loader"]().load("text_encoder/", "auto (tokenizer/ beside the encoder)", "bf16", offload)[0]
    return (N["FlashVideoStage1Loader"]().load("stage1.pt", "bf16", offload)[0],
            N["FlashVideoStage2Loader"]().load("stage2.pt", "bf16", offload)[0],
            N["FlashVideoVAELoader"]().load("3d-vae.pt", "bf16", offload)[0], t5)


@pytest.mark.parametrize("offload", OFFLOAD_MODES)
def test_every_node_keeps_its_tensors_on_one_device(fake_gpu, offload):
    stage1, stage2, vae, t5 = _load(offload)
    with FakeCuda() as mode:
        embeds = N["FlashVideoTextEncode"]().encode(t5, "A red fox runs through fresh snow.", True)[0]
        latent1 = N["FlashVideoStage1Sampler"]().sample(stage1, embeds, 0, 2, 8.0, 5.0, 9, 48, 32, vae=vae)[0]
        preview = N["FlashVideoVAEDecode"]().decode(vae, latent1, "auto", 2, 64, 8)[0]
        prepared = N["FlashVideoPrepareStage2"]().prepare(vae, preview, 96, 64, 1)[0]
        degraded = N["FlashVideoLatentDegradation"]().degrade(prepared, 675, 2)[0]
        with_lora = N["FlashVideoStage2LoRA"]().apply(stage2, LORA, 0.8)[0]
        lora_ran_on = set()  # devices of the LoRA model's weights, adapter included, at each of its forwards
        with_lora.module.register_forward_pre_hook(lambda m, _: lora_ran_on.update(p.device for p in m.parameters()))
        final = N["FlashVideoStage2Sampler"]().sample(with_lora, embeds, degraded, 2, 13.0, 2.5, "euler", vae=vae)[0]
        video = N["FlashVideoVAEDecode"]().decode(vae, final, "manual", 2, 8, 4)[0]
        enhanced = N["FlashVideoEnhanceImages"]().enhance(stage2, vae, embeds, torch.rand(5, 16, 32, 3), "x2", 64,
                                                          True, 675, 1, 13.0, 2.5, 5, 0, False, 0)[0]
    assert video.shape == (9, 64, 96, 3) and enhanced.shape == (5, 32, 64, 3)
    assert lora_ran_on == {FAKE_CUDA}, "the LoRA model (base and adapter) ran whole on the GPU"
    assert mode.gpu_ops > 1000  # the models really ran on the fake GPU


def test_the_mode_catches_a_device_mix():
    """Not blind: CPU ids into GPU weights (the old T5 bug's op) raise, a 0-dim CPU scalar does not."""
    weight = torch.empty(10, 4, device=FAKE_CUDA)
    with FakeCuda():
        assert (weight * torch.tensor(2.0)).device == FAKE_CUDA
        with pytest.raises(DeviceMixError, match="aten.embedding.default mixes devices"):
            torch.nn.functional.embedding(torch.tensor([1, 2]), weight)


def test_generate_and_enhance_keep_their_tensors_on_one_device(tiny_weights_dir, tmp_path):
    weights = find_weights(tiny_weights_dir)
    settings = GenerateSettings(stage1=Stage1Settings(num_frames=5, height=32, width=48, steps=2),
                                stage2=Stage2Settings(steps=1), stage2_height=64, stage2_width=96,
                                device="meta", precision="bf16")
    src = tmp_path / "in.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc=size=48x32:rate=8",
                    "-frames:v", "5", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(src)], check=True)
    with FakeCuda() as mode:
        result = generate("A red fox runs through fresh snow.", weights, tmp_path / "out", settings)
        out = enhance_video_file(src, tmp_path / "enhanced.mp4", EnhanceSettings(scale=2, window=5, overlap=0, steps=1),
                                 weights=weights, device="meta", precision="bf16")
    assert result.final_path.exists() and out.exists() and mode.gpu_ops > 1000
