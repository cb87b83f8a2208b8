"""Exception types raised by flashvideo_core.

Both are ValueError subclasses so callers that only know ValueError still catch them.
Messages name the offending input, what was given, and what would be valid.
"""


class FlashVideoInputError(ValueError):
    """Bad user input (sizes, frame counts, tensors, settings), raised before any sampling."""


class CheckpointError(ValueError):
    """A weight file or folder that cannot be used: missing, corrupt, unsafe or the wrong model."""


class NonFiniteError(ValueError):
    """A stage produced (or was given) NaN or Inf values: raised at once, instead of writing a black video."""
