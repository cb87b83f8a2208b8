"""Training data: a folder of videos and images, scanned and checked before training starts.

`scan_media(folder)` finds, recursively (hidden files and folders skipped), videos and still images
by suffix, each with its caption: the text of a same-name `.txt` beside it (UTF-8, stripped), else "".
`check_media(items, settings)` reads each file's size and frame count (images: the header via PIL;
videos: probe_video, one ffmpeg decode that counts frames exactly as iter_frames reads them) and
keeps those that hold a training sample: a video needs `frames` frames and each file at least the
crop's height and width. Every file left out is named in a note with the reason. Images are 1-frame
samples (T = 1) mixed in as found; a batch cannot mix T = 1 and T = frames (the loop's concern).
Drawing a sample (random clip, random rescale and crop) is media.draw_sample.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import FlashVideoInputError
from ..layout import check_num_frames, check_pixel_size
from ..video import VideoInfo, probe_video

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".gif", ".m4v"})
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})


@dataclass(frozen=True)
class DataSettings:
    """The training sample size: frames (4k+1 pixel frames per video clip), height and width (multiples of 16)."""

    frames: int = 49
    height: int = 480
    width: int = 720

    def __post_init__(self) -> None:
        check_num_frames(self.frames, "frames")
        check_pixel_size(self.height, self.width, "training crop")


@dataclass(frozen=True)
class MediaItem:
    """One file of the data folder. kind: "video" or "image"; caption: its .txt text or "".
    width, height, num_frames: 0 until check_media has read them (images: num_frames 1); info: a video's
    probe_video result once checked (a draw reads with it instead of probing the file again)."""

    path: Path
    kind: str
    caption: str = ""
    width: int = 0
    height: int = 0
    num_frames: int = 0
    info: VideoInfo | None = field(default=None, compare=False, repr=False)


def _caption(path: Path) -> str:
    """The stripped UTF-8 text of path's same-name .txt, "" if there is none."""
    text_file = path.with_suffix(".txt")
    if not text_file.is_file():
        return ""
    try:
        return text_file.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError as exc:
        raise FlashVideoInputError(f"caption {text_file} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                                   "save it as UTF-8.") from None


def scan_media(folder: str | os.PathLike) -> list[MediaItem]:
    """Videos and images under `folder` (recursively, sorted by path), with their captions.

    Raises FlashVideoInputError naming the folder if it is missing, not a folder, or holds no file
    with a video or image suffix (VIDEO_SUFFIXES, IMAGE_SUFFIXES).
    """
    root = Path(folder)
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise FlashVideoInputError(f"training data folder {root} {what}; give a folder of videos and/or images.")
    items = []
    for path in sorted(root.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(root).parts) or not path.is_file():
            continue
        suffix = path.suffix.lower()
        if suffix in VIDEO_SUFFIXES or suffix in IMAGE_SUFFIXES:
            kind = "video" if suffix in VIDEO_SUFFIXES else "image"
            items.append(MediaItem(path=path, kind=kind, caption=_caption(path)))
    if not items:
        suffixes = ", ".join(sorted(VIDEO_SUFFIXES | IMAGE_SUFFIXES))
        raise FlashVideoInputError(f"training data folder {root} holds no videos or images ({suffixes}); "
                                   "put the training clips there (captions as same-name .txt files).")
    return items


def _read_size(item: MediaItem) -> MediaItem:
    """`item` with width, height and num_frames read; FlashVideoInputError naming the file if unreadable."""
    if item.kind == "image":
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(item.path) as image:
                width, height = image.size
        except (OSError, UnidentifiedImageError) as exc:
            raise FlashVideoInputError(f"could not read {item.path} as an image: {exc}") from None
        return replace(item, width=width, height=height, num_frames=1)
    info = probe_video(item.path)
    return replace(item, width=info.width, height=info.height, num_frames=info.num_frames, info=info)


def check_media(items: list[MediaItem], settings: DataSettings) -> tuple[list[MediaItem], list[str]]:
    """(usable items with sizes read, notes): a note per file left out, naming it and why, and each video's
    conversion notes (VideoInfo.notes: e.g. variable frame rate read at a constant one), once.

    Left out: unreadable files, videos with fewer than settings.frames frames, files smaller than
    settings.height x settings.width. Raises FlashVideoInputError if `items` is empty or none is usable
    (the message repeats the first notes and says what would fit).
    """
    if not items:
        raise FlashVideoInputError("no training media given; scan_media(folder) finds the videos and images.")
    usable, notes = [], []
    for item in items:
        try:
            item = _read_size(item)
        except FlashVideoInputError as exc:
            notes.append(f"skipped {item.path}: unreadable ({exc})")
            continue
        if item.info is not None:
            notes += [f"{item.path}: {note}" for note in item.info.notes]
        if item.kind == "video" and item.num_frames < settings.frames:
            notes.append(f"skipped {item.path}: {item.num_frames} frames, fewer than the {settings.frames} "
                         "of a training clip (lower --frames or give longer clips)")
        elif item.height < settings.height or item.width < settings.width:
            notes.append(f"skipped {item.path}: {item.width}x{item.height} is smaller than the "
                         f"{settings.width}x{settings.height} crop (lower the training size or give larger files)")
        else:
            usable.append(item)
    if not usable:
        shown = "\n  ".join(notes[:5]) + ("\n  ..." if len(notes) > 5 else "")
        raise FlashVideoInputError(f"none of the {len(items)} media files can give a {settings.frames}-frame "
                                   f"{settings.width}x{settings.height} training sample:\n  {shown}")
    return usable, notes
