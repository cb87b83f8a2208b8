"""The Hugging Face helper is explicit and fails clearly offline."""

import pytest

from flashvideo_core.errors import FlashVideoInputError
from flashvideo_core.weights.hub import PUBLISHED_FILES, DownloadError, download_weights


def test_published_files_are_listed():
    names = {f.filename for files in PUBLISHED_FILES.values() for f in files}
    assert {"stage1.pt", "stage2.pt", "3d-vae.pt", "tokenizer/spiece.model"} <= names


def test_offline_download_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DownloadError, match="offline"):
        download_weights(tmp_path, ["vae"])


def test_unknown_file_key(tmp_path):
    with pytest.raises(FlashVideoInputError, match="unknown"):
        download_weights(tmp_path, ["stage3"])


def test_download_progress_is_reported_in_mb_from_the_resumed_point_and_a_cancel_stops_it():
    from flashvideo_core.weights.hub import MB, reporting_bar

    events = []
    bar_class = reporting_bar(events.append, "download stage2.pt (1/1)")
    bar = bar_class(unit="B", unit_scale=True, total=10 * MB, initial=4 * MB, desc="stage2.pt", disable=True)
    bar.update(2 * MB)
    bar.update(4 * MB)
    assert [(e.phase, e.step, e.total) for e in events] == [
        ("download stage2.pt (1/1)", 6, 10), ("download stage2.pt (1/1)", 10, 10)]

    class Cancelled(Exception):
        pass

    def cancel(event):
        raise Cancelled

    with pytest.raises(Cancelled):
        reporting_bar(cancel, "download")(total=MB, disable=True).update(MB // 2)


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_a_failed_download_removes_the_folders_and_locks_it_created(tmp_path, offline):
    target = tmp_path / "new" / "weights"
    with pytest.raises(DownloadError):
        download_weights(target, ["vae"])
    assert list(tmp_path.iterdir()) == [], "the run made new/weights/.cache/huggingface/...; nothing may stay"


def test_a_failed_download_keeps_everything_the_user_had(tmp_path, offline):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "text_encoder").mkdir()
    (tmp_path / "text_encoder" / "old.json").write_text("{}")
    with pytest.raises(DownloadError):
        download_weights(tmp_path, ["t5"])
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert files == ["notes.txt", "text_encoder", "text_encoder/old.json"]


def test_a_failed_download_keeps_a_partial_file_to_resume_from(tmp_path, offline):
    cache = tmp_path / ".cache" / "huggingface" / "download"
    cache.mkdir(parents=True)
    partial = cache / "3d-vae.pt.abc123.incomplete"
    partial.write_bytes(b"x" * 100)
    with pytest.raises(DownloadError):
        download_weights(tmp_path, ["vae"])
    assert partial.read_bytes() == b"x" * 100
    assert not list(cache.glob("*.lock")), "the lock this run took is released and removed"
