"""Batched CFG around the transformer: batch order, zero uncond, layouts, timesteps, noise step, guidance."""

import pytest
import torch

from flashvideo_core import config
from flashvideo_core.errors import FlashVideoInputError
from flashvideo_core.sampling.guidance import stage1_denoiser, stage2_velocity
from flashvideo_core.sampling.schedule import dynamic_cfg_scale, zero_snr_alphas_cumprod

TEXT_DIM = 4


class RecordingModel(torch.nn.Module):
    """out = latents * w + mean(text) per sample (transformer layout), recording every call's inputs."""

    def __init__(self, stage2=False, dtype=torch.float32):
        super().__init__()
        self.w = torch.nn.Parameter(torch.full((), 0.5, dtype=dtype))
        self.config = config.TransformerConfig(num_layers=1, num_heads=1, text_dim=TEXT_DIM, stage2_extras=stage2)
        self.calls = []

    def forward(self, latents, text, timestep, noise_step=None):
        self.calls.append({"latents": latents, "text": text, "timestep": timestep, "noise_step": noise_step})
        return latents * self.w + text.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1).to(latents.dtype)


def _x(batch=1, seed=0):
    return torch.randn(batch, 16, 3, 2, 4, generator=torch.Generator().manual_seed(seed))  # (B, C, T, h, w)


def test_stage1_runs_uncond_zeros_first_in_transformer_layout():
    model = RecordingModel()
    cond = torch.full((1, 3, TEXT_DIM), 2.0)
    x = _x()
    stage1_denoiser(model, cond, zero_snr_alphas_cumprod())(x, 500)
    (call,) = model.calls
    assert torch.equal(call["text"][0], torch.zeros(3, TEXT_DIM)) and torch.equal(call["text"][1], cond[0])
    assert call["latents"].shape == (2, 3, 16, 2, 4)  # (2B, T, C, h, w)
    hidden = x[0].permute(1, 0, 2, 3)  # (T, C, h, w)
    assert torch.equal(call["latents"][0], hidden) and torch.equal(call["latents"][1], hidden)
    assert call["noise_step"] is None


def test_stage1_guides_the_v_prediction_x0_with_the_dynamic_scale():
    model = RecordingModel()
    alphas = zero_snr_alphas_cumprod()
    x = _x()
    for t, dynamic in ((500, False), (979, True), (19, True)):
        x0 = stage1_denoiser(model, torch.full((1, 3, TEXT_DIM), 2.0), alphas, cfg=8.0, dynamic_cfg=dynamic)(x, t)
        a = alphas[t].item()
        v_u, v_c = 0.5 * x, 0.5 * x + 2.0  # the fake model's output back in latent layout
        x0_u, x0_c = a**0.5 * x - (1 - a) ** 0.5 * v_u, a**0.5 * x - (1 - a) ** 0.5 * v_c
        scale = dynamic_cfg_scale(t, 8.0, 5.0, 51) if dynamic else 8.0
        assert torch.allclose(x0, x0_u + scale * (x0_c - x0_u), atol=1e-5)
        assert x0.dtype == torch.float32


def test_stage1_timestep_stays_exact_fp32_with_a_bf16_model():
    model = RecordingModel(dtype=torch.bfloat16)
    x0 = stage1_denoiser(model, torch.ones(1, 3, TEXT_DIM), zero_snr_alphas_cumprod())(_x(), 999)
    call = model.calls[0]
    assert call["timestep"].dtype == torch.float32 and call["timestep"].tolist() == [999.0, 999.0]  # bf16 would be 1000
    assert call["latents"].dtype == torch.bfloat16 and call["text"].dtype == torch.bfloat16
    assert x0.dtype == torch.float32


def test_stage1_expands_one_prompt_over_the_batch_and_rejects_a_mismatch():
    model = RecordingModel()
    cond = torch.randn(1, 3, TEXT_DIM)
    stage1_denoiser(model, cond, zero_snr_alphas_cumprod())(_x(batch=2), 300)
    text = model.calls[0]["text"]
    assert text.shape == (4, 3, TEXT_DIM)
    assert torch.equal(text[:2], torch.zeros(2, 3, TEXT_DIM))
    assert torch.equal(text[2], cond[0]) and torch.equal(text[3], cond[0])
    with pytest.raises(FlashVideoInputError, match="batch is 3"):
        stage1_denoiser(model, torch.randn(3, 3, TEXT_DIM), zero_snr_alphas_cumprod())(_x(batch=2), 300)


def test_stage2_runs_cond_first_at_1000_1_minus_t_with_the_noise_step():
    model = RecordingModel(stage2=True)
    cond = torch.full((1, 3, TEXT_DIM), 1.0)
    z = _x()
    v = stage2_velocity(model, cond, cfg=13.0, noise_step=675)(z, 0.25)
    (call,) = model.calls
    assert torch.equal(call["text"][0], cond[0]) and torch.equal(call["text"][1], torch.zeros(3, TEXT_DIM))
    assert call["timestep"].tolist() == [750.0, 750.0]
    assert call["noise_step"].tolist() == [675.0, 675.0] and call["noise_step"].dtype == torch.float32
    assert call["latents"].shape == (2, 3, 16, 2, 4)
    v_c, v_u = 0.5 * z + 1.0, 0.5 * z
    assert torch.allclose(v, v_u + 13.0 * (v_c - v_u), atol=1e-5)


def test_stage2_noise_step_675_becomes_676_and_timesteps_round_in_bf16_as_officially():
    model = RecordingModel(stage2=True, dtype=torch.bfloat16)
    velocity = stage2_velocity(model, torch.ones(1, 3, TEXT_DIM), noise_step=675)  # working dtype = model's
    z = torch.zeros(1, 16, 1, 2, 2, dtype=torch.bfloat16)
    velocity(z, 0.0)
    velocity(z, 0.09375)  # the official bf16 grid's second point (S=5)
    assert model.calls[0]["noise_step"].dtype == torch.bfloat16
    assert model.calls[0]["noise_step"].float().tolist() == [676.0, 676.0]
    assert model.calls[0]["timestep"].float().tolist() == [1000.0, 1000.0]
    # bf16(93.75) = 94; 1000 - 94 = 906 -> 904 in bf16
    assert model.calls[1]["timestep"].float().tolist() == [904.0, 904.0]


def test_stage2_working_dtype_fp32_keeps_exact_time_values_for_a_bf16_model():
    model = RecordingModel(stage2=True, dtype=torch.bfloat16)
    velocity = stage2_velocity(model, torch.ones(1, 3, TEXT_DIM), noise_step=675, working_dtype=torch.float32)
    v = velocity(torch.zeros(1, 16, 1, 2, 2, dtype=torch.bfloat16), 0.25)
    assert model.calls[0]["noise_step"].tolist() == [675.0, 675.0]
    assert model.calls[0]["timestep"].tolist() == [750.0, 750.0]
    assert model.calls[0]["latents"].dtype == torch.bfloat16 and v.dtype == torch.bfloat16


def test_cfg_one_is_the_conditional_prediction():
    model = RecordingModel(stage2=True)
    z = _x()
    v = stage2_velocity(model, torch.full((1, 3, TEXT_DIM), 3.0), cfg=1.0)(z, 0.5)
    assert torch.allclose(v, 0.5 * z + 3.0, atol=1e-6)
    model = RecordingModel()
    alphas = zero_snr_alphas_cumprod()
    x0 = stage1_denoiser(model, torch.full((1, 3, TEXT_DIM), 3.0), alphas, cfg=1.0, dynamic_cfg=False)(z, 400)
    a = alphas[400].item()
    assert torch.allclose(x0, a**0.5 * z - (1 - a) ** 0.5 * (0.5 * z + 3.0), atol=1e-5)
