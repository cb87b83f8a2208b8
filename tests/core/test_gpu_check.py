"""bench/gpu_check.py --dry-run: the GPU acceptance script runs end to end on the CPU at tiny sizes and
writes every section of its report with no failures, so the script cannot break unnoticed before a GPU
machine is lent (~45 s of CPU time: imports, every node, generate, the four performance cases, each memory
mode of both stages); and with no time left it skips every case, saying why."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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
    for section in ("environment", "placement", "performance", "attention", "memory", "modes"):
        assert data[section], f"section {section} is empty"
    assert data["mode"] == "dry-run" and data["environment"]["device"] == "cpu"
    assert "OK;" in done.stdout and "placement:" in done.stdout, "a readable summary is printed"


def test_every_node_and_generate_ran_or_says_why_not(dry_report):
    _, data = dry_report
    items = data["placement"]["items"]
    assert all(item["status"] in ("pass", "skip") for item in items)
    skipped = {item["item"]: item.get("reason") for item in items if item["status"] == "skip"}
    assert set(skipped) == {"FlashVideoDownloadWeights"}, "peft is a dependency here: the LoRA node runs"
    assert "network" in skipped["FlashVideoDownloadWeights"]
    ran = {item.get("node") for item in items if item["status"] == "pass"}
    assert {"FlashVideoStage1Sampler", "FlashVideoStage2Sampler", "FlashVideoEnhanceImages",
            "FlashVideoT5Loader", "FlashVideoTextEncode", "FlashVideoVAEDecode", "FlashVideoStage2LoRA"} <= ran
    by_item = {item["item"]: item for item in items}
    assert by_item["latent2_lora"]["status"] == "pass", "the LoRA model ran in a Stage II sampler"
    assert by_item["latent2_lora"]["output"] == by_item["latent2"]["output"]
    assert data["environment"]["optional_libraries"]["peft"] is not None
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
    for stage in ("stage1_forward", "stage2_forward", "stage2_4_steps", "vae_decode"):
        prediction = data["memory"][stage]["planner_prediction"]
        assert prediction["total_bytes"] == prediction["weights_bytes"] + prediction["activation_bytes"] > 0
        assert prediction["measured_over_predicted"] > 0, stage  # the dry run counts live tensor bytes
    assert data["memory"]["stage2_forward"]["memory_floor_bytes"] > 0
    assert "planned_decode_bytes" in data["memory"]["vae_decode"]["planner_prediction"]["mode"]
    for name, case in cases.items():
        assert case["estimate_seconds"] >= 0 and case["estimate_basis"], name


def test_every_memory_mode_runs_beside_the_planner(dry_report):
    _, data = dry_report
    rows = {(row["stage"], row["mode"]): row for row in data["modes"]["rows"]}
    measured = ("plain", "sequential_cfg", "fp8", "fp8_sequential_cfg", "block_swap", "compile")
    for stage in (1, 2):
        for mode in measured:
            row = rows[(stage, mode)]
            assert row["status"] == "pass" and row["seconds"] > 0, (stage, mode, row)
            assert row["planner_prediction"]["total_bytes"] > 0 and row["attention_ran"] == "sdpa"
            assert row["estimate_seconds"] >= 0
            if mode != "compile":  # no dispatch-mode count under dynamo
                assert row["case_peak_bytes"] > row["weights_on_device_bytes"] > 0
                assert row["planner_prediction"]["measured_over_predicted"] > 0
            if mode != "plain":
                assert row["rel_error_vs_plain"] is not None and "seconds_over_plain" in row
        swap = rows[(stage, "block_swap")]
        assert swap["transfers"] == "SyncTransfers" and swap["rel_error_vs_plain"] == 0.0
        assert "blocks resident" in swap["planner_prediction"]["mode"]
        assert rows[(stage, "sequential_cfg")]["rel_error_vs_plain"] < 1e-5
        assert 0 < rows[(stage, "fp8")]["rel_error_vs_plain"] < 0.02 and rows[(stage, "fp8")]["fp8_layers"] > 0
        assert rows[(stage, "compile")]["compile_backend"] == "eager"
        for kernel in ("sage", "flash"):  # run when installed, else skipped with the fallback line
            row = rows[(stage, kernel)]
            assert row["status"] == "pass" or row["reason"].startswith("FlashVideo attention: sdpa ("), row


def test_cases_that_would_pass_the_deadline_are_skipped_with_their_estimate(tmp_path, monkeypatch):
    """The sections with no time left (--deadline-s 0): nothing runs, each case says its estimate."""
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    import gpu_check_modes
    import gpu_check_perf
    import gpu_check_tools as tools

    report = tools.Report(tmp_path / "gpu_check.json", "dry-run")
    clock, cpu = tools.Clock(report, 0.0), torch.device("cpu")
    gpu_check_perf.run_performance(report, clock, tools.DRY, cpu, torch.float32, {"stage2_forward", "vae_decode"})
    gpu_check_modes.run_modes(report, clock, tools.DRY, cpu, torch.float32, {"stage1_modes", "compile"})
    skipped = [*report.data["performance"]["cases"].values(), *report.data["modes"]["rows"]]
    assert len(skipped) == 2 + 7 + 3 and all(item["status"] == "skip" for item in skipped), skipped
    # compile after the other rows, Stage II first; for Stage II (no modes rows asked for) its plain row first
    assert [(row["stage"], row["mode"]) for row in report.data["modes"]["rows"]][-3:] == [
        (2, "plain"), (2, "compile"), (1, "compile")]
    assert all("estimated" in item["reason"] and "--deadline-s 0" in item["reason"] for item in skipped)
    assert report.data["complete"] is False and not report.data["failures"]


def test_an_installed_attention_kernel_gets_its_row_and_the_model_is_restored(tmp_path, monkeypatch):
    """The sage row with a stand-in SageAttention 1 (sageattn only; computes SDPA) and the kernel allowed on
    the CPU: it runs, names the kernel that ran, matches plain, and leaves the stock processors behind."""
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    import types

    import gpu_check_modes
    import gpu_check_tools as tools

    from flashvideo_core.modes import attention

    calls = []

    def sageattn(q, k, v, tensor_layout="HND", is_causal=False, **kwargs):
        calls.append((tensor_layout, tuple(q.shape)))
        return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    monkeypatch.setitem(sys.modules, "sageattention", types.SimpleNamespace(sageattn=sageattn))
    monkeypatch.setattr(attention, "KERNEL_DEVICES", frozenset({"cuda", "cpu"}))
    report = tools.Report(tmp_path / "gpu_check.json", "dry-run")
    run = gpu_check_modes.StageRun(report, tools.Clock(report, 600.0), tools.DRY, 1, torch.device("cpu"),
                                   torch.bfloat16)
    plain, sage = gpu_check_modes.MODE_ORDER[0], next(r for r in gpu_check_modes.MODE_ORDER if r.name == "sage")
    run.run(plain)
    processors = {type(m.processor).__name__ for m in run.model.modules() if hasattr(m, "set_processor")}
    run.run(sage)
    row = report.data["modes"]["rows"][-1]
    assert row["status"] == "pass" and row["attention_ran"] == "sage", row
    assert "SageAttention 1" in row["attention_line"] and calls and calls[0][0] == "HND"
    assert row["rel_error_vs_plain"] < 0.02 and "sage" in row["planner_prediction"]["mode"]
    assert {type(m.processor).__name__ for m in run.model.modules() if hasattr(m, "set_processor")} == processors
    assert not hasattr(run.model, attention.STATE_ATTR)


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
