"""Stage II sampler: Euler (or Heun) integration of the flow from the degraded latent (t=0) to t=1."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .errors import FlashVideoInputError
from .progress import ProgressCallback, report

Velocity = Callable[[torch.Tensor, float], torch.Tensor]
"""velocity(z, t) -> dz/dt, same shape as z."""

SOLVERS = ("euler", "heun")


def sample_euler_flow(
    velocity: Velocity,
    z: torch.Tensor,
    time_grid: torch.Tensor,
    callback: ProgressCallback | None = None,
    solver: str = "euler",
) -> torch.Tensor:
    """Integrate dz/dt = velocity(z, t) over `time_grid` (increasing, float64 (S+1,)).

    euler: z <- z + (t_{i+1} - t_i) v(z, t_i) (one model call per step, the paper's setting).
    heun: Euler predictor + trapezoid corrector (two model calls per step).
    callback gets ProgressEvent("stage2", i, S, preview = z + (1 - t_i) v), the x0 estimate at t=1.
    Returns z at time_grid[-1] in z's dtype.
    """
    if solver not in SOLVERS:
        raise FlashVideoInputError(f"solver={solver!r} must be one of {SOLVERS}.")
    times = [float(t) for t in time_grid]
    total = len(times) - 1
    for i in range(total):
        t, t_next = times[i], times[i + 1]
        v = velocity(z, t)
        report(callback, "stage2", i + 1, total, z + (1.0 - t) * v)
        z_next = z + (t_next - t) * v
        if solver == "heun":
            v_next = velocity(z_next, t_next)
            z_next = z + (t_next - t) * 0.5 * (v + v_next)
        z = z_next.to(z.dtype)
    return z
