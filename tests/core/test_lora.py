"""Stage II LoRA (peft): attach for training, save/read the small file, apply for inference, the CLI flags."""

import json

import imageio_ffmpeg
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from flashvideo_core import config
from flashvideo_core.cli import main
from flashvideo_core.errors import CheckpointError, FlashVideoInputError
from flashvideo_core.model.lora_adapter import ADAPTER, LoraChoice, lora_layers
from flashvideo_core.model.transformer import build_transformer
from flashvideo_core.training.lora import LoraSettings, apply_lora, attach_lora, read_lora, save_lora
from flashvideo_core.weights.loaders import load_stage2

TEXT = torch.randn(1, 5, 32, generator=torch.Generator().manual_seed(1))
LATENTS = torch.randn(1, 3, 16, 8, 8, generator=torch.Generator().manual_seed(2))


def _run(model):
    with torch.no_grad():
        return model(LATENTS, TEXT, 500.0, 675.0)


def _trained_lora(model, path, scale=0.2, rank=4, alpha=None, seed=0):
    """attach_lora, then random A and B (as if trained), saved to `path`; returns the trained model."""
    generator = torch.Generator().manual_seed(seed)
    params = attach_lora(model, LoraSettings(rank=rank, alpha=alpha))
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn(p.shape, generator=generator) * scale)
    save_lora(model, path, {"steps": 12, "note": "toy"})
    return model


def test_a_fresh_lora_changes_nothing_and_only_it_is_trainable():
    model = build_transformer(config.TINY_STAGE2, seed=0)
    base = _run(model)
    params = attach_lora(model, LoraSettings(rank=4))
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(params) == 2 * 6 * config.TINY_STAGE2.num_layers  # A and B of q, k, v, out, ff0, ff2 per block
    assert {id(p) for p in trainable} == {id(p) for p in params}
    assert all(p.dtype == torch.float32 for p in params)
    assert torch.equal(_run(model), base), "B starts at zero: the output is the base model's"
    loss = model(LATENTS, TEXT, 500.0, 675.0).square().mean()
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params), "gradients reach the adapter"


def test_settings_are_checked_at_construction():
    assert LoraSettings(rank=8).alpha == 8.0
    for bad in ({"rank": 0}, {"rank": 2.5}, {"rank": 4, "alpha": 0}, {"rank": 4, "dropout": 1.0},
                {"rank": 4, "target_modules": ()}):
        with pytest.raises(FlashVideoInputError):
            LoraSettings(**bad)
    with pytest.raises(FlashVideoInputError, match="name no linear layer"):
        attach_lora(build_transformer(config.TINY_STAGE2, seed=0), LoraSettings(rank=2, target_modules=("nope",)))


def test_save_and_read_round_trip(tmp_path):
    path = tmp_path / "style.safetensors"
    model = _trained_lora(build_transformer(config.TINY_STAGE2, seed=0), path, rank=3, alpha=6)
    lora = read_lora(path)
    assert lora.settings == LoraSettings(rank=3, alpha=6.0)
    assert lora.architecture == {"stage": 2, "hidden_size": 32, "num_layers": 2, "num_heads": 2, "in_channels": 16}
    assert lora.metadata["steps"] == "12" and lora.metadata["note"] == "toy"
    layers = lora_layers(model)
    assert len(lora.tensors) == 2 * len(layers)
    for name, layer in layers.items():
        assert torch.equal(lora.tensors[f"{name}.lora_A.weight"], layer.lora_A[ADAPTER].weight)
        assert torch.equal(lora.tensors[f"{name}.lora_B.weight"], layer.lora_B[ADAPTER].weight)
    assert path.stat().st_size < 100_000, "only the adapter is in the file"
    fresh = build_transformer(config.TINY_STAGE2, seed=0)
    assert torch.equal(_run(apply_lora(fresh, lora, 1.0)), _run(model)), "applied = the trained model"


def test_apply_leaves_the_model_unchanged_and_strength_does_not_accumulate(tmp_path):
    path = tmp_path / "a.safetensors"
    _trained_lora(build_transformer(config.TINY_STAGE2, seed=0), path)
    lora = read_lora(path)
    model = build_transformer(config.TINY_STAGE2, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    base = _run(model)
    zero, one, again, half = (_run(apply_lora(model, lora, s)) for s in (0.0, 1.0, 1.0, 0.5))
    assert torch.equal(zero, base), "strength 0 is the base model exactly"
    assert not torch.allclose(one, base) and not torch.allclose(half, one)
    assert torch.equal(again, one), "applying twice gives the same result: nothing accumulates"
    assert torch.equal(_run(model), base)
    assert list(model.state_dict()) == list(before) and all(torch.equal(v, before[k])
                                                             for k, v in model.state_dict().items())
    shared = apply_lora(model, lora, 1.0)
    base_weight = model.inner.transformer_blocks[0].attn1.to_q.weight
    assert shared.inner.transformer_blocks[0].attn1.to_q.base_layer.weight is base_weight, "no weight copy"


def test_strength_scales_the_merged_update_linearly(tmp_path):
    path = tmp_path / "a.safetensors"
    _trained_lora(build_transformer(config.TINY_STAGE2, seed=0), path, scale=0.02, rank=2, alpha=4)
    lora = read_lora(path)
    model = build_transformer(config.TINY_STAGE2, seed=0)
    x = torch.randn(7, 32)
    for strength in (-1.0, 0.5, 2.0):
        layer = lora_layers(apply_lora(model, lora, strength))["transformer_blocks.1.attn1.to_v"]
        a = lora.tensors["transformer_blocks.1.attn1.to_v.lora_A.weight"]
        b = lora.tensors["transformer_blocks.1.attn1.to_v.lora_B.weight"]
        merged = layer.get_base_layer().weight + strength * (4 / 2) * b @ a  # W + s (alpha / r) B A
        with torch.no_grad():
            torch.testing.assert_close(layer(x), F.linear(x, merged, layer.get_base_layer().bias))
    base = _run(model)
    small, double = (_run(apply_lora(model, lora, s)) - base for s in (0.5, 1.0))
    assert (double - 2 * small).abs().max() < 0.05 * double.abs().max(), "small update: output ~linear in strength"


def test_a_lora_for_another_architecture_is_named(tmp_path):
    stage1 = tmp_path / "stage1_lora.safetensors"
    _trained_lora(build_transformer(config.TINY_STAGE1, seed=0), stage1)
    wide = tmp_path / "wide.safetensors"
    _trained_lora(build_transformer(_wide_config(), seed=0), wide)
    stage2 = build_transformer(config.TINY_STAGE2, seed=0)
    stage2.source_file = "stage2.pt"
    with pytest.raises(CheckpointError, match=r"stage1_lora.safetensors is a LoRA for Stage I.*stage2.pt is Stage II"):
        apply_lora(stage2, read_lora(stage1), 1.0)
    with pytest.raises(CheckpointError, match=r"wide.safetensors is a LoRA for Stage II, 2 layers x 48 wide.*32 wide"):
        apply_lora(stage2, read_lora(wide), 1.0)


def _wide_config():
    from dataclasses import replace

    return replace(config.TINY_STAGE2, num_heads=3)


def test_files_that_are_not_flashvideo_loras_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_lora(tmp_path / "missing.safetensors")
    (tmp_path / "model.pt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="model.pt: not a LoRA file"):
        read_lora(tmp_path / "model.pt")
    save_file({"inner.patch_embed.proj.weight": torch.zeros(2, 2)}, str(tmp_path / "stage2.safetensors"))
    with pytest.raises(CheckpointError, match="stage2.safetensors is not a FlashVideo LoRA file"):
        read_lora(tmp_path / "stage2.safetensors")
    good = tmp_path / "good.safetensors"
    _trained_lora(build_transformer(config.TINY_STAGE2, seed=0), good)
    tensors, meta = read_lora(good).tensors, read_lora(good).metadata
    save_file(dict(tensors), str(tmp_path / "v9.safetensors"), metadata={**meta, "flashvideo_lora_version": "9"})
    with pytest.raises(CheckpointError, match="v9.safetensors: LoRA format version '9'"):
        read_lora(tmp_path / "v9.safetensors")
    short = dict(list(tensors.items())[1:])
    save_file(short, str(tmp_path / "short.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="short.safetensors: LoRA tensors do not match"):
        read_lora(tmp_path / "short.safetensors")
    (tmp_path / "cut.safetensors").write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="cut.safetensors"):
        read_lora(tmp_path / "cut.safetensors")


@pytest.fixture()
def stage2_lora(tiny_weights, tmp_path):
    """A LoRA for the tiny published Stage II, large enough to change its output."""
    path = tmp_path / "tiny_stage2_lora.safetensors"
    _trained_lora(load_stage2(tiny_weights["stage2"]), path, scale=0.5)
    return path


def test_generate_applies_the_lora_to_stage2(tiny_weights_dir, stage2_lora, tmp_path):
    from flashvideo_core.pipeline import GenerateSettings, generate
    from flashvideo_core.sampling.settings import Stage1Settings, Stage2Settings
    from flashvideo_core.weights.loaders import find_weights

    base = GenerateSettings(stage1=Stage1Settings(num_frames=5, height=32, width=32, steps=2),
                            stage2=Stage2Settings(steps=1), stage2_height=64, stage2_width=64)
    weights = find_weights(tiny_weights_dir)
    latents = [generate("A fox.", weights, tmp_path / name, GenerateSettings(**{**base.__dict__, "stage2_lora": lora})
                        ).stage2_latent for name, lora in (("plain", None), ("one", LoraChoice(stage2_lora, 1.0)))]
    assert not torch.allclose(latents[0], latents[1]), "the LoRA reached Stage II (strength 0 = base: see above)"


def _clip(path):
    writer = imageio_ffmpeg.write_frames(str(path), (48, 32), fps=12, macro_block_size=1)
    writer.send(None)
    for i in range(5):
        writer.send(np.full((32, 48, 3), 40 * i, dtype=np.uint8).tobytes())
    writer.close()
    return path


def test_cli_generate_and_enhance_take_a_stage2_lora(tiny_weights_dir, stage2_lora, tmp_path, capsys):
    common = ["--weights", str(tiny_weights_dir), "--stage2-lora", str(stage2_lora), "--stage2-lora-strength", "0.7"]
    assert main(["generate", "A fox.", "-o", str(tmp_path / "gen"), "--frames", "5", "--height", "32", "--width",
                 "32", "--steps", "2", "--stage2-height", "64", "--stage2-width", "64", "--stage2-steps", "1",
                 *common]) == 0
    assert "LoRA:     tiny_stage2_lora.safetensors on Stage II at strength 0.7" in capsys.readouterr().err
    assert len(list((tmp_path / "gen").glob("*_stage2.mp4"))) == 1
    clip = _clip(tmp_path / "clip.mp4")
    assert main(["enhance", str(clip), "-o", str(tmp_path / "out.mp4"), "--scale", "2", "--window", "5",
                 "--overlap", "0", "--steps", "1", "--quiet", *common]) == 0
    assert (tmp_path / "out.mp4").stat().st_size > 0


def test_cli_refuses_a_wrong_lora_before_any_work(tiny_weights_dir, tmp_path, capsys):
    stage1_lora = tmp_path / "stage1_lora.safetensors"
    _trained_lora(build_transformer(config.TINY_STAGE1, seed=0), stage1_lora)
    out = tmp_path / "gen"
    code = main(["generate", "A fox.", "-o", str(out), "--weights", str(tiny_weights_dir), "--quiet",
                 "--stage2-lora", str(stage1_lora)])
    err = capsys.readouterr().err
    assert code == 2 and "stage1_lora.safetensors is a LoRA for Stage I" in err and "stage2.pt is Stage II" in err
    assert not out.exists(), "refused before Stage I"
    clip = _clip(tmp_path / "clip.mp4")
    code = main(["enhance", str(clip), "-o", str(tmp_path / "out.mp4"), "--scale", "2", "--quiet", "--weights",
                 str(tiny_weights_dir), "--stage2-lora", str(tmp_path / "none.safetensors")])
    assert code == 2 and "none.safetensors: not found" in capsys.readouterr().err
    code = main(["enhance", str(clip), "-o", str(tmp_path / "out.mp4"), "--scale", "2", "--quiet", "--weights",
                 str(tiny_weights_dir), "--stage2-lora-strength", "0.5"])
    assert code == 2 and "--stage2-lora-strength needs --stage2-lora" in capsys.readouterr().err
    assert not (tmp_path / "out.mp4").exists()


def test_metadata_records_the_architecture_as_json(tmp_path):
    path = tmp_path / "a.safetensors"
    _trained_lora(build_transformer(config.TINY_STAGE2, seed=0), path)
    meta = read_lora(path).metadata
    assert json.loads(meta["targets"])[0] == "attn1.to_q" and meta["flashvideo_lora_format"] == "flashvideo-lora"
