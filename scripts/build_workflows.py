"""Build the shipped UI-format workflows (workflows/*.json), and schematic .jpg thumbnails where none exist.

The shipped thumbnails are screenshots from a real ComfyUI (scripts/screenshot_workflows.py);
delete one to get a schematic instead.

Widget values are positional in the UI format, so they are derived here from the node definitions
(our NODE_CLASS_MAPPINGS and the core video nodes' inputs), never typed by hand:
    python scripts/build_workflows.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flashvideo_core import config  # noqa: E402
from flashvideo_core.enhance.plan import DEFAULT_BLEND  # noqa: E402
from flashvideo_core.enhance.windows import DEFAULT_OVERLAP, DEFAULT_WINDOW  # noqa: E402
from nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402
from nodes.node_modes import MEMORY, t5_mode_inputs, transformer_mode_inputs  # noqa: E402

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}
SEED_NAMES = {"seed", "noise_seed"}
CORE_NODES = {
    # Inputs and outputs of the core nodes used, as ComfyUI 0.3.64 defines them (comfy_extras/nodes_video.py).
    "LoadVideo": {"inputs": [("file", "COMBO")], "outputs": [("VIDEO", "VIDEO")], "extra_widgets": ["image"]},
    "GetVideoComponents": {"inputs": [("video", "VIDEO")],
                           "outputs": [("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT")]},
    "CreateVideo": {"inputs": [("images", "IMAGE"), ("fps", "FLOAT"), ("audio", "AUDIO")],
                    "outputs": [("VIDEO", "VIDEO")], "optional": {"audio"}},
    "SaveVideo": {"inputs": [("video", "VIDEO"), ("filename_prefix", "STRING"), ("format", "COMBO"),
                             ("codec", "COMBO")], "outputs": []},
}


def node_inputs(node_type: str) -> list[tuple[str, str, bool]]:
    """[(name, type, is_widget)] in definition order."""
    if node_type in CORE_NODES:
        return [(n, t, t in WIDGET_TYPES or t == "COMBO") for n, t in CORE_NODES[node_type]["inputs"]]
    spec = NODE_CLASS_MAPPINGS[node_type].INPUT_TYPES()
    result = []
    for section in ("required", "optional"):
        for name, value in spec.get(section, {}).items():
            kind = "COMBO" if isinstance(value[0], list) else value[0]
            result.append((name, kind, kind in WIDGET_TYPES or kind == "COMBO"))
    return result


def node_outputs(node_type: str) -> list[tuple[str, str]]:
    if node_type in CORE_NODES:
        return CORE_NODES[node_type]["outputs"]
    cls = NODE_CLASS_MAPPINGS[node_type]
    return list(zip(cls.RETURN_NAMES, cls.RETURN_TYPES, strict=True))


class Graph:
    """A small builder for the UI format (nodes, links, widgets_values)."""

    def __init__(self):
        self.nodes: list[dict] = []
        self.links: list[list] = []
        self.groups: list[dict] = []

    def add(self, node_type: str, pos: tuple[int, int], widgets: dict | None = None, title: str | None = None,
            size: tuple[int, int] = (320, 160)) -> int:
        node_id = len(self.nodes) + 1
        widgets = widgets or {}
        values, inputs = [], []
        for name, kind, is_widget in node_inputs(node_type):
            entry = {"name": name, "type": kind, "link": None}
            if is_widget:
                entry["widget"] = {"name": name}
                if name not in widgets:
                    raise KeyError(f"{node_type}.{name} needs a widget value")
                values.append(widgets[name])
                if name in SEED_NAMES and kind == "INT":
                    values.append("fixed")
            else:
                inputs.append(entry)
                continue
            inputs.append(entry)
        values += CORE_NODES.get(node_type, {}).get("extra_widgets", [])
        outputs = [
            {"name": n, "type": t, "links": [], "slot_index": i} for i, (n, t) in enumerate(node_outputs(node_type))
        ]
        node = {
            "id": node_id, "type": node_type, "pos": list(pos), "size": list(size), "flags": {}, "order": node_id - 1,
            "mode": 0, "inputs": inputs, "outputs": outputs, "properties": {"Node name for S&R": node_type},
            "widgets_values": values,
        }
        if title:
            node["title"] = title
        self.nodes.append(node)
        return node_id

    def link(self, source: int, output: str, target: int, input_name: str) -> None:
        src = self.nodes[source - 1]
        dst = self.nodes[target - 1]
        slot = next(i for i, o in enumerate(src["outputs"]) if o["name"] == output)
        target_slot = next(i for i, entry in enumerate(dst["inputs"]) if entry["name"] == input_name)
        link_id = len(self.links) + 1
        kind = src["outputs"][slot]["type"]
        self.links.append([link_id, source, slot, target, target_slot, kind])
        src["outputs"][slot]["links"].append(link_id)
        dst["inputs"][target_slot]["link"] = link_id

    def group(self, title: str, bounding: tuple[int, int, int, int], color: str) -> None:
        self.groups.append({"title": title, "bounding": list(bounding), "color": color, "font_size": 24})

    def to_json(self) -> dict:
        return {
            "last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
            "links": self.links, "groups": self.groups, "config": {}, "extra": {"ds": {"scale": 0.7, "offset": [0, 0]}},
            "version": 0.4,
        }


PROMPT = (
    "A red fox trots through fresh powder snow in a quiet pine forest at sunrise. Low golden light comes through "
    "the trees and casts long blue shadows; its breath steams in the cold air and snow crystals sparkle. The camera "
    "tracks slowly alongside at the fox's height, shallow depth of field, cinematic, highly detailed fur."
)
LOADER = {"precision": "auto", "offload": "offload after use"}
MODES = {name: spec[1]["default"] for name, spec in transformer_mode_inputs().items()}
"""The transformer loaders' memory-mode widgets at their defaults."""
T5_MODES = {name: spec[1]["default"] for name, spec in t5_mode_inputs().items()}
"""The T5 loader's mode widget (weights) at its default."""
MEMORY_DEFAULT = MEMORY[1]["default"]
"""The samplers' and Enhance Video's `memory` widget at its default."""


def _models(g: Graph, stage1=True, stage2=True):
    wanted = [("stage1", "FlashVideoStage1Loader", {"model_name": "stage1.pt", **MODES}),
              ("stage2", "FlashVideoStage2Loader", {"model_name": "stage2.pt", **MODES}),
              ("vae", "FlashVideoVAELoader", {"vae_name": "3d-vae.pt"}),
              ("t5", "FlashVideoT5Loader", {"encoder_name": "text_encoder/", **T5_MODES,
                                            "tokenizer": "auto (tokenizer/ beside the encoder)"})]
    wanted = [w for w in wanted if (stage1 or w[0] != "stage1") and (stage2 or w[0] != "stage2")]
    return {key: g.add(node_type, (0, 190 * row), {**widgets, **LOADER})
            for row, (key, node_type, widgets) in enumerate(wanted)}


def _encode(g: Graph, ids: dict, prompt: str = PROMPT, pos=(380, 0)) -> int:
    node = g.add("FlashVideoTextEncode", pos, {"prompt": prompt, "stage2_prefix": False}, size=(400, 260))
    g.link(ids["t5"], "t5", node, "t5")
    return node


SEED = 42
"""Stage I's seed; Prepare Stage II takes SEED + 1 and Latent Degradation SEED + 2, as `generate --seed 42`
does (sampling.settings.stage2_seeds), so the shipped graphs reproduce the CLI (and the encode and the
degradation never draw the same noise)."""


def _stage1(g: Graph, ids: dict, embeds: int, pos=(830, 0)) -> int:
    node = g.add("FlashVideoStage1Sampler", pos, {
        "seed": SEED, "steps": config.STAGE1_STEPS, "cfg": config.STAGE1_CFG,
        "cfg_exponent": config.STAGE1_CFG_EXPONENT,
        "frames": config.DEFAULT_NUM_FRAMES, "width": config.STAGE1_WIDTH, "height": config.STAGE1_HEIGHT,
        "sequential_cfg": False, "memory": MEMORY_DEFAULT,
    }, size=(340, 300))
    g.link(ids["stage1"], "stage1_model", node, "model")
    g.link(embeds, "embeds", node, "embeds")
    g.link(ids["vae"], "vae", node, "vae")
    return node


def _decode(g: Graph, vae: int, latent: int, latent_output: str, pos) -> int:
    node = g.add("FlashVideoVAEDecode", pos, {"slicing": "auto", "chunk_frames": 2, "tile_size": 64,
                                              "tile_overlap": 8}, size=(320, 200))
    g.link(vae, "vae", node, "vae")
    g.link(latent, latent_output, node, "latent")
    return node


def _save(g: Graph, images: int, prefix: str, pos, fps: float = float(config.DEFAULT_FPS), fps_from: int | None = None,
          audio_from: int | None = None) -> int:
    create = g.add("CreateVideo", pos, {"fps": fps}, size=(260, 100))
    g.link(images, "images", create, "images")
    if fps_from:
        g.link(fps_from, "fps", create, "fps")
    if audio_from:
        g.link(audio_from, "audio", create, "audio")
    save = g.add("SaveVideo", (pos[0] + 290, pos[1]), {"filename_prefix": prefix, "format": "mp4", "codec": "h264"},
                 size=(400, 420))
    g.link(create, "VIDEO", save, "video")
    return save


def _stage2_branch(g: Graph, ids: dict, embeds: int, prepared: int, x: int, y: int, noise: int, steps: int,
                   cfg: float, prefix: str) -> None:
    degraded = g.add("FlashVideoLatentDegradation", (x, y), {"noise_step": noise, "seed": SEED + 2},
                     size=(320, 130))
    g.link(prepared, "latent", degraded, "latent")
    sampler = g.add("FlashVideoStage2Sampler", (x + 350, y), {"steps": steps, "cfg": cfg, "shift": config.STAGE2_SHIFT,
                                                              "solver": "euler", "sequential_cfg": False,
                                                              "memory": MEMORY_DEFAULT},
                  size=(340, 230))
    g.link(ids["stage2"], "stage2_model", sampler, "model")
    g.link(embeds, "embeds", sampler, "embeds")
    g.link(degraded, "degraded_latent", sampler, "latent")
    g.link(ids["vae"], "vae", sampler, "vae")
    decoded = _decode(g, ids["vae"], sampler, "latent", (x + 720, y))
    _save(g, decoded, prefix, (x + 1070, y))


def _stage1_preview(g: Graph, stage2: bool = True) -> tuple[dict, int, int]:
    """Loaders, prompt, Stage I and its saved 270p preview -> (model node ids, embeds node, preview images node)."""
    ids = _models(g, stage2=stage2)
    embeds = _encode(g, ids)
    latent = _stage1(g, ids, embeds)
    preview = _decode(g, ids["vae"], latent, "latent", (1200, 0))
    _save(g, preview, "FlashVideo/preview_270p", (1550, 0))
    return ids, embeds, preview


def _prepare_stage2(g: Graph, ids: dict, preview: int) -> int:
    """The preview frames -> the Stage II latent at the official size (the node every Stage II branch starts from)."""
    prepared = g.add("FlashVideoPrepareStage2", (830, 640),
                     {"width": config.STAGE2_WIDTH, "height": config.STAGE2_HEIGHT, "seed": SEED + 1},
                     size=(320, 200))
    g.link(ids["vae"], "vae", prepared, "vae")
    g.link(preview, "images", prepared, "images")
    return prepared


OFFICIAL_STAGE2 = (config.DEFAULT_NOISE_STEP, config.STAGE2_STEPS, config.STAGE2_CFG)
"""noise step, steps, cfg of a Stage II branch with the official settings."""


def text_to_video() -> Graph:
    g = Graph()
    ids, embeds, preview = _stage1_preview(g)
    prepared = _prepare_stage2(g, ids, preview)
    _stage2_branch(g, ids, embeds, prepared, 1200, 640, *OFFICIAL_STAGE2, "FlashVideo/final_1080p")
    g.group("Stage I: 270p preview (cheap)", (810, -80, 1480, 620), "#3f789e")
    g.group("Stage II: 1080p detail (runs on exactly this preview; Stage I is cached)", (810, 560, 2300, 560),
            "#8A8")
    return g


def preview_only() -> Graph:
    g = Graph()
    _stage1_preview(g, stage2=False)
    return g


def enhance_video_file() -> Graph:
    g = Graph()
    ids = _models(g, stage1=False)
    embeds = _encode(g, ids, "A handheld phone clip of a busy street market at dusk, people walking past stalls "
                             "with hanging lights, natural colours, gentle camera sway.")
    load = g.add("LoadVideo", (380, 320), {"file": "input.mp4"}, size=(320, 400))
    parts = g.add("GetVideoComponents", (730, 320), {}, size=(260, 110))
    g.link(load, "VIDEO", parts, "video")
    enhance = g.add("FlashVideoEnhanceImages", (1020, 0), {
        "target": "1080p", "long_edge": 1920, "auto_noise": True, "noise_step": config.DEFAULT_NOISE_STEP,
        "steps": config.STAGE2_STEPS, "cfg": config.STAGE2_CFG, "shift": config.STAGE2_SHIFT, "window": DEFAULT_WINDOW,
        "overlap": DEFAULT_OVERLAP, "color_match": False, "seed": 0, "sequential_cfg": False, "blend": DEFAULT_BLEND,
        "memory": MEMORY_DEFAULT},
        size=(360, 480))
    g.link(ids["stage2"], "stage2_model", enhance, "model")
    g.link(ids["vae"], "vae", enhance, "vae")
    g.link(embeds, "embeds", enhance, "embeds")
    g.link(parts, "images", enhance, "images")
    _save(g, enhance, "FlashVideo/enhanced", (1410, 0), fps=30.0, fps_from=parts, audio_from=parts)
    return g


def branch() -> Graph:
    g = Graph()
    ids, embeds, preview = _stage1_preview(g)
    prepared = _prepare_stage2(g, ids, preview)
    _stage2_branch(g, ids, embeds, prepared, 1200, 640, *OFFICIAL_STAGE2, "FlashVideo/branch_a_675_nfe4")
    _stage2_branch(g, ids, embeds, prepared, 1200, 1160, 725, 6, 10.0, "FlashVideo/branch_b_725_nfe6")
    return g


WORKFLOWS = {
    "flashvideo_text_to_video": text_to_video,
    "flashvideo_preview_only": preview_only,
    "flashvideo_enhance_video_file": enhance_video_file,
    "flashvideo_branch_two_stage2": branch,
}


def thumbnail(graph: dict, path: Path, title: str) -> None:
    """A schematic picture of the graph: node boxes coloured by role, links as lines."""
    from PIL import Image, ImageDraw

    nodes = graph["nodes"]
    xs = [n["pos"][0] for n in nodes] + [n["pos"][0] + n["size"][0] for n in nodes]
    ys = [n["pos"][1] for n in nodes] + [n["pos"][1] + n["size"][1] for n in nodes]
    width, height = 768, 432
    margin = 30
    scale = min((width - 2 * margin) / (max(xs) - min(xs)), (height - 2 * margin - 30) / (max(ys) - min(ys)))

    def at(x, y):
        return margin + (x - min(xs)) * scale, margin + 30 + (y - min(ys)) * scale

    image = Image.new("RGB", (width, height), (32, 34, 38))
    draw = ImageDraw.Draw(image)
    draw.text((margin, 10), title, fill=(235, 235, 235))
    by_id = {n["id"]: n for n in nodes}
    for _, src, _, dst, _, _ in graph["links"]:
        a, b = by_id[src], by_id[dst]
        start = at(a["pos"][0] + a["size"][0], a["pos"][1] + 20)
        end = at(b["pos"][0], b["pos"][1] + 20)
        draw.line([start, end], fill=(140, 140, 150), width=1)
    colours = {"Loader": (70, 90, 140), "Sampler": (150, 90, 50), "Stage": (150, 90, 50), "Video": (60, 120, 80),
               "Decode": (110, 70, 130), "Prepare": (110, 70, 130), "Degradation": (140, 60, 60)}
    for node in nodes:
        x0, y0 = at(*node["pos"])
        x1, y1 = at(node["pos"][0] + node["size"][0], node["pos"][1] + node["size"][1])
        colour = next((c for key, c in colours.items() if key in node["type"]), (80, 80, 90))
        draw.rectangle([x0, y0, x1, y1], fill=colour, outline=(220, 220, 220))
        label = NODE_DISPLAY_NAME_MAPPINGS.get(node["type"], node["type"]).replace("FlashVideo ", "")
        draw.text((x0 + 3, y0 + 3), label[: max(4, int((x1 - x0) / 6))], fill=(255, 255, 255))
    image.save(path, quality=90)


def main() -> int:
    out = ROOT / "workflows"
    out.mkdir(exist_ok=True)
    for name, build in WORKFLOWS.items():
        graph = build().to_json()
        (out / f"{name}.json").write_text(json.dumps(graph, indent=1) + "\n")
        picture = out / f"{name}.jpg"
        if not picture.exists():  # real screenshots come from scripts/screenshot_workflows.py; keep them
            thumbnail(graph, picture, name.replace("flashvideo_", "FlashVideo: ").replace("_", " "))
        print(out / f"{name}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
