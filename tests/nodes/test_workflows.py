"""Every shipped workflow is valid against the node definitions: types exist, links match, widgets fit."""

import json
from pathlib import Path

import pytest

from nodes import NODE_CLASS_MAPPINGS

from .comfy_validation import validate_like_comfyui

WORKFLOWS = sorted((Path(__file__).parents[2] / "workflows").glob("*.json"))
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}

# Core nodes used by the workflows, as ComfyUI 0.3.64 defines them (comfy_extras/nodes_video.py).
CORE = {
    "LoadVideo": {"inputs": {"file": ("COMBO", None)}, "outputs": ["VIDEO"]},
    "GetVideoComponents": {"inputs": {"video": ("VIDEO", None)}, "outputs": ["IMAGE", "AUDIO", "FLOAT"]},
    "CreateVideo": {"inputs": {"images": ("IMAGE", None), "fps": ("FLOAT", {"min": 1.0, "max": 120.0}),
                               "audio": ("AUDIO", None)}, "outputs": ["VIDEO"]},
    "SaveVideo": {"inputs": {"video": ("VIDEO", None), "filename_prefix": ("STRING", {}),
                             "format": (["auto", "mp4"], {}), "codec": (["auto", "h264"], {})}, "outputs": []},
}


def _definition(node_type):
    if node_type in CORE:
        return CORE[node_type]["inputs"], CORE[node_type]["outputs"]
    cls = NODE_CLASS_MAPPINGS[node_type]
    spec = cls.INPUT_TYPES()
    sections = [spec.get(section, {}) for section in ("required", "optional")]
    inputs = {n: (s[0], s[1] if len(s) > 1 else {}) for section in sections for n, s in section.items()}
    return inputs, list(cls.RETURN_TYPES)


def _widget_values(node, inputs):
    """Pair the positional widgets_values with the widget inputs (skipping seed control values)."""
    values = list(node["widgets_values"])
    pairs = []
    for name, (kind, _) in inputs.items():
        if isinstance(kind, list) or kind in WIDGET_TYPES or kind == "COMBO":
            pairs.append((name, values.pop(0)))
            if name == "seed":
                assert values.pop(0) in ("fixed", "randomize", "increment", "decrement")
    return pairs


@pytest.fixture(params=WORKFLOWS, ids=lambda p: p.stem)
def workflow(request):
    return json.loads(request.param.read_text()), request.param


def test_there_are_the_four_shipped_workflows_with_thumbnails():
    names = {p.stem for p in WORKFLOWS}
    assert names == {"flashvideo_text_to_video", "flashvideo_preview_only", "flashvideo_enhance_video_file",
                     "flashvideo_branch_two_stage2"}
    for path in WORKFLOWS:
        assert path.with_suffix(".jpg").stat().st_size > 1000


def test_every_node_type_exists(workflow):
    graph, _ = workflow
    for node in graph["nodes"]:
        assert node["type"] in NODE_CLASS_MAPPINGS or node["type"] in CORE, node["type"]


def test_links_join_matching_types(workflow):
    graph, _ = workflow
    nodes = {n["id"]: n for n in graph["nodes"]}
    for link_id, src, src_slot, dst, dst_slot, kind in graph["links"]:
        _, outputs = _definition(nodes[src]["type"])
        inputs, _ = _definition(nodes[dst]["type"])
        target = nodes[dst]["inputs"][dst_slot]
        assert outputs[src_slot] == kind == target["type"], (link_id, kind)
        assert inputs[target["name"]][0] == kind
        assert target["link"] == link_id


def test_required_inputs_are_connected_or_set(workflow):
    graph, _ = workflow
    for node in graph["nodes"]:
        if node["type"] in CORE:
            continue
        spec = NODE_CLASS_MAPPINGS[node["type"]].INPUT_TYPES()["required"]
        linked = {i["name"] for i in node["inputs"] if i["link"] is not None}
        widgets = {name for name, _ in _widget_values(node, _definition(node["type"])[0])}
        assert set(spec) <= linked | widgets, node["type"]


def test_widget_values_fit_their_inputs(workflow, monkeypatch, tmp_path):
    graph, _ = workflow
    for node in graph["nodes"]:
        inputs, _ = _definition(node["type"])
        for name, value in _widget_values(node, inputs):
            kind, options = inputs[name]
            options = options or {}
            if isinstance(kind, list) and name not in {"model_name", "vae_name", "encoder_name", "file"}:
                assert value in kind, (node["type"], name, value)
            elif kind in ("INT", "FLOAT"):
                assert isinstance(value, int if kind == "INT" else (int, float)), (name, value)
                assert options.get("min", value) <= value <= options.get("max", value), (name, value)
            elif kind == "BOOLEAN":
                assert isinstance(value, bool)
            elif kind == "STRING":
                assert isinstance(value, str)
        cls = NODE_CLASS_MAPPINGS.get(node["type"])
        if hasattr(cls, "VALIDATE_INPUTS") and node["type"] not in {
                "FlashVideoStage1Loader", "FlashVideoStage2Loader", "FlashVideoVAELoader", "FlashVideoT5Loader"}:
            linked = {i["name"] for i in node["inputs"] if i["link"] is not None}
            assert validate_like_comfyui(cls, dict(_widget_values(node, inputs)), linked) is True, node["type"]


def test_shipped_files_are_what_the_builder_makes(workflow):
    import importlib.util

    graph, path = workflow
    spec = importlib.util.spec_from_file_location("build_workflows", path.parents[1] / "scripts" / "build_workflows.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.WORKFLOWS[path.stem]().to_json() == graph


def test_the_enhance_workflow_passes_fps_and_audio_from_the_source_to_the_saved_video():
    """Frame rate and audio must come from the loaded clip (not a typed-in fps, not dropped)."""
    data = json.loads((Path(__file__).parents[2] / "workflows" / "flashvideo_enhance_video_file.json").read_text())
    nodes = {node["id"]: node for node in data["nodes"]}
    links = {link[0]: link[1:5] for link in data["links"]}  # id -> (from node, from slot, to node, to slot)

    def source_of(node, input_name):
        link_id = next(i["link"] for i in node["inputs"] if i["name"] == input_name)
        assert link_id is not None, f"{node['type']}.{input_name} is not linked"
        from_node, from_slot, _, _ = links[link_id]
        return nodes[from_node]["type"], nodes[from_node]["outputs"][from_slot]["name"]

    (create,) = [node for node in nodes.values() if node["type"] == "CreateVideo"]
    assert source_of(create, "fps") == ("GetVideoComponents", "fps")
    assert source_of(create, "audio") == ("GetVideoComponents", "audio")
    assert source_of(create, "images") == ("FlashVideoEnhanceImages", "images")
    (save,) = [node for node in nodes.values() if node["type"] == "SaveVideo"]
    assert source_of(save, "video") == ("CreateVideo", "VIDEO")
