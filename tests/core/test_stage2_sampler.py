"""The Stage II flow sampler, checked analytically (k-diffusion / flow_matching style)."""

import math

import pytest
import torch

from flashvideo_core.errors import FlashVideoInputError
from flashvideo_core.sampling.schedule import stage2_time_grid
from flashvideo_core.sampling.stage2_sampler import sample_euler_flow


def test_a_constant_velocity_lands_exactly_on_z_plus_v():
    z = torch.randn(1, 16, 2, 4, 6, dtype=torch.float64)
    v = torch.randn_like(z)
    for solver in ("euler", "heun"):
        out = sample_euler_flow(lambda x, t: v, z, stage2_time_grid(4, 2.5), solver=solver)
        assert torch.allclose(out, z + v, atol=1e-12)


def test_euler_takes_the_steps_of_the_grid():
    """dz/dt = t: Euler sums t_i (t_{i+1} - t_i) over the grid, a left Riemann sum."""
    grid = stage2_time_grid(5, 2.5)
    out = sample_euler_flow(lambda x, t: torch.full_like(x, t), torch.zeros(1, dtype=torch.float64), grid)
    expected = sum(grid[i].item() * (grid[i + 1] - grid[i]).item() for i in range(5))
    assert out.item() == pytest.approx(expected, abs=1e-12)


def test_heun_is_exact_for_a_field_linear_in_t():
    a = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    out = sample_euler_flow(lambda x, t: a * t + 0.25, torch.zeros(3, dtype=torch.float64),
                            stage2_time_grid(3, 2.5), solver="heun")
    assert torch.allclose(out, a / 2 + 0.25, atol=1e-12)  # z(1) = a/2 + 0.25


def test_a_linear_field_converges_to_its_closed_form():
    """dz/dt = -z from z0: z(1) = z0 e^-1. Euler error O(1/S); Heun O(1/S^2)."""
    z0 = torch.tensor([1.0, -3.0, 0.2], dtype=torch.float64)
    exact = z0 * math.exp(-1)
    euler = sample_euler_flow(lambda x, t: -x, z0, stage2_time_grid(400, 1.0))
    heun = sample_euler_flow(lambda x, t: -x, z0, stage2_time_grid(400, 1.0), solver="heun")
    assert torch.allclose(euler, exact, atol=2e-3) and not torch.allclose(euler, exact, atol=1e-5)
    assert torch.allclose(heun, exact, atol=1e-5)
    coarse = sample_euler_flow(lambda x, t: -x, z0, stage2_time_grid(4, 1.0))
    assert torch.allclose(coarse, z0 * 0.75**4, atol=1e-12)  # (1 - 1/4)^4, the Euler closed form


def test_the_dtype_of_z_is_kept():
    z = torch.zeros(1, 16, 1, 2, 2, dtype=torch.bfloat16)
    out = sample_euler_flow(lambda x, t: torch.ones_like(x, dtype=torch.float32), z, stage2_time_grid(4))
    assert out.dtype == torch.bfloat16  # the state stays bf16 (rounded each step, as the official bf16 ODE)
    assert torch.allclose(out.float(), torch.ones(1, 16, 1, 2, 2), atol=1e-2)
    out = sample_euler_flow(lambda x, t: torch.ones_like(x, dtype=torch.float32), z, stage2_time_grid(2), solver="heun")
    assert out.dtype == torch.bfloat16


def test_velocity_sees_the_grid_times_in_order():
    times = []

    def velocity(x, t):
        times.append(t)
        return torch.zeros_like(x)

    grid = stage2_time_grid(4, 2.5)
    sample_euler_flow(velocity, torch.zeros(1), grid)
    assert times == grid[:-1].tolist()
    times.clear()
    sample_euler_flow(velocity, torch.zeros(1), grid, solver="heun")
    assert times == [t for i in range(4) for t in (grid[i].item(), grid[i + 1].item())]


def test_previews_are_x0_estimates_toward_t1_one_per_step():
    events = []
    z = torch.zeros(2, dtype=torch.float64)
    sample_euler_flow(lambda x, t: 1.0 - x, z, stage2_time_grid(4, 2.5), callback=events.append)
    assert [(e.phase, e.step, e.total) for e in events] == [("stage2", i, 4) for i in range(1, 5)]
    assert torch.allclose(events[0].preview, torch.ones(2, dtype=torch.float64))  # z + (1 - 0) (1 - z) = 1


def test_a_raising_callback_stops_sampling():
    calls = []

    def velocity(x, t):
        calls.append(t)
        return torch.zeros_like(x)

    def cancel(event):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sample_euler_flow(velocity, torch.zeros(1), stage2_time_grid(4), callback=cancel)
    assert len(calls) == 1


def test_unknown_solver_is_rejected_before_any_call():
    calls = []
    with pytest.raises(FlashVideoInputError, match="solver='rk4'"):
        sample_euler_flow(lambda x, t: calls.append(t), torch.zeros(1), stage2_time_grid(4), solver="rk4")
    assert calls == []
