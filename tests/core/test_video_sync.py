"""A clip read and written back (the enhance path: iter_frames -> write_video with the source's audio)
keeps every frame at its time and in sync with the audio, whatever the source's timestamps.

Frames are flat gray, the level encoding the source frame's index; a beep marks a known time. Each
output frame is found by its level and must show at the time that frame showed in the source.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np

from flashvideo_core.video import iter_frames, probe_video, write_video

# Irregular timestamps (a phone clip that slowed down): fast at the start, slow later.
TIMES = [0.0, 0.04, 0.08, 0.12, 0.16, 0.2, 0.24, 0.28, 0.32, 0.44, 0.52, 0.72, 0.92, 1.0, 1.2, 1.4]
END = 1.5
BEEP_FRAME = 12  # the beep starts as frame 12 shows (0.92 s)
TOLERANCE = 0.04  # seconds


def _ffmpeg(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-y", *map(str, args)], capture_output=True,
                          check=True, **kwargs)


def _level(index: int) -> int:
    return 20 + 13 * index


def _vfr_clip_with_beep(folder: Path, video_delay: float = 0.0) -> Path:
    """Gray frames shown at TIMES (+ video_delay), 1.5 s of audio (from 0) beeping at TIMES[BEEP_FRAME] + delay."""
    raw = b"".join(np.full((32, 48), _level(k), np.uint8).tobytes() for k in range(len(TIMES)))
    _ffmpeg("-v", "error", "-f", "rawvideo", "-pix_fmt", "gray", "-s", "48x32", "-i", "-", "-start_number", "0",
            str(folder / "f%02d.png"), input=raw)
    entries = []
    for k, start in enumerate([*TIMES, END][:-1]):
        entries += [f"file 'f{k:02d}.png'", f"duration {[*TIMES, END][k + 1] - start:.3f}"]
    (folder / "frames.txt").write_text("\n".join(entries) + "\n")
    beep = TIMES[BEEP_FRAME] + video_delay
    _ffmpeg("-v", "error", "-itsoffset", str(video_delay), "-f", "concat", "-safe", "0", "-i", folder / "frames.txt",
            "-f", "lavfi", "-i", f"aevalsrc=0.8*sin(2*PI*880*t)*between(t\\,{beep}\\,{beep + 0.08}):s=44100:d={END}",
            "-fps_mode", "vfr", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(folder / "vfr.mp4"))
    return folder / "vfr.mp4"


def _shown_frames(path: Path) -> list[tuple[float, int]]:
    """(presentation time in s, source frame index read from the gray level) of every stored frame of `path`."""
    log = _ffmpeg("-i", str(path), "-map", "0:v:0", "-fps_mode", "passthrough", "-vf", "showinfo", "-f", "null",
                  "-").stderr.decode()
    shown = []
    for line in log.splitlines():
        if "pts_time:" in line:
            luma = float(re.search(r"mean:\[(\d+)", line).group(1))  # BT.709 TV range: 16 + level * 219 / 255
            shown.append((float(re.search(r"pts_time:(\S+)", line).group(1)),
                          round(((luma - 16) * 255 / 219 - 20) / 13)))
    return shown


def _audio(path: Path) -> tuple[float, float]:
    """(beep onset, audio length) in seconds on the file's timeline (audio padded back to time 0)."""
    pcm = _ffmpeg("-v", "error", "-i", str(path), "-map", "0:a:0", "-af", "aresample=async=1:first_pts=0", "-ac", "1",
                  "-ar", "8000", "-f", "s16le", "-").stdout
    level = np.abs(np.frombuffer(pcm, np.int16).astype(float))
    return float(np.argmax(level > 0.3 * level.max())) / 8000, len(level) / 8000


def _assert_each_frame_shows_at_its_source_time(out: Path, delay: float, interval: float) -> None:
    starts = [0.0] + [t + delay for t in TIMES[1:]]  # frame 0 also fills a gap before a delayed video
    ends = [*starts[1:], END + delay]
    for time, index in _shown_frames(out):
        assert starts[index] - interval - TOLERANCE <= time < ends[index] + TOLERANCE, (
            f"source frame {index} (shown {starts[index]:.2f}-{ends[index]:.2f} s) is at {time:.3f} s in the output"
        )


def _round_trip(src: Path) -> Path:
    """What enhance_video_file does with a file (minus the model): read every frame, write them at the probed fps."""
    info = probe_video(src)
    frames = list(iter_frames(src, info))
    assert len(frames) == info.num_frames
    return write_video(src.with_name("out.mp4"), iter(frames), fps=info.fps, audio_from=src)


def test_a_variable_frame_rate_clip_keeps_every_frame_at_its_time_and_the_audio_in_sync(tmp_path):
    src = _vfr_clip_with_beep(tmp_path)
    shown = _shown_frames(src)
    assert [index for _, index in shown] == list(range(len(TIMES)))  # the clip is what the test thinks it is
    assert all(abs(time - expected) < 0.005 for (time, _), expected in zip(shown, TIMES, strict=True))
    out = _round_trip(src)
    info = probe_video(out)
    interval = 1 / float(info.fps)
    _assert_each_frame_shows_at_its_source_time(out, 0.0, interval)
    beep, audio_length = _audio(out)
    assert abs(beep - TIMES[BEEP_FRAME]) < 0.01 and abs(audio_length - END) < 0.03
    first_beep_frame = min(time for time, index in _shown_frames(out) if index >= BEEP_FRAME)
    assert abs(first_beep_frame - beep) <= interval
    video_length = info.num_frames * interval
    assert abs(video_length - audio_length) <= interval + TOLERANCE


def test_video_starting_after_the_audio_keeps_its_offset(tmp_path):
    """The first frame is repeated back to time 0 so that the written video (which starts at 0) keeps the gap."""
    src = _vfr_clip_with_beep(tmp_path, video_delay=0.3)
    out = _round_trip(src)
    interval = 1 / float(probe_video(out).fps)
    _assert_each_frame_shows_at_its_source_time(out, 0.3, interval)
    beep, _ = _audio(out)
    assert abs(beep - (TIMES[BEEP_FRAME] + 0.3)) < 0.01
    assert abs(min(time for time, index in _shown_frames(out) if index >= BEEP_FRAME) - beep) <= interval
