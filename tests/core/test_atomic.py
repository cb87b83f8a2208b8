"""atomic_output leaves nothing half-written and never clobbers what the user made."""

import pytest

from flashvideo_core.atomic import atomic_output


def test_success_renames_into_place(tmp_path):
    target = tmp_path / "out.mp4"
    with atomic_output(target) as tmp:
        assert tmp.suffix == ".mp4" and tmp != target
        tmp.write_bytes(b"data")
    assert target.read_bytes() == b"data"
    assert list(tmp_path.iterdir()) == [target]


def test_failure_leaves_nothing_and_keeps_old_file(tmp_path):
    target = tmp_path / "out.mp4"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]


def test_no_overwrite_refuses_before_work(tmp_path):
    target = tmp_path / "out.mp4"
    target.write_bytes(b"mine")
    with pytest.raises(FileExistsError):
        with atomic_output(target, overwrite=False):
            raise AssertionError("must not start")
    assert target.read_bytes() == b"mine"


def test_finished_file_gets_ordinary_permissions(tmp_path):
    import os

    target = tmp_path / "out.bin"
    with atomic_output(target) as tmp:
        tmp.write_bytes(b"x")
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
