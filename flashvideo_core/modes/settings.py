"""ModelModes: how a transformer is stored and run (one frozen object, checked when it is made).

Every field's default is the behaviour before these modes existed, so ModelModes() changes nothing.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

from ..errors import FlashVideoInputError

WEIGHT_FORMATS = ("default", "fp8_e4m3fn")
"""default: the weights in the compute dtype; fp8_e4m3fn: the blocks' linear weights stored in
float8_e4m3fn and upcast per layer when used (embeddings, norms, adaLN modulation, patch embedding and
the final projection stay in the compute dtype)."""

ATTENTION_BACKENDS = ("sdpa", "sage", "flash")
"""sdpa: torch's scaled_dot_product_attention (default); sage: SageAttention 2; flash: FlashAttention
2/3. A backend that is not installed falls back to sdpa with a one-line note."""

AUTO = "auto"


@dataclass(frozen=True)
class ModelModes:
    """weights: one of WEIGHT_FORMATS. resident_blocks: None = every block stays on the compute device
    (no block swap); an int N >= 1 = keep N transformer blocks there and stream the others from pinned
    CPU memory; "auto" = the planner picks N for the free memory. attention: one of ATTENTION_BACKENDS.
    compile: torch.compile each transformer block (regional), guarded against recompiling per size."""

    weights: str = "default"
    resident_blocks: int | str | None = None
    attention: str = "sdpa"
    compile: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise FlashVideoInputError naming the first invalid field and its fix."""
        if self.weights not in WEIGHT_FORMATS:
            raise FlashVideoInputError(f"weights={self.weights!r} must be one of {', '.join(WEIGHT_FORMATS)}.")
        blocks = self.resident_blocks
        if blocks is not None and blocks != AUTO and (
            isinstance(blocks, bool) or not isinstance(blocks, numbers.Integral) or blocks < 1
        ):
            raise FlashVideoInputError(
                f"resident_blocks={blocks!r} must be None (no block swap), 'auto' or a block count >= 1."
            )
        if self.attention not in ATTENTION_BACKENDS:
            raise FlashVideoInputError(
                f"attention={self.attention!r} must be one of {', '.join(ATTENTION_BACKENDS)}."
            )
        if not isinstance(self.compile, bool):
            raise FlashVideoInputError(f"compile={self.compile!r} must be True or False.")
