"""CFG batching, the zero uncond, model timesteps and the stage runners' validation."""

import pytest
import torch

from flashvideo_core import config
from flashvideo_core.degradation import degrade_latent
from flashvideo_core.errors import FlashVideoInputError
from flashvideo_core.guidance import stage1_denoiser, stage2_velocity
from flashvideo_core.schedule import zero_snr_alphas_cumprod
from flashvideo_core.stages import run_stage1, run_stage2
from flashvideo_core.transformer import build_transformer


class RecordingModel(torch.nn.Module):
    """Returns text-dependent output and records every call's inputs."""

    def __init__(self, stage2=False, dtype=torch.float32):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones((), dtype=dtype))
        self.config = config.TransformerConfig(num_layers=1, num_heads=1, text_dim=4, stage2_extras=stage2)
        self.calls = []

    def forward(self, latents, text, timestep, noise_step=None):
        self.calls.append({"latents": latents, "text": text, "timestep": timestep, "noise_step": noise_step})
        return latents * self.scale + text.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1)


def test_stage1_batches_uncond_zeros_first_and_applies_guidance_to_x0():
    model = RecordingModel()
    cond = torch.full((1, 3, 4), 2.0)
    alphas = zero_snr_alphas_cumprod()
    denoise = stage1_denoiser(model, cond, alphas, cfg=8.0, dynamic_cfg=False)
    x = torch.randn(1, 16, 2, 2, 2)
    x0 = denoise(x, 500)
    call = model.calls[0]
    assert torch.equal(call["text"][0], torch.zeros(3, 4)) and torch.equal(call["text"][1], cond[0])
    assert call["timestep"].tolist() == [500.0, 500.0]
    a = alphas[500].item()
    v_u, v_c = x, x + 2.0  # the model's output in latent layout
    x0_u, x0_c = a**0.5 * x - (1 - a) ** 0.5 * v_u, a**0.5 * x - (1 - a) ** 0.5 * v_c
    assert torch.allclose(x0, x0_u + 8.0 * (x0_c - x0_u), atol=1e-5)


def test_stage2_batches_cond_first_with_1000_1_minus_t_and_noise_step():
    model = RecordingModel(stage2=True)
    cond = torch.full((1, 3, 4), 1.0)
    velocity = stage2_velocity(model, cond, cfg=13.0, noise_step=675)
    z = torch.randn(1, 16, 2, 2, 2)
    v = velocity(z, 0.25)
    call = model.calls[0]
    assert torch.equal(call["text"][0], cond[0]) and torch.equal(call["text"][1], torch.zeros(3, 4))
    assert call["timestep"].tolist() == [750.0, 750.0]
    assert call["noise_step"].tolist() == [675.0, 675.0]
    assert torch.allclose(v, z + 13.0 * 1.0, atol=1e-5)


def test_noise_step_675_becomes_676_in_bf16_as_in_the_official_runs():
    model = RecordingModel(stage2=True, dtype=torch.bfloat16)
    velocity = stage2_velocity(model, torch.ones(1, 3, 4), noise_step=675, working_dtype=torch.bfloat16)
    velocity(torch.zeros(1, 16, 1, 2, 2, dtype=torch.bfloat16), 0.0)
    assert model.calls[0]["noise_step"].float().tolist() == [676.0, 676.0]


@pytest.fixture(scope="module")
def tiny_models():
    return build_transformer(config.TINY_STAGE1, seed=0), build_transformer(config.TINY_STAGE2, seed=1)


def test_run_stage1_returns_raw_latent_reproducibly(tiny_models):
    stage1, _ = tiny_models
    cond = torch.randn(1, 226, 32)
    events = []
    a = run_stage1(stage1, cond, num_frames=9, height=32, width=48, steps=3, seed=5, callback=events.append)
    b = run_stage1(stage1, cond, num_frames=9, height=32, width=48, steps=3, seed=5)
    assert a.shape == (1, 16, 3, 4, 6) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert [e.step for e in events] == [1, 2, 3] and events[-1].preview.shape == a.shape
    assert torch.allclose(events[-1].preview, a)


def test_run_stage2_returns_raw_latent_of_the_same_shape(tiny_models):
    _, stage2 = tiny_models
    latent = degrade_latent(torch.randn(1, 16, 3, 4, 6), 675, seed=0)
    out = run_stage2(stage2, torch.randn(1, 226, 32), latent, steps=2)
    assert out.shape == latent.shape and torch.isfinite(out).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [({"num_frames": 50}, "frames=50"), ({"height": 100}, "height=100"), ({"steps": 0}, "steps=0")],
)
def test_run_stage1_rejects_bad_settings_before_sampling(tiny_models, kwargs, message):
    stage1, _ = tiny_models
    with pytest.raises(FlashVideoInputError, match=message):
        run_stage1(stage1, torch.zeros(1, 226, 32), **{"num_frames": 9, "height": 32, "width": 48, **kwargs})


def test_embedding_width_and_wrong_stage_are_named(tiny_models):
    stage1, stage2 = tiny_models
    with pytest.raises(FlashVideoInputError, match="width is 4096 but this model expects 32"):
        run_stage1(stage1, torch.zeros(1, 226, 4096), num_frames=5, height=32, width=32)
    with pytest.raises(FlashVideoInputError, match="Stage II model was given where the Stage I"):
        run_stage1(stage2, torch.zeros(1, 226, 32), num_frames=5, height=32, width=32)
    with pytest.raises(FlashVideoInputError, match="Stage I model was given where the Stage II"):
        run_stage2(stage1, torch.zeros(1, 226, 32), torch.zeros(1, 16, 1, 4, 4))
    with pytest.raises(FlashVideoInputError, match="channels"):
        run_stage2(stage2, torch.zeros(1, 226, 32), torch.zeros(1, 4, 1, 4, 4))


def test_degradation_is_seeded_and_has_the_schedule_statistics():
    latent = torch.full((1, 16, 8, 64, 64), 0.5)
    a = degrade_latent(latent, 675, seed=3)
    assert torch.equal(a, degrade_latent(latent, 675, seed=3))
    assert not torch.equal(a, degrade_latent(latent, 675, seed=4))
    alpha = zero_snr_alphas_cumprod()[675].item()
    scaled = a * config.STAGE2_SCALE_FACTOR
    assert scaled.mean().item() == pytest.approx(alpha**0.5 * 0.5 * config.STAGE2_SCALE_FACTOR, abs=0.006)
    assert scaled.std().item() == pytest.approx((1 - alpha) ** 0.5, abs=0.01)
    with pytest.raises(FlashVideoInputError, match="noise_step=1000"):
        degrade_latent(latent, 1000, seed=0)
