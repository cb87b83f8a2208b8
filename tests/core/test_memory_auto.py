"""Whole-mode memory 'auto' (issue 14, item 6) and the library's lines on the CLI's console (item 4's report):
the choice per stage under small fake budgets (plain, sequential CFG, fp8, block swap, nothing fits), the run
that auto makes equals the run with those modes set by hand, refusals come before any model loads, and the
CLI shows the mode lines and a missing attention kernel's fallback note on stderr."""

from __future__ import annotations

import logging
import math
import sys

import numpy as np
import pytest
import torch

from flashvideo_core.cli import main
from flashvideo_core.config import TransformerConfig
from flashvideo_core.errors import FlashVideoInputError
from flashvideo_core.modes.settings import ModelModes
from flashvideo_core.pipeline import GenerateSettings, generate
from flashvideo_core.planning import auto, lower_bound, planner
from flashvideo_core.sampling.settings import Stage1Settings, Stage2Settings
from flashvideo_core.weights.loaders import find_weights

FP8 = ModelModes(weights="fp8_e4m3fn")
SIX = TransformerConfig(num_layers=6, num_heads=2, head_dim=16, time_embed_dim=32, text_dim=32)
"""A tiny network with enough blocks for block swap to save memory (the published tiny ones have 2)."""
PROMPT = "A red fox runs through fresh snow."
FRAMES, HEIGHT, WIDTH = 5, 32, 48  # Stage I; Stage II at twice the size


def _need(stage, size, modes=ModelModes(), sequential=False, network=None) -> int:
    """The least free bytes in which the planner says this mode fits."""
    frames, height, width = size
    plan = planner.plan_peak(stage, height, width, frames, torch.float32, modes, sequential, network)
    return math.ceil(plan.total_bytes * (1 + planner.FIT_MARGIN) + planner.FIT_RESERVE)


def test_auto_picks_the_fastest_mode_that_fits_as_the_budget_shrinks():
    size = (5, 256, 256)

    def chosen(free, **kwargs):
        return auto.choose_stage("Stage I", 1, size, torch.float32, "cuda", free, config=SIX, **kwargs)

    plain, sequential = _need(1, size, network=SIX), _need(1, size, sequential=True, network=SIX)
    fp8_sequential = _need(1, size, FP8, True, SIX)
    assert chosen(plain) == auto.StageMemory(ModelModes(), False, chosen(plain).line)
    assert chosen(plain).line.startswith("Stage I: plain (predicted ")
    assert (chosen(plain - 1).modes, chosen(plain - 1).sequential_cfg) == (ModelModes(), True)
    assert (chosen(sequential - 1).modes, chosen(sequential - 1).sequential_cfg) == (FP8, True)
    assert chosen(sequential - 1).line.startswith("Stage I: fp8 weights + sequential CFG (predicted 0.")
    swapped = chosen(fp8_sequential - 1)
    blocks = swapped.modes.resident_blocks
    assert isinstance(blocks, int) and blocks < 6 and swapped.sequential_cfg
    assert f"block swap ({blocks} of 6 blocks resident) + sequential CFG" in swapped.line
    with pytest.raises(FlashVideoInputError, match="even in its smallest mode"):
        chosen(2**20)
    cpu = auto.choose_stage("Stage I", 1, size, torch.float32, "cpu", 2**20, config=SIX)
    assert (cpu.modes, cpu.sequential_cfg) == (ModelModes(), False) and "on the CPU" in cpu.line
    keep = auto.choose_stage("Stage I", 1, size, torch.float32, "cuda", plain, ModelModes(attention="sage",
                             compile=True, resident_blocks=3), SIX)
    assert keep.modes == ModelModes(attention="sage", compile=True), "attention and compile are kept"


def test_when_only_fp8_would_fit_a_loaded_model_is_told_to_load_in_fp8():
    size, wide = (5, 16, 16), TransformerConfig(num_layers=4, num_heads=4, head_dim=64, time_embed_dim=64, text_dim=32)
    fp8_only = _need(1, size, FP8, False, wide)
    assert fp8_only < _need(1, size, ModelModes(), True, wide), "the weights dominate at this width and size"
    choice = auto.choose_stage("Stage I", 1, size, torch.float32, "cuda", fp8_only, config=wide)
    assert (choice.modes, choice.sequential_cfg) == (FP8, False)
    with pytest.raises(FlashVideoInputError) as raised:
        auto.choose_stage("Stage I", 1, size, torch.float32, "cuda", fp8_only, config=wide, fp8=False,
                          fp8_words="set the loader's weights to fp8_e4m3fn")
    text = str(raised.value)
    assert text.startswith("Stage I at 16x16 (WxH) with 5 frames needs about")
    assert text.endswith("With fp8 weights it would fit (fp32, fp8 weights, batched CFG, sdpa, about 0.0 GiB "
                         "predicted): set the loader's weights to fp8_e4m3fn.")


def test_t5_is_stored_in_fp8_only_when_its_weights_do_not_fit(tiny_weights):
    path = tiny_weights["text_encoder"]
    full = lower_bound.t5_weight_bytes(path, torch.float32, "default")
    assert auto.choose_t5(path, torch.float32, "cuda", full)[0] == "default"
    weights, line = auto.choose_t5(path, torch.float32, "cuda", full - 1)
    assert weights == "fp8_e4m3fn" and line.startswith("T5: fp8 weights (")
    assert auto.choose_t5(path, torch.float32, "cpu", 1)[0] == "default"


def _pretend_gpu(monkeypatch, free: int) -> None:
    """Plan as on a GPU with `free` bytes free while the data stays on the CPU (real numbers to compare):
    auto's device test says accelerator, generate's free memory is `free`."""
    monkeypatch.setattr(auto, "on_accelerator", lambda device: True)
    monkeypatch.setattr("flashvideo_core.pipeline.free_memory", lambda device: free)


def _settings(preview_only: bool, **stage) -> GenerateSettings:
    stage1 = Stage1Settings(num_frames=FRAMES, height=HEIGHT, width=WIDTH, steps=2,
                            sequential_cfg=stage.pop("stage1_sequential", False))
    stage2 = Stage2Settings(steps=1, sequential_cfg=stage.pop("stage2_sequential", False))
    return GenerateSettings(stage1=stage1, stage2=stage2, stage2_height=2 * HEIGHT, stage2_width=2 * WIDTH,
                            device="cpu", preview_only=preview_only, **stage)


@pytest.mark.parametrize("case", ["stage1 sequential", "stage1 fp8", "stage2 sequential"])
def test_generate_auto_runs_what_setting_the_modes_by_hand_runs(tiny_weights_dir, tmp_path, monkeypatch, caplog,
                                                               case):
    weights = find_weights(tiny_weights_dir)
    one = (FRAMES, HEIGHT, WIDTH)
    net1, net2 = lower_bound.file_config(weights.stage1), lower_bound.file_config(weights.stage2)
    free, preview_only, by_hand = {
        "stage1 sequential": (_need(1, one, network=net1) - 1, True, {"stage1_sequential": True}),
        "stage1 fp8": (_need(1, one, sequential=True, network=net1) - 1, True,
                       {"stage1_sequential": True, "modes": FP8}),
        "stage2 sequential": (_need(2, (FRAMES, 2 * HEIGHT, 2 * WIDTH), network=net2) - 1, False,
                              {"stage2_sequential": True}),
    }[case]
    assert free >= _need(1, one, network=net1) or case != "stage2 sequential", "Stage I stays plain"
    want = generate(PROMPT, weights, tmp_path / "hand", _settings(preview_only, **by_hand))
    _pretend_gpu(monkeypatch, free)
    if case == "stage1 fp8":  # by hand, --fp8 stores T5 in fp8 too: here T5's weights do not fit in fp32 either
        monkeypatch.setattr(auto, "t5_weight_bytes", lambda path, dtype, weights: free + (weights == "default"))
    with caplog.at_level(logging.INFO, logger="flashvideo_core.planning.auto"):
        got = generate(PROMPT, weights, tmp_path / "auto", _settings(preview_only, memory="auto"))
    lines = [r.getMessage() for r in caplog.records if r.name == "flashvideo_core.planning.auto"]
    expect = {"stage1 sequential": "Stage I: sequential CFG", "stage1 fp8": "Stage I: fp8 weights + sequential CFG",
              "stage2 sequential": "Stage II: sequential CFG"}[case]
    assert any(line.startswith(f"memory auto, {expect} (predicted ") for line in lines), lines
    assert torch.equal(got.stage1_latent, want.stage1_latent)
    if not preview_only:
        assert any(line.startswith("memory auto, Stage I: plain (predicted ") for line in lines), lines
        assert torch.equal(got.stage2_latent, want.stage2_latent)


def test_generate_auto_refuses_before_any_model_loads_when_nothing_fits(tiny_weights_dir, tmp_path, monkeypatch):
    weights = find_weights(tiny_weights_dir)
    _pretend_gpu(monkeypatch, 2**20)
    monkeypatch.setattr("flashvideo_core.weights.loaders.load_text_encoder", lambda *a, **k: pytest.fail("loaded"))
    with pytest.raises(FlashVideoInputError, match=r"^Stage I at 48x32 \(WxH\) with 5 frames needs about .* even in "
                       r"its smallest mode"):
        generate(PROMPT, weights, tmp_path / "out", _settings(True, memory="auto"))
    assert not (tmp_path / "out").exists()


def test_auto_beside_an_explicit_memory_setting_is_refused_naming_both(tiny_weights_dir, tmp_path, capsys):
    with pytest.raises(FlashVideoInputError, match="stage2.sequential_cfg set them too"):
        _settings(False, memory="auto", stage2_sequential=True)
    with pytest.raises(FlashVideoInputError, match="'as set', 'auto'"):
        _settings(False, memory="sometimes")
    out = tmp_path / "videos"
    code = main(["generate", PROMPT, "--weights", str(tiny_weights_dir), "-o", str(out), "--memory", "auto", "--fp8",
                 "--block-swap", "2", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert ("error: --memory auto chooses --fp8, --sequential-cfg and --block-swap itself; --fp8 and --block-swap "
            "set them too: drop --fp8 and --block-swap, or drop --memory auto.") in err


def _cli(tiny_weights_dir, out, *extra) -> list[str]:
    return ["generate", PROMPT, "--weights", str(tiny_weights_dir), "-o", str(out), "--frames", "5", "--height", "32",
            "--width", "48", "--steps", "1", "--preview-only", "--device", "cpu", *extra]


def test_the_cli_shows_the_library_lines_the_fallback_note_and_the_auto_choice(tiny_weights_dir, tmp_path, capsys,
                                                                            monkeypatch):
    monkeypatch.setitem(sys.modules, "sageattention", None)  # not installed, whatever this machine has
    root = logging.getLogger()
    before = (root.level, list(root.handlers), logging.getLogger("flashvideo_core").level)
    assert main(_cli(tiny_weights_dir, tmp_path / "a", "--fp8", "--attention", "sage")) == 0
    err = capsys.readouterr().err.splitlines()
    assert any(line.startswith("FlashVideo weights: fp8_e4m3fn for ") for line in err), err
    assert "FlashVideo attention: sdpa (SageAttention not installed)" in err
    assert (root.level, list(root.handlers), logging.getLogger("flashvideo_core").level) == before

    assert main(_cli(tiny_weights_dir, tmp_path / "b", "--memory", "auto")) == 0
    err = capsys.readouterr().err.splitlines()
    assert "memory auto, T5: plain (on the CPU the memory modes save nothing)" in err
    assert "memory auto, Stage I: plain (on the CPU the memory modes save nothing)" in err

    assert main(_cli(tiny_weights_dir, tmp_path / "c", "--memory", "auto", "--attention", "sage", "--quiet")) == 0
    assert not [line for line in capsys.readouterr().err.splitlines() if "memory auto" in line or "FlashVideo" in line]


def test_enhance_auto_loads_and_runs_what_setting_the_modes_by_hand_does(tiny_weights_dir, tmp_path, monkeypatch):
    """One 5-frame window x2 where only sequential CFG fits (the VAE's weights off the budget): the models load
    with the modes set by hand, the windows run with sequential CFG, and the frames are the hand-set run's."""
    import subprocess

    import imageio_ffmpeg

    from flashvideo_core.enhance import run
    from flashvideo_core.enhance.plan import EnhanceSettings, plan_enhance
    from flashvideo_core.video import iter_frames, probe_video

    src = tmp_path / "in.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc=size=48x32:rate=8",
                    "-frames:v", "5", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(src)], check=True)
    weights = find_weights(tiny_weights_dir)
    settings = EnhanceSettings(scale=2, window=5, overlap=0, steps=1)
    plan = plan_enhance(5, 32, 48, settings)
    window = (plan.windows[0].length, plan.target.work_height, plan.target.work_width)
    vae = lower_bound.vae_weight_bytes(weights.vae, torch.float32)
    free = _need(2, window, network=lower_bound.file_config(weights.stage2)) - 1 + vae
    loads, plans = [], []
    real_load, real_stream = run.load_stage2_models, run._uint8_stream
    monkeypatch.setattr(run, "load_stage2_models", lambda *a, **k: loads.append((a[7:], k)) or real_load(*a, **k))
    monkeypatch.setattr(run, "_uint8_stream", lambda f, plan, *a: plans.append(plan.stage2) or real_stream(f, plan, *a))
    hand = run.enhance_video_file(src, tmp_path / "hand.mp4", EnhanceSettings(scale=2, window=5, overlap=0, steps=1,
                                  sequential_cfg=True), weights=weights, device="cpu")
    monkeypatch.setattr(auto, "on_accelerator", lambda device: True)
    monkeypatch.setattr("flashvideo_core.devices.free_memory", lambda device: free)
    monkeypatch.setattr(lower_bound, "on_accelerator", lambda device: True)  # the VAE's weights count, as on a GPU
    got = run.enhance_video_file(src, tmp_path / "auto.mp4", settings, weights=weights, device="cpu", memory="auto")
    assert loads[0] == loads[1] and plans[0] == plans[1] and plans[1].sequential_cfg
    frames = [np.stack(list(iter_frames(path, probe_video(path)))) for path in (hand, got)]
    assert np.array_equal(*frames)


def test_a_library_line_during_a_progress_bar_gets_a_line_of_its_own(capsys):
    import re

    from flashvideo_core.cli import TqdmProgress
    from flashvideo_core.cli.console import library_lines
    from flashvideo_core.progress import ProgressEvent

    bar = TqdmProgress()
    with library_lines():
        bar(ProgressEvent("stage1", 1, 4, None))
        logging.getLogger("flashvideo_core.modes.attention").info("FlashVideo attention: sdpa (a note)")
        logging.getLogger("flashvideo_core.video.write").warning("odd size")
        logging.getLogger("flashvideo_core.x").debug("not shown")
        bar(ProgressEvent("stage1", 4, 4, None))
    bar.close()
    segments = re.split(r"[\r\n]", capsys.readouterr().err)
    assert "FlashVideo attention: sdpa (a note)" in segments and "warning: odd size" in segments, segments
    assert not any("not shown" in s for s in segments) and any(s.startswith("stage1: 100%") for s in segments)
