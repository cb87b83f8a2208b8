"""convert: published SAT files -> safetensors that load to the same models."""

import pytest
import torch

from flashvideo_core.checkpoint import read_safetensors_metadata
from flashvideo_core.convert import convert_checkpoint
from flashvideo_core.errors import CheckpointError
from flashvideo_core.loaders import find_weights, load_stage1, load_stage2, load_vae


def _transformer_output(model):
    gen = torch.Generator().manual_seed(0)
    cfg = model.config
    latents = torch.randn(1, 2, cfg.in_channels, 4, 6, generator=gen)
    text = torch.randn(1, 7, cfg.text_dim, generator=gen)
    noise_step = torch.tensor([675.0]) if cfg.stage2_extras else None
    with torch.no_grad():
        return model(latents, text, torch.tensor([500.0]), noise_step=noise_step)


@pytest.mark.parametrize("name, loader", [("stage1", load_stage1), ("stage2", load_stage2)])
def test_converted_transformer_matches_the_published_file(tiny_weights, tmp_path, name, loader):
    out = convert_checkpoint(tiny_weights[name], tmp_path / f"{name}.safetensors")
    assert read_safetensors_metadata(out)["flashvideo_kind"] == name
    source, converted = loader(tiny_weights[name]), loader(out)
    assert torch.equal(_transformer_output(source), _transformer_output(converted))


def test_converted_vae_matches_the_published_file(tiny_weights, tmp_path):
    out = convert_checkpoint(tiny_weights["vae"], tmp_path / "3d-vae.safetensors")
    source, converted = load_vae(tiny_weights["vae"]), load_vae(out)
    latent = torch.randn(1, 16, 2, 4, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(source.decode(latent).sample, converted.decode(latent).sample)


def test_convert_never_overwrites_by_default(tiny_weights, tmp_path):
    out = tmp_path / "stage2.safetensors"
    out.write_bytes(b"user data")
    with pytest.raises(CheckpointError, match="already exists"):
        convert_checkpoint(tiny_weights["stage2"], out)
    assert out.read_bytes() == b"user data"


def test_find_weights_prefers_converted_files(tiny_weights, tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    for name in ("stage1.pt", "stage2.pt", "3d-vae.pt"):
        (folder / name).symlink_to(tiny_weights["stage1"].parent / name)
    convert_checkpoint(folder / "stage2.pt")
    found = find_weights(folder)
    assert found.stage2.name == "stage2.safetensors"
    assert found.stage1.name == "stage1.pt"
    assert found.text_encoder is None
    with pytest.raises(CheckpointError, match="text_encoder"):
        found.require("stage1", "text_encoder")
