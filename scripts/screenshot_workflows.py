"""Replace the workflow thumbnails (workflows/*.jpg) with screenshots from a real ComfyUI frontend.

Needs a running ComfyUI with this pack installed (see ../shared/COMFYUI.md for a harness) and
Playwright with Chromium; this is a maintainer's tool, not part of the tests or the pack:

    python scripts/screenshot_workflows.py --url http://127.0.0.1:8199 [--chromium /usr/bin/chromium]

Each workflow is loaded into the canvas and fitted to the view; the graph (without the page's menus
and overlays) is saved as a JPEG of at most 1280x720 beside the workflow. Run it after
scripts/build_workflows.py, which draws schematic thumbnails.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VIEW = (1280, 720)
PAGE = (2560, 1440)
"""Drawn at twice the thumbnail size, so the canvas zoom stays above the frontend's low-detail threshold."""
FIT = """(margin) => {
  const nodes = app.graph._nodes;
  const xs = nodes.flatMap(n => [n.pos[0], n.pos[0] + n.size[0]]);
  const ys = nodes.flatMap(n => [n.pos[1] - 30, n.pos[1] + n.size[1]]);
  for (const g of app.graph._groups || []) {
    xs.push(g.pos[0], g.pos[0] + g.size[0]);
    ys.push(g.pos[1], g.pos[1] + g.size[1]);
  }
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const canvas = app.canvas.canvas;
  const scale = Math.min((canvas.clientWidth - 2 * margin) / (x1 - x0), (canvas.clientHeight - 2 * margin) / (y1 - y0));
  app.canvas.ds.scale = scale;
  app.canvas.ds.offset = [margin / scale - x0 + ((canvas.clientWidth - 2 * margin) / scale - (x1 - x0)) / 2,
                          margin / scale - y0 + ((canvas.clientHeight - 2 * margin) / scale - (y1 - y0)) / 2];
  app.canvas.show_info = false;
  app.canvas.draw(true, true);
  const rect = canvas.getBoundingClientRect();
  const ds = app.canvas.ds;
  const left = Math.max(0, (x0 + ds.offset[0]) * ds.scale - margin / 2);
  const top = Math.max(0, (y0 + ds.offset[1]) * ds.scale - margin / 2);
  return {x: rect.left + left, y: rect.top + top,
          width: Math.min(rect.width - left, (x1 - x0) * ds.scale + margin),
          height: Math.min(rect.height - top, (y1 - y0) * ds.scale + margin)};
}"""
CANVAS_ONLY = """
* { visibility: hidden !important; }
#graph-canvas, .dom-widget, .dom-widget * { visibility: visible !important; }
"""
"""Hide the page's menus, tabs and overlays; keep the canvas and the widgets drawn over it (prompt boxes)."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8188")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    from PIL import Image
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=["--headless", "--no-sandbox"])
        page = browser.new_page(viewport={"width": PAGE[0], "height": PAGE[1]})
        page.goto(args.url, wait_until="domcontentloaded", timeout=120_000)
        page.wait_for_function("() => window.app && window.app.graph && window.app.canvas", timeout=120_000)
        page.add_style_tag(content=CANVAS_ONLY)
        for path in sorted((ROOT / "workflows").glob("*.json")):
            graph = json.loads(path.read_text())
            page.evaluate("async (wf) => { await window.app.loadGraphData(wf, true, true); }", graph)
            time.sleep(1.5)
            clip = page.evaluate(FIT, 40)
            time.sleep(0.5)
            png = page.screenshot(clip=clip)
            image = Image.open(io.BytesIO(png)).convert("RGB")
            image.thumbnail(VIEW)
            image.save(path.with_suffix(".jpg"), quality=85)
            print(path.with_suffix(".jpg"), image.size)
        browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
