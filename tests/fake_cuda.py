"""A stand-in for a CUDA compute device on machines without one: the meta device, with CUDA's strictness.

Inside `FakeCuda()`, every aten op is checked for the devices of its tensor arguments and raises
DeviceMixError when a meta ("GPU") tensor meets a CPU tensor that is not a 0-dim scalar, as CUDA
raises "Expected all tensors to be on the same device". Transfers (`.to`, `copy_`) are allowed.
Meta tensors hold no data, so the data-dependent steps are fed from outside: a meta -> CPU copy gives
zeros of the right shape and dtype, `.item()` gives True / 0 / 0.5 (bool / int / float), so NaN checks
pass and files can still be written. Shapes, dtypes and devices propagate exactly as on a GPU.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

FAKE_CUDA = torch.device("meta")
TRANSFERS = (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default)


class DeviceMixError(RuntimeError):
    """An op mixed the fake GPU (meta) with CPU tensors: on CUDA it would raise."""


class FakeCuda(TorchDispatchMode):
    """Dispatch mode that makes `FAKE_CUDA` behave like a CUDA device for device placement (see module)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0
        self.gpu_ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops += 1
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        kinds = {t.device.type for t in tensors if not (t.device.type == "cpu" and t.ndim == 0)}
        self.gpu_ops += "meta" in kinds
        if func not in TRANSFERS and len(kinds) > 1:
            raise DeviceMixError(f"{func} mixes devices {sorted(kinds)}: on CUDA this raises "
                                 "'Expected all tensors to be on the same device'")
        if func is torch.ops.aten._local_scalar_dense.default and args[0].device == FAKE_CUDA:
            dtype = args[0].dtype
            return True if dtype == torch.bool else (0.5 if dtype.is_floating_point else 0)
        if func is torch.ops.aten._to_copy.default and args[0].device == FAKE_CUDA and _to_cpu(kwargs):
            return torch.zeros(args[0].shape, dtype=kwargs.get("dtype") or args[0].dtype)
        return func(*args, **kwargs)


def _to_cpu(kwargs: dict) -> bool:
    device = kwargs.get("device")
    return device is not None and torch.device(device).type == "cpu"
