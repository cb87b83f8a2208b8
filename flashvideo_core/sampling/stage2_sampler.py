"""Stage II sampler: Euler (or Heun) integration of the flow from the degraded latent (t=0) to t=1."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import FlashVideoInputError
from ..progress import ProgressCallback, report

Velocity = Callable[[torch.Tensor, float], torch.Tensor]
"""velocity(z, t) -> dz/dt, same shape as z."""

SOLVERS = ("euler", "heun")


def check_solver(solver: str) -> None:
    """Raise unless `solver` is one of SOLVERS."""
    if solver not in SOLVERS:
        raise FlashVideoInputError(f"solver={solver!r} must be one of {', '.join(SOLVERS)} (official: euler).")


def sample_euler_flow(
    velocity: Velocity,
    z: torch.Tensor,
    time_grid: torch.Tensor,
    callback: ProgressCallback | None = None,
    solver: str = "euler",
) -> torch.Tensor:
    """Integrate dz/dt = velocity(z, t) over `time_grid` (increasing, (S+1,)); returns z at the last time.

    z: any shape (Stage II: scaled latent (B, 16, T, h, w)); the result keeps z's dtype and device.
    euler: z <- z + (t_{i+1} - t_i) v(z, t_i), one velocity call per step (the paper's and the official
    scripts' setting). heun: Euler predictor then trapezoid corrector z + dt (v_i + v(z_pred, t_{i+1})) / 2,
    two calls per step, exact for fields linear in t.
    callback gets ProgressEvent("stage2", i + 1, S, preview = z + (1 - t_i) v), the x0 (t = 1) estimate
    in z's space, after the first velocity call of each step; the preview is only computed if there is
    a callback.
    """
    check_solver(solver)
    times = [float(t) for t in time_grid]
    total = len(times) - 1
    for i in range(total):
        t, t_next = times[i], times[i + 1]
        v = velocity(z, t)
        if callback is not None:
            report(callback, "stage2", i + 1, total, z + (1.0 - t) * v)
        z_next = z + (t_next - t) * v
        if solver == "heun":
            v_next = velocity(z_next.to(z.dtype), t_next)
            z_next = z + (t_next - t) * 0.5 * (v + v_next)
        z = z_next.to(z.dtype)
    return z
