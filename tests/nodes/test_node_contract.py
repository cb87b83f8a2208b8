"""The node definitions are a public contract: saved workflows name node ids, inputs and widget order.

tests/nodes/node_definitions.json freezes them. A deliberate change: run with
FLASHVIDEO_UPDATE_SNAPSHOT=1 and commit the diff (and add a migration for saved workflows).
"""

import json
import os
from pathlib import Path

import pytest

import nodes
from nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

SNAPSHOT = Path(__file__).with_name("node_definitions.json")
DYNAMIC_COMBOS = {"model_name", "vae_name", "encoder_name", "tokenizer", "lora_name"}


def _describe_input(name, spec):
    kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
    if isinstance(kind, list):
        kind = "COMBO" if name in DYNAMIC_COMBOS else kind
    described = {"name": name, "type": kind}
    for key in ("default", "min", "max", "step", "multiline"):
        if key in options:
            described[key] = options[key]
    return described


def definitions():
    result = {}
    for node_id, cls in NODE_CLASS_MAPPINGS.items():
        inputs = cls.INPUT_TYPES()
        result[node_id] = {
            "display_name": NODE_DISPLAY_NAME_MAPPINGS[node_id],
            "category": cls.CATEGORY,
            "function": cls.FUNCTION,
            "required": [_describe_input(n, s) for n, s in inputs.get("required", {}).items()],
            "optional": [_describe_input(n, s) for n, s in inputs.get("optional", {}).items()],
            "outputs": list(cls.RETURN_TYPES),
            "output_names": list(cls.RETURN_NAMES),
            "output_node": bool(getattr(cls, "OUTPUT_NODE", False)),
        }
    return result


def test_node_definitions_match_the_frozen_contract(tmp_path, monkeypatch):
    monkeypatch.setenv("FLASHVIDEO_MODELS_DIR", str(tmp_path))
    current = definitions()
    if os.environ.get("FLASHVIDEO_UPDATE_SNAPSHOT") == "1":
        SNAPSHOT.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    frozen = json.loads(SNAPSHOT.read_text())
    assert current == frozen, "Node definitions changed: saved workflows may break (see module docstring)."


@pytest.mark.parametrize("node_id", sorted(NODE_CLASS_MAPPINGS))
def test_every_input_has_a_tooltip_and_ids_are_prefixed(node_id):
    cls = NODE_CLASS_MAPPINGS[node_id]
    assert node_id.startswith("FlashVideo")
    assert cls.CATEGORY.split("/")[0] == "FlashVideo" and len(cls.CATEGORY.split("/")) == 2, cls.CATEGORY
    assert cls.DESCRIPTION
    inputs = cls.INPUT_TYPES()
    for section in ("required", "optional"):
        for name, spec in inputs.get(section, {}).items():
            assert len(spec) > 1 and spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
    assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == len(cls.OUTPUT_TOOLTIPS)
    assert callable(getattr(cls(), cls.FUNCTION))


def test_custom_types_never_reuse_native_names():
    native = {"VAE", "MODEL", "CLIP", "CONDITIONING"}
    for cls in NODE_CLASS_MAPPINGS.values():
        for section in cls.INPUT_TYPES().values():
            for spec in section.values():
                assert not (isinstance(spec[0], str) and spec[0] in native)
        assert not native & set(cls.RETURN_TYPES)


def test_pack_entry_exposes_the_mappings():
    assert nodes.NODE_CLASS_MAPPINGS is NODE_CLASS_MAPPINGS
    entry = (Path(__file__).parents[2] / "__init__.py").read_text()
    assert 'WEB_DIRECTORY = "./web"' in entry and "NODE_CLASS_MAPPINGS" in entry


@pytest.mark.parametrize("node_id", sorted(NODE_CLASS_MAPPINGS))
def test_validate_inputs_never_switches_off_comfyuis_own_checks(node_id):
    """A VALIDATE_INPUTS taking **kwargs makes ComfyUI skip its range and combo checks of every input. It may
    name optional inputs (ComfyUI passes them when the workflow has them), with a default of None for a
    workflow saved before they existed."""
    import inspect

    validate = getattr(NODE_CLASS_MAPPINGS[node_id], "VALIDATE_INPUTS", None)
    if validate is not None:
        spec = inspect.getfullargspec(validate)
        assert spec.varkw is None and "input_types" not in spec.args
        inputs = NODE_CLASS_MAPPINGS[node_id].INPUT_TYPES()
        assert set(spec.args[1:]) <= set(inputs["required"]) | set(inputs.get("optional", {}))
        defaults = dict(zip(spec.args[len(spec.args) - len(spec.defaults or ()):], spec.defaults or (), strict=True))
        assert all(defaults.get(name, "missing") is None for name in spec.args[1:] if name not in inputs["required"])
