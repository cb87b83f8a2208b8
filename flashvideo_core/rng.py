"""Seeded randomness that gives the same numbers on every device."""

from __future__ import annotations

import torch


def cpu_generator(seed: int) -> torch.Generator:
    """A CPU torch.Generator seeded with `seed` (any int; taken modulo 2**64)."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed) % (2**64))
    return gen


def randn(shape: tuple[int, ...], generator: torch.Generator, device=None, dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise of `shape`, drawn in fp32 on CPU from `generator`, then moved.

    Drawing on CPU makes a seeded run identical on CPU and GPU.
    """
    noise = torch.randn(shape, generator=generator, device="cpu", dtype=torch.float32)
    return noise.to(device=device or "cpu", dtype=dtype)
