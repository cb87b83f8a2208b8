"""A damaged weight or a NaN input stops the run at the stage that met it, never a black video with exit 0."""

import pytest
import torch

from flashvideo_core.cli import main
from flashvideo_core.errors import NonFiniteError
from flashvideo_core.finite import check_finite, checked_model_calls
from flashvideo_core.sampling.settings import Stage2Settings
from flashvideo_core.sampling.stages import run_stage2
from flashvideo_core.text.encoder import load_text_encoder
from flashvideo_core.weights.loaders import load_stage2


def _flip_exponent_bit(source, target):
    """Copy the tiny published-layout .pt with the top exponent bit of one weight flipped (as a bad disk does)."""
    state = torch.load(source, weights_only=True)
    tensors = state["module"]
    name = next(k for k, v in tensors.items() if k.endswith("mlp.dense_4h_to_h.weight"))
    weight = tensors[name].clone()
    as_int = weight.view(torch.int32 if weight.dtype == torch.float32 else torch.int16)
    as_int.view(-1)[0] ^= 1 << (30 if weight.dtype == torch.float32 else 14)
    tensors[name] = weight
    torch.save(state, target)
    return float(weight.view(-1)[0])


def _args(weights, out, **paths):
    args = ["generate", "A small red cube rotates slowly on a wooden table.", "--weights", str(weights), "-o", str(out),
            "--frames", "5", "--height", "32", "--width", "32", "--stage2-height", "64", "--stage2-width", "64",
            "--steps", "2", "--stage2-steps", "2", "--quiet"]
    for key, value in paths.items():
        args += [f"--{key}", str(value)]
    return args


@pytest.mark.parametrize("stage, name", [(1, "Stage I"), (2, "Stage II")])
def test_a_flipped_exponent_bit_stops_generate_at_its_stage(tiny_weights_dir, tmp_path, capsys, stage, name):
    damaged = tmp_path / f"stage{stage}_damaged.pt"
    value = _flip_exponent_bit(tiny_weights_dir / f"stage{stage}.pt", damaged)
    assert abs(value) > 1e30  # e.g. 0.146 -> 4.98e37
    out = tmp_path / "out"
    assert main(_args(tiny_weights_dir, out, **{f"stage{stage}": damaged})) == 2
    err = capsys.readouterr().err
    assert f"error: {name}: the model's output at call 1" in err and "NaN/Inf" in err
    assert f"convert {damaged}" in err  # names the file and the checksum check
    assert not list(out.glob("*_stage2.mp4")) if out.exists() else True
    if stage == 1:
        assert not out.exists()  # nothing written at all


def test_a_nan_latent_is_refused_before_stage2_samples(tiny_weights, tiny_weights_dir):
    model = load_stage2(tiny_weights["stage2"])
    cond = load_text_encoder(tiny_weights["text_encoder"], tiny_weights["tokenizer"]).encode("a cat").stage2
    latent = torch.zeros(1, 16, 2, 4, 4)
    latent[0, 3, 1, 2, 2] = float("nan")
    calls = []
    model.register_forward_pre_hook(lambda *a: calls.append(1))
    with pytest.raises(NonFiniteError, match="latent holds NaN/Inf \\(1 of 512"):
        run_stage2(model, cond, latent, Stage2Settings(steps=2))
    assert calls == []


def test_checked_calls_name_the_call_and_pass_finite_outputs():
    outputs = iter([torch.ones(2), torch.tensor([1.0, float("inf")])])
    call = checked_model_calls(lambda x, t: next(outputs), "Stage II", "weights/stage2.pt")
    assert torch.equal(call(torch.zeros(2), 0.0), torch.ones(2))
    with pytest.raises(NonFiniteError, match=r"call 2 \(t=0.5\).*convert weights/stage2.pt"):
        call(torch.zeros(2), 0.5)
    check_finite(torch.zeros(3), "x")
