"""Check the one-click preview-then-enhance buttons (web/) in a real ComfyUI frontend.

A maintainer's tool, not part of the tests or the pack. Needs a running ComfyUI with this pack and
tiny weights installed (see ../shared/COMFYUI.md: `comfy_run.py --pack . --serve`) and Playwright
with Chromium:

    python scripts/check_preview_then_enhance.py --url http://127.0.0.1:8188

It loads workflows/flashvideo_text_to_video.json into the canvas, makes it small enough for a CPU
(few frames and steps, small sizes), sets the Stage I seed to "randomize", then presses the two
buttons on the Stage I sampler as a user would and reads the server's history:
1. "Preview only" must queue Stage I alone: no node of the Stage II part in the prompt, a preview saved.
2. "Enhance this preview" must queue the whole graph with the SAME Stage I seed, run Stage II and
   take every Stage I node from ComfyUI's cache (Stage I is not computed again).
Exit code 0 when both hold, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / "workflows" / "flashvideo_text_to_video.json"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SMALL = {  # node type -> widget name -> value: a CPU-sized run of the same graph
    "FlashVideoStage1Sampler": {"steps": 3, "frames": 9, "width": 96, "height": 64,
                                "control_after_generate": "randomize"},
    "FlashVideoPrepareStage2": {"width": 192, "height": 128},
    "FlashVideoStage2Sampler": {"steps": 2},
}
SETUP = """async ([workflow, small]) => {
  await app.loadGraphData(workflow, true, true);
  for (const node of app.graph._nodes) {
    for (const [name, value] of Object.entries(small[node.comfyClass] ?? {})) {
      node.widgets.find((w) => w.name === name).value = value;
    }
  }
}"""
PRESS = """async (label) => {
  const node = app.graph._nodes.find((n) => n.comfyClass === "FlashVideoStage1Sampler");
  const button = node.widgets.find((w) => w.type === "button" && w.name.startsWith(label));
  await button.callback();
  return node.widgets.find((w) => w.name === "seed").value;
}"""


def _get(url: str):
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def _wait_for_new_prompt(url: str, known: set[str], timeout: float) -> dict:
    """The history entry of the first prompt not in `known`, once it has finished."""
    end = time.time() + timeout
    while time.time() < end:
        for prompt_id, entry in _get(f"{url}/history").items():
            if prompt_id not in known and entry.get("status", {}).get("completed") is not None:
                if entry["status"].get("status_str") in ("success", "error"):
                    known.add(prompt_id)
                    return entry
        time.sleep(1)
    raise TimeoutError("the queued prompt did not finish in time")


def _messages(entry: dict, kind: str) -> list[dict]:
    return [data for name, data in entry["status"].get("messages", []) if name == kind]


def main(argv: list[str] | None = None) -> int:
    """Press both buttons in a real frontend and check what ComfyUI ran; returns the exit code."""
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8188")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args(argv)

    graph = json.loads(WORKFLOW.read_text())
    nodes = {str(n["id"]): n["type"] for n in graph["nodes"]}
    known = set(_get(f"{args.url}/history"))
    failures = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(args.url, wait_until="domcontentloaded", timeout=120_000)
        page.wait_for_function("() => window.app && window.app.graph && window.app.vueAppReady !== false",
                               timeout=120_000)
        page.evaluate(SETUP, [graph, SMALL])

        page.evaluate(PRESS, "Preview only")
        preview = _wait_for_new_prompt(args.url, known, args.timeout)
        queued = preview["prompt"][2]
        stage1_seed = next(v["inputs"]["seed"] for v in queued.values() if v["class_type"] ==
                           "FlashVideoStage1Sampler")
        in_stage2 = sorted(nodes[i] for i in queued if nodes[i] in (
            "FlashVideoPrepareStage2", "FlashVideoLatentDegradation", "FlashVideoStage2Sampler"))
        print(f"preview: {preview['status']['status_str']}, {len(queued)} nodes queued, seed {stage1_seed}, "
              f"outputs from {sorted(nodes[i] for i in preview['outputs'])}")
        if preview["status"]["status_str"] != "success" or in_stage2:
            failures.append(f"Preview only ran {in_stage2 or 'with an error'}")

        seed_now = page.evaluate("() => app.graph._nodes.find((n) => n.comfyClass === "
                                 "'FlashVideoStage1Sampler').widgets.find((w) => w.name === 'seed').value")
        print(f"seed widget after the preview (randomize): {seed_now}")
        page.evaluate(PRESS, "Enhance this preview")
        enhance = _wait_for_new_prompt(args.url, known, args.timeout)
        queued = enhance["prompt"][2]
        seed = next(v["inputs"]["seed"] for v in queued.values() if v["class_type"] == "FlashVideoStage1Sampler")
        cached = {i for data in _messages(enhance, "execution_cached") for i in data["nodes"]}
        stage1_cached = any(nodes[i] == "FlashVideoStage1Sampler" for i in cached)
        print(f"enhance: {enhance['status']['status_str']}, {len(queued)} nodes queued, seed {seed}, "
              f"cached {sorted(nodes[i] for i in cached)}, outputs from {sorted(nodes[i] for i in enhance['outputs'])}")
        if enhance["status"]["status_str"] != "success":
            failures.append("Enhance this preview failed")
        if seed != stage1_seed or not stage1_cached:
            failures.append(f"Enhance ran Stage I again (seed {seed} vs preview {stage1_seed}, cached: "
                            f"{stage1_cached})")
        browser.close()
    for failure in failures:
        print("FAILED:", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
