"""bench/gpu_check.py --dry-run: the GPU acceptance script runs end to end on the CPU at tiny sizes and
writes every section of its report with no failures, so the script cannot break unnoticed before a GPU
machine is lent (~25 s of CPU time: imports, every node, generate, the four performance cases)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_check.py"


@pytest.fixture(scope="module")
def dry_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    done = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out)], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    report = out / "gpu_check.json"
    assert report.exists(), f"no report written (exit {done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done, json.loads(report.read_text())


def test_dry_run_passes_with_every_section(dry_report):
    done, data = dry_report
    assert data["failures"] == [], data["failures"]
    assert done.returncode == 0 and data["ok"] is True and data["complete"] is True, done.stdout[-3000:]
    for section in ("environment", "placement", "performance", "attention", "memory"):
        assert data[section], f"section {section} is empty"
    assert data["mode"] == "dry-run" and data["environment"]["device"] == "cpu"
    assert "OK;" in done.stdout and "placement:" in done.stdout, "a readable summary is printed"


def test_every_node_and_generate_ran_or_says_why_not(dry_report):
    _, data = dry_report
    items = data["placement"]["items"]
    assert all(item["status"] in ("pass", "skip") for item in items)
    skipped = {item["item"]: item.get("reason") for item in items if item["status"] == "skip"}
    assert set(skipped) == {"FlashVideoDownloadWeights", "FlashVideoStage2LoRA"}
    assert "network" in skipped["FlashVideoDownloadWeights"]
    ran = {item.get("node") for item in items if item["status"] == "pass"}
    assert {"FlashVideoStage1Sampler", "FlashVideoStage2Sampler", "FlashVideoEnhanceImages",
            "FlashVideoT5Loader", "FlashVideoTextEncode", "FlashVideoVAEDecode"} <= ran
    generate = next(item for item in items if item["item"] == "pipeline.generate")
    assert generate["status"] == "pass" and generate["output"]["shape"] == [1, 16, 3, 6, 8]
    writes = data["placement"]["generate_writes"]
    assert [w["frames"] for w in writes] == [9, 9] and writes[1]["frame_shape"] == [48, 64, 3], "null writer used"
    sampler = next(item for item in items if item["item"] == "latent1")
    assert sampler["previews"] > 0, "the samplers' previews are decoded"


def test_performance_attention_and_memory_are_measured(dry_report):
    _, data = dry_report
    cases = data["performance"]["cases"]
    assert set(cases) == {"stage1_forward", "stage2_forward", "stage2_4_steps", "vae_decode"}
    for name, case in cases.items():
        assert case["status"] == "pass" and case["seconds"] > 0 and case["flops"] > 0, name
        assert "paper_seconds" in case and case["output_finite"] is True, name
    assert cases["stage2_forward"]["paper_seconds"] == pytest.approx(72.2 / 4)
    assert cases["stage1_forward"]["paper_seconds"] == pytest.approx(30.1 / 50)
    assert cases["stage2_4_steps"]["steps"] == 4 and cases["vae_decode"]["tiles"] == 2
    meta = data["performance"]["real_size_flops_meta"]  # the real 5B / 2B shapes at 256x480 / 1072x1920
    assert meta["stage1_forward"]["output_shape"] == [2, 13, 16, 32, 60]
    assert meta["stage2_forward"]["output_shape"] == [2, 13, 16, 134, 240]
    assert 5e15 < meta["stage2_forward"]["flops"] < 6.5e15 and 1e14 < meta["stage1_forward"]["flops"] < 2.5e14
    attention = data["attention"]
    assert {"flash", "mem_efficient", "math"} <= set(attention["flags"]) and attention["probe"]["MATH"] == "runs"
    assert all(attention["sdpa_kernels"][name] for name in ("stage1_forward", "stage2_forward"))
    for stage in ("stage1_forward", "stage2_forward", "stage2_4_steps"):
        prediction = data["memory"][stage]["planner_prediction"]
        assert prediction["total_bytes"] == prediction["weights_bytes"] + prediction["activation_bytes"] > 0
    assert data["memory"]["vae_decode"]["planner_prediction"] is None
    assert data["memory"]["stage2_forward"]["memory_floor_bytes"] > 0


def test_no_ffmpeg_is_needed(dry_report):
    _, data = dry_report
    assert data["environment"]["imageio_ffmpeg_is_stub"] is True and data["environment"]["ffmpeg_calls"] == []


def test_mixed_device_and_dtype_errors_are_named(monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", gpu_check)
    spec.loader.exec_module(gpu_check)  # no side effects at import: the ffmpeg stub is installed by main()
    assert not isinstance(sys.modules.get("imageio_ffmpeg"), gpu_check._FfmpegStub)
    kind = gpu_check.mismatch_kind
    assert kind("Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu!") \
        == "device_mismatch"
    assert kind("Input type (torch.cuda.FloatTensor) and weight type (torch.FloatTensor) should be the same") \
        == "device_mismatch"
    assert kind("Input type (c10::BFloat16) and bias type (float) should be the same") == "dtype_mismatch"
    assert kind("mat1 and mat2 must have the same dtype, but got Float and BFloat16") == "dtype_mismatch"
    assert kind("frames=50 is not a frame count of the form 4k+1") is None
