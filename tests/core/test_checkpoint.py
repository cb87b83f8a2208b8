"""Safe checkpoint reading: formats, wrappers, refusal of unsafe pickles, corrupt files, kind detection."""

import pickle

import pytest
import torch
from safetensors.torch import save_file

from flashvideo_core import config
from flashvideo_core.checkpoint import detect_kind, read_state_dict, require_kind
from flashvideo_core.errors import CheckpointError

EXECUTED = []


class Payload:
    """An object whose unpickling would run code."""

    def __reduce__(self):
        return (EXECUTED.append, ("ran",))


def test_reads_sat_module_wrapper_with_mmap(tmp_path):
    path = tmp_path / "stage2.pt"
    torch.save({"module": {"model.diffusion_model.time_embed.0.weight": torch.ones(2, 2)}}, path)
    state = read_state_dict(path)
    assert list(state) == ["model.diffusion_model.time_embed.0.weight"]
    assert torch.equal(state["model.diffusion_model.time_embed.0.weight"], torch.ones(2, 2))


def test_reads_state_dict_wrapper_and_safetensors(tmp_path):
    torch.save({"state_dict": {"encoder.conv_in.weight": torch.zeros(3)}}, tmp_path / "vae.pt")
    save_file({"a": torch.arange(4.0)}, str(tmp_path / "x.safetensors"))
    assert "encoder.conv_in.weight" in read_state_dict(tmp_path / "vae.pt")
    assert torch.equal(read_state_dict(tmp_path / "x.safetensors")["a"], torch.arange(4.0))


def test_refuses_pickle_with_code_and_never_runs_it(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"module": {"w": Payload()}}, handle)
    torch.save({"module": {"w": Payload()}}, tmp_path / "evil_zip.pt")
    for bad in (path, tmp_path / "evil_zip.pt"):
        with pytest.raises(CheckpointError, match="refused|could not be read"):
            read_state_dict(bad)
    assert EXECUTED == []


def test_truncated_and_empty_files_are_clear_errors(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"module": {"w": torch.randn(64, 64)}}, good)
    data = good.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "cut.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_state_dict(tmp_path / "cut.pt")
    with pytest.raises(CheckpointError, match="empty"):
        read_state_dict(tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="safetensors"):
        read_state_dict(tmp_path / "cut.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "missing.pt")


def test_detect_kind_on_sat_and_diffusers_names():
    t = torch.zeros(1)
    assert detect_kind({"model.diffusion_model.ref_step_time_embedding.0.weight": t}) == "stage2"
    assert detect_kind({"model.diffusion_model.transformer.layers.0.attention.query_key_value.weight": t}) == "stage1"
    assert detect_kind({"inner.transformer_blocks.0.attn1.to_q.weight": t}) == "stage1"
    assert detect_kind({"encoder.block.0.layer.0.SelfAttention.q.weight": t}) == "t5"
    assert detect_kind({"encoder.conv_in.conv.weight": t}) == "vae"
    assert detect_kind({"something": t}) == "unknown"


def test_require_kind_names_what_the_file_looks_like():
    with pytest.raises(CheckpointError, match="looks like CogVideoX 3D VAE.*Stage II transformer"):
        require_kind({"encoder.conv_in.conv.weight": torch.zeros(1)}, "stage2", "3d-vae.pt")


@pytest.mark.parametrize("kind", ["stage1", "stage2", "vae", "text_encoder"])
def test_loading_reports_megabytes_read_and_a_raising_callback_stops_it(tiny_weights, kind):
    from flashvideo_core.weights import loaders

    load = {"stage1": loaders.load_stage1, "stage2": loaders.load_stage2, "vae": loaders.load_vae,
            "text_encoder": loaders.load_text_encoder}[kind]
    all_events = []
    load(tiny_weights[kind], callback=all_events.append)
    name = tiny_weights[kind].name
    events = [e for e in all_events if e.phase == f"load {name}"]
    merges = [e for e in all_events if e.phase == f"merge LoRA {name}"]
    assert events and len(events) + len(merges) == len(all_events)
    assert bool(merges) == (kind == "stage1"), "only Stage I's file carries LoRA"
    steps = [e.step for e in events]
    assert steps == sorted(steps) and steps[-1] == events[-1].total >= 1
    assert steps.count(events[-1].total) == 1, "the end is reported once"

    class Cancelled(Exception):
        pass

    def cancel(event):
        raise Cancelled

    with pytest.raises(Cancelled):
        load(tiny_weights[kind], callback=cancel)


def test_cast_state_reports_about_every_percent():
    from flashvideo_core.checkpoint import cast_state

    state = {f"w{i}": torch.zeros(2**18) for i in range(400)}  # 400 x 1 MiB of fp32
    events = []
    cast = cast_state(state, torch.bfloat16, events.append, "load big")
    assert all(v.dtype == torch.bfloat16 for v in cast.values())
    assert 90 <= len(events) <= 101 and events[-1].step == events[-1].total == 400


def test_verify_checksums_reports_the_end_once(tmp_path):
    from flashvideo_core.checkpoint import verify_checksums

    path = tmp_path / "three_mb.pt"
    torch.save({"w": torch.zeros(3 * 2**18)}, path)  # 3 MiB of fp32 in one record
    events = []
    assert verify_checksums(path, events.append) is True
    steps = [e.step for e in events]
    assert steps == sorted(steps) and steps[-1] == events[-1].total == 3 and steps.count(3) == 1


@pytest.mark.parametrize("broken", ['{"hidden_size": 32,,}', "\xff\xfe", "[1, 2]"])
def test_a_broken_json_in_a_model_folder_is_named_with_the_fix(tiny_weights, tmp_path, broken):
    import shutil

    from flashvideo_core.weights.loaders import load_text_encoder

    encoder = shutil.copytree(tiny_weights["text_encoder"], tmp_path / "text_encoder")
    tokenizer = shutil.copytree(tiny_weights["tokenizer"], tmp_path / "tokenizer")
    (encoder / "config.json").write_bytes(broken.encode("latin-1"))
    with pytest.raises(CheckpointError, match=r"text_encoder/config.json .*(JSON|UTF-8).*restore it"):
        load_text_encoder(encoder, tokenizer)
    shutil.copy(tiny_weights["text_encoder"] / "config.json", encoder / "config.json")
    (tokenizer / "tokenizer_config.json").write_bytes(broken.encode("latin-1"))
    with pytest.raises(CheckpointError, match=r"tokenizer/tokenizer_config.json .*(JSON|UTF-8)"):
        load_text_encoder(encoder, tokenizer)


def _count_header_reads(monkeypatch) -> dict[str, int]:
    """Count, per file name, the header reads (safetensors opens and torch.load of pickles) from now on."""
    import collections
    from pathlib import Path

    import safetensors

    reads = collections.Counter()
    real_open, real_load = safetensors.safe_open, torch.load

    def counted_open(filename, *args, **kwargs):
        reads[Path(filename).name] += 1
        return real_open(filename, *args, **kwargs)

    def counted_load(f, *args, **kwargs):
        reads[Path(f).name] += 1
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(safetensors, "safe_open", counted_open)
    monkeypatch.setattr(torch, "load", counted_load)
    return reads


def test_check_then_transformer_width_read_each_header_once(tiny_weights, tmp_path, monkeypatch):
    """generate checks the four files (kind, then widths) and reads both stages' widths: one read per file."""
    import shutil

    from flashvideo_core.checkpoint import transformer_width
    from flashvideo_core.weights.loaders import find_weights

    for name in ("stage1", "stage2", "vae", "text_encoder", "tokenizer"):  # fresh paths: nothing read yet
        copy = shutil.copytree if tiny_weights[name].is_dir() else shutil.copy
        copy(tiny_weights[name], tmp_path / tiny_weights[name].name)
    reads = _count_header_reads(monkeypatch)
    weights = find_weights(tmp_path)
    weights.check("text_encoder", "stage1", "vae", "stage2")
    assert transformer_width(weights.stage1) == config.TINY_STAGE1.hidden_size
    assert transformer_width(weights.stage2) == config.TINY_STAGE2.hidden_size
    shards = [p.name for p in (tmp_path / "text_encoder").glob("*.safetensors")]
    assert dict(reads) == dict.fromkeys(["stage1.pt", "stage2.pt", "3d-vae.pt", *shards], 1)


def test_a_replaced_file_is_read_again(tmp_path):
    from flashvideo_core.checkpoint import read_shapes

    path = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(2)}, str(path))
    assert read_shapes(path) == {"a": (2,)}
    save_file({"a": torch.zeros(3), "b": torch.zeros(1)}, str(tmp_path / "new.safetensors"))
    (tmp_path / "new.safetensors").replace(path)
    assert read_shapes(path) == {"a": (3,), "b": (1,)}
    shapes = read_shapes(path)
    shapes["c"] = (9,)
    assert "c" not in read_shapes(path), "callers get their own dict, the cache stays as read"
