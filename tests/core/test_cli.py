"""End to end through the CLI on tiny weights in the published layouts: playable mp4 files, right size/frames."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import torch

from flashvideo_core.cli import main
from flashvideo_core.errors import FlashVideoInputError

ROOT = Path(__file__).resolve().parents[2]


def _frames_and_size(path):
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = reader.__next__()
    count = sum(1 for _ in reader)
    return count, tuple(meta["size"])


def test_generate_writes_preview_and_final(tiny_weights_dir, tmp_path, capsys):
    code = main([
        "generate", "A small red cube rotates slowly on a wooden table, soft morning light.",
        "--weights", str(tiny_weights_dir), "-o", str(tmp_path), "--frames", "9", "--height", "32", "--width", "48",
        "--stage2-height", "64", "--stage2-width", "96", "--steps", "3", "--stage2-steps", "2", "--quiet",
    ])
    assert code == 0
    preview = sorted(tmp_path.glob("*_stage1.mp4"))
    final = sorted(tmp_path.glob("*_stage2.mp4"))
    assert len(preview) == 1 and len(final) == 1
    assert _frames_and_size(preview[0]) == (9, (48, 32))
    assert _frames_and_size(final[0]) == (9, (96, 64))
    assert not list(tmp_path.glob("*partial*"))


def test_generate_preview_only_never_overwrites(tiny_weights_dir, tmp_path):
    args = ["generate", "A lighthouse in a storm, waves crashing.", "--weights", str(tiny_weights_dir), "-o",
            str(tmp_path), "--frames", "5", "--height", "32", "--width", "32", "--steps", "2", "--preview-only",
            "--quiet"]
    assert main(args) == 0
    assert main(args) == 0
    assert len(list(tmp_path.glob("*_stage1.mp4"))) == 2
    assert not list(tmp_path.glob("*_stage2.mp4"))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--frames", "50"], "frames=50"), (["--height", "270"], "height=270"),
        (["--noise-step", "1000"], "noise_step"),
        (["--steps", "0"], "steps=0"), (["--cfg", "-1"], "cfg=-1"), (["--stage2-steps", "0"], "--shift): steps=0"),
        (["--shift", "0"], "shift=0"), (["--stage2-cfg", "nan"], "--shift): cfg=nan"), (["--fps", "0"], "fps=0"),
    ],
)
def test_generate_bad_input_fails_before_work(tiny_weights_dir, tmp_path, capsys, extra, message):
    code = main(["generate", "A prompt.", "--weights", str(tiny_weights_dir), "-o", str(tmp_path), "--quiet", *extra])
    assert code == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_generate_output_that_is_a_file_is_named_before_work(tiny_weights_dir, tmp_path, capsys):
    existing = tmp_path / "clip.mp4"
    existing.write_bytes(b"user data")
    code = main(["generate", "A prompt.", "--weights", str(tiny_weights_dir), "-o", str(existing), "--quiet"])
    assert code == 2
    assert "is a file" in capsys.readouterr().err
    assert existing.read_bytes() == b"user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_wrong_model_in_a_slot_is_named(tiny_weights, tmp_path, capsys):
    code = main(["generate", "A prompt.", "--weights", str(tiny_weights["stage1"].parent), "--stage1",
                 str(tiny_weights["vae"]), "-o", str(tmp_path), "--frames", "5", "--height", "32", "--width", "32",
                 "--preview-only", "--quiet"])
    assert code == 2
    assert "VAE" in capsys.readouterr().err


def test_convert_then_load_from_safetensors(tiny_weights, tmp_path, capsys):
    out = tmp_path / "stage2.safetensors"
    assert main(["convert", str(tiny_weights["stage2"]), "-o", str(out)]) == 0
    assert out.exists()
    assert main(["convert", str(tiny_weights["stage2"]), "-o", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_download_offline_is_one_clear_line_and_leaves_no_folder(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants as constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    target = tmp_path / "weights"
    code = main(["download", str(target), "--files", "vae"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: Cannot download 3d-vae.pt from FoundationVision/FlashVideo: this machine is offline")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not target.exists(), "the folder and the .cache/huggingface lock folder made by the failed run are removed"


def test_enhance_refuses_a_default_1080p_beyond_x4_before_any_model_loads(tiny_weights_dir, tmp_path, capsys):
    clip = _small_clip(tmp_path / "clip.mp4")  # 48x32: 1080p would be x40
    code = main(["enhance", str(clip), "-o", str(tmp_path / "out.mp4"), "--weights", str(tiny_weights_dir)])
    err = capsys.readouterr().err
    assert code == 2
    assert "default 1080p would take the 48x32 (WxH) input to 1920x1280, a x40 upscale" in err
    assert "--scale 2/4, --size 720p/1080p/2K or --long-edge N" in err and "CLI --force" in err
    assert "load " not in err and "size: " not in err, "refused before the plan and before any model loads"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_enhance_names_force_for_an_existing_output(tiny_weights_dir, tmp_path, capsys):
    clip = _small_clip(tmp_path / "clip.mp4")
    (tmp_path / "out.mp4").write_bytes(b"earlier result")
    code = main(["enhance", str(clip), "-o", str(tmp_path / "out.mp4"), "--scale", "2", "--weights",
                 str(tiny_weights_dir), "--quiet"])
    assert code == 2
    assert "out.mp4 already exists; choose another output name, or pass --force to overwrite it." in (
        capsys.readouterr().err)
    assert (tmp_path / "out.mp4").read_bytes() == b"earlier result"


def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines: compare words


def test_help_says_what_each_command_is_for_with_an_example(capsys):
    text = _help(["--help"], capsys)
    for command in ("generate", "enhance", "convert", "tiny-weights", "download"):
        assert f"python -m flashvideo_core {command} " in text, command
    assert "TINY RANDOM weights" in text and "width x height" in text


def test_every_enhance_and_generate_setting_states_its_default(capsys):
    enhance = _help(["enhance", "--help"], capsys)
    for flag, default in (("--window", "(default 49"), ("--overlap", "(default 8)"), ("--seed", "(default 0)"),
                          ("--steps", "(default 4;"), ("--precision", "default auto")):
        entry = enhance.split("options:", 1)[1].split(f"{flag} ", 1)[1].split(" --")[0]  # that flag's help
        assert default in entry, flag
    generate = _help(["generate", "--help"], capsys)
    assert "(default: ., the current folder" in generate and "(default 0)" in generate
    assert "(default 49; 9 with the tiny default weights)" in generate


def test_generate_prints_the_settings_it_actually_uses_before_running(tiny_weights_dir, tmp_path, monkeypatch, capsys):
    from flashvideo_core import pipeline
    from flashvideo_core.weights import tiny

    def stop(*args, **kwargs):
        raise FlashVideoInputError("stopped before any work")

    monkeypatch.setattr(tiny, "ensure_tiny_weights", lambda *a: tiny_weights_dir)
    monkeypatch.setattr(pipeline, "generate", stop)
    assert main(["generate", "A fox.", "-o", str(tmp_path), "--device", "cpu"]) == 2  # the tiny default
    err = capsys.readouterr().err
    assert "frames:   9 at 8 fps, seed 0" in err
    assert "Stage I:  96x64 (WxH), 8 DPM++ steps, cfg 8 (exponent 5)" in err
    assert "Stage II: 192x128, 4 Euler steps, noise step 675, cfg 13, shift 2.5" in err
    assert "device:   cpu, fp32" in err and "tiny weights' small defaults" in err
    assert err.index("device:") < err.index("stopped before any work")
    main(["generate", "A fox.", "-o", str(tmp_path), "--device", "cpu", "--frames", "5", "--width", "32",
          "--stage2-steps", "2", "--seed", "7", "--weights", str(tiny_weights_dir), "--preview-only"])
    err = capsys.readouterr().err
    assert "frames:   5 at 8 fps, seed 7" in err and "Stage I:  32x256 (WxH), 51 DPM++ steps" in err
    assert "Stage II: skipped (--preview-only)" in err and "tiny weights" not in err


def _bars(events) -> str:
    import io

    from flashvideo_core.cli import TqdmProgress

    out = io.StringIO()
    progress = TqdmProgress(file=out)
    for event in events:
        progress(event)
    progress.close()
    return out.getvalue()


def test_progress_bars_show_whole_counts_and_only_meaningful_rates():
    from flashvideo_core.progress import ProgressEvent, WindowedProgress

    small_load = _bars([ProgressEvent("load stage2.pt", 0, 1), ProgressEvent("load stage2.pt", 1, 1)])
    assert "1/1 MB" in small_load and "MB/s" not in small_load, "a 1 MB read has no meaningful rate"
    big_load = _bars([ProgressEvent("load stage1.pt", 0, 12000), ProgressEvent("load stage1.pt", 12000, 12000)])
    assert "12000/12000 MB" in big_load and "MB/s" in big_load
    sampling = _bars([ProgressEvent("stage1", i, 3) for i in range(1, 4)])
    assert "3/3 steps" in sampling and "s/step" in sampling and "step/s" not in sampling
    decode = _bars([ProgressEvent("decode", i, 20) for i in range(1, 21)])
    assert "/s" not in decode and "20/20" not in decode, "decode units are a share of the slices, not a count"
    events = []
    fold = WindowedProgress(events.append)
    fold(ProgressEvent("enhance", 0, 3))
    for window in range(3):
        for phase, total in (("encode", 1), ("stage2", 3), ("decode", 7)):
            for step in range(1, total + 1):
                fold(ProgressEvent(phase, step, total))
        fold(ProgressEvent("enhance", window + 1, 3))
    clip = _bars(events)
    assert "clip, window 1/3" in clip and "clip, window 3/3: 100%" in clip
    assert "/s" not in clip and "0.81" not in clip and "/3.0" not in clip, "no float counts, no rate"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_killed_enhance_leaves_no_partial_file(tiny_weights_dir, tmp_path, signum):
    source = tmp_path / "clip.mp4"
    writer = imageio_ffmpeg.write_frames(str(source), (96, 64), fps=24, macro_block_size=1)
    writer.send(None)
    for i in range(120):
        writer.send(np.full((64, 96, 3), 2 * i, dtype=np.uint8).tobytes())
    writer.close()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "flashvideo_core", "enhance", str(source), "-o", str(out_dir / "big.mp4"), "--scale",
         "2", "--window", "9", "--overlap", "2", "--steps", "2", "--weights", str(tiny_weights_dir), "--quiet"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a background job ignores Ctrl-C
    )
    deadline = time.monotonic() + 120
    while not list(out_dir.iterdir()) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, f"enhance ended before it could be interrupted: {process.stderr.read()}"
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "the file being written was removed" in err
    assert list(out_dir.iterdir()) == []


def _small_clip(path, frames=5):
    writer = imageio_ffmpeg.write_frames(str(path), (48, 32), fps=12, macro_block_size=1)
    writer.send(None)
    for i in range(frames):
        writer.send(np.full((32, 48, 3), 40 * i % 256, dtype=np.uint8).tobytes())
    writer.close()
    return path


def test_enhance_names_bad_devices_folders_and_outputs_before_work(tiny_weights_dir, tmp_path, capsys):
    clip = _small_clip(tmp_path / "clip.mp4")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder is wanted")
    zero = tmp_path / "zero.y4m"
    zero.write_bytes(b"YUV4MPEG2 W48 H32 F12:1 Ip A1:1 C420jpeg\n")
    cases = [
        ([str(clip), "-o", str(tmp_path / "a.mp4"), "--device", "cuda:99"], "cuda:99"),
        ([str(tmp_path), "-o", str(tmp_path / "b.mp4")], "is a folder"),
        ([str(zero), "-o", str(tmp_path / "c.mp4")], "no video frames"),
        ([str(clip), "-o", str(blocker / "d.mp4")], "is a file, so it cannot hold"),
    ]
    for args, message in cases:
        code = main(["enhance", *args, "--weights", str(tiny_weights_dir), "--quiet", "--scale", "2"])
        assert code == 2, args
        assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "clip.mp4", "zero.y4m"]


def test_enhance_says_how_much_of_a_long_prompt_was_cut(tiny_weights_dir, tmp_path, caplog):
    clip = _small_clip(tmp_path / "clip.mp4")
    prompt = "word " * 300
    code = main(["enhance", str(clip), "-o", str(tmp_path / "out.mp4"), "--prompt", prompt, "--scale", "2",
                 "--window", "5", "--overlap", "0", "--steps", "1", "--weights", str(tiny_weights_dir), "--quiet"])
    assert code == 0
    assert any("beyond 226 were cut" in record.getMessage() for record in caplog.records)


def test_enhance_prints_the_resolved_plan_before_the_models_load(tiny_weights_dir, tmp_path, capsys):
    clip = _small_clip(tmp_path / "clip.mp4", frames=14)
    code = main(["enhance", str(clip), "-o", str(tmp_path / "out.mp4"), "--scale", "2", "--window", "9",
                 "--overlap", "2", "--steps", "1", "--weights", str(tiny_weights_dir)])
    err = capsys.readouterr().err
    assert code == 0
    assert "14 frames at 12 fps" in err and "size:   48x32 -> 96x64 (WxH), x2 upscale\n" in err
    assert "14 in 2 windows of 9 frames, overlaps of 4 frames blended" in err
    assert "noise:  step 500 (auto: 9-frame window at 96x64" in err
    assert err.index("noise:  step") < err.index("load stage2"), "the plan comes before any model loads"


def test_generate_failing_in_stage1_leaves_no_output_folder(tiny_weights_dir, tmp_path, monkeypatch, capsys):
    from flashvideo_core.sampling import stages

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(stages, "run_stage1", out_of_memory)
    out = tmp_path / "new" / "videos"
    code = main(["generate", "A fox.", "--weights", str(tiny_weights_dir), "--frames", "5", "--height", "32",
                 "--width", "32", "--steps", "1", "--quiet", "-o", str(out)])
    assert code == 2 and "error: Stage I ran out of memory" in capsys.readouterr().err  # test_out_of_memory.py
    assert list(tmp_path.iterdir()) == [], "a failed run must not leave the folders it would have made"


def test_generate_checks_every_weight_file_before_running_stage1(tiny_weights, tiny_weights_dir, tmp_path, capsys):
    truncated = tmp_path / "stage2_cut.pt"
    data = tiny_weights["stage2"].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    base = ["generate", "A fox.", "--weights", str(tiny_weights_dir), "--frames", "5", "--height", "32",
            "--width", "32", "--steps", "2", "--quiet"]
    for stage2, message in ((tiny_weights["stage1"], "looks like"), (truncated, "truncated or corrupt")):
        out = tmp_path / f"out_{stage2.stem}"
        assert main([*base, "--stage2", str(stage2), "-o", str(out)]) == 2
        assert message in capsys.readouterr().err
        assert not out.exists() or not list(out.iterdir()), "nothing may be written before the check"


def test_generate_names_models_that_do_not_fit_together_before_stage1(tiny_weights_dir, tmp_path, capsys):
    from dataclasses import replace

    from flashvideo_core import config
    from flashvideo_core.model.sat_loading import save_sat_transformer
    from flashvideo_core.model.transformer import build_transformer
    from flashvideo_core.vae import build_vae, save_sat_vae

    wide_text = tmp_path / "stage2_text64.pt"
    save_sat_transformer(build_transformer(replace(config.TINY_STAGE2, text_dim=64), seed=0), wide_text)
    other_vae = tmp_path / "vae_latent8.pt"
    save_sat_vae(build_vae(replace(config.TINY_VAE, latent_channels=8), seed=0), other_vae)
    base = ["generate", "A fox.", "--weights", str(tiny_weights_dir), "--frames", "5", "--height", "32",
            "--width", "32", "--steps", "2", "--quiet"]
    cases = ((["--stage2", str(wide_text)], "stage2_text64.pt takes text embeddings of width 64, but the T5"),
             (["--vae", str(other_vae)], "stage1.pt takes 16-channel latents, but the VAE vae_latent8.pt makes 8"))
    for flags, message in cases:
        out = tmp_path / f"out_{flags[0][2:]}"
        assert main([*base, *flags, "-o", str(out)]) == 2
        assert message in capsys.readouterr().err
        assert not out.exists() or not list(out.iterdir()), "nothing may be written before the check"


def test_windowed_progress_folds_every_window_and_phase_into_one_forward_stream():
    from flashvideo_core.progress import ProgressEvent, WindowedProgress

    seen = []
    fold = WindowedProgress(seen.append)
    fold(ProgressEvent("load stage2.pt", 5, 10))
    fold(ProgressEvent("enhance", 0, 2))
    for window in range(2):
        for phase, total in (("encode", 3), ("stage2", 4), ("decode", 2)):
            if phase == "encode" and window == 1:  # an out-of-memory retry restarts the encode
                fold(ProgressEvent(phase, 1, total))
            for step in range(1, total + 1):
                fold(ProgressEvent(phase, step, total, torch.zeros(1) if phase == "stage2" else None))
        fold(ProgressEvent("enhance", window + 1, 2))
    assert seen[0] == ProgressEvent("load stage2.pt", 5, 10)
    clip = [e for e in seen if e.phase == "clip"]
    assert len(clip) == len(seen) - 1 and {e.total for e in clip} == {2000}
    values = [e.step for e in clip]
    assert values == sorted(values) and values[0] == 0 and values[-1] == 2000 and values.count(2000) == 1
    assert sum(e.preview is not None for e in clip) == 8, "every Stage II preview is passed on"


@pytest.mark.parametrize(("prompt", "message"), [
    ("", "prompt is empty"), ("   ", "prompt is empty"),
    ("a \udcff cat", "position 2 (counting from 0, after 'a '): '\\udcff' is a lone surrogate"),
])
def test_generate_refuses_empty_and_non_utf8_prompts_before_work(tiny_weights_dir, tmp_path, capsys, prompt, message):
    code = main(["generate", prompt, "--weights", str(tiny_weights_dir), "-o", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert "udcff" not in prompt or "Save the prompt as UTF-8" in err
    assert not (tmp_path / "out").exists()


def test_enhance_refuses_a_non_utf8_prompt_clearly(tiny_weights_dir, tmp_path, capsys):
    clip = _small_clip(tmp_path / "clip.mp4")
    code = main(["enhance", str(clip), "-o", str(tmp_path / "out.mp4"), "--prompt", "a \udcff cat", "--scale", "2",
                 "--window", "5", "--overlap", "0", "--steps", "1", "--weights", str(tiny_weights_dir), "--quiet"])
    assert code == 2
    assert "position 2" in capsys.readouterr().err
    assert not (tmp_path / "out.mp4").exists()


def test_a_signal_whose_keyboardinterrupt_python_dropped_still_stops_the_run():
    """A SIGINT landing in an at-fork hook (each ffmpeg start) loses its KeyboardInterrupt: the next
    progress event raises it again, so the run still ends with 130 and no partial file."""
    from flashvideo_core.cli.bars import TqdmProgress
    from flashvideo_core.cli.interrupts import interrupts_recorded
    from flashvideo_core.progress import ProgressEvent

    with interrupts_recorded():
        try:
            signal.raise_signal(signal.SIGTERM)
        except KeyboardInterrupt:
            pass  # what Python does with an exception raised inside such a hook
        with pytest.raises(KeyboardInterrupt):
            TqdmProgress(enabled=False)(ProgressEvent("stage2", 1, 4))
    TqdmProgress(enabled=False)(ProgressEvent("stage2", 1, 4))  # outside a run: nothing pending
