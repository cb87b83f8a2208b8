"""Regional torch.compile of the transformer blocks, on a tiny 4-block Stage I model.

The compiles are counted with a custom dynamo backend that records each graph it is handed and runs it
as traced (eager): inductor works here but takes ~3 minutes per size for even the tiny model on these
2 cores (measured: 186 s and 85 s for the first two sizes, then 0.4 s per call, outputs within 5e-7 of
eager), too slow for the suite. The regional wrapping, the shared block code and the dynamic-shape guard
are the same whatever the backend. One compiled model runs the size sequence once (module fixture):
each compile takes seconds of dynamo tracing.
"""

import dataclasses

import pytest
import torch

from flashvideo_core import config
from flashvideo_core.model.transformer import build_transformer
from flashvideo_core.modes.block_swap import SyncTransfers, enable_block_swap
from flashvideo_core.modes.compile import (
    compile_blocks,
    describe_compile,
    transformer_blocks,
    uncompile_blocks,
)

SHAPE = dataclasses.replace(config.TINY_STAGE1, num_layers=4)
SIZES = [(2, 8, 8), (3, 8, 16), (2, 8, 8), (1, 16, 16)]  # latent (frames, h, w): A, B, A again, C
TEXT = torch.randn(1, 226, 32, generator=torch.Generator().manual_seed(1))


class CountingBackend:
    """A dynamo backend that counts the graphs it compiles and runs them as traced."""

    __name__ = "counting"

    def __init__(self):
        self.graphs = 0

    def __call__(self, graph_module, example_inputs):
        self.graphs += 1
        return graph_module.forward


def _latents(frames, h, w, seed=0):
    return torch.randn(1, frames, 16, h, w, generator=torch.Generator().manual_seed(seed))


def _call(model, latents):
    with torch.no_grad():
        return model(latents, TEXT, torch.tensor([500.0]))


@pytest.fixture(scope="module")
def compiled_run():
    torch._dynamo.reset()
    backend = CountingBackend()
    model = build_transformer(SHAPE, seed=0)
    reference = build_transformer(SHAPE, seed=0)
    keys_before = list(model.state_dict())
    info = compile_blocks(model, backend=backend)
    run = {"model": model, "reference": reference, "backend": backend, "info": info, "keys_before": keys_before,
           "graphs": [], "errors": []}
    for size in SIZES:
        out, expected = _call(model, _latents(*size)), _call(reference, _latents(*size))
        run["graphs"].append(backend.graphs)
        run["errors"].append((out - expected).abs().max().item())
    # new weights into the compiled model: the compiled code must use them, without a recompile
    other = build_transformer(SHAPE, seed=5)
    model.load_state_dict(other.state_dict())
    run["loaded_error"] = (_call(model, _latents(*SIZES[0])) - _call(other, _latents(*SIZES[0]))).abs().max().item()
    run["graphs_after_load"] = backend.graphs
    yield run
    torch._dynamo.reset()


def test_every_block_is_compiled_in_place_and_state_dict_keys_are_unchanged(compiled_run):
    model = compiled_run["model"]
    blocks = transformer_blocks(model)
    assert compiled_run["info"].blocks == len(blocks) == SHAPE.num_layers
    assert all(block._compiled_call_impl is not None for block in blocks)
    assert all(type(block).__name__ == "CogVideoXBlock" for block in blocks)  # no wrapper module
    assert list(model.state_dict()) == compiled_run["keys_before"]
    assert describe_compile(model) == "FlashVideo torch.compile: 4 blocks (counting, dynamic after a new size)"


def test_compiled_output_equals_the_uncompiled_model(compiled_run):
    assert compiled_run["graphs"][0] > 0  # the blocks really went through dynamo
    assert max(compiled_run["errors"]) <= 1e-5


def test_weights_loaded_into_the_compiled_model_are_used(compiled_run):
    assert compiled_run["loaded_error"] <= 1e-5
    assert compiled_run["graphs_after_load"] == compiled_run["graphs"][-1]


def test_the_blocks_share_one_compile_and_a_new_size_recompiles_once(compiled_run):
    first, second, again, third = compiled_run["graphs"]
    # Block 0 gets a strided view of the embedded tokens, blocks 1.. a contiguous tensor: 2 graphs, not 4.
    assert first <= 2 < SHAPE.num_layers
    assert second <= 2 * first  # the second size: one dynamic recompile per variant, not per block
    assert again == second and third == second  # size A again and a third size C: no compile at all


def test_uncompile_blocks_restores_eager_blocks(compiled_run):
    model = build_transformer(SHAPE, seed=0)
    compile_blocks(model, backend=CountingBackend())
    uncompile_blocks(model)
    assert all(block._compiled_call_impl is None for block in transformer_blocks(model))
    assert describe_compile(model) == "FlashVideo torch.compile: off"


def test_compile_blocks_raises_the_recompile_limit_but_never_lowers_it():
    # set and restored by hand: monkeypatch's undo deletes the config entry (torch's config module then
    # raises "recompile_limit does not exist" for every later compile in this process)
    config_module, before = torch._dynamo.config, torch._dynamo.config.recompile_limit
    try:
        config_module.recompile_limit = 4
        model = build_transformer(SHAPE, seed=0)
        assert compile_blocks(model, backend=CountingBackend(), recompile_limit=16).recompile_limit == 16
        config_module.recompile_limit = 64
        assert compile_blocks(model, backend=CountingBackend(), recompile_limit=16).recompile_limit == 64
        assert config_module.recompile_limit == 64
        uncompile_blocks(model)
    finally:
        config_module.recompile_limit = before


class CountingTransfers(SyncTransfers):
    """SyncTransfers that count the copies block swap asks for (so the test sees its hooks ran)."""

    def __init__(self, device):
        super().__init__(device)
        self.fetches = 0

    def fetch(self, index, tensors):
        self.fetches += 1
        return super().fetch(index, tensors)


def test_block_swap_and_regional_compile_compose():
    """Block swap's hooks on compiled blocks: the output is eager's, every streamed block is copied once per
    call and pointed back at its host copy after it, and the compiled blocks keep one shared compile
    (traced hooks compiled one variant per block index: 9 graphs for 4 blocks at the first size)."""
    torch._dynamo.reset()
    backend = CountingBackend()
    model = build_transformer(SHAPE, seed=0)
    reference = build_transformer(SHAPE, seed=0)
    compile_blocks(model, backend=backend)  # the order of modes.apply: compile, then block swap
    transfers = CountingTransfers("cpu")
    handle = enable_block_swap(model, 1, "cpu", transfers=transfers)
    graphs, errors = [], []
    try:
        for size in SIZES[:2]:
            for _ in range(2):  # each size twice: the second call must not compile
                errors.append((_call(model, _latents(*size)) - _call(reference, _latents(*size))).abs().max().item())
                graphs.append(backend.graphs)
    finally:
        torch._dynamo.reset()
    assert max(errors) <= 1e-5
    assert transfers.fetches == len(errors) * len(handle.streamed) and not handle._tickets
    masters = {t.data_ptr() for t in handle._masters[3]}
    assert all(p.data_ptr() in masters for p in transformer_blocks(model)[3].parameters())
    first, again, second, second_again = graphs
    assert 0 < first <= 2 and again == first  # as without block swap: one graph for the shared block code
    assert second <= 2 * first and second_again == second
