"""The too-small-card message (issue 12): memory_floor's refusal ends with the memory mode that would fit
(planning.room.fitting_hint over planner.choose_modes), in the CLI's flags, in generate and enhance."""

import pytest
import torch

from flashvideo_core import config
from flashvideo_core.enhance.plan import EnhanceSettings, plan_enhance
from flashvideo_core.enhance.run import check_window_fits, window_call
from flashvideo_core.errors import FlashVideoInputError
from flashvideo_core.memory_floor import check_fits, transformer_floor
from flashvideo_core.modes.settings import ModelModes
from flashvideo_core.pipeline import GenerateSettings, generate
from flashvideo_core.planning import lower_bound, planner
from flashvideo_core.planning.call import DeviceRoom, StageCall
from flashvideo_core.planning.room import fitting_hint
from flashvideo_core.sampling.settings import Stage1Settings
from flashvideo_core.weights.loaders import find_weights

GIB = 2**30


def _stage2_1080p(device: str = "cuda", modes: ModelModes = ModelModes()) -> StageCall:
    return StageCall(2, 49, 1072, 1920, torch.bfloat16, device, modes)


def test_the_hint_names_the_fastest_mode_that_fits_as_cli_flags():
    hint = fitting_hint(_stage2_1080p("cuda"), DeviceRoom(12 * GIB))()
    chosen = planner.choose_modes(2, 1072, 1920, 49, 12 * GIB, torch.bfloat16)
    assert chosen.sequential_cfg and chosen.modes == ModelModes()  # as tests/core/test_planner.py
    assert hint == (f"The mode that fits 12.0 GiB: {chosen.description} (about {chosen.total_bytes / GIB:.1f} GiB "
                    "predicted): --sequential-cfg.")
    tight = fitting_hint(_stage2_1080p("cuda"), DeviceRoom(7 * GIB))()
    plan = planner.choose_modes(2, 1072, 1920, 49, 7 * GIB, torch.bfloat16)
    assert isinstance(plan.modes.resident_blocks, int), "7 GiB at 1080p needs block swap"
    assert tight.endswith(f"--block-swap {plan.modes.resident_blocks} --sequential-cfg.")
    assert "--fp8" in fitting_hint(_stage2_1080p(modes=ModelModes(weights="fp8_e4m3fn")), DeviceRoom(12 * GIB))()


def test_on_the_cpu_block_swap_is_never_the_answer():
    on_gpu = fitting_hint(_stage2_1080p("cuda"), DeviceRoom(7 * GIB))()
    on_cpu = fitting_hint(_stage2_1080p("cpu"), DeviceRoom(7 * GIB))()
    assert "--block-swap" in on_gpu and "--block-swap" not in on_cpu and "blocks resident" not in on_cpu


def test_check_fits_asks_for_the_hint_only_when_it_refuses():
    def hint():
        raise AssertionError("computed although the size fits")

    need = transformer_floor(49, 1072, 1920, 1920, torch.bfloat16)
    check_fits("Stage II", need, need, "cuda", 49, 1072, 1920, hint)
    with pytest.raises(FlashVideoInputError, match=r"or free memory first\. The end\.$"):
        check_fits("Stage II", need, need // 2, "cuda", 49, 1072, 1920, lambda: "The end.")


def test_an_enhance_window_too_big_for_the_card_names_the_mode_that_fits():
    plan = plan_enhance(49, 270, 480, EnhanceSettings(size="1080p"))
    frames, height, width = plan.windows[0].length, plan.target.work_height, plan.target.work_width
    free = transformer_floor(frames, height, width, 1920, torch.bfloat16) * 9 // 10
    with pytest.raises(FlashVideoInputError) as raised:
        call = window_call(plan, config.STAGE2_2B, "cuda", torch.bfloat16)
        check_window_fits(call, lower_bound.planned_room(call, free))
    text = str(raised.value)
    assert text.startswith(f"Stage II (one enhance window) at {width}x{height} (WxH) with {frames} frames needs")
    assert text.endswith(fitting_hint(StageCall(2, frames, height, width, torch.bfloat16, "cuda"), DeviceRoom(free))())
    assert "No mode fits: Stage II" in text and "in that mode" in text


def test_generate_refuses_before_loading_with_the_planners_answer(tiny_weights_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("flashvideo_core.pipeline.free_memory", lambda device: 100_000)
    loads = []
    monkeypatch.setattr("flashvideo_core.weights.loaders.load_text_encoder", lambda *a, **k: loads.append(a))
    settings = GenerateSettings(stage1=Stage1Settings(num_frames=9, height=64, width=96), preview_only=True,
                                device="cpu")
    with pytest.raises(FlashVideoInputError) as raised:
        generate("A red fox in the snow.", find_weights(tiny_weights_dir), tmp_path / "out", settings)
    text = str(raised.value)
    assert text.startswith("Stage I at 96x64 (WxH) with 9 frames needs at least") and not loads
    assert "No mode fits: Stage I at 96x64 (WxH) with 9 frames needs about" in text
    assert "smallest mode (fp32, fp8 weights, sequential CFG, sdpa)" in text
