"""Check that a real ComfyUI's memory manager knows FlashVideo's models and can unload them.

A maintainer's tool, not part of the tests or the pack. Needs the harness of ../shared/COMFYUI.md
("Checking the pack in a real ComfyUI": ComfyUI, its venv, comfy_run.py, Chromium for the UI-format
workflow) with tiny FlashVideo weights in its models/FlashVideo, and git (the pack is `git archive`d):

    python3 scripts/check_memory_manager.py --harness /tmp/harness [--rev HEAD] [--block-swap auto]

It writes a clean copy of the pack (`git archive REV`) and a small probe pack (PROBE below: one output
node that reports comfy.model_management.current_loaded_models and can call free_memory) to a temp
folder, and starts ComfyUI through comfy_run.py with both packs in an isolated base directory (its own
custom_nodes, input and output; the harness's models), on the CPU (comfy_run passes --cpu). Then, in
that one server:
1. comfy_run runs workflows/flashvideo_text_to_video.json at CPU sizes (SMALL: 9 frames, 4 Stage I
   steps, 960x512 Stage II) and keeps serving;
2. the same graph again (every node cached by ComfyUI, so its outputs, our model handles, stay
   referenced as after any run) plus the probe: the four FlashVideo models must be listed;
3. the same plus the probe calling free_memory(1e30, cpu): all four must be unloaded (ComfyUI's loaded
   size 0, every weight on the patcher's offload device) and none listed after;
4. the graph with a new Stage I seed (Stage I and everything after run again, the loaders and the text
   encoding come from the cache): Stage I, Stage II and the VAE must be listed again;
5. POST /free {"unload_models": true} (the "Unload models" button), then the probe: none listed.
Exit code 0 when all of that holds, 1 otherwise (comfy_run.py itself ends with "exit code 1" when this
script stops it: that is its answer to SIGTERM, not a failure). --block-swap sets the Stage II loader's block_swap
(on the CPU "auto" resolves to no swap: the holder must still hold the whole model).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / "workflows" / "flashvideo_text_to_video.json"
SMALL = {"6.steps": 4, "6.frames": 9, "10.width": 960, "10.height": 512}
"""Node id.input -> value: the text-to-video graph at a CPU size (ids of workflows/flashvideo_text_to_video.json)."""
STAGE1_SAMPLER, STAGE2_LOADER, FINAL_DECODE = "6", "2", "13"
PROBE_ID = "probe"
PROBE = '''
import torch
import comfy.model_management as mm


def describe(entry):
    patcher = entry.model
    holder = patcher.model
    parts = dict(holder.named_children())
    inner = parts.get("flashvideo_model")
    name = type(inner).__name__ if inner is not None else type(holder).__name__
    if hasattr(inner, "stage"):
        name += f" (Stage {'I' * inner.stage})"
    devices = sorted({str(t.device) for t in [*holder.parameters(), *holder.buffers()]})
    return {"model": name, "holder": type(holder).__name__, "holds": sorted(parts), "patcher": type(patcher).__name__,
            "size_mb": round(patcher.model_size() / 2**20, 2), "loaded_mb": round(patcher.loaded_size() / 2**20, 2),
            "load_device": str(patcher.load_device), "offload_device": str(patcher.offload_device),
            "weights_on": devices}


class FlashVideoMemoryProbe:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"action": (["list", "free_memory"],), "after": ("IMAGE",),
                             "nonce": ("INT", {"default": 0, "min": 0, "max": 2**31})}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "probe"
    CATEGORY = "testing"

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")

    def probe(self, action, after, nonce):
        report = {"vram_state": mm.vram_state.name, "torch_device": str(mm.get_torch_device())}
        if action == "free_memory":
            report["unloaded"] = [describe(entry) for entry in mm.free_memory(1e30, torch.device("cpu"))]
        report["loaded"] = [describe(entry) for entry in mm.current_loaded_models]
        return {"ui": {"memory": [report]}}


NODE_CLASS_MAPPINGS = {"FlashVideoMemoryProbe": FlashVideoMemoryProbe}
'''


def _get(url: str):
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def _post(url: str, body: dict):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read() or b"{}")


def _queue(url: str, graph: dict, timeout: float) -> dict:
    """Queue an API-format graph and wait for its history entry."""
    prompt_id = _post(f"{url}/prompt", {"prompt": graph})["prompt_id"]
    end = time.time() + timeout
    while time.time() < end:
        entry = _get(f"{url}/history/{prompt_id}").get(prompt_id)
        if entry is not None:
            return entry
        time.sleep(0.5)
    raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout:.0f} s")


def _with_probe(graph: dict, action: str, nonce: int) -> dict:
    """The graph plus the probe node, run after the final decode (its IMAGE output)."""
    probe = {"class_type": "FlashVideoMemoryProbe",
             "inputs": {"action": action, "after": [FINAL_DECODE, 0], "nonce": nonce}}
    return {**graph, PROBE_ID: probe}


def _probe(url: str, graph: dict, action: str, nonce: int, timeout: float) -> tuple[dict, dict]:
    """Run graph + probe; returns (the probe's report, the history entry)."""
    entry = _queue(url, _with_probe(graph, action, nonce), timeout)
    if entry["status"].get("status_str") != "success":
        errors = [m for kind, m in entry["status"].get("messages", []) if kind == "execution_error"]
        raise RuntimeError(f"the probe prompt failed: {json.dumps(errors)[:3000]}")
    return entry["outputs"][PROBE_ID]["memory"][0], entry


def _show(title: str, models: list[dict]) -> None:
    print(f"{title}: {len(models)} model(s)")
    for m in models:
        print(f"  {m['model']:<44} {m['size_mb']:>9.2f} MB, loaded {m['loaded_mb']:>9.2f} MB, load {m['load_device']}, "
              f"offload {m['offload_device']}, weights on {m['weights_on']}, holder {m['holder']}{m['holds']}, "
              f"{m['patcher']}")


def _flashvideo(models: list[dict]) -> list[dict]:
    return [m for m in models if m["holder"] == "FlashVideoModel"]


def _start(args, work: Path, api_path: Path) -> tuple[subprocess.Popen, str, bool]:
    """Start comfy_run.py (the pack, the probe, the text-to-video run, then --serve); returns (process, url,
    whether the text-to-video run succeeded)."""
    pack, probe = work / "flashvideo_check", work / "flashvideo_memory_probe"
    pack.mkdir()
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.rev], check=True,
                            capture_output=True, text=True).stdout.strip()
    print(f"pack: git archive of {args.rev} ({commit})", flush=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(pack)], input=archive, check=True)
    probe.mkdir()
    (probe / "__init__.py").write_text(PROBE)
    sets = [f"--set={key}={json.dumps(value)}" for key, value in args.small.items()]
    command = [sys.executable, str(args.harness / "comfy_run.py"), "--pack", str(pack), "--pack", str(probe),
               "--base-dir", str(work / "base"), "--log", str(work / "comfyui.log"), "-w", str(WORKFLOW), *sets,
               "--save-api", str(api_path), "--timeout", str(args.timeout), "--serve"]
    print("$", " ".join(command), flush=True)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    succeeded = False
    for line in process.stdout:
        print(line, end="", flush=True)
        succeeded = succeeded or f"{WORKFLOW}: status=success" in line
        if "serving at " in line:
            return process, line.split("serving at ")[1].split()[0], succeeded
    raise RuntimeError(f"comfy_run.py ended before serving (exit code {process.wait()}); see above")


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to comfy_run.py (it stops the server it started), SIGKILL to its group if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    for line in process.stdout:
        print(line, end="")


def _cached(entry: dict) -> set[str]:
    """Ids of the nodes ComfyUI took from its cache in a history entry."""
    return {n for kind, m in entry["status"]["messages"] if kind == "execution_cached" for n in m["nodes"]}


def _check(url: str, graph: dict, block_swap: str, timeout: float) -> list[str]:
    """Steps 2-5 of the module docstring; returns the failures."""
    failures = []
    stats = _get(f"{url}/system_stats")["system"]
    print(f"ComfyUI {stats.get('comfyui_version')}, torch {stats.get('pytorch_version')}, argv {stats.get('argv')}")
    report, entry = _probe(url, graph, "list", 1, timeout)
    print(f"vram_state {report['vram_state']}, compute device {report['torch_device']}; the same graph again: "
          f"{len(_cached(entry))} of {len(graph)} nodes cached")
    _show("after text_to_video, current_loaded_models", report["loaded"])
    names = sorted(m["model"] for m in _flashvideo(report["loaded"]))
    if len(names) != 4:
        failures.append(f"expected the 4 FlashVideo models listed, got {names}")
    stage2 = [m for m in report["loaded"] if m["model"].endswith("(Stage II)")]
    swapped = [m for m in stage2 if m["holds"] != ["flashvideo_model"]]
    print(f"Stage II loader block_swap {block_swap}: the patcher holds {[m['holds'] for m in stage2]}")
    if report["torch_device"] == "cpu" and swapped:
        failures.append("on the CPU block swap must resolve to none (the whole Stage II in the patcher)")

    report, _ = _probe(url, graph, "free_memory", 2, timeout)
    _show("free_memory(1e30, cpu) unloaded", report["unloaded"])
    _show("then current_loaded_models", report["loaded"])
    freed = _flashvideo(report["unloaded"])
    if len(freed) != 4 or _flashvideo(report["loaded"]):
        failures.append(f"free_memory unloaded {len(freed)} FlashVideo models, {len(_flashvideo(report['loaded']))} "
                        "still listed")
    for m in freed:
        if m["loaded_mb"] != 0 or m["weights_on"] != [m["offload_device"]]:
            failures.append(f"{m['model']} after free_memory: loaded {m['loaded_mb']} MB, weights on {m['weights_on']}")

    again = json.loads(json.dumps(graph))
    again[STAGE1_SAMPLER]["inputs"]["seed"] += 1
    report, entry = _probe(url, again, "list", 3, timeout)
    print(f"rerun with Stage I seed +1: cached nodes {sorted(_cached(entry), key=str)}")
    _show("after the rerun, current_loaded_models", report["loaded"])
    if len(_flashvideo(report["loaded"])) != 3:
        failures.append("the rerun should load Stage I, Stage II and the VAE again (T5's encoding is cached)")

    _post(f"{url}/free", {"unload_models": True})
    time.sleep(2)
    report, _ = _probe(url, again, "list", 4, timeout)
    _show("after POST /free {unload_models: true}, current_loaded_models", report["loaded"])
    if _flashvideo(report["loaded"]):
        failures.append("/free unload_models left FlashVideo models listed")
    return failures


def main(argv: list[str] | None = None) -> int:
    """Run the check; returns the exit code (0: the manager lists and unloads FlashVideo's models)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--harness", type=Path, default=Path("/tmp/harness"), help="folder of comfy_run.py")
    parser.add_argument("--rev", default="HEAD", help="git revision of the pack to check (default HEAD)")
    parser.add_argument("--block-swap", choices=["off", "auto"], default="off", help="Stage II loader's block_swap")
    parser.add_argument("--timeout", type=float, default=1500, help="seconds per prompt")
    args = parser.parse_args(argv)
    args.small = {**SMALL, f"{STAGE2_LOADER}.block_swap": args.block_swap}
    with tempfile.TemporaryDirectory(prefix="flashvideo_memcheck_") as tmp:
        work = Path(tmp)
        api_path = work / "text_to_video.api.json"
        process, url, succeeded = _start(args, work, api_path)
        try:
            if not succeeded:
                raise RuntimeError("the text-to-video workflow failed in ComfyUI (see its errors above)")
            graph = json.loads(api_path.read_text())
            for key, value in args.small.items():
                node, _, name = key.partition(".")
                graph[node]["inputs"][name] = value
            failures = _check(url, graph, args.block_swap, args.timeout)
        finally:
            _stop(process)
    for failure in failures:
        print("FAILED:", failure)
    print("PASS" if not failures else "FAIL")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
