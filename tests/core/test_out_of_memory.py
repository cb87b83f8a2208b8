"""An out-of-memory error raised mid-run (issue 12, planning.out_of_memory): the CLI prints one line naming
the stage, its last progress, the free memory at the start and a mode that needs less, and exits 2 like
the other memory refusals; the models and activations are released before the error reaches the caller;
no partial output is left. Simulated on the CPU: a model call raises torch.OutOfMemoryError."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from flashvideo_core import config
from flashvideo_core.cli import main
from flashvideo_core.enhance.plan import EnhanceSettings
from flashvideo_core.enhance.run import enhance_images
from flashvideo_core.errors import FlashVideoInputError
from flashvideo_core.model.transformer import build_transformer
from flashvideo_core.pipeline import GenerateSettings, generate
from flashvideo_core.planning.out_of_memory import DeviceMemoryError
from flashvideo_core.planning.room import ModeWords
from flashvideo_core.progress import report
from flashvideo_core.sampling import stages
from flashvideo_core.sampling.settings import Stage1Settings
from flashvideo_core.sampling.stage2_chain import Stage2Models
from flashvideo_core.vae import build_vae
from flashvideo_core.weights.loaders import find_weights

from .test_enhance_inputs import _clip

CUDA_OOM = ("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 23.55 GiB of which "
            "1.01 GiB is free.\nOf the allocated memory 20.1 GiB is allocated by PyTorch.")
GENERATE = ["generate", "A red fox runs through fresh snow.", "--frames", "9", "--height", "64", "--width", "96",
            "--steps", "2", "--preview-only", "--quiet"]
HELD = {}
"""Weak references to what the failing Stage I held: its model and an activation."""


def _stage1_runs_out(model, embeds, settings, seed=0, device=None, dtype=None, callback=None):
    """stages.run_stage1 that does one step and then runs out of memory, holding the model and an activation."""
    activation = torch.zeros(1 << 20)
    HELD.update(model=weakref.ref(model), activation=weakref.ref(activation))
    report(callback, "stage1", 1, settings.steps)
    raise torch.OutOfMemoryError(CUDA_OOM)


def test_generate_out_of_memory_is_one_line_with_the_stage_and_a_smaller_mode(tiny_weights_dir, tmp_path,
                                                                              monkeypatch, capsys):
    monkeypatch.setattr(stages, "run_stage1", _stage1_runs_out)
    out = tmp_path / "videos"
    code = main([*GENERATE, "--weights", str(tiny_weights_dir), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: Stage I ran out of memory on cpu (last progress: stage1 1/2). ")
    assert " GiB was free when the run started, and it needs at least " in err
    assert "A mode that needs less than this run's (fp32, batched CFG, sdpa, about " in err
    assert err.rstrip().endswith(f"--sequential-cfg. (The memory is released. Error: {CUDA_OOM.splitlines()[0]})")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists(), "nothing half-written (the claimed names are given back)"


def test_the_models_and_activations_are_released_before_the_caller_gets_the_error(tiny_weights_dir, tmp_path,
                                                                                  monkeypatch):
    monkeypatch.setattr(stages, "run_stage1", _stage1_runs_out)
    settings = GenerateSettings(stage1=Stage1Settings(num_frames=9, height=64, width=96, steps=2), preview_only=True,
                                device="cpu")
    with pytest.raises(DeviceMemoryError) as raised:
        generate("A red fox runs through fresh snow.", find_weights(tiny_weights_dir), tmp_path / "out", settings)
    error = raised.value
    assert isinstance(error, FlashVideoInputError) and isinstance(error, torch.cuda.OutOfMemoryError)
    assert HELD["model"]() is None and HELD["activation"]() is None, "the error must not keep the run's tensors"
    assert str(error).startswith("Stage I ran out of memory on cpu (last progress: stage1 1/2).")


def test_enhance_out_of_memory_in_stage2_names_the_window_stage(tiny_weights_dir, tmp_path, monkeypatch, capsys):
    from flashvideo_core.enhance import run

    real = run.load_stage2_models

    def load(*args, **kwargs):
        models = real(*args, **kwargs)
        models.transformer.register_forward_pre_hook(lambda *_: _raise(torch.OutOfMemoryError(CUDA_OOM)))
        return models

    monkeypatch.setattr(run, "load_stage2_models", load)
    clip, out = _clip(tmp_path / "in.mp4"), tmp_path / "out.mp4"
    code = main(["enhance", str(clip), "-o", str(out), "--weights", str(tiny_weights_dir), "--scale", "2",
                 "--window", "5", "--overlap", "0", "--steps", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "error: Stage II (an enhance window) ran out of memory on cpu (last progress: " in err
    assert "--sequential-cfg. (The memory is released. Error: CUDA out of memory." in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"], "no output, no partial file"


def _raise(error: BaseException):
    raise error


@pytest.fixture(scope="module")
def models():
    cond = torch.randn(1, 226, 32, generator=torch.Generator().manual_seed(0))
    return Stage2Models(build_transformer(config.TINY_STAGE2, seed=0), build_vae(config.TINY_VAE, seed=0), cond)


def test_enhance_images_speaks_the_callers_words_and_passes_other_errors_unchanged(models):
    """The nodes' Enhance Video runs enhance_images with their words; a non-memory error is not rewritten."""
    words = ModeWords(fp8="FP8", block_swap="SWAP {n}", sequential_cfg="SEQUENTIAL", plain="PLAIN")
    images = torch.rand(5, 16, 24, 3, generator=torch.Generator().manual_seed(1))
    settings = EnhanceSettings(scale=2, window=5, overlap=0, steps=1)
    for error, expected in ((torch.OutOfMemoryError(CUDA_OOM), DeviceMemoryError), (RuntimeError("boom"), RuntimeError),
                            (FlashVideoInputError("bad"), FlashVideoInputError)):
        hook = models.transformer.register_forward_pre_hook(lambda *_, error=error: _raise(error))
        try:
            with pytest.raises(expected) as raised:
                enhance_images(images, models, settings, mode_words=words)
        finally:
            hook.remove()
        assert type(raised.value) is expected
    gc.collect()
    with pytest.raises(DeviceMemoryError, match=r"Stage II \(an enhance window\) ran out of memory on cpu .* "
                                                r"SEQUENTIAL\. \(The memory is released"):
        hook = models.transformer.register_forward_pre_hook(lambda *_: _raise(torch.OutOfMemoryError(CUDA_OOM)))
        try:
            enhance_images(images, models, settings, mode_words=words)
        finally:
            hook.remove()




def test_a_new_stage_forgets_the_previous_stages_last_progress():
    from flashvideo_core.planning.out_of_memory import MemoryWatch
    from flashvideo_core.progress import ProgressEvent

    watch = MemoryWatch()
    watch.at("Stage I")
    watch.track(None)(ProgressEvent("stage1", 50, 50))
    watch.at("Stage I", need=1)  # the same stage again (e.g. its bound set later) keeps it
    assert "(last progress: stage1 50/50)" in watch.message()
    watch.at("Stage II")
    assert watch.message().startswith("Stage II ran out of memory on cpu (before its first progress report)")
