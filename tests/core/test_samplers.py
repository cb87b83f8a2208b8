"""The two samplers, checked analytically and against a transcription of the official step."""

import pytest
import torch

from flashvideo_core.rng import cpu_generator
from flashvideo_core.schedule import stage1_timesteps, stage2_time_grid, zero_snr_alphas_cumprod
from flashvideo_core.stage1_sampler import sample_dpmpp_2m_v
from flashvideo_core.stage2_sampler import sample_euler_flow


def test_euler_with_constant_velocity_lands_exactly_on_z_plus_v():
    z = torch.randn(1, 16, 2, 4, 6, dtype=torch.float64)
    v = torch.randn_like(z)
    out = sample_euler_flow(lambda x, t: v, z, stage2_time_grid(4, 2.5))
    assert torch.allclose(out, z + v, atol=1e-12)


def test_euler_integrates_a_time_linear_field_exactly_with_heun():
    z = torch.zeros(3, dtype=torch.float64)
    a = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    # dz/dt = a t  ->  z(1) = a / 2; Heun (trapezoid) is exact for a field linear in t.
    out = sample_euler_flow(lambda x, t: a * t, z, stage2_time_grid(3, 2.5), solver="heun")
    assert torch.allclose(out, a / 2, atol=1e-12)
    euler = sample_euler_flow(lambda x, t: a * t, z, stage2_time_grid(200, 1.0))
    assert torch.allclose(euler, a / 2, atol=1e-2)


def test_euler_reports_previews_toward_t1_and_one_event_per_step():
    events = []
    z = torch.zeros(2)
    v = torch.ones(2)
    sample_euler_flow(lambda x, t: v, z, stage2_time_grid(4, 2.5), callback=events.append)
    assert [e.step for e in events] == [1, 2, 3, 4] and all(e.total == 4 for e in events)
    for event in events:
        assert torch.allclose(event.preview, z + v)  # constant field: every x0 estimate is the endpoint


def test_euler_callback_exception_stops_sampling():
    calls = []

    def velocity(x, t):
        calls.append(t)
        return torch.zeros_like(x)

    def cancel(event):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sample_euler_flow(velocity, torch.zeros(1), stage2_time_grid(4), callback=cancel)
    assert len(calls) == 1


def test_dpmpp_with_an_oracle_denoiser_returns_that_x0():
    target = torch.randn(1, 4, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(1, 4, 2, 3, 3, generator=torch.Generator().manual_seed(1))
    out = sample_dpmpp_2m_v(lambda x, t: target, noise, stage1_timesteps(10), zero_snr_alphas_cumprod(),
                            cpu_generator(2))
    assert torch.equal(out, target)


def _reference_dpmpp(denoise, x, timesteps, alphas_cumprod, generator):
    """A direct transcription of SPEC.md's VPSDEDPMPP2M step (with the discarded noise draw)."""
    a_list = [alphas_cumprod[t].double().sqrt() for t in timesteps] + [torch.tensor(1.0, dtype=torch.float64)]
    old, h_last = None, None
    for i, t in enumerate(timesteps):
        x0 = denoise(x, t)
        if i == len(timesteps) - 1:
            return x0
        a, an = a_list[i], a_list[i + 1]
        lam = torch.log(a / torch.sqrt(1 - a**2))
        lam_n = torch.log(an / torch.sqrt(1 - an**2))
        h = lam_n - lam
        m1 = torch.sqrt((1 - an**2) / (1 - a**2)) * torch.exp(-h)
        m2 = torch.expm1(-2 * h) * an
        ns = torch.sqrt(1 - an**2) * torch.sqrt(1 - torch.exp(-2 * h))
        noise = torch.randn(x.shape, generator=generator)
        if old is None:
            x = m1 * x - m2 * x0 + ns * noise
        else:
            noise = torch.randn(x.shape, generator=generator)
            r = h_last / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * old
            x = m1 * x - m2 * d + ns * noise
        old, h_last = x0, h
        x = x.float()
    return x


def test_dpmpp_matches_the_spec_transcription_with_a_nonlinear_denoiser():
    alphas = zero_snr_alphas_cumprod()
    weight = torch.randn(4, 4, generator=torch.Generator().manual_seed(3)) * 0.3

    def denoise(x, t):
        return torch.tanh(torch.einsum("ij,bjthw->bithw", weight, x)) * (1 + t / 1000)

    start = torch.randn(1, 4, 2, 3, 3, generator=torch.Generator().manual_seed(4))
    steps = stage1_timesteps(7)
    ours = sample_dpmpp_2m_v(denoise, start, steps, alphas, cpu_generator(5))
    reference = _reference_dpmpp(denoise, start, steps, alphas, cpu_generator(5))
    assert torch.allclose(ours, reference.float(), atol=1e-5)


def test_dpmpp_is_reproducible_from_the_seed_and_reports_every_step():
    events = []
    start = torch.randn(1, 4, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    alphas = zero_snr_alphas_cumprod()

    def denoise(x, t):
        return 0.5 * x

    first = sample_dpmpp_2m_v(denoise, start, stage1_timesteps(5), alphas, cpu_generator(9), events.append)
    second = sample_dpmpp_2m_v(denoise, start, stage1_timesteps(5), alphas, cpu_generator(9))
    third = sample_dpmpp_2m_v(denoise, start, stage1_timesteps(5), alphas, cpu_generator(10))
    assert torch.equal(first, second) and not torch.equal(first, third)
    assert [e.step for e in events] == [1, 2, 3, 4, 5] and events[0].phase == "stage1"
