"""Tiny weights are written atomically: an interrupted or concurrent run never leaves half a folder."""

import pytest
from transformers import T5EncoderModel

from flashvideo_core.cli import main
from flashvideo_core.weights import tiny
from flashvideo_core.weights.loaders import find_weights
from flashvideo_core.weights.tiny import COMPLETE, TINY_NAMES, ensure_tiny_weights, write_tiny_weights


def _interrupt_the_t5_save(monkeypatch):
    """Ctrl-C while the T5 encoder is saved: the .pt files and spiece.model are already written."""

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(T5EncoderModel, "save_pretrained", interrupted)


def _assert_complete(folder):
    found = find_weights(folder)
    found.require("stage1", "stage2", "vae", "text_encoder", "tokenizer")
    assert (folder / "tokenizer" / "spiece.model").stat().st_size > 0
    assert (folder / "text_encoder" / "model.safetensors").stat().st_size > 0


@pytest.mark.parametrize("user_files", [[], ["notes.txt"]], ids=["new folder", "existing folder"])
def test_an_interrupted_write_leaves_the_target_as_it_was_and_a_rerun_succeeds(tmp_path, monkeypatch, user_files):
    dest = tmp_path / "weights"
    for name in user_files:
        dest.mkdir(exist_ok=True)
        (dest / name).write_text("mine")
    _interrupt_the_t5_save(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        write_tiny_weights(dest)
    if user_files:
        assert sorted(p.name for p in tmp_path.iterdir()) == ["weights"]
        assert sorted(p.name for p in dest.iterdir()) == user_files  # no partial files, no temporary folder
    else:
        assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    paths = write_tiny_weights(dest)
    assert set(paths) == set(TINY_NAMES) and all(path.parent == dest for path in paths.values())
    _assert_complete(dest)
    assert sorted(p.name for p in dest.iterdir()) == sorted([*TINY_NAMES.values(), *user_files])
    assert all((dest / name).read_text() == "mine" for name in user_files)


def test_tiny_weights_never_overwrite_a_file_of_the_same_name(tmp_path, capsys):
    dest = tmp_path / "weights"
    dest.mkdir()
    (dest / "stage2.pt").write_bytes(b"user data")
    with pytest.raises(FileExistsError, match="stage2.pt"):
        write_tiny_weights(dest)
    assert main(["tiny-weights", str(dest)]) == 2
    assert "already holds stage2.pt" in capsys.readouterr().err
    assert [p.name for p in dest.iterdir()] == ["stage2.pt"]
    assert (dest / "stage2.pt").read_bytes() == b"user data"


def test_an_interrupted_cache_build_leaves_no_cache_and_the_next_call_builds_it(tmp_path, monkeypatch):
    monkeypatch.setenv("FLASHVIDEO_CACHE", str(tmp_path / "cache"))
    _interrupt_the_t5_save(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        ensure_tiny_weights()
    assert list((tmp_path / "cache").iterdir()) == []
    monkeypatch.undo()
    monkeypatch.setenv("FLASHVIDEO_CACHE", str(tmp_path / "cache"))
    target = ensure_tiny_weights()
    assert target == tmp_path / "cache" / f"tiny-v{tiny.TINY_VERSION}"
    assert (target / COMPLETE).exists()
    _assert_complete(target)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [target.name]


def _fake_writer(calls):
    def write(folder, seed):
        calls.append(folder)
        (folder / "stage1.pt").write_text("ours")

    return write


def test_a_cache_another_process_finished_first_is_used(tmp_path, monkeypatch):
    target = tmp_path / "tiny-v1"
    calls = []

    def write_while_another_process_finishes(folder, seed):
        _fake_writer(calls)(folder, seed)
        target.mkdir()
        (target / "stage1.pt").write_text("theirs")
        (target / COMPLETE).write_text("done")

    monkeypatch.setattr(tiny, "_write_files", write_while_another_process_finishes)
    assert ensure_tiny_weights(target) == target
    assert (target / "stage1.pt").read_text() == "theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["tiny-v1"]  # our build was thrown away
    assert ensure_tiny_weights(target) == target and len(calls) == 1  # complete: not built again


def test_a_half_cache_of_an_older_version_is_replaced_but_a_foreign_folder_is_not(tmp_path, monkeypatch):
    monkeypatch.setattr(tiny, "_write_files", _fake_writer([]))
    half = tmp_path / "half"
    half.mkdir()
    (half / "stage1.pt").write_text("truncated")
    ensure_tiny_weights(half)
    assert (half / COMPLETE).exists() and (half / "stage1.pt").read_text() == "ours"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["half"]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "my_video.mp4").write_text("mine")
    with pytest.raises(FileExistsError, match="not a finished tiny-weights folder"):
        ensure_tiny_weights(foreign)
    assert [p.name for p in foreign.iterdir()] == ["my_video.mp4"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign", "half"]
