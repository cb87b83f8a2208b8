"""The Stage I DPM++(2M) sampler: an oracle, a transcription of the official step, and diffusers."""

import pytest
import torch

from flashvideo_core.rng import cpu_generator
from flashvideo_core.sampling.schedule import stage1_alphas, stage1_timesteps, zero_snr_alphas_cumprod
from flashvideo_core.sampling.stage1_sampler import sample_dpmpp_2m_v

SHAPE = (1, 4, 2, 3, 3)


def _randn(seed, shape=SHAPE):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _v_model(weight):
    """A nonlinear stand-in for the transformer's v-prediction, (B, C, T, h, w) -> same."""

    def v(x, t):
        return torch.tanh(torch.einsum("ij,bjthw->bithw", weight, x)) * (1 + t / 1000) - 0.3 * x

    return v


def _denoiser(v_model, alphas_cumprod):
    def denoise(x, t):
        a = alphas_cumprod[t].item()
        return a**0.5 * x - (1 - a) ** 0.5 * v_model(x, t)

    return denoise


@pytest.mark.parametrize("steps", [1, 2, 10, 51])
def test_an_oracle_denoiser_makes_the_sampler_return_its_x0(steps):
    target = _randn(0)
    out = sample_dpmpp_2m_v(lambda x, t: target, _randn(1), stage1_timesteps(steps), zero_snr_alphas_cumprod(),
                            cpu_generator(2))
    assert torch.equal(out, target)


def _spec_dpmpp(denoise, x, timesteps, alphas_cumprod, generator):
    """SPEC.md's VPSDEDPMPP2M step written out with torch float64 scalars (and the discarded draw)."""
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
            x = m1 * x - m2 * ((1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * old) + ns * noise
        old, h_last = x0, h
        x = x.float()
    return x


@pytest.mark.parametrize("rule", ["official", "diffusers"])
def test_sampler_matches_the_spec_transcription_with_a_nonlinear_model(rule):
    steps = stage1_timesteps(7)
    alphas = stage1_alphas(steps, rule)
    denoise = _denoiser(_v_model(_randn(3, (4, 4)) * 0.3), alphas.denoiser)
    ours = sample_dpmpp_2m_v(denoise, _randn(4), steps, alphas.sampler, cpu_generator(5))
    reference = _spec_dpmpp(denoise, _randn(4), steps, alphas.sampler, cpu_generator(5))
    assert torch.allclose(ours, reference.float(), atol=1e-5)


@pytest.mark.parametrize("steps", [10, 50])
def test_sampler_matches_diffusers_cogvideox_dpm_scheduler_step_for_step(steps):
    """Where diffusers' timesteps coincide with the official ones (counts dividing 1000), same noise."""
    from diffusers import CogVideoXDPMScheduler

    scheduler = CogVideoXDPMScheduler(
        rescale_betas_zero_snr=True, snr_shift_scale=1.0, prediction_type="v_prediction",
        timestep_spacing="trailing",
    )
    scheduler.set_timesteps(steps)
    timesteps = stage1_timesteps(steps)
    assert scheduler.timesteps.tolist() == timesteps
    v_model = _v_model(_randn(6, (4, 4)) * 0.4)
    alphas = zero_snr_alphas_cumprod()
    start = _randn(7)

    latents, old_x0, generator = start.clone(), None, cpu_generator(8)
    for i, t in enumerate(scheduler.timesteps):
        latents, old_x0 = scheduler.step(
            v_model(latents, int(t)), old_x0, t, scheduler.timesteps[i - 1] if i > 0 else None, latents,
            generator=generator, return_dict=False,
        )
    ours = sample_dpmpp_2m_v(_denoiser(v_model, alphas), start, timesteps, alphas, cpu_generator(8))
    assert torch.allclose(ours, latents, atol=1e-4)


def test_generator_is_consumed_like_the_official_sampler():
    """First step: one draw; each later step but the last: two (the first discarded); the last: none."""
    steps = stage1_timesteps(6)
    generator = cpu_generator(0)
    sample_dpmpp_2m_v(lambda x, t: 0.5 * x, _randn(0), steps, zero_snr_alphas_cumprod(), generator)
    reference = cpu_generator(0)
    for _ in range(1 + 2 * (len(steps) - 2)):
        torch.randn(SHAPE, generator=reference)
    assert torch.equal(torch.randn(3, generator=generator), torch.randn(3, generator=reference))


def test_first_step_from_pure_noise_uses_only_x0_and_fresh_noise():
    """alpha(999) = 0, so x after the first step is a' x0 + sqrt(1 - a'^2) noise, whatever x was."""
    alphas = zero_snr_alphas_cumprod()
    target = _randn(1)
    seen = []

    def denoise(x, t):
        seen.append(x.clone())
        return target

    sample_dpmpp_2m_v(denoise, _randn(2), [999, 979, 500], alphas, cpu_generator(3))
    a_next = alphas[979].sqrt().item()
    noise = torch.randn(SHAPE, generator=cpu_generator(3))
    assert torch.allclose(seen[1], a_next * target + (1 - a_next**2) ** 0.5 * noise, atol=1e-6)


def test_reproducible_from_the_seed_with_one_event_per_step():
    events = []
    start = _randn(0, (1, 4, 1, 2, 2))
    alphas = zero_snr_alphas_cumprod()
    steps = stage1_timesteps(5)

    def denoise(x, t):
        return 0.5 * x

    first = sample_dpmpp_2m_v(denoise, start, steps, alphas, cpu_generator(9), events.append)
    second = sample_dpmpp_2m_v(denoise, start, steps, alphas, cpu_generator(9))
    third = sample_dpmpp_2m_v(denoise, start, steps, alphas, cpu_generator(10))
    assert torch.equal(first, second) and not torch.equal(first, third)
    assert [(e.phase, e.step, e.total) for e in events] == [("stage1", i, 5) for i in range(1, 6)]
    assert torch.equal(events[-1].preview, first)  # the last preview is the returned x0
    assert first.dtype == torch.float32


def test_a_raising_callback_stops_sampling():
    calls = []

    def denoise(x, t):
        calls.append(t)
        return x

    def cancel(event):
        raise InterruptedError("cancelled")

    with pytest.raises(InterruptedError):
        sample_dpmpp_2m_v(denoise, _randn(0), stage1_timesteps(5), zero_snr_alphas_cumprod(), cpu_generator(0), cancel)
    assert calls == [999]
