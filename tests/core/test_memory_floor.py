"""Sizes that cannot fit are refused at once, naming a size that would, before any model loads or Stage I runs."""

import time

import pytest
import torch

from flashvideo_core.cli import main
from flashvideo_core.errors import FlashVideoInputError
from flashvideo_core.memory_floor import check_fits, transformer_floor, transformer_tokens, video_floor


def test_the_floor_counts_tokens_and_pixels():
    assert transformer_tokens(49, 1072, 1920) == 13 * 67 * 120 + 226
    assert transformer_floor(49, 1072, 1920, 1920, torch.bfloat16) == 8 * 2 * (13 * 67 * 120 + 226) * 1920 * 2
    assert video_floor(49, 1080, 1920) == 5 * 3 * 49 * 1080 * 1920


def test_check_fits_names_what_would_fit():
    need = transformer_floor(49, 1072, 1920, 1920, torch.bfloat16)
    check_fits("Stage II", need, need, "cpu", 49, 1072, 1920)
    with pytest.raises(FlashVideoInputError) as info:
        check_fits("Stage II", need, need // 4, "cuda:0", 49, 1072, 1920)
    message = str(info.value)
    assert "Stage II at 1920x1072 (WxH) with 49 frames needs at least" in message and "on cuda:0" in message
    assert "about 928x512 at 49 frames, or 9 frames at 1920x1072" in message
    for frames, height, width in [(49, 512, 928), (9, 1072, 1920)]:  # what it suggests does fit
        check_fits("Stage II", transformer_floor(frames, height, width, 1920, torch.bfloat16), need // 4, "cuda:0",
                   frames, height, width)


@pytest.mark.parametrize("flags, stage", [
    (["--stage2-width", "8192", "--stage2-height", "8192"], "Stage II"),
    (["--frames", "40001"], "Stage I"),
])
def test_generate_refuses_an_impossible_size_before_any_model_loads(tiny_weights_dir, tmp_path, capsys, monkeypatch,
                                                                    flags, stage):
    loads = []
    monkeypatch.setattr("flashvideo_core.weights.loaders.load_text_encoder", lambda *a, **k: loads.append(a))
    start = time.monotonic()
    code = main(["generate", "A red fox in the snow.", "--weights", str(tiny_weights_dir), "-o", str(tmp_path / "o"),
                 "--quiet", *flags])
    assert code == 2 and not loads and time.monotonic() - start < 30
    err = capsys.readouterr().err
    assert f"error: {stage}" in err and "needs at least" in err and "use a smaller size" in err
    assert not (tmp_path / "o").exists()


def test_an_edge_over_the_video_limit_is_refused_with_the_reason(tiny_weights_dir, tmp_path, capsys):
    code = main(["generate", "A red fox in the snow.", "--weights", str(tiny_weights_dir), "-o", str(tmp_path / "o"),
                 "--quiet", "--width", "100000"])
    assert code == 2
    err = capsys.readouterr().err
    assert "Stage I size width=100000 is over 8192, the largest edge a video file (H.264) holds" in err


def test_a_nan_latent_is_refused_by_decode(tiny_weights):
    from flashvideo_core.errors import NonFiniteError
    from flashvideo_core.vae import decode_latents
    from flashvideo_core.weights.loaders import load_vae

    latent = torch.zeros(1, 16, 2, 4, 4)
    latent[0, 0, 1, 0, 0] = float("inf")
    with pytest.raises(NonFiniteError, match="latents holds NaN/Inf .*decodes to a black or NaN video"):
        decode_latents(load_vae(tiny_weights["vae"]), latent)


@pytest.mark.parametrize("fps", ["0.0001", "5000"])
def test_a_frame_rate_the_writer_refuses_is_refused_before_stage1(tiny_weights_dir, tmp_path, capsys, monkeypatch, fps):
    loads = []
    monkeypatch.setattr("flashvideo_core.weights.loaders.load_text_encoder", lambda *a, **k: loads.append(a))
    code = main(["generate", "A red fox in the snow.", "--weights", str(tiny_weights_dir), "-o", str(tmp_path / "o"),
                 "--quiet", "--fps", fps])
    assert code == 2 and not loads
    assert f"fps={float(fps)!r} must be a frame rate from 0.01 to 1000" in capsys.readouterr().err
