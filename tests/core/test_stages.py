"""run_stage1 / run_stage2: validation before any model call, noise and scaling, RAW latents out."""

import pytest
import torch

from flashvideo_core import config
from flashvideo_core.errors import FlashVideoInputError
from flashvideo_core.model.transformer import build_transformer
from flashvideo_core.rng import cpu_generator
from flashvideo_core.sampling.degradation import degrade_latent
from flashvideo_core.sampling.schedule import stage1_alphas, stage1_timesteps
from flashvideo_core.sampling.settings import Stage1Settings, Stage2Settings
from flashvideo_core.sampling.stages import run_stage1, run_stage2

TEXT_DIM = 4
S1, S2 = config.STAGE1_SCALE_FACTOR, config.STAGE2_SCALE_FACTOR


class FakeModel(torch.nn.Module):
    """Records calls; out = `value` for the conditional half (text != 0) and 0 for the unconditional one."""

    source_file = None

    def __init__(self, stage2=False, value=0.0, dtype=torch.float32):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros((), dtype=dtype))
        self.config = config.TransformerConfig(num_layers=1, num_heads=1, text_dim=TEXT_DIM, stage2_extras=stage2)
        self.value = value
        self.calls = []

    def forward(self, latents, text, timestep, noise_step=None):
        self.calls.append({"latents": latents.clone(), "timestep": timestep.clone(), "noise_step": noise_step})
        is_cond = (text.abs().sum(dim=(1, 2)) > 0).to(latents.dtype).view(-1, 1, 1, 1, 1)
        return torch.zeros_like(latents) + self.p + self.value * is_cond


def _cond(width=TEXT_DIM, batch=1):
    return torch.ones(batch, 5, width)


def test_stage1_initial_noise_is_the_seeded_official_layout_draw_and_feeds_the_sampler():
    model = FakeModel()  # v = 0 -> x0 = sqrt(a) x; at t = 999, a = 0 so x0 = 0
    out = run_stage1(model, _cond(), Stage1Settings(num_frames=9, height=32, width=48, steps=2), seed=7)
    generator = cpu_generator(7)
    first = torch.randn(1, 3, 16, 4, 6, generator=generator)  # (1, T, 16, h, w), as the official script draws
    assert torch.equal(model.calls[0]["latents"][1:], first)
    timesteps = stage1_timesteps(2)
    a_next = stage1_alphas(timesteps).sampler[timesteps[1]].sqrt().item()
    # the same generator goes on; sampler noise is drawn in the sampler's latent layout (1, 16, T, h, w)
    second = (1 - a_next**2) ** 0.5 * torch.randn(1, 16, 3, 4, 6, generator=generator)
    assert torch.allclose(model.calls[1]["latents"][1:], second.permute(0, 2, 1, 3, 4), atol=1e-6)
    a_last = stage1_alphas(timesteps).denoiser[timesteps[1]].sqrt().item()
    assert torch.allclose(out, a_last * second / S1, atol=1e-6)  # RAW = x0 / 0.7
    assert [c["timestep"].tolist() for c in model.calls] == [[999.0, 999.0], [float(timesteps[1])] * 2]


def test_stage1_returns_a_raw_fp32_cpu_latent_and_raw_previews():
    model = FakeModel(value=0.3)
    events = []
    settings = Stage1Settings(num_frames=5, height=16, width=32, steps=3)
    out = run_stage1(model, _cond(), settings, seed=1, callback=events.append)
    assert out.shape == (1, 16, 2, 2, 4) and out.dtype == torch.float32 and out.device.type == "cpu"
    assert [(e.phase, e.step, e.total) for e in events] == [("stage1", i, 3) for i in (1, 2, 3)]
    assert torch.equal(events[-1].preview, out)


def test_stage1_schedule_rule_and_constant_cfg_are_wired_through():
    def run(**kwargs):
        settings = Stage1Settings(num_frames=5, height=16, width=16, steps=4, **kwargs)
        return run_stage1(FakeModel(value=0.5), _cond(), settings, seed=3)

    official = run()
    assert torch.equal(official, run(schedule="official"))
    assert not torch.allclose(official, run(schedule="diffusers"))
    assert not torch.allclose(official, run(dynamic_cfg=False))


def test_stage1_casts_the_model_in_place_when_a_dtype_is_given():
    model = FakeModel()
    out = run_stage1(model, _cond(), Stage1Settings(num_frames=5, height=16, width=16, steps=2), dtype=torch.float64)
    assert model.p.dtype == torch.float64 and model.calls[0]["latents"].dtype == torch.float64
    assert model.calls[0]["timestep"].dtype == torch.float32 and out.dtype == torch.float32


@pytest.mark.parametrize("kwargs, message", [
    ({"num_frames": 50}, "frames=50"),
    ({"height": 100}, "height=100"),
    ({"width": 8}, "width=8"),
    ({"steps": 0}, "steps=0"),
    ({"cfg": -1.0}, "cfg=-1.0"),
    ({"schedule": "karras"}, "schedule='karras'"),
])
def test_stage1_settings_refuse_bad_values_when_made(kwargs, message):
    with pytest.raises(FlashVideoInputError, match=message):
        Stage1Settings(**{"num_frames": 9, "height": 32, "width": 48, **kwargs})


def test_stage1_refuses_a_bad_seed_before_any_model_call():
    model = FakeModel()
    with pytest.raises(FlashVideoInputError, match="seed=-1"):
        run_stage1(model, _cond(), Stage1Settings(num_frames=5, height=16, width=16), seed=-1)
    assert model.calls == []


@pytest.mark.parametrize("cond, message", [
    (torch.zeros(1, 5, 4096), "width is 4096 but this model expects 4"),
    (torch.zeros(2, 5, TEXT_DIM), "batch is 2"),
    (torch.zeros(5, TEXT_DIM), "must be"),
])
def test_stage1_names_a_bad_prompt_embedding_before_any_model_call(cond, message):
    model = FakeModel()
    with pytest.raises(FlashVideoInputError, match=message):
        run_stage1(model, cond, Stage1Settings(num_frames=5, height=16, width=16))
    assert model.calls == []


def test_each_stage_refuses_the_other_stages_model():
    with pytest.raises(FlashVideoInputError, match="Stage II model was given where the Stage I"):
        run_stage1(FakeModel(stage2=True), _cond(), Stage1Settings(num_frames=5, height=16, width=16))
    with pytest.raises(FlashVideoInputError, match="Stage I model was given where the Stage II"):
        run_stage2(FakeModel(), _cond(), torch.zeros(1, 16, 1, 4, 4))


def test_stage2_integrates_the_guided_velocity_in_scaled_space_and_returns_raw():
    model = FakeModel(stage2=True, value=0.2)  # v_c = 0.2, v_u = 0 -> v = cfg * 0.2, constant
    latent = torch.randn(1, 16, 2, 4, 6, generator=torch.Generator().manual_seed(0))
    events = []
    out = run_stage2(model, _cond(), latent, Stage2Settings(steps=4, cfg=13.0), callback=events.append)
    assert out.shape == latent.shape and out.dtype == torch.float32 and out.device.type == "cpu"
    assert torch.allclose(out, latent + 13.0 * 0.2 / S2, atol=1e-5)  # Z1 = Z0 + v over t in [0, 1]
    assert [(e.phase, e.step) for e in events] == [("stage2", i) for i in (1, 2, 3, 4)]
    assert all(torch.allclose(e.preview, out, atol=1e-5) for e in events)  # x0 estimates in RAW space
    assert model.calls[0]["noise_step"].tolist() == [675.0, 675.0]
    seen = [c["timestep"][0].item() for c in model.calls]
    assert seen == pytest.approx([1000.0, 882.3529, 714.2857, 454.5454], abs=1e-3)


def test_stage2_time_values_follow_the_official_bf16_rounding_unless_disabled():
    latent = torch.zeros(1, 16, 1, 2, 2)
    rounded = FakeModel(stage2=True, dtype=torch.bfloat16)
    run_stage2(rounded, _cond(), latent, Stage2Settings(steps=5))
    assert [c["timestep"][0].item() for c in rounded.calls] == [1000.0, 904.0, 784.0, 624.0, 384.0]
    assert rounded.calls[0]["noise_step"][0].item() == 676.0
    exact = FakeModel(stage2=True, dtype=torch.bfloat16)
    run_stage2(exact, _cond(), latent, Stage2Settings(steps=5, round_times=False))
    seen = [c["timestep"][0].item() for c in exact.calls]
    assert seen == pytest.approx([1000.0, 909.0909, 789.4737, 625.0, 384.6154], abs=1e-3)
    assert exact.calls[0]["noise_step"][0].item() == 675.0


def test_stage2_accepts_a_batch_with_one_or_per_sample_prompts():
    latent = torch.zeros(2, 16, 1, 2, 2)
    assert run_stage2(FakeModel(stage2=True), _cond(), latent, Stage2Settings(steps=1)).shape == latent.shape
    assert run_stage2(FakeModel(stage2=True), _cond(batch=2), latent, Stage2Settings(steps=1)).shape == latent.shape


@pytest.mark.parametrize("latent, kwargs, message", [
    (torch.zeros(1, 4, 1, 4, 4), {}, "channels"),
    (torch.zeros(1, 16, 4, 4), {}, "video latent"),
    (torch.zeros(3, 16, 1, 4, 4), {"cond": torch.zeros(2, 5, TEXT_DIM)}, "batch is 2"),
    (torch.zeros(1, 16, 1, 4, 4), {"cond": torch.zeros(1, 5, 4096)}, "width is 4096"),
])
def test_stage2_rejects_bad_inputs_before_any_model_call(latent, kwargs, message):
    model = FakeModel(stage2=True)
    cond = kwargs.pop("cond", _cond())
    with pytest.raises(FlashVideoInputError, match=message):
        run_stage2(model, cond, latent)
    assert model.calls == []


@pytest.mark.parametrize("kwargs, message", [
    ({"noise_step": 1000}, "noise_step=1000"),
    ({"solver": "rk4"}, "solver='rk4'"),
    ({"steps": 0}, "steps=0"),
    ({"shift": -1.0}, "shift=-1.0"),
    ({"cfg": float("nan")}, "cfg=nan"),
])
def test_stage2_settings_refuse_bad_values_when_made(kwargs, message):
    with pytest.raises(FlashVideoInputError, match=message):
        Stage2Settings(**kwargs)


@pytest.fixture(scope="module")
def tiny_models():
    return build_transformer(config.TINY_STAGE1, seed=0), build_transformer(config.TINY_STAGE2, seed=1)


def test_tiny_real_stage1_is_reproducible_from_the_seed(tiny_models):
    stage1, _ = tiny_models
    cond = torch.randn(1, 226, 32, generator=torch.Generator().manual_seed(0))
    events = []
    settings = Stage1Settings(num_frames=9, height=32, width=48, steps=3)
    a = run_stage1(stage1, cond, settings, seed=5, callback=events.append)
    b = run_stage1(stage1, cond, settings, seed=5)
    c = run_stage1(stage1, cond, settings, seed=6)
    assert a.shape == (1, 16, 3, 4, 6) and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(events[-1].preview, a)


def test_tiny_real_stage2_keeps_the_shape_and_uses_the_prompt(tiny_models):
    _, stage2 = tiny_models
    latent = degrade_latent(torch.randn(1, 16, 3, 4, 6, generator=torch.Generator().manual_seed(1)), 675, seed=0)
    cond = torch.randn(1, 226, 32, generator=torch.Generator().manual_seed(2))
    out = run_stage2(stage2, cond, latent, Stage2Settings(steps=2))
    assert out.shape == latent.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert not torch.allclose(out, run_stage2(stage2, cond * 2, latent, Stage2Settings(steps=2)))
    assert torch.equal(out, run_stage2(stage2, cond, latent, Stage2Settings(steps=2)))
