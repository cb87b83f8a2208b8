"""How ComfyUI (execution.validate_inputs, 0.3.64) calls a classic node's VALIDATE_INPUTS.

It passes only the inputs the function names (all of them if it takes **kwargs), with None for an
input that is linked to another node; and it skips its own min/max and combo checks for every
input the function names, or for all inputs when it takes **kwargs.
"""

import inspect


def validate_like_comfyui(node_cls, widget_values: dict, linked: set[str] = frozenset()):
    """Call node_cls.VALIDATE_INPUTS as ComfyUI does; returns its answer (True or a message)."""
    spec = inspect.getfullargspec(node_cls.VALIDATE_INPUTS)
    values = {**widget_values, **dict.fromkeys(linked)}
    named = {k: v for k, v in values.items() if k in spec.args or spec.varkw is not None}
    return node_cls.VALIDATE_INPUTS(**named)
