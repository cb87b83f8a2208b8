"""The memory modes as node inputs (issue 14): each loader mode runs in the samplers and gives the plain
mode's output (fp8 within its error, the others exactly), the inputs are checked before a run, and saved
workflows without them load as before. Block swap inside ComfyUI's manager: tests/nodes/test_block_swap_nodes.py."""

from types import SimpleNamespace

import pytest
import torch
from diffusers.models.attention_processor import Attention

from flashvideo_core import config
from flashvideo_core.errors import FlashVideoInputError
from flashvideo_core.memory_floor import transformer_floor
from flashvideo_core.model.transformer import FlashVideoTransformer
from flashvideo_core.modes import compile as fv_compile
from flashvideo_core.modes.attention import FlashVideoAttnProcessor
from flashvideo_core.modes.block_swap import device_bytes
from flashvideo_core.modes.fp8 import fp8_layers
from flashvideo_core.modes.settings import ModelModes
from flashvideo_core.planning import planner
from flashvideo_core.planning.room import settings_for
from nodes import NODE_CLASS_MAPPINGS as N
from nodes import comfy_services, node_modes
from nodes.common import LoadedModel

from ..fake_cuda import FAKE_CUDA
from .comfy_validation import validate_like_comfyui

AUTO_TOKENIZER = "auto (tokenizer/ beside the encoder)"
OFFLOAD = "offload after use"
FP8_RTOL = 0.05
"""Largest ||fp8 - plain|| / ||plain|| of a node's output on the tiny random models (measured: Stage I Sampler
1.6%, Stage II Sampler 1.8% of the latent, Enhance Video 1.3% of the frames; the per-layer error of e4m3,
see tests/core/test_fp8.py, through 2 and 1 steps)."""
PLAIN = {}
"""Each node's output with the plain loader (the same in every test: fixed seeds, tiny weights)."""
T5_FP8_RTOL = 0.08
"""The tiny T5's embeddings (tests/core/test_fp8.py T5_RTOL: its layers write into the residual ungated)."""


def _relative(actual, expected) -> float:
    return ((actual - expected).norm() / expected.norm()).item()


def _stage1(stage1, embeds):
    return N["FlashVideoStage1Sampler"]().sample(stage1, embeds, 0, 2, 8.0, 5.0, 5, 32, 48)[0]["samples"]


def _stage2(stage2, embeds):
    latent = {"samples": torch.randn(1, 16, 2, 8, 6, generator=torch.Generator().manual_seed(3)),
              "flashvideo": {"noise_step": 675, "degraded": True}}
    return N["FlashVideoStage2Sampler"]().sample(stage2, embeds, latent, 2, 13.0, 2.5, "euler")[0]["samples"]


def _enhance(stage2, embeds):
    """Enhance Video (the other node that runs a Stage II model): 5 frames, x2, one window."""
    vae = N["FlashVideoVAELoader"]().load("3d-vae.pt", "fp32", OFFLOAD)[0]
    images = torch.rand(5, 16, 32, 3, generator=torch.Generator().manual_seed(4))
    return N["FlashVideoEnhanceImages"]().enhance(stage2, vae, embeds, images, "x2", 64, True, 675, 1, 13.0, 2.5, 5,
                                                  0, False, 0)[0]


@pytest.fixture()
def embeds(comfy_models):
    t5 = N["FlashVideoT5Loader"]().load("text_encoder/", AUTO_TOKENIZER, "fp32", "offload after use")[0]
    return N["FlashVideoTextEncode"]().encode(t5, "A red fox runs through fresh snow.", False)[0]


def _eager_compile(monkeypatch):
    """compile=True with dynamo's eager backend (inductor would build C++ kernels for minutes on the CPU)."""
    calls = []
    real = fv_compile.compile_blocks

    def compile_blocks(model, **kwargs):
        calls.append(model)
        return real(model, backend="eager", **kwargs)

    monkeypatch.setattr("flashvideo_core.modes.apply.compile_blocks", compile_blocks)
    return calls


@pytest.mark.parametrize("modes", [{"weights": "fp8_e4m3fn"}, {"attention": "sage"}, {"attention": "flash"},
                                   {"compile": True}], ids=lambda m: "-".join(map(str, m.values())))
def test_each_loader_mode_runs_in_the_samplers_and_enhance_like_the_plain_loader(embeds, monkeypatch, modes):
    compiled = _eager_compile(monkeypatch)
    for loader, sample in (("FlashVideoStage1Loader", _stage1), ("FlashVideoStage2Loader", _stage2),
                           ("FlashVideoStage2Loader", _enhance)):
        name = "stage1.pt" if "1" in loader else "stage2.pt"
        if sample not in PLAIN:
            PLAIN[sample] = sample(N[loader]().load(name, "fp32", "offload after use")[0], embeds)
        moded = N[loader]().load(name, "fp32", "offload after use", **modes)[0]
        assert moded.modes == ModelModes(**modes)
        want, got = PLAIN[sample], sample(moded, embeds)
        if "weights" in modes:
            assert fp8_layers(moded.module)
            assert 0 < _relative(got, want) <= FP8_RTOL, _relative(got, want)
        else:  # a missing kernel library (and the CPU) falls back to sdpa; eager-compiled blocks compute the same
            assert torch.equal(got, want)
        installed = {type(m.processor) for m in moded.module.modules() if isinstance(m, Attention)}
        assert (installed == {FlashVideoAttnProcessor}) == ("attention" in modes), installed
    if modes.get("compile"):
        assert len(compiled) == 3 and all(block._compiled_call_impl is not None
                                          for block in moded.module.inner.transformer_blocks)


def test_t5_loader_fp8_stores_its_blocks_in_fp8_and_encodes_close_to_plain(comfy_models):
    def load(**modes):
        return N["FlashVideoT5Loader"]().load("text_encoder/", AUTO_TOKENIZER, "fp32", "offload after use", **modes)[0]

    plain, fp8 = load(), load(weights="fp8_e4m3fn")
    assert fp8_layers(fp8.module) and not fp8_layers(plain.module) and fp8.modes.weights == "fp8_e4m3fn"
    prompt = "A red fox runs through fresh snow at sunrise."
    want = N["FlashVideoTextEncode"]().encode(plain, prompt, False)[0].stage1
    got = N["FlashVideoTextEncode"]().encode(fp8, prompt, False)[0].stage1
    assert 0 < _relative(got, want) <= T5_FP8_RTOL


def test_a_workflow_saved_before_the_mode_inputs_loads_the_plain_models(embeds, comfy_models):
    """Old workflows pass only the widgets they had: every mode is off, the output is today's."""
    old = N["FlashVideoStage1Loader"]().load("stage1.pt", "fp32", "offload after use")[0]
    default = N["FlashVideoStage1Loader"]().load("stage1.pt", "fp32", "offload after use", "default", "sdpa", False,
                                                 "off", 20)[0]
    assert old.modes == default.modes == ModelModes()
    assert torch.equal(_stage1(old, embeds), _stage1(default, embeds))
    assert validate_like_comfyui(N["FlashVideoStage1Loader"], {"model_name": "stage1.pt"}) is True


@pytest.mark.parametrize("values, message", [
    ({"block_swap": "manual", "resident_blocks": 10}, "block swap (10 resident blocks) streams blocks from CPU memory"),
    ({"block_swap": "sometimes", "resident_blocks": 10}, "block_swap='sometimes' must be one of off, auto, manual"),
    ({"block_swap": "auto", "resident_blocks": 0}, "resident_blocks=0 is outside 1..64"),
    ({"block_swap": "auto", "resident_blocks": 10}, None),
    ({"block_swap": "off", "resident_blocks": 10}, None),
])
def test_block_swap_inputs_are_checked_before_the_run(comfy_models, values, message):
    for loader, name in (("FlashVideoStage1Loader", "stage1.pt"), ("FlashVideoStage2Loader", "stage2.pt")):
        answer = validate_like_comfyui(N[loader], {"model_name": name, **values})
        assert answer is True if message is None else message in answer, answer


def test_manual_block_swap_is_fine_on_a_gpu_and_refused_on_the_cpu_before_loading(comfy_models, monkeypatch):
    loads = []
    monkeypatch.setattr("nodes.loader_nodes.load_transformer", lambda *a, **k: loads.append(a))
    with pytest.raises(FlashVideoInputError, match="block swap"):
        N["FlashVideoStage2Loader"]().load("stage2.pt", "fp32", "offload after use", block_swap="manual",
                                           resident_blocks=1)
    assert loads == []
    monkeypatch.setattr(comfy_services, "torch_device", lambda: torch.device("meta"))  # a GPU
    values = {"model_name": "stage2.pt", "block_swap": "manual", "resident_blocks": 1}
    assert validate_like_comfyui(N["FlashVideoStage2Loader"], values) is True


def test_auto_block_swap_on_the_cpu_swaps_nothing(embeds, comfy_models):
    plain = N["FlashVideoStage2Loader"]().load("stage2.pt", "fp32", "offload after use")[0]
    auto = N["FlashVideoStage2Loader"]().load("stage2.pt", "fp32", "offload after use", block_swap="auto")[0]
    assert torch.equal(_stage2(auto, embeds), _stage2(plain, embeds))
    assert not hasattr(auto.module, "flashvideo_block_swap")
    assert node_modes.prepare_run(auto, 9, 64, 48, False) is None


def test_a_lora_on_an_fp8_or_block_swap_model_is_refused_with_the_fix(comfy_models):
    for modes, fix in ((dict(weights="fp8_e4m3fn"), "weights set to default"), (dict(block_swap="auto"),
                                                                                "block_swap to off")):
        base = N["FlashVideoStage2Loader"]().load("stage2.pt", "fp32", "offload after use", **modes)[0]
        with pytest.raises(FlashVideoInputError, match=fix):
            N["FlashVideoStage2LoRA"]().apply(base, "style.safetensors", 1.0)



def _busy_gpu_refusal(monkeypatch, handle, free: int, frames=49, width=480, height=256) -> str:
    """The Stage I Sampler's refusal for `handle` on the fake GPU with `free` bytes free (it must not sample)."""
    monkeypatch.setattr(comfy_services, "free_memory", lambda device: free)
    monkeypatch.setattr("nodes.sampling_nodes.run_stage1", lambda *a, **k: pytest.fail("sampled"))
    embeds = SimpleNamespace(stage1=torch.zeros(1, 226, handle.module.config.text_dim), prompt="A fox.")
    with pytest.raises(FlashVideoInputError) as raised:
        N["FlashVideoStage1Sampler"]().sample(handle, embeds, 0, 2, 8.0, 5.0, frames, width, height)
    return str(raised.value)


def test_a_busy_gpu_is_refused_before_sampling_naming_the_mode_that_would_fit(monkeypatch):
    """The published Stage I (5B, built on the fake GPU: shapes, no data) loaded in bf16 leaves 90% of the
    forward's least memory free: the message names the stage, the need, what is free and the mode that fits
    the free memory plus the 10.4 GiB the model holds, in the nodes' inputs."""
    with torch.device(FAKE_CUDA):
        module = FlashVideoTransformer(config.STAGE1_5B).to(torch.bfloat16)
    handle = LoadedModel(module, FAKE_CUDA, None, torch.bfloat16, "stage1.pt")
    need = transformer_floor(49, 256, 480, module.config.hidden_size, torch.bfloat16)
    text = _busy_gpu_refusal(monkeypatch, handle, need * 9 // 10)
    budget = need * 9 // 10 + device_bytes(module, FAKE_CUDA)
    plan = planner.choose_modes(1, 256, 480, 49, budget, torch.bfloat16, base=ModelModes(), config=module.config)
    assert plan.modes.weights == "fp8_e4m3fn", "bf16 weights do not fit beside a busy card's other work"
    held = device_bytes(module, FAKE_CUDA) / 2**30
    assert text.startswith(f"Stage I at 480x256 (WxH) with 49 frames needs at least {held + need / 2**30:.1f} GiB on "
                           f"meta ({held:.1f} GiB of weights + {need / 2**30:.1f} GiB for one model call), and "
                           f"{need * 9 // 10 / 2**30:.1f} GiB is free (+ {held:.1f} GiB of its weights already there)")
    assert f"The mode that fits {budget / 2**30:.1f} GiB (free + {held:.1f} GiB of its weights loaded): " \
           f"{plan.description}" in text
    assert text.endswith(f": {settings_for(plan, node_modes.NODE_WORDS)}.")
    assert "weights fp8_e4m3fn on the loader" in text


def test_when_no_mode_fits_the_message_names_a_size_that_does(comfy_models, monkeypatch):
    stage1 = N["FlashVideoStage1Loader"]().load("stage1.pt", "fp32", OFFLOAD)[0]
    text = _busy_gpu_refusal(monkeypatch, stage1, 2**20)
    assert "Stage I at 480x256 (WxH) with 49 frames needs at least" in text and "No mode fits: " in text
    assert "even in its smallest mode (fp32, fp8 weights, sequential CFG, sdpa)" in text, "no block swap on the CPU"
