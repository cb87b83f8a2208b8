"""convert: published SAT files -> safetensors that load to the same models."""

from pathlib import Path

import pytest
import torch

from flashvideo_core.checkpoint import read_safetensors_metadata
from flashvideo_core.errors import CheckpointError
from flashvideo_core.weights.convert import convert_checkpoint
from flashvideo_core.weights.loaders import find_weights, load_stage1, load_stage2, load_vae

from ..equivalence import assert_same_outputs, assert_same_weights


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
    assert_same_weights(converted, source)
    assert_same_outputs(_transformer_output(converted), _transformer_output(source))


def test_converted_vae_matches_the_published_file(tiny_weights, tmp_path):
    out = convert_checkpoint(tiny_weights["vae"], tmp_path / "3d-vae.safetensors")
    source, converted = load_vae(tiny_weights["vae"]), load_vae(out)
    latent = torch.randn(1, 16, 2, 4, 6, generator=torch.Generator().manual_seed(1))
    assert_same_weights(converted, source)
    with torch.no_grad():
        assert_same_outputs(converted.decode(latent).sample, source.decode(latent).sample)


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


def test_a_damaged_pt_is_named_before_it_is_converted(tiny_weights, tmp_path):
    """One flipped bit in a tensor record loads silently; convert must catch it (safetensors keeps no checksum)."""
    import shutil
    import zipfile

    from flashvideo_core.checkpoint import verify_checksums

    source = shutil.copy(tiny_weights["stage2"], tmp_path / "stage2.pt")
    events = []
    assert verify_checksums(source, events.append) is True
    assert events and events[-1].phase == "verify stage2.pt" and events[-1].step == events[-1].total
    assert [e.step for e in events].count(events[-1].total) == 1, "the end is reported once (one bar in the CLI)"
    with zipfile.ZipFile(source) as archive:
        record = max((r for r in archive.infolist() if "/data/" in r.filename), key=lambda r: r.file_size)
    with open(source, "r+b") as file:
        file.seek(record.header_offset + 26)  # the local header's name and extra-field lengths
        name_length, extra_length = (int.from_bytes(file.read(2), "little") for _ in range(2))
        data_start = record.header_offset + 30 + name_length + extra_length
        file.seek(data_start + record.file_size // 2)
        byte = file.read(1)
        file.seek(-1, 1)
        file.write(bytes([byte[0] ^ 0x10]))
    with pytest.raises(CheckpointError, match=rf"stage2.pt is damaged: its record {record.filename} .*fetch"):
        convert_checkpoint(source, tmp_path / "stage2.safetensors")
    assert not (tmp_path / "stage2.safetensors").exists()
    assert verify_checksums(tmp_path / "missing.safetensors") is False


def test_convert_into_an_existing_folder_writes_there_under_the_source_name(tiny_weights, tmp_path):
    folder = tmp_path / "converted"
    folder.mkdir()
    out = convert_checkpoint(tiny_weights["stage2"], folder)
    assert out == folder / "stage2.safetensors" and out.is_file()
    with pytest.raises(CheckpointError, match="already exists"):
        convert_checkpoint(tiny_weights["stage2"], folder)  # the folder itself is never a target to replace
    assert folder.is_dir()


@pytest.mark.parametrize("message", ["Error while serializing: I/O error: No space left on device (os error 28)",
                                     "[enforce fail at inline_container.cc:672] . unexpected pos 8640 vs 8534"])
def test_a_full_disk_is_named_with_the_file_and_leaves_nothing(tiny_weights, tmp_path, monkeypatch, message):
    import safetensors.torch

    def full_disk(state, filename, metadata=None):
        Path(filename).write_bytes(b"half")
        raise RuntimeError(message)  # what safetensors and torch.save raise when the disk fills

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    out = tmp_path / "stage2.safetensors"
    with pytest.raises(OSError, match=f"could not write {out}: the disk is full .*nothing was left behind"):
        convert_checkpoint(tiny_weights["stage2"], out)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.stat().st_size]
