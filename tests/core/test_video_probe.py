"""Probing a file costs one ffmpeg run; reading frames changes no logging setup; ffmpeg's header is read right."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from fractions import Fraction

import imageio_ffmpeg
import pytest

from flashvideo_core.video import iter_frames, probe_video
from flashvideo_core.video.ffmpeg_log import parse_count, parse_input_header


def _ffmpeg(*args) -> None:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", *map(str, args)], check=True)


def _clip(path, vf="null", rotation: int = 0):
    """A 0.5 s 48x32 test clip at 8 fps with a sine tone, through the filter `vf` (e.g. to store non-square pixels)."""
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=48x32:rate=8", "-f", "lavfi", "-i", "sine", "-t", "0.5", "-vf", vf,
            "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", path.with_name("plain_" + path.name))
    _ffmpeg(*(["-display_rotation", rotation] if rotation else []), "-i", path.with_name("plain_" + path.name),
            "-c", "copy", path)
    return path


@pytest.fixture
def started(monkeypatch):
    """The argument lists of the processes started (subprocess.run and imageio-ffmpeg go through Popen)."""
    imageio_ffmpeg.get_ffmpeg_exe()  # its one-off check of the binary is not the probe's
    commands = []
    real_popen = subprocess.Popen

    def recording_popen(args, *rest, **kwargs):
        commands.append(list(args))
        return real_popen(args, *rest, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", recording_popen)
    return commands


@pytest.mark.parametrize(("vf", "rotation"), [("null", 0), ("scale=36:32,setsar=4/3", 90)])
def test_probe_video_starts_one_ffmpeg_and_a_whole_read_two(tmp_path, started, vf, rotation):
    """Metadata, pixel aspect, rotation and the exact frame count all come from one run (it was three)."""
    src = _clip(tmp_path / "clip.mp4", vf, rotation)
    started.clear()
    info = probe_video(src)
    assert len(started) == 1, [" ".join(map(str, cmd[1:])) for cmd in started]
    frames = list(iter_frames(src, info))
    assert len(started) == 2
    assert len(frames) == info.num_frames == 4 and info.has_audio and info.fps == 8
    if rotation:
        assert (info.width, info.height, info.pixel_aspect, info.stored_width) == (32, 48, Fraction(3, 4), 32)
        assert frames[0].shape == (48, 32, 3)


def test_a_file_that_stores_no_frame_rate_takes_a_second_run_at_frames_per_second(tmp_path, started):
    """A .nut of irregular timestamps prints no average rate: the first run counts, the second reads at the rate."""
    src = tmp_path / "vfr.nut"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=48x32:rate=30", "-t", "1", "-vf",
            "setpts='if(lt(N,15),N/30/TB,(15+(N-15)*3)/30/TB)'", "-fps_mode", "vfr", src)
    started.clear()
    info = probe_video(src)
    assert len(started) == 2 and any("frame rate not stored" in note for note in info.notes)
    assert len(list(iter_frames(src, info))) == info.num_frames


def test_an_ffmpeg_that_refuses_the_filter_file_option_gets_the_other_spelling(tmp_path, started, monkeypatch):
    """`-/vf` (ffmpeg >= 7.1) and `-filter_script:v` (older): whichever this ffmpeg refuses moves to the end."""
    from flashvideo_core.video import ffmpeg_run

    monkeypatch.setattr(ffmpeg_run, "_FILTER_FROM_FILE", ["-filter_script:v", "-/vf"])
    src = _clip(tmp_path / "clip.mp4")
    started.clear()
    assert probe_video(src).num_frames == 4
    used = ffmpeg_run._FILTER_FROM_FILE[0]
    assert used in started[-1] and len(started) == (1 if used == "-filter_script:v" else 2)
    started.clear()
    probe_video(src)
    assert len(started) == 1


def test_importing_the_video_package_changes_no_logger():
    """The frame-size warning filter of imageio-ffmpeg used to be installed on import, for every caller."""
    code = (
        "import logging, imageio_ffmpeg\n"
        "def filters():\n"
        "    loggers = [logging.getLogger(), *(v for v in logging.Logger.manager.loggerDict.values()\n"
        "               if isinstance(v, logging.Logger))]\n"
        "    return {l.name: list(l.filters) for l in loggers if l.filters}\n"
        "before = filters()\n"
        "import flashvideo_core.video  # and with it every module of the package\n"
        "after = filters()\n"
        "assert after == before, (before, after)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_expected_resize_warning_is_dropped_only_while_reading(tmp_path, caplog):
    """Reading a rotated, anamorphic clip logs no imageio size warning and leaves imageio's logger as it was."""
    from flashvideo_core.video.read import _expected_resize_quiet

    imageio_logger = logging.getLogger("imageio_ffmpeg")
    before = list(imageio_logger.filters)
    src = _clip(tmp_path / "clip.mp4", "scale=36:32,setsar=4/3", rotation=90)
    with caplog.at_level(logging.WARNING):
        assert next(iter_frames(src)).shape == (48, 32, 3)
    assert not [r for r in caplog.records if r.getMessage().startswith("The frame size for reading")]
    assert imageio_logger.filters == before
    message = "The frame size for reading (32, 48) is different from the source frame size (36, 32)."
    with caplog.at_level(logging.WARNING), _expected_resize_quiet():
        other = threading.Thread(target=imageio_logger.warning, args=(message,))
        other.start()
        other.join()
        imageio_logger.warning(message)
    assert len([r for r in caplog.records if r.getMessage() == message]) == 1  # the other thread's is kept


VERBOSE_HEADER = """\
[h264 @ 0x1] Reinit context to 48x32, pix_fmt: yuv420p
Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'rot.mp4':
  Duration: 00:01:02.50, start: 0.000000, bitrate: 37 kb/s
  Stream #0:0[0x1](und): Video: h264 (High), 1 reference frame (avc1 / 0x31637661), \
yuv420p10le(tv, bt709, progressive, left), 48x36 (48x48) [SAR 4:3 DAR 16:9], 22 kb/s, 29.97 fps, 29.97 tbr (default)
    Metadata:
      handler_name    : VideoHandler
    Side data:
      Display Matrix: rotation of -90.00 degrees
  Stream #0:1[0x2](und): Audio: opus, 48000 Hz, stereo, fltp (default)
  Stream #0:2[0x3](und): Video: mjpeg (Baseline), yuvj420p(pc), 600x600 [SAR 1:1 DAR 1:1], 90k tbn (attached pic)
"""


def test_the_input_header_is_read_in_ffmpegs_verbose_form():
    header = parse_input_header(VERBOSE_HEADER)
    assert (header.pix_fmt, header.fps, header.duration, header.audio_codec) == ("yuv420p10le", 29.97, 62.5, "opus")
    assert header.size == (36, 48) and header.pixel_aspect == Fraction(3, 4)  # turned by 90 degrees
    unturned = parse_input_header(VERBOSE_HEADER.replace("-90.00", "180.00"))
    assert unturned.size == (48, 36) and unturned.pixel_aspect == Fraction(4, 3)


def test_a_header_without_rate_sar_video_or_input_is_read_as_such():
    bare = parse_input_header("Input #0, nut, from 'a.nut':\n  Duration: N/A, bitrate: N/A\n"
                              "  Stream #0:0: Video: mpeg4 (FMP4 / 0x34504D46), yuv420p, 48x32, 30 tbr, 61440 tbn\n")
    assert (bare.fps, bare.duration, bare.pixel_aspect, bare.size, bare.audio_codec) == (0.0, 0.0, 1, (48, 32), None)
    audio_only = parse_input_header("Input #0, wav, from 'a.wav':\n  Stream #0:0: Audio: pcm_s16le, 44100 Hz\n")
    assert not audio_only.has_video and audio_only.audio_codec == "pcm_s16le"
    assert parse_input_header("a.mp4: Invalid data found when processing input\n") is None


def test_frame_counts_come_from_the_last_progress_and_fps_filter_lines():
    log = ("[Parsed_fps_0 @ 0x2] 0 frames in, 0 frames out; 0 frames dropped, 0 frames duplicated.\n"
           "frame=   10 fps=0.0 q=-0.0 size=N/A time=00:00:00.40\n"
           "[Parsed_fps_0 @ 0x2] 20 frames in, 25 frames out; 1 frames dropped, 6 frames duplicated.\n"
           "frame=   25 fps=0.0 q=-0.0 Lsize=N/A time=00:00:01.00 bitrate=N/A\n")
    count = parse_count(log)
    assert (count.frames_out, count.frames_in, count.repeated, count.dropped, count.seconds) == (25, 20, 6, 1, 1.0)
