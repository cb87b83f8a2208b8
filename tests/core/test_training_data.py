"""Training data: scan a folder (videos, images, captions), check sizes and lengths, draw random samples;
caption embeddings cached on disk."""

from fractions import Fraction

import numpy as np
import pytest
import torch
from PIL import Image

from flashvideo_core.errors import FlashVideoInputError
from flashvideo_core.rng import cpu_generator
from flashvideo_core.training.captions import CaptionCache
from flashvideo_core.training.data import DataSettings, check_media, scan_media
from flashvideo_core.training.media import draw_sample
from flashvideo_core.video import write_video


def _frames(count, height, width):
    """Frames whose red channel is the frame index x 20 (readable back through H.264) and green a ramp."""
    out = []
    for index in range(count):
        frame = np.zeros((height, width, 3), np.uint8)
        frame[..., 0] = 20 * index
        frame[..., 1] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
        out.append(frame)
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    (root / "sub").mkdir()
    write_video(root / "sub" / "long.mp4", _frames(9, 48, 64), fps=8)
    (root / "sub" / "long.txt").write_text("  a red ramp \n", encoding="utf-8")
    write_video(root / "short.mp4", _frames(3, 48, 64), fps=8)
    Image.fromarray(np.full((40, 80, 3), 200, np.uint8)).save(root / "photo.png")
    Image.fromarray(np.full((16, 16, 3), 9, np.uint8)).save(root / "tiny.png")
    (root / "broken.jpg").write_bytes(b"not a jpeg")
    (root / "notes.md").write_text("ignored")
    (root / ".hidden").mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(root / ".hidden" / "x.png")
    return root


def test_scan_finds_videos_and_images_recursively_with_captions(folder):
    items = scan_media(folder)
    names = [item.path.name for item in items]
    assert names == ["broken.jpg", "photo.png", "short.mp4", "long.mp4", "tiny.png"]
    by_name = {item.path.name: item for item in items}
    assert by_name["long.mp4"].caption == "a red ramp" and by_name["long.mp4"].kind == "video"
    assert by_name["photo.png"].caption == "" and by_name["photo.png"].kind == "image"


def test_check_keeps_what_fits_and_names_every_file_left_out(folder):
    usable, notes = check_media(scan_media(folder), DataSettings(frames=5, height=32, width=32))
    assert sorted(item.path.name for item in usable) == ["long.mp4", "photo.png"]
    long = next(item for item in usable if item.kind == "video")
    assert (long.width, long.height, long.num_frames) == (64, 48, 9)
    text = "\n".join(notes)
    assert "broken.jpg: unreadable" in text
    assert "short.mp4: 3 frames, fewer than the 5" in text
    assert "tiny.png: 16x16 is smaller than the 32x32 crop" in text
    assert len(notes) == 3


def test_a_missing_empty_or_useless_folder_is_named(tmp_path, folder):
    with pytest.raises(FlashVideoInputError, match="does not exist"):
        scan_media(tmp_path / "nope")
    with pytest.raises(FlashVideoInputError, match="holds no videos or images"):
        scan_media(tmp_path)
    with pytest.raises(FlashVideoInputError, match="(?s)none of the 5 media files.*short.mp4: 3 frames"):
        check_media(scan_media(folder), DataSettings(frames=49, height=256, width=256))


def test_a_video_sample_is_a_random_clip_of_consecutive_frames_at_the_crop_size(folder):
    usable, _ = check_media(scan_media(folder), DataSettings(frames=5, height=32, width=32))
    video = next(item for item in usable if item.kind == "video")
    sample = draw_sample(video, DataSettings(frames=5, height=32, width=32), cpu_generator(0))
    assert sample.pixels.shape == (3, 5, 32, 32) and sample.pixels.dtype == torch.float32
    assert sample.pixels.min() >= -1 and sample.pixels.max() <= 1
    assert sample.caption == "a red ramp" and sample.source == video.path
    red = ((sample.pixels[0].mean(dim=(1, 2)) + 1) * 127.5 / 20).round().tolist()  # frame indices
    assert red == [red[0] + i for i in range(5)] and 0 <= red[0] <= 4


def test_samples_are_reproducible_and_vary_with_the_seed(folder):
    settings = DataSettings(frames=5, height=32, width=32)
    usable, _ = check_media(scan_media(folder), settings)
    video = next(item for item in usable if item.kind == "video")
    a = draw_sample(video, settings, cpu_generator(1)).pixels
    assert torch.equal(a, draw_sample(video, settings, cpu_generator(1)).pixels)
    others = [draw_sample(video, settings, cpu_generator(seed)).pixels for seed in range(2, 8)]
    assert any(not torch.equal(a, other) for other in others)


def test_an_image_is_a_one_frame_sample(folder):
    settings = DataSettings(frames=5, height=32, width=32)
    usable, _ = check_media(scan_media(folder), settings)
    photo = next(item for item in usable if item.kind == "image")
    sample = draw_sample(photo, settings, cpu_generator(0))
    assert sample.pixels.shape == (3, 1, 32, 32)
    assert torch.allclose(sample.pixels, torch.full_like(sample.pixels, 200 / 127.5 - 1), atol=1e-5)


def test_a_large_file_is_rescaled_before_the_crop(tmp_path):
    ramp = np.repeat(np.linspace(0, 255, 256, dtype=np.float64)[None, :], 64, axis=0)  # 64 x 256, horizontal ramp
    Image.fromarray(np.stack([ramp] * 3, -1).astype(np.uint8)).save(tmp_path / "wide.png")
    settings = DataSettings(frames=1, height=16, width=16)
    usable, _ = check_media(scan_media(tmp_path), settings)
    spans = []
    for seed in range(12):
        pixels = draw_sample(usable[0], settings, cpu_generator(seed)).pixels
        spans.append((pixels[0, 0, 8, -1] - pixels[0, 0, 8, 0]).item())  # ramp span across the crop
    native = 15 * 2.0 / 255  # a 16-pixel crop at native resolution spans 15 grey levels
    assert max(spans) > 2.5 * native  # some crops cover far more of the frame (rescaled)
    assert min(spans) < 1.6 * native  # and some stay near native resolution


def test_settings_are_checked():
    with pytest.raises(FlashVideoInputError, match="frames=8"):
        DataSettings(frames=8)
    with pytest.raises(FlashVideoInputError, match="height=30"):
        DataSettings(height=30)


# --- caption embeddings --------------------------------------------------------------------------------

def _encoder(calls):
    def encode(caption):
        calls.append(caption)
        return torch.full((1, 4, 3), float(len(caption)))
    return encode


def test_caption_embeddings_are_computed_once_and_read_back_after_the_encoder_is_freed(tmp_path):
    calls = []
    cache = CaptionCache(tmp_path / "cache", "toy-encoder", _encoder(calls))
    progress = []
    new = cache.precompute(["a cat", "", "a cat", "dogs"], callback=lambda done, total: progress.append((done, total)))
    assert new == 3
    assert calls == ["a cat", "", "dogs"] and progress == [(1, 3), (2, 3), (3, 3)]
    assert cache.precompute(["a cat"]) == 0 and len(calls) == 3
    freed = CaptionCache(tmp_path / "cache", "toy-encoder", None)  # a later run, T5 not loaded
    assert torch.equal(freed.get("dogs"), torch.full((1, 4, 3), 4.0))
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(
        cache.path_of(c).name for c in ["a cat", "", "dogs"])  # no temporary files left
    with pytest.raises(FlashVideoInputError, match="precompute every caption"):
        freed.get("never seen")


def test_another_encoder_does_not_read_the_stored_embeddings(tmp_path):
    first, second = [], []
    CaptionCache(tmp_path, "encoder-a", _encoder(first)).get("x")
    CaptionCache(tmp_path, "encoder-b", _encoder(second)).get("x")
    assert first == ["x"] and second == ["x"]


def test_a_bad_encoder_output_is_named(tmp_path):
    cache = CaptionCache(tmp_path, "bad", lambda caption: torch.zeros(4, 3))
    with pytest.raises(FlashVideoInputError, match="expected \\(1, tokens, dim\\)"):
        cache.get("x")
    assert not any(tmp_path.iterdir())


def test_a_full_disk_while_storing_an_embedding_names_the_file(tmp_path, monkeypatch):
    import flashvideo_core.training.captions as captions

    def full(*args, **kwargs):  # how safetensors says it (SafetensorError, not an OSError)
        raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(captions, "save_file", full)
    cache = CaptionCache(tmp_path / "cache", "toy-encoder", lambda caption: torch.zeros(1, 3, 4))
    with pytest.raises(OSError, match=r"could not write .*cache.*\.safetensors: the disk is full"):
        cache.get("a caption")
    assert list((tmp_path / "cache").iterdir()) == [], "no half file, no temporary file"


@pytest.fixture(scope="module")
def ntsc_clip(tmp_path_factory):
    """A 120-frame 29.97 fps clip whose red channel is twice the frame index, checked as training media."""
    root = tmp_path_factory.mktemp("ntsc")
    frames = [np.full((32, 48, 3), 2 * index, np.uint8) for index in range(120)]
    write_video(root / "clip.mp4", frames, fps=Fraction(30000, 1001))
    usable, _ = check_media(scan_media(root), DataSettings(frames=5, height=32, width=48))
    return usable[0]


def test_a_clip_read_with_a_seek_is_exactly_the_frames_a_read_from_the_start_gives(ntsc_clip):
    from flashvideo_core.training.media import _read_frames
    from flashvideo_core.video import iter_frames

    whole = np.stack(list(iter_frames(ntsc_clip.path)))
    assert len(whole) == ntsc_clip.num_frames == 120
    for start in (0, 1, 37, 64, 100, 115):
        assert np.array_equal(_read_frames(ntsc_clip, start, 5), whole[start:start + 5]), start


def test_a_draw_late_in_a_file_seeks_and_does_not_probe_the_file_again(ntsc_clip, monkeypatch):
    import imageio_ffmpeg

    from flashvideo_core.training.media import _read_frames
    from flashvideo_core.video import read

    calls, real_read = [], imageio_ffmpeg.read_frames
    monkeypatch.setattr(read, "probe_video", lambda *a, **k: pytest.fail("the checked item's probe is reused"))
    monkeypatch.setattr(imageio_ffmpeg, "read_frames",
                        lambda *a, **k: calls.append(k.get("input_params")) or real_read(*a, **k))
    frames = _read_frames(ntsc_clip, 100, 5)
    indices = [float(f[..., 0].mean()) / 2 for f in frames]  # H.264 moves red by a level or so
    assert all(abs(index - expected) < 0.6 for index, expected in zip(indices, range(100, 105), strict=True))
    assert calls == [["-ss", f"{99.75 * 1001 / 30000:.6f}"]], "one read, seeking to a quarter frame before frame 100"


def test_a_variable_rate_files_note_comes_once_from_check_media_not_from_every_draw(tmp_path, caplog):
    import subprocess

    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=30",
                    "-t", "1", "-vf", "setpts='if(lt(N,15),N/30/TB,(15+(N-15)*3)/30/TB)'", "-fps_mode", "vfr",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", str(tmp_path / "phone.mp4")], check=True)
    settings = DataSettings(frames=5, height=32, width=32)
    usable, notes = check_media(scan_media(tmp_path), settings)
    assert [note for note in notes if "variable frame rate" in note] == [
        note for note in notes if note.startswith(f"{tmp_path / 'phone.mp4'}: variable frame rate")] != []
    caplog.clear()
    for seed in range(3):
        assert draw_sample(usable[0], settings, cpu_generator(seed)).pixels.shape == (3, 5, 32, 32)
    assert not [r for r in caplog.records if "variable frame rate" in r.getMessage()], "logged on every draw"
