"""The loader tests' tolerance is loose enough for kernel rounding and tight enough to catch a wrong tensor."""

import pytest
import torch

from flashvideo_core.weights.loaders import load_stage1, load_stage2, load_vae

from ..equivalence import OUTPUT_RTOL, assert_same_outputs, assert_same_weights


def _transformer_output(model):
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 2, 16, 6, 10, generator=gen)
    text = torch.randn(1, 7, model.config.text_dim, generator=gen)
    noise_step = 675.0 if model.config.stage2_extras else None
    with torch.no_grad():
        return model(latents, text, torch.tensor([700.0]), noise_step=noise_step)


def _vae_output(vae):
    latent = torch.randn(1, 16, 2, 4, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return vae.decode(latent).sample


def _square_weight(model, contains):
    return next(p for n, p in model.named_parameters() if contains in n and p.ndim == 2 and p.shape[0] == p.shape[1])


def _transpose(model, contains):
    weight = _square_weight(model, contains)
    with torch.no_grad():
        weight.copy_(weight.t().clone())


def _swap(model, first, second):
    a, b = _square_weight(model, first), _square_weight(model, second)
    with torch.no_grad():
        held = a.clone()
        a.copy_(b)
        b.copy_(held)


CASES = [
    ("stage1", load_stage1, _transformer_output, "attn1.to_q", "attn1.to_k"),
    ("stage2", load_stage2, _transformer_output, "attn1.to_q", "attn1.to_k"),
]


@pytest.mark.parametrize("name, loader, run, first, second", CASES)
@pytest.mark.parametrize("damage", ["transpose", "swap"])
def test_a_transposed_or_swapped_transformer_weight_fails_the_output_tolerance(
    tiny_weights, name, loader, run, first, second, damage
):
    reference = loader(tiny_weights[name])
    damaged = loader(tiny_weights[name])
    assert_same_outputs(run(damaged), run(reference))  # two loads of one file pass
    _transpose(damaged, first) if damage == "transpose" else _swap(damaged, first, second)
    with pytest.raises(AssertionError, match="differs"):
        assert_same_weights(damaged, reference)
    with pytest.raises(AssertionError, match="max \\|diff\\|"):
        assert_same_outputs(run(damaged), run(reference))


@pytest.mark.parametrize("damage", ["transpose", "swap"])
def test_a_transposed_or_swapped_vae_weight_fails_the_output_tolerance(tiny_weights, damage):
    reference, damaged = load_vae(tiny_weights["vae"]), load_vae(tiny_weights["vae"])
    convs = [p for n, p in damaged.named_parameters() if n.startswith("decoder.") and p.ndim == 5]
    first = next(p for p in convs if p.shape[0] == p.shape[1])
    second = next(p for p in convs if p.shape == first.shape and p is not first)
    with torch.no_grad():
        if damage == "transpose":
            first.copy_(first.transpose(0, 1).clone())
        else:
            held = first.clone()
            first.copy_(second)
            second.copy_(held)
    with pytest.raises(AssertionError, match="max \\|diff\\|"):
        assert_same_outputs(_vae_output(damaged), _vae_output(reference))


def test_kernel_rounding_passes_the_tolerance():
    expected = torch.randn(1000, generator=torch.Generator().manual_seed(2))
    rounded = expected + expected.abs().max() * 3.6e-7 * torch.sign(torch.randn(1000))  # the alignment gap seen
    assert_same_outputs(rounded, expected)
    with pytest.raises(AssertionError):
        assert_same_outputs(expected + expected.abs().max() * 10 * OUTPUT_RTOL, expected)
    with pytest.raises(AssertionError):
        assert_same_outputs(torch.full_like(expected, float("nan")), expected)
