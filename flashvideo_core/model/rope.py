"""3D rotary position embedding on the plain integer grid (both stages, every resolution).

Per head, the dims split t / h / w = d/4, 3d/8, 3d/8 (16/24/24 at d = 64), each with
freqs = 10000^(-arange(0, n, 2) / n) repeated twice (interleaved pairs). Positions are
arange(T), arange(h/2), arange(w/2): no rescaling onto a base grid (diffusers' pipeline rescales;
the official FlashVideo code does not). Tokens are ordered T-major, then rows, then columns.
"""

from __future__ import annotations

import torch

THETA = 10000.0


def _axis_angles(num_positions: int, dim: int, device) -> torch.Tensor:
    """(num_positions, dim) angles p * freq, each freq repeated for its (even, odd) pair."""
    freqs = THETA ** (-torch.arange(0, dim, 2, dtype=torch.float64, device=device) / dim)
    positions = torch.arange(num_positions, dtype=torch.float64, device=device)
    return torch.outer(positions, freqs).repeat_interleave(2, dim=-1)


def split_head_dim(head_dim: int) -> tuple[int, int, int]:
    """(t, h, w) shares of a head's dims: d/4, 3d/8, 3d/8."""
    dim_t = head_dim // 4
    dim_h = head_dim // 8 * 3
    return dim_t, dim_h, head_dim - dim_t - dim_h


def rope_3d(num_frames: int, grid_h: int, grid_w: int, head_dim: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, each float32 (num_frames * grid_h * grid_w, head_dim).

    num_frames: latent frames T; grid_h, grid_w: patch grid (latent h/2, w/2).
    """
    dim_t, dim_h, dim_w = split_head_dim(head_dim)
    angle_t = _axis_angles(num_frames, dim_t, device)[:, None, None, :].expand(num_frames, grid_h, grid_w, dim_t)
    angle_h = _axis_angles(grid_h, dim_h, device)[None, :, None, :].expand(num_frames, grid_h, grid_w, dim_h)
    angle_w = _axis_angles(grid_w, dim_w, device)[None, None, :, :].expand(num_frames, grid_h, grid_w, dim_w)
    angles = torch.cat([angle_t, angle_h, angle_w], dim=-1).reshape(-1, head_dim)
    return angles.cos().float(), angles.sin().float()
