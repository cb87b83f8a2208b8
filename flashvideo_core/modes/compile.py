"""Regional torch.compile: each transformer block compiled on its own, the rest of the model eager.

Why regional: the CogVideoX blocks are identical, so dynamo compiles the block's code once and every
block reuses it (nn.Modules are inlined, their parameters are graph inputs, not constants); a whole-model
compile would trace 42 blocks into one graph, take minutes, and break on the Python around them (Stage
II's embedding hook, the RoPE cache, block swap). Each block is compiled in place with
`nn.Module.compile()`, which keeps the module object, so state_dict keys stay `transformer_blocks.<i>.*`
(a `torch.compile(block)` wrapper would insert `_orig_mod.`) and load_state_dict into a compiled model
updates the weights the compiled code uses.

The guard against recompiling per size: dynamic=None (torch's automatic dynamic shapes). The first call
compiles for its exact shapes; the first call at another token count (resolution or frame count)
recompiles once with the changed dims symbolic; every later size reuses that graph. The recompile limit
(torch._dynamo.config.recompile_limit, per code object, i.e. for the one shared block code) is raised to
at least RECOMPILE_LIMIT so the few legitimate variants (a size, batch 1 vs 2 for sequential CFG, grad on
or off, a dtype) never push blocks back to eager; past it dynamo runs eager instead of compiling forever.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import FlashVideoInputError

RECOMPILE_LIMIT = 16
"""Lowest recompile limit compile_blocks leaves in torch._dynamo.config (torch's default is 8)."""
STATE_ATTR = "_flashvideo_compile"


@dataclass(frozen=True)
class CompiledBlocks:
    """What compile_blocks did: how many blocks, and the torch.compile options they were compiled with."""

    blocks: int
    backend: str
    mode: str | None
    dynamic: bool | None
    recompile_limit: int

    def line(self) -> str:
        """The console line, e.g. "FlashVideo torch.compile: 42 blocks (inductor, dynamic after a new size)"."""
        dynamic = {None: "dynamic after a new size", True: "dynamic", False: "static"}[self.dynamic]
        mode = f", mode {self.mode}" if self.mode else ""
        return f"FlashVideo torch.compile: {self.blocks} blocks ({self.backend}{mode}, {dynamic})"


def transformer_blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The ModuleList of repeated blocks: `model.inner.transformer_blocks` of a FlashVideoTransformer, or
    `transformer_blocks` of a diffusers CogVideoXTransformer3DModel."""
    for holder in (getattr(model, "inner", None), model):
        blocks = getattr(holder, "transformer_blocks", None)
        if isinstance(blocks, torch.nn.ModuleList) and len(blocks):
            return blocks
    raise FlashVideoInputError(
        f"{type(model).__name__} has no transformer_blocks; pass a FlashVideoTransformer or its "
        "CogVideoXTransformer3DModel (.inner)."
    )


def _raise_recompile_limit(limit: int) -> int:
    """Raise dynamo's per-code recompile limit to at least `limit` (never lower it: the config is global)."""
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    value = max(int(getattr(config, name)), limit)
    setattr(config, name, value)
    return value


def compile_blocks(
    model: torch.nn.Module,
    *,
    backend: str = "inductor",
    mode: str | None = None,
    dynamic: bool | None = None,
    fullgraph: bool = False,
    recompile_limit: int = RECOMPILE_LIMIT,
    **options,
) -> CompiledBlocks:
    """torch.compile every transformer block of `model` in place (regional compile).

    backend, mode, dynamic, fullgraph and `options` (passed as torch.compile(options=...), e.g.
    {"triton.cudagraphs": False}) go to torch.compile; a non-string backend (a callable) is allowed for
    tests. dynamic=None is the guard described in the module docstring. Compiling again replaces the
    earlier compile. Returns a CompiledBlocks (also kept on the model for describe_compile).
    """
    if recompile_limit < 1:
        raise FlashVideoInputError(f"recompile_limit={recompile_limit} must be >= 1.")
    if not torch._dynamo.config.automatic_dynamic_shapes and dynamic is None:
        raise FlashVideoInputError(
            "torch._dynamo.config.automatic_dynamic_shapes is off, so dynamic=None would recompile for every "
            "size; turn it on or pass dynamic=True."
        )
    blocks = transformer_blocks(model)
    limit = _raise_recompile_limit(recompile_limit)
    compile_kwargs = {"backend": backend, "mode": mode, "dynamic": dynamic, "fullgraph": fullgraph}
    if options:
        compile_kwargs["options"] = options
    for block in blocks:
        block.compile(**compile_kwargs)
    name = backend if isinstance(backend, str) else getattr(backend, "__name__", type(backend).__name__)
    result = CompiledBlocks(len(blocks), name, mode, dynamic, limit)
    setattr(model, STATE_ATTR, result)
    return result


def uncompile_blocks(model: torch.nn.Module) -> None:
    """Undo compile_blocks: every block runs eagerly again (its weights untouched)."""
    for block in transformer_blocks(model):
        block._compiled_call_impl = None
    if hasattr(model, STATE_ATTR):
        delattr(model, STATE_ATTR)


def describe_compile(model: torch.nn.Module) -> str:
    """The console line for the model's compile state, "FlashVideo torch.compile: off" when not compiled."""
    result = getattr(model, STATE_ATTR, None)
    return "FlashVideo torch.compile: off" if result is None else result.line()
