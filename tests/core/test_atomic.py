"""atomic_output leaves nothing half-written and never clobbers what the user made."""

import errno
import multiprocessing
import os
import subprocess
import sys
import threading
import time

import pytest
import torch

from flashvideo_core.atomic import atomic_output, claims


def assert_only_file(folder, target, content: bytes) -> None:
    """`folder` holds `target` with `content` and nothing else (no temporary file or claim left)."""
    assert target.read_bytes() == content
    assert list(folder.iterdir()) == [target]


def test_success_renames_into_place(tmp_path):
    target = tmp_path / "out.mp4"
    with atomic_output(target) as tmp:
        assert tmp.suffix == ".mp4" and tmp != target
        tmp.write_bytes(b"data")
    assert_only_file(tmp_path, target, b"data")


def test_failure_leaves_nothing_and_keeps_old_file(tmp_path):
    target = tmp_path / "out.mp4"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert_only_file(tmp_path, target, b"old")


def test_no_overwrite_refuses_before_work(tmp_path):
    target = tmp_path / "out.mp4"
    target.write_bytes(b"mine")
    with pytest.raises(FileExistsError):
        with atomic_output(target, overwrite=False):
            raise AssertionError("must not start")
    assert_only_file(tmp_path, target, b"mine")


def test_finished_file_gets_ordinary_permissions(tmp_path):
    target = tmp_path / "out.bin"
    with atomic_output(target) as tmp:
        tmp.write_bytes(b"x")
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_writer_that_makes_owner_only_files_publishes_ordinary_ones(tmp_path):
    """safetensors 0.8 creates its files 0600: a model written for another user's ComfyUI must stay readable."""
    from safetensors.torch import save_file

    target = tmp_path / "model.safetensors"
    with atomic_output(target) as tmp:
        save_file({"w": torch.zeros(2)}, str(tmp))
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


# --- claims: no two runs publish one name, a run that lost learns it before its work -----------------------

def _claim_name(target, pid, host=None, stamp=1):
    """A claim file name as atomic_output makes it (host: this machine unless given)."""
    return f".{target.name}.{host or claims.HOST}-{pid}-{stamp:016x}.partial{target.suffix}"


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def live_pid():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process.pid
    process.kill()
    process.wait()


def test_a_second_run_on_a_name_being_written_fails_before_its_work(tmp_path):
    """Run A claims out.mp4 and is writing; run B starts on the same name: B must fail at once, A publish."""
    target = tmp_path / "out.mp4"
    a_writing, b_tried, b_worked = threading.Event(), threading.Event(), []
    errors = {}

    def run_a():
        with atomic_output(target, overwrite=False) as tmp:
            a_writing.set()
            b_tried.wait(10)
            tmp.write_bytes(b"A")

    def run_b():
        a_writing.wait(10)
        try:
            with atomic_output(target, overwrite=False) as tmp:
                b_worked.append(True)  # the old code got here, wrote, then lost its file to A's name
                b_tried.set()
                tmp.write_bytes(b"B")
                time.sleep(0.2)  # A publishes meanwhile
        except FileExistsError as exc:
            errors["b"] = exc
        finally:
            b_tried.set()

    threads = [threading.Thread(target=run_a), threading.Thread(target=run_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert target.read_bytes() == b"A"
    assert "b" in errors and "out.mp4" in str(errors["b"]) and "being written by another run" in str(errors["b"])
    assert b_worked == [], "the run that lost must learn it before its work, not after"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def _publish_in_a_process(target: str, start: float, index: int) -> str:
    while time.time() < start:  # all processes claim at (nearly) the same instant
        pass
    try:
        with atomic_output(target, overwrite=False) as tmp:
            tmp.write_bytes(f"run {index}".encode())
            time.sleep(0.05)
        return "published"
    except FileExistsError as exc:
        return f"refused: {exc}"


def test_concurrent_processes_publishing_one_name_exactly_one_wins_and_nothing_is_lost(tmp_path):
    target = tmp_path / "out.mp4"
    start = time.time() + 1.0
    with multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn").Pool(4) as pool:
        results = pool.starmap(_publish_in_a_process, [(str(target), start, i) for i in range(4)])
    assert results.count("published") == 1, results
    winner = results.index("published")
    assert target.read_bytes() == f"run {winner}".encode()
    for outcome in results:
        if outcome != "published":  # refused before writing, or written and kept under another name
            assert any(why in outcome for why in ("being written by another run", "already exists", "kept as")), outcome
    kept = sorted(p for p in tmp_path.iterdir() if p != target)
    assert len(kept) == sum("kept as" in outcome for outcome in results)
    assert all(not p.name.startswith(".") for p in kept), "no claim left behind"


def test_a_file_appearing_while_writing_is_never_replaced_and_the_result_is_kept(tmp_path):
    """A program not using claims makes the name meanwhile: publishing must neither replace it nor lose ours."""
    target = tmp_path / "out.mp4"
    with pytest.raises(FileExistsError, match="kept as") as caught:
        with atomic_output(target, overwrite=False) as tmp:
            tmp.write_bytes(b"ours")
            target.write_bytes(b"theirs")
    assert target.read_bytes() == b"theirs"
    assert (tmp_path / "out_2.mp4").read_bytes() == b"ours" and "out_2.mp4" in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "out_2.mp4"]


def test_without_hard_links_publishing_still_never_replaces(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted (FAT)")

    monkeypatch.setattr(os, "link", no_links)
    target = tmp_path / "out.mp4"
    with atomic_output(target, overwrite=False) as tmp:
        tmp.write_bytes(b"first")
    assert target.read_bytes() == b"first"
    with pytest.raises(FileExistsError, match="kept as"):
        with atomic_output(tmp_path / "late.mp4", overwrite=False) as tmp:
            tmp.write_bytes(b"ours")
            (tmp_path / "late.mp4").write_bytes(b"theirs")
    assert (tmp_path / "late.mp4").read_bytes() == b"theirs" and (tmp_path / "late_2.mp4").read_bytes() == b"ours"


def test_overwrite_still_replaces_a_file_that_appeared(tmp_path):
    target = tmp_path / "out.mp4"
    with atomic_output(target, overwrite=True) as tmp:
        tmp.write_bytes(b"new")
        target.write_bytes(b"old")
    assert target.read_bytes() == b"new"


def test_a_live_claim_of_another_process_blocks_the_name_unless_overwriting(tmp_path, live_pid):
    target = tmp_path / "out.mp4"
    claim = tmp_path / _claim_name(target, live_pid)
    claim.write_bytes(b"")
    with pytest.raises(FileExistsError, match=f"process {live_pid}"):
        with atomic_output(target, overwrite=False):
            raise AssertionError("must not start")
    with atomic_output(target, overwrite=True) as tmp:
        tmp.write_bytes(b"forced")
    assert target.read_bytes() == b"forced" and claim.exists()


def test_stale_claims_of_gone_runs_are_cleaned_and_nothing_else(tmp_path, live_pid):
    """A killed run's hidden file is removed by the next run into the folder; live and foreign files stay."""
    target = tmp_path / "clip.mp4"
    dead = tmp_path / _claim_name(target, _dead_pid())
    dead_other_name = tmp_path / _claim_name(tmp_path / "other.mkv", _dead_pid())
    earlier_self = tmp_path / _claim_name(target, os.getpid())  # our pid, but not ours: a restarted container
    live = tmp_path / _claim_name(target, live_pid, stamp=2)
    other_machine = tmp_path / _claim_name(target, _dead_pid(), host="abcdef" if claims.HOST != "abcdef" else "fedcba")
    foreign = [tmp_path / ".clip.k3j4h5g6.partial.mp4", tmp_path / "notes.partial.mp4", tmp_path / "clip.mp4.txt"]
    for path in (dead, dead_other_name, earlier_self, live, other_machine, *foreign):
        path.write_bytes(b"x")
    with atomic_output(tmp_path / "next.mp4", overwrite=False) as tmp:
        tmp.write_bytes(b"next")
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {live.name, other_machine.name, *(p.name for p in foreign), "next.mp4"}


def test_a_failed_run_removes_the_folders_it_made(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_output(tmp_path / "new" / "videos" / "out.mp4", overwrite=False):
            raise RuntimeError("out of memory")
    assert list(tmp_path.iterdir()) == []


def test_generate_takes_the_next_names_while_another_run_holds_them(tmp_path):
    """Two generate runs with one prompt and seed: the second claims <slug>_<seed>_2_* before its work."""
    from flashvideo_core.pipeline import _claimed_names

    with _claimed_names(tmp_path, "a_fox", 7, ("stage1", "stage2")) as first:
        with _claimed_names(tmp_path, "a_fox", 7, ("stage1", "stage2")) as second:
            assert [c.target.name for c in first.values()] == ["a_fox_7_stage1.mp4", "a_fox_7_stage2.mp4"]
            assert [c.target.name for c in second.values()] == ["a_fox_7_2_stage1.mp4", "a_fox_7_2_stage2.mp4"]
    assert list(tmp_path.iterdir()) == []
