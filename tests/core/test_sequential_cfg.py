"""Sequential CFG (the two guidance halves as two batch-1 calls) gives the batched result, on the tiny models.

Not bit for bit in fp32: the matrix products run at another batch size, so the CPU's GEMM may sum in
another order; the results agree to 1e-5 of their scale (tests/equivalence.py), the same bound the
loader tests hold, which a swapped or transposed tensor fails."""

import pytest
import torch

from flashvideo_core import config
from flashvideo_core.model.transformer import build_transformer
from flashvideo_core.sampling.degradation import degrade_latent
from flashvideo_core.sampling.settings import Stage1Settings, Stage2Settings
from flashvideo_core.sampling.stages import run_stage1, run_stage2

from ..equivalence import assert_same_outputs

COND = torch.randn(1, 226, 32, generator=torch.Generator().manual_seed(0))


class Counting(torch.nn.Module):
    """Wraps a transformer and records the batch of each call."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config, self.source_file, self.batches = inner, inner.config, None, []

    def forward(self, *args, **kwargs):
        self.batches.append(args[0].shape[0])
        return self.inner(*args, **kwargs)


def test_stage1_sequential_cfg_gives_the_batched_result():
    settings = Stage1Settings(num_frames=5, height=16, width=32, steps=3)
    batched = Counting(build_transformer(config.TINY_STAGE1, seed=0))
    sequential = Counting(build_transformer(config.TINY_STAGE1, seed=0))
    a = run_stage1(batched, COND, settings, seed=1)
    b = run_stage1(sequential, COND, Stage1Settings(num_frames=5, height=16, width=32, steps=3, sequential_cfg=True),
                   seed=1)
    assert set(batched.batches) == {2} and set(sequential.batches) == {1}
    assert_same_outputs(b, a)


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_stage2_sequential_cfg_gives_the_batched_result(solver):
    latent = degrade_latent(torch.randn(1, 16, 2, 4, 6, generator=torch.Generator().manual_seed(3)), 675, seed=4)
    batched = Counting(build_transformer(config.TINY_STAGE2, seed=0))
    sequential = Counting(build_transformer(config.TINY_STAGE2, seed=0))
    a = run_stage2(batched, COND, latent, Stage2Settings(steps=2, solver=solver))
    b = run_stage2(sequential, COND, latent, Stage2Settings(steps=2, solver=solver, sequential_cfg=True))
    assert set(batched.batches) == {2} and set(sequential.batches) == {1}
    assert_same_outputs(b, a)
