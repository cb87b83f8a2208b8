"""The Stage II objective's direction, on a toy Gaussian problem with a known posterior.

Z_HR ~ N(MU, S^2 I), Z_LR = A Z_HR + SIGMA eps (DEG_latent's form). The exact flow velocity
E[Z_HR - Z_LR | Z_t] is closed form; at t = 0 it is E[Z_HR | Z_LR] - Z_LR, so ONE Euler step of the
library's Stage II sampler (guidance.stage2_velocity at cfg 1 + stage2_sampler.sample_euler_flow)
from Z_LR lands on the posterior mean E[Z_HR | Z_LR]. A small model with the transformer's call
contract, trained with training.objective.stage2_loss, must land there too; the same training with
a sign flip, swapped interpolation or reversed time must not.
"""

from __future__ import annotations

import pytest
import torch

from flashvideo_core.sampling.guidance import stage2_velocity
from flashvideo_core.sampling.schedule import stage2_time_grid
from flashvideo_core.sampling.stage2_sampler import sample_euler_flow
from flashvideo_core.training import objective
from flashvideo_core.training.objective import flow_inputs, sample_times, stage2_loss

MU, S, A, SIGMA = 1.5, 0.6, 0.3, 0.8
SHAPE = (4, 1, 4, 4)  # (C, T, h, w) per sample; every element an independent draw
TOL = 0.05  # |one Euler step - posterior mean|, mean over elements (posterior std ~0.45; measured 0.026, bugs > 1.1)


def _draw(batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    z_hr = MU + S * torch.randn((batch, *SHAPE), generator=generator)
    z_lr = A * z_hr + SIGMA * torch.randn((batch, *SHAPE), generator=generator)
    return z_lr, z_hr


def _posterior_mean(z_lr: torch.Tensor) -> torch.Tensor:
    return MU + A * S**2 / (A**2 * S**2 + SIGMA**2) * (z_lr - A * MU)


def _exact_velocity(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """E[Z_HR - Z_LR | Z_t = z]: Z_t = c H + n eps with c = (1 - t) A + t, n = (1 - t) SIGMA."""
    c, n = (1 - t) * A + t, (1 - t) * SIGMA
    cov = (1 - A) * c * S**2 - SIGMA * n
    return (1 - A) * MU + cov / (c**2 * S**2 + n**2) * (z - c * MU)


class ExactModel(torch.nn.Module):
    """The exact velocity behind the transformer's call contract: latents (B, T, C, h, w), timestep = 1000 (1 - t)."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the model a dtype, as guidance asks

    def forward(self, latents, text, timestep, noise_step=None):
        assert noise_step is not None
        t = (1 - timestep.float() / 1000).view(-1, 1, 1, 1, 1)
        return _exact_velocity(latents, t)


class PolyModel(torch.nn.Module):
    """v = sum_k tau^k (p_k + q_k z), tau = 2 timestep / 1000 - 1: can represent the exact field closely."""

    def __init__(self, degree: int = 6):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(degree + 1))
        self.q = torch.nn.Parameter(torch.zeros(degree + 1))

    def forward(self, latents, text, timestep, noise_step=None):
        assert noise_step is not None
        tau = (2 * timestep.float() / 1000 - 1).view(-1, 1)  # in [-1, 1]
        powers = tau ** torch.arange(self.p.numel(), dtype=tau.dtype)  # (B, K)
        shape = (-1, 1, 1, 1, 1)
        return (powers @ self.p).view(shape) + (powers @ self.q).view(shape) * latents


def _one_euler_step(model, z_lr: torch.Tensor) -> torch.Tensor:
    cond = torch.zeros(1, 2, 8)
    velocity = stage2_velocity(model, cond, cfg=1.0, noise_step=700, working_dtype=torch.float32)
    return sample_euler_flow(velocity, z_lr, stage2_time_grid(1, 2.5))


def _train(samples: int = 2048, iterations: int = 60) -> PolyModel:
    """Minimise stage2_loss over a fixed toy set (L-BFGS: the model is linear in its parameters)."""
    generator = torch.Generator().manual_seed(1)
    model = PolyModel()
    z_lr, z_hr = _draw(samples, generator)
    t, text, steps = sample_times(samples, generator), torch.zeros(samples, 2, 8), torch.full((samples,), 700)
    optimizer = torch.optim.LBFGS(model.parameters(), max_iter=iterations, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = stage2_loss(model, z_lr, z_hr, text, steps, t)
        loss.backward()
        return loss

    optimizer.step(closure)
    return model


def _error_after_one_step(model) -> float:
    z_lr, _ = _draw(64, torch.Generator().manual_seed(99))
    with torch.no_grad():
        return float((_one_euler_step(model, z_lr) - _posterior_mean(z_lr)).abs().mean())


def test_exact_velocity_one_euler_step_is_the_posterior_mean():
    assert _error_after_one_step(ExactModel()) < 1e-5


def test_flow_inputs_are_algorithm_1():
    z_lr, z_hr = torch.full((2, 1, 1, 1, 1), 3.0), torch.full((2, 1, 1, 1, 1), 7.0)
    z_t, target = flow_inputs(z_lr, z_hr, torch.tensor([0.0, 0.25]))
    assert z_t.flatten().tolist() == [3.0, 4.0] and target.flatten().tolist() == [4.0, 4.0]


def _sign_flip(z_lr, z_hr, t):
    z_t, target = flow_inputs(z_lr, z_hr, t)
    return z_t, -target


def _swapped(z_lr, z_hr, t):
    _, target = flow_inputs(z_lr, z_hr, t)
    tt = t.view(-1, 1, 1, 1, 1)
    return (1 - tt) * z_hr + tt * z_lr, target


BUGS = {
    "sign flip": ("flow_inputs", _sign_flip),
    "swapped interpolation": ("flow_inputs", _swapped),
    "time reversal": ("stage2_model_timestep", lambda t: 1000 * t),
}


@pytest.mark.parametrize("bug", [None, *BUGS])
def test_trained_model_one_euler_step_lands_on_the_posterior_mean(bug, monkeypatch):
    if bug is not None:
        monkeypatch.setattr(objective, *BUGS[bug])
    error = _error_after_one_step(_train())
    if bug is None:
        assert error < TOL
    else:
        assert error > 5 * TOL, f"{bug} was not caught (error {error:.4f})"
