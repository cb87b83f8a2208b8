"""Video files in and out: exact frame counts, fps and audio pass-through, odd sizes, bad files, atomic writes."""

from __future__ import annotations

import subprocess
from fractions import Fraction

import imageio_ffmpeg
import numpy as np
import pytest

from flashvideo_core.errors import FlashVideoInputError
from flashvideo_core.video import iter_frames, probe_video, square_pixel_size, to_rgb_uint8, write_video


def _ffmpeg(*args: str) -> None:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", *args], check=True)


def _clip(path, size="48x32", rate="8", seconds="1", audio_codec: str | None = "aac"):
    """A test-pattern clip (and a sine tone unless audio_codec is None)."""
    args = ["-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}"]
    if audio_codec:
        args += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-c:a", audio_codec]
    _ffmpeg(*args, "-t", seconds, "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path))
    return path


def _image(path, pix_fmt):
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=48x32", "-frames:v", "1", "-pix_fmt", pix_fmt, str(path))
    return path


def _frames(count, height=32, width=48):
    for i in range(count):
        frame = np.zeros((height, width, 3), np.uint8)
        frame[..., 0] = (i * 40) % 256
        frame[: height // 2, :, 1] = 200
        yield frame


def test_probe_and_iter_give_the_exact_frame_count_and_ntsc_rate(tmp_path):
    src = _clip(tmp_path / "in.mp4", rate="30000/1001", seconds="0.5")
    info = probe_video(src)
    frames = list(iter_frames(src, info))
    assert info.fps == Fraction(30000, 1001)
    assert (info.width, info.height, info.has_audio, info.audio_codec) == (48, 32, True, "aac")
    assert len(frames) == info.num_frames == 15
    assert all(f.shape == (32, 48, 3) and f.dtype == np.uint8 for f in frames)


def test_fps_and_audio_survive_a_file_round_trip(tmp_path):
    src = _clip(tmp_path / "in.mp4", rate="12.5", seconds="1")
    out = write_video(tmp_path / "out.mp4", iter_frames(src), fps=probe_video(src).fps, audio_from=src)
    a, b = probe_video(src), probe_video(out)
    assert (b.num_frames, b.fps, b.width, b.height) == (a.num_frames, Fraction(25, 2), 48, 32)
    assert b.has_audio and b.audio_codec == "aac"


def test_pcm_audio_is_copied_into_mkv_and_reencoded_for_mp4(tmp_path):
    src = _clip(tmp_path / "in.mov", audio_codec="pcm_s16le", seconds="0.5")
    mkv = write_video(tmp_path / "out.mkv", iter_frames(src), 8, audio_from=src)
    mp4 = write_video(tmp_path / "out.mp4", iter_frames(src), 8, audio_from=src)
    assert probe_video(mkv).audio_codec == "pcm_s16le"
    assert probe_video(mp4).audio_codec == "aac"


def test_audio_from_a_silent_file_writes_video_only(tmp_path):
    src = _clip(tmp_path / "in.mp4", audio_codec=None, seconds="0.5")
    assert not probe_video(write_video(tmp_path / "out.mp4", iter_frames(src), 8, audio_from=src)).has_audio


def test_odd_sizes_are_written_at_their_exact_size(tmp_path):
    out = write_video(tmp_path / "odd.mp4", _frames(5, 33, 47), fps=8)
    info = probe_video(out)
    assert (info.height, info.width, info.num_frames) == (33, 47, 5)


def test_written_frames_come_back_close_to_the_originals(tmp_path):
    frames = list(_frames(9))
    back = list(iter_frames(write_video(tmp_path / "v.mp4", iter(frames), fps=8, crf=0)))
    assert len(back) == 9
    assert max(np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(frames, back, strict=True)) < 3


@pytest.mark.parametrize(
    ("pix_fmt", "note"), [("rgba", "alpha channel dropped"), ("gray16be", "16-bit"), ("gray", "grayscale")]
)
def test_alpha_gray_and_16_bit_images_read_as_rgb_with_a_note(tmp_path, pix_fmt, note):
    info = probe_video(_image(tmp_path / f"{pix_fmt}.png", pix_fmt))
    (frame,) = list(iter_frames(info.path, info))
    assert frame.shape == (32, 48, 3) and frame.dtype == np.uint8 and info.num_frames == 1
    assert any(note in n for n in info.notes)
    if "gray" in pix_fmt:
        assert np.array_equal(frame[..., 0], frame[..., 1]) and np.array_equal(frame[..., 1], frame[..., 2])


@pytest.mark.parametrize("kind", ["missing", "empty", "garbage", "audio_only"])
def test_unreadable_files_raise_an_error_naming_the_file(tmp_path, kind):
    path = tmp_path / ("clip.m4a" if kind == "audio_only" else "clip.mp4")
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(b"not a video at all")
    elif kind == "audio_only":
        _ffmpeg("-f", "lavfi", "-i", "sine", "-t", "0.2", str(path))
    with pytest.raises(FlashVideoInputError, match="clip"):
        probe_video(path)


def test_a_failure_while_writing_leaves_no_file(tmp_path):
    def failing():
        yield from _frames(3)
        raise RuntimeError("model crashed")

    with pytest.raises(RuntimeError, match="model crashed"):
        write_video(tmp_path / "out.mp4", failing(), fps=8)
    assert list(tmp_path.iterdir()) == []


def test_write_refuses_to_overwrite_and_bad_arguments(tmp_path):
    existing = tmp_path / "keep.mp4"
    existing.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        write_video(existing, _frames(2), fps=8, overwrite=False)
    assert existing.read_bytes() == b"precious"
    with pytest.raises(FlashVideoInputError, match="no frames"):
        write_video(tmp_path / "none.mp4", iter([]), fps=8)
    with pytest.raises(FlashVideoInputError, match="must end in"):
        write_video(tmp_path / "x.gif", _frames(2), fps=8)
    with pytest.raises(FlashVideoInputError, match="fps"):
        write_video(tmp_path / "x.mp4", _frames(2), fps=0)


def test_to_rgb_uint8_handles_gray_alpha_16_bit_and_float():
    gray = np.full((4, 5), 7, np.uint8)
    assert to_rgb_uint8(gray).shape == (4, 5, 3) and to_rgb_uint8(gray)[0, 0].tolist() == [7, 7, 7]
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 3] = 255
    assert to_rgb_uint8(rgba).shape == (4, 5, 3) and to_rgb_uint8(rgba).max() == 0
    assert to_rgb_uint8(np.full((2, 2, 3), 65535, np.uint16)).max() == 255
    assert to_rgb_uint8(np.full((2, 2, 3), 0.5, np.float32))[0, 0, 0] == 128
    with pytest.raises(FlashVideoInputError):
        to_rgb_uint8(np.zeros((2, 2, 2), np.uint8))


def test_a_variable_frame_rate_clip_reads_exactly_the_frames_probe_video_counted(tmp_path):
    """Phone clips are often VFR: read at a constant rate, the count must still be exactly probe_video's."""
    path = tmp_path / "vfr.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
                    "testsrc=size=64x48:rate=30", "-t", "1", "-vf",
                    "setpts='if(lt(N,15),N/30/TB,(15+(N-15)*3)/30/TB)'", "-fps_mode", "vfr",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)], check=True)
    info = probe_video(path)
    frames = list(iter_frames(path, info))
    assert info.num_frames == len(frames) == 25  # 20 stored frames over 1 s, read at the average 25 fps
    assert any("20 stored frames read as 25" in note for note in info.notes)


def test_written_video_is_bt709_encoded_and_tagged(tmp_path):
    """Players decode HD video as BT.709: the colours must survive that decode, not only ours."""
    path = tmp_path / "colour.mp4"
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[:, :32] = (200, 30, 60)
    frame[:, 32:] = (20, 200, 40)
    write_video(path, iter([frame] * 3), fps=8)
    info = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                          capture_output=True, text=True).stderr
    assert "bt709" in info
    as_player = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-vf",
         "scale=in_color_matrix=bt709:in_range=tv", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True).stdout
    decoded = np.frombuffer(as_player, np.uint8).reshape(-1, 64, 64, 3)[0].astype(int)
    assert np.abs(decoded[16, 8] - (200, 30, 60)).max() <= 6
    assert np.abs(decoded[16, 56] - (20, 200, 40)).max() <= 6


def _anamorphic_clip(path, rotation: int = 0):
    """A 64x36 square-pixel picture (bright bar at columns 16-31) stored squeezed as 48x36 with 4:3 pixels."""
    frame = np.full((36, 64, 3), 30, np.uint8)
    frame[:, 16:32] = 220
    square = write_video(path.with_name("square.mp4"), iter([frame] * 4), fps=8)
    _ffmpeg("-i", str(square), "-vf", "scale=48:36,setsar=4/3", "-c:v", "libx264", "-pix_fmt", "yuv420p",
            str(path.with_name("squeezed.mp4")))
    _ffmpeg(*(["-display_rotation", str(rotation)] if rotation else []), "-i", str(path.with_name("squeezed.mp4")),
            "-c", "copy", str(path))
    return path


def test_square_pixel_size_grows_one_edge_to_the_displayed_shape():
    assert square_pixel_size(1440, 1080, Fraction(4, 3)) == (1920, 1080)
    assert square_pixel_size(720, 480, Fraction(8, 9)) == (720, 540)
    assert square_pixel_size(720, 576, Fraction(16, 15)) == (768, 576)
    assert square_pixel_size(100, 100, Fraction(1001, 1000)) == (100, 100)
    assert square_pixel_size(48, 36, Fraction(1)) == (48, 36)


def test_non_square_pixels_are_resampled_to_the_displayed_shape(tmp_path):
    """An anamorphic clip must come out at the shape a player shows, not squeezed (written as square pixels)."""
    src = _anamorphic_clip(tmp_path / "anamorphic.mp4")
    info = probe_video(src)
    assert (info.width, info.height, info.stored_width, info.stored_height) == (64, 36, 48, 36)
    assert info.pixel_aspect == Fraction(4, 3) and any("non-square pixels" in note for note in info.notes)
    frames = list(iter_frames(src, info))
    assert len(frames) == 4 and frames[0].shape == (36, 64, 3)
    columns = frames[0][18, :, 0].astype(int)
    assert columns[18:30].min() > 180 and columns[:13].max() < 80 and columns[35:].max() < 80
    out = probe_video(write_video(tmp_path / "out.mp4", frames, fps=8))
    assert (out.width, out.height, out.pixel_aspect) == (64, 36, 1)


def test_a_rotated_clip_with_non_square_pixels_is_displayed_upright_and_unsqueezed(tmp_path):
    info = probe_video(_anamorphic_clip(tmp_path / "rotated.mp4", rotation=90))
    assert (info.width, info.height, info.pixel_aspect) == (36, 64, Fraction(3, 4))
    assert next(iter_frames(info.path, info)).shape == (64, 36, 3)


def test_an_interrupt_arriving_as_ffmpeg_starts_kills_it_and_leaves_no_file(tmp_path, monkeypatch):
    """A Ctrl-C held while ffmpeg starts is delivered as the hold ends: ffmpeg must still be killed."""
    import contextlib

    from flashvideo_core.video import write as video_write

    started = []
    real_popen = subprocess.Popen

    def recording_popen(*args, **kwargs):
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    @contextlib.contextmanager
    def interrupt_on_release():
        yield
        raise KeyboardInterrupt  # what the pending SIGINT does the moment the mask is lifted

    monkeypatch.setattr(video_write.subprocess, "Popen", recording_popen)
    monkeypatch.setattr(video_write, "signals_held", interrupt_on_release)
    with pytest.raises(KeyboardInterrupt):
        write_video(tmp_path / "out.mp4", _frames(3), fps=8)
    (writer,) = [process for process in started if "rawvideo" in process.args]  # not imageio's version probe
    assert writer.poll() is not None, "ffmpeg was left running"
    assert list(tmp_path.iterdir()) == []


def test_write_video_claims_the_name_before_pulling_the_first_frame(tmp_path):
    """Enhance's frames are computed as write_video pulls them: a name another run holds must fail first."""
    from flashvideo_core.atomic import atomic_output

    pulled = []

    def computed_frames():
        pulled.append("the first window was computed")
        yield from _frames(2)

    target = tmp_path / "out.mp4"
    with atomic_output(target, overwrite=False) as tmp:  # another run, writing out.mp4 right now
        with pytest.raises(FileExistsError, match="being written by another run"):
            write_video(target, computed_frames(), fps=8, overwrite=False)
        tmp.write_bytes(b"the other run's video")
    assert pulled == [] and target.read_bytes() == b"the other run's video"
