"""train-stage2 end to end on tiny weights in the published layouts and a folder of real mp4 and png files:
checkpoints, resume, the results loading where users load them (load_stage2, enhance, the LoRA node), and
every bad input refused with a clear error before training starts."""

import errno
import json
import math
import shutil

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image

from flashvideo_core import config
from flashvideo_core.cli import main
from flashvideo_core.model.sat_loading import save_sat_transformer
from flashvideo_core.model.transformer import build_transformer
from flashvideo_core.training.checkpoints import LORA_NAME, STATE_NAME, WEIGHTS_NAME, latest_checkpoint
from flashvideo_core.video import write_video
from flashvideo_core.weights.loaders import load_stage2

SMALL = ["--size", "16x16", "--frames", "5", "--quiet"]


def _noise_clip(path, frames, seed, height=32, width=48):
    rng = np.random.default_rng(seed)
    write_video(path, [rng.integers(0, 255, (height, width, 3), dtype=np.uint8) for _ in range(frames)], fps=8)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two 9-frame mp4 clips, a 3-frame one (too short for clips) and two pngs, three of them with captions."""
    root = tmp_path_factory.mktemp("train_data")
    _noise_clip(root / "short.mp4", 3, seed=7)
    for i in range(2):
        _noise_clip(root / f"clip{i}.mp4", 9, seed=i)
        (root / f"clip{i}.txt").write_text(f"clip number {i}, a field of coloured noise")
    Image.fromarray(np.random.default_rng(5).integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(root / "photo.png")
    (root / "photo.txt").write_text("a photo of noise")
    Image.fromarray(np.full((20, 20, 3), 90, np.uint8)).save(root / "grey.png")
    return root


def _train(data, tiny_weights, out, *extra, init="stage2", quiet=True):
    small = SMALL if quiet else [a for a in SMALL if a != "--quiet"]
    args = ["train-stage2", str(data), "--weights", str(tiny_weights["stage1"].parent), *small, *extra]
    if out is not None:
        args += ["-o", str(out)]
    if init:
        args += ["--init", str(tiny_weights[init])]
    return main(args)


def _log(out):
    return [json.loads(line) for line in (out / "train-log.jsonl").read_text().splitlines()]


def test_a_run_checkpoints_resumes_and_its_weights_load_in_enhance(data, tiny_weights, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(data, tiny_weights, out, "--steps", "2", "--checkpoint-every", "1") == 0
    err = capsys.readouterr().err
    assert "computing 4 caption embedding(s) with T5" in err  # 3 captions and the empty one (grey.png has none)
    assert "note: phase 1: 1 video(s) shorter than 5 frames or smaller than 16x16 are not used for its clips " \
           "(e.g. short.mp4)" in err, "some files left out: a warning, and the run goes on"
    assert sorted(p.name for p in out.iterdir()) == ["caption-cache", "schedule.json", "step-0000001", "step-0000002",
                                                     "train-log.jsonl"]
    assert sorted(p.name for p in (out / "step-0000002").iterdir()) == [WEIGHTS_NAME, STATE_NAME]
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    # the same command again: refused, nothing touched
    assert _train(data, tiny_weights, out, "--steps", "2") == 2
    assert f"already holds checkpoints up to step-0000002; they are never overwritten. Pass --resume {out}" in (
        capsys.readouterr().err)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    # resume from the run folder: its latest step, no T5 again (captions cached), one more step
    assert _train(data, tiny_weights, None, "--resume", str(out), "--steps", "3", "--lr", "0.001") == 0
    err = capsys.readouterr().err
    assert "computing" not in err and "note: resuming with lr changed: 4e-05 -> 0.001" in err
    assert "steps changed" not in err and "schedule" not in err, "a longer run is not a change worth a note"
    assert latest_checkpoint(out) == out / "step-0000003"
    assert [(r["event"], r["step"]) for r in _log(out) if r["event"] in ("start", "train")] == [
        ("start", 0), ("train", 1), ("train", 2), ("start", 2), ("train", 3)]
    trained = load_stage2(out / "step-0000003" / WEIGHTS_NAME)
    init = load_stage2(tiny_weights["stage2"])
    assert any(not torch.equal(a, b) for a, b in zip(trained.state_dict().values(), init.state_dict().values(),
                                                     strict=True)), "it trained"
    clip = tmp_path / "input.mp4"
    _noise_clip(clip, 5, seed=9)
    assert main(["enhance", str(clip), "-o", str(tmp_path / "enhanced.mp4"), "--scale", "2", "--window", "5",
                 "--overlap", "0", "--steps", "1", "--quiet", "--weights", str(tiny_weights["stage1"].parent),
                 "--stage2", str(out / "step-0000003" / WEIGHTS_NAME)]) == 0
    assert (tmp_path / "enhanced.mp4").stat().st_size > 0


@pytest.fixture(scope="module")
def lora_run(data, tiny_weights, tmp_path_factory):
    """A one-step LoRA run (rank 2) on the tiny published Stage II; returns its run folder."""
    out = tmp_path_factory.mktemp("lora") / "run"
    assert _train(data, tiny_weights, out, "--steps", "1", "--lora", "2", "--lr", "0.05") == 0
    return out


def test_a_lora_run_writes_only_the_adapter_and_it_loads_in_enhance_and_the_node(lora_run, tiny_weights, tmp_path,
                                                                                  monkeypatch):
    lora = lora_run / "step-0000001" / LORA_NAME
    assert sorted(p.name for p in lora.parent.iterdir()) == [LORA_NAME, STATE_NAME]
    assert lora.stat().st_size < tiny_weights["stage2"].stat().st_size / 2
    clip = tmp_path / "input.mp4"
    _noise_clip(clip, 5, seed=9)
    assert main(["enhance", str(clip), "-o", str(tmp_path / "enhanced.mp4"), "--scale", "2", "--window", "5",
                 "--overlap", "0", "--steps", "1", "--quiet", "--weights", str(tiny_weights["stage1"].parent),
                 "--stage2-lora", str(lora)]) == 0
    from nodes import NODE_CLASS_MAPPINGS as N

    (tmp_path / "FlashVideo").mkdir()
    shutil.copy(tiny_weights["stage2"], tmp_path / "FlashVideo" / "stage2.pt")
    (tmp_path / "flashvideo_loras").mkdir()
    shutil.copy(lora, tmp_path / "flashvideo_loras" / "trained.safetensors")
    monkeypatch.setenv("FLASHVIDEO_MODELS_DIR", str(tmp_path))
    base = N["FlashVideoStage2Loader"]().load("stage2.pt", "fp32", "keep on device")[0]
    applied = N["FlashVideoStage2LoRA"]().apply(base, "trained.safetensors", 1.0)[0]
    latents, text = torch.randn(1, 2, 16, 4, 4), torch.randn(1, 3, config.TINY_STAGE2.text_dim)
    with torch.no_grad(), base.active() as plain, applied.active() as adapted:
        assert not torch.allclose(plain(latents, text, 500.0, 675.0), adapted(latents, text, 500.0, 675.0))


def test_resuming_a_lora_onto_another_architecture_is_refused_before_training(lora_run, data, tiny_weights,
                                                                               tmp_path, capsys):
    other = save_sat_transformer(build_transformer(config.TINY_STAGE2.__class__(
        **{**config.TINY_STAGE2.__dict__, "num_layers": 3}), seed=0), tmp_path / "other_stage2.pt")
    before = sorted(p.name for p in lora_run.rglob("*"))
    code = main(["train-stage2", str(data), "--weights", str(tiny_weights["stage1"].parent), *SMALL, "--resume",
                 str(lora_run), "--steps", "2", "--lora", "2", "--init", str(other)])
    err = capsys.readouterr().err
    assert code == 2 and "stage2-lora.safetensors is a LoRA for Stage II, 2 layers" in err
    assert "other_stage2.pt is Stage II, 3 layers" in err
    assert "The LoRA was trained on stage2.pt: resume with that model as --init." in err
    assert sorted(p.name for p in lora_run.rglob("*")) == before


def test_a_full_disk_at_a_checkpoint_keeps_the_last_good_one_and_says_how_to_go_on(data, tiny_weights, tmp_path,
                                                                                    monkeypatch, capsys):
    real, calls = safetensors.torch.save_file, []

    def fills_up(*args, **kwargs):  # the checkpoint writer looks save_file up per call
        calls.append(args[1])
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", fills_up)
    out = tmp_path / "run"
    assert _train(data, tiny_weights, out, "--steps", "3", "--checkpoint-every", "1") == 1
    err = capsys.readouterr().err
    assert "step-0000002/stage2.safetensors: the disk is full" in err
    assert f"The last good checkpoint is {out / 'step-0000001'}: free space, then continue with --resume {out}" in err
    assert latest_checkpoint(out) == out / "step-0000001" and not (out / "step-0000002").exists()


def _bad_data(root, kind):
    root.mkdir()
    if kind == "unreadable":
        (root / "broken.mp4").write_bytes(b"not a video at all")
    elif kind == "small":
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "icon.png")
    return root


@pytest.mark.parametrize("kind, extra, message", [
    ("empty", [], "holds no videos or images"),
    ("unreadable", [], "(?s)none of the 1 media files can give a 16x16 training sample:.*broken.mp4: unreadable"),
    ("small", [], r"icon.png: 8x8 is smaller than the 16x16 crop \(lower the training size"),
    ("data", ["--frames", "13"], r"phase 1 trains on 13-frame 16x16 clips \(image share 0.4\), but no video is "
                                 r"long and large enough \(clip0.mp4: 9 frames, 48x32; .*\). Lower --frames"
                                 r".*images only \(--image-share 1"),
    ("data", ["--size", "64x64"], r"(?s)none of the 5 media files can give a 64x64 training sample:.*grey.png: 20x20"),
    ("data", ["--val", "{short}"], r"no held-out file gives a 16x16 validation sample \(5-frame clips"),
])
def test_bad_data_is_refused_before_training(data, tiny_weights, tmp_path, capsys, kind, extra, message):
    folder = data if kind == "data" else _bad_data(tmp_path / "data", kind)
    (tmp_path / "val").mkdir()
    _noise_clip(tmp_path / "val" / "short.mp4", 3, seed=1)
    out = tmp_path / "run"
    extra = [arg.replace("{short}", str(tmp_path / "val")) for arg in extra]
    assert _train(folder, tiny_weights, out, "--steps", "1", *extra) == 2
    assert __import__("re").search(message, capsys.readouterr().err)
    assert not out.exists(), "refused before anything was written"


@pytest.mark.parametrize("init, message", [
    ("stage1", "stage1.pt looks like FlashVideo Stage I transformer"),
    ("vae", "3d-vae.pt looks like CogVideoX 3D VAE"),
    ("text_encoder", "looks like T5 text encoder"),
    ("lora", "is a LoRA (an adapter, not a model); give the Stage II model it was trained on with --init"),
])
def test_an_init_of_the_wrong_model_is_named_before_training(data, tiny_weights, lora_run, tmp_path, capsys, init,
                                                            message):
    out = tmp_path / "run"
    files = {**tiny_weights, "lora": lora_run / "step-0000001" / LORA_NAME}
    assert _train(data, files, out, "--steps", "1", init=init) == 2
    assert message in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("extra, message", [
    (["--lr", "-1"], "--lr: lr=-1.0 must be a finite number > 0"),
    (["--size", "100x64"], "--size width=100 must be a multiple of 16"),
    (["--frames", "8"], "--frames: frames=8 is not a frame count of the form 4k+1"),
    (["--noise-steps", "900,600"], "--noise-steps: noise_steps=(900, 600): low must not exceed high"),
    (["--noise-steps", "a,b"], "--noise-steps 'a,b' must be LOW,HIGH"),
    (["--blur-sigma", "0.5,30"], "--blur-sigma: blur_sigma=(0.5, 30.0) must be a (low, high) pair"),
    (["--downscale", "0.5"], "--downscale: downscale=(0.5, 0.5)"),
    (["--uncond-fraction", "2"], "--uncond-fraction: uncond_fraction=2.0"),
    (["--lora", "0"], "--lora: LoRA rank=0 must be an integer >= 1"),
    (["--lora-alpha", "8"], "--lora-alpha needs --lora RANK"),
    (["--image-share", "1", "--schedule", "coarse-to-fine"], "--image-share sets the one phase"),
    (["--schedule", "coarse-to-fine", "--steps", "2"], "the coarse-to-fine schedule needs at least 3 steps"),
    (["--validate-every", "5"], "--validate-every needs held-out samples: --val DIR or --holdout N"),
    (["--holdout", "1", "--val", "x"], "give held-out samples one way"),
    (["--holdout", "9"], "--holdout: holdout=9: hold out from 1 to 1 of the 2 files"),
    (["--steps", "1", "--resume", "nowhere"], "--resume nowhere does not exist"),
    (["--device", "cuda:7", "--quiet"], "device='cuda:7': this machine has"),
    (["--batch", "0"], "--batch: batch=0 must be an integer >= 1"),
    (["--caption-cache", __file__], f"--caption-cache {__file__} is a file; give a folder"),
    (["--steps", "3", "--lr-warmup", "3"], "--lr-warmup: lr_warmup=3 must be an integer from 0 to steps - 1 (2)"),
])
def test_bad_flags_are_named_before_training(data, tiny_weights, tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    assert _train(data, tiny_weights, out, *extra) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_lora_needs_init_and_a_bad_schedule_file_names_its_phase(data, tiny_weights, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(data, tiny_weights, out, "--lora", "4", init=None) == 2
    assert "--lora trains an adapter on a trained model; give that model with --init" in capsys.readouterr().err
    schedule = tmp_path / "phases.json"
    schedule.write_text(json.dumps({"phases": [{"steps": 2, "image_share": 1}, {"steps": 2, "frames": 6}]}))
    assert _train(data, tiny_weights, out, "--schedule", str(schedule)) == 2
    assert f"schedule file {schedule}, phase 2, field 'frames': frames=6" in capsys.readouterr().err
    schedule.write_text(json.dumps({"phases": [{"steps": 2}]}))
    assert _train(data, tiny_weights, out, "--schedule", str(schedule), "--steps", "5") == 2
    assert "--steps 5: the schedule" in capsys.readouterr().err and not out.exists()


def test_the_lr_curve_is_shown_and_logged_and_a_resume_that_stretches_a_cosine_says_so(data, tiny_weights, tmp_path,
                                                                                       capsys):
    out, curve = tmp_path / "run", ["--lr-warmup", "1", "--lr-decay", "cosine"]
    assert _train(data, tiny_weights, out, "--steps", "2", "--checkpoint-every", "1", *curve, quiet=False) == 0
    assert "AdamW lr 4e-05, warm-up 1 steps, cosine decay (betas" in capsys.readouterr().err
    assert [r["lr"] for r in _log(out) if r["event"] == "train"] == [2e-05, 4e-05]
    assert _train(data, tiny_weights, None, "--resume", str(out), "--steps", "3", *curve) == 0
    err = capsys.readouterr().err
    assert "note: resuming with steps changed: 2 -> 3; the cosine learning rate now falls over the new length" in err
    assert [r["lr"] for r in _log(out) if r["event"] == "train"][2:] == [4e-05 * (1 + math.cos(math.pi / 2)) / 2]


def test_a_checkpoint_older_than_a_setting_resumes_without_a_note_when_it_is_left_at_its_default(tmp_path):
    from flashvideo_core.training.settings import TrainSettings
    from flashvideo_core.training.setup import settings_changes

    older = json.loads(TrainSettings().to_json())
    del older["lr_warmup"], older["lr_decay"]
    assert settings_changes(tmp_path, json.dumps(older), TrainSettings()) == []
    assert settings_changes(tmp_path, json.dumps(older), TrainSettings(lr_warmup=5)) == [
        "resuming with lr_warmup changed: 0 -> 5"]


def test_runs_sharing_a_caption_cache_embed_each_caption_once(data, tiny_weights, tmp_path, capsys):
    shared = tmp_path / "captions"
    assert _train(data, tiny_weights, tmp_path / "a", "--steps", "1", "--caption-cache", str(shared),
                  quiet=False) == 0
    err = capsys.readouterr().err
    assert "computing 4 caption embedding(s) with T5" in err and f"captions: embeddings kept in {shared}" in err
    assert len(list(shared.glob("*.safetensors"))) == 4 and not (tmp_path / "a" / "caption-cache").exists()
    assert _train(data, tiny_weights, tmp_path / "b", "--steps", "1", "--caption-cache", str(shared)) == 0
    assert "computing" not in capsys.readouterr().err, "the second run found every caption embedded"
    assert _train(data, tiny_weights, tmp_path / "c", "--steps", "1") == 0  # without the flag: its own cache
    assert "computing 4 caption embedding(s)" in capsys.readouterr().err
