"""The streaming data source of a training run: fresh random samples from the media files every step.

Planning, before training starts (plan_media): every file's size and frame count is read once
(data.check_media at the smallest demands of the schedule), then each phase gets the files that can
give its samples: videos with at least `frames` frames, and files at least the crop's size. A phase
whose steps need clips but has no such video, or needs 1-frame samples and has neither an image nor
a video frame of the crop's size, is an error naming the phase; files left out are notes (warnings).
An image-only folder trains on images only when the image share is "as found" (None).

Drawing (MediaSource.draw, one CPU generator, in this order): one uniform number chooses whether
the step's batch is all images (probability = the phase's image share) or all clips: a batch never
mixes T = 1 and T = frames (an image share of None, "as found", is the share of images among the
readable files). Then per sample: the file (uniform over the phase's pool), then
media.draw_sample's draws. 1-frame samples come from the images, or, in a phase where no image
fits, from single random frames of the videos. Each sample's text is `texts(caption)` (a
CaptionCache's get: the embedding computed once, read from disk).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import FlashVideoInputError
from .data import DataSettings, MediaItem, check_media
from .loop import TrainingSample
from .media import draw_sample
from .schedule import Phase, Schedule

MAX_NOTES_SHOWN = 5


@dataclass(frozen=True)
class PhaseData:
    """The pools of one phase: `images` (1-frame sources: images, or videos when no image fits),
    `videos` (clip sources) and the resolved image share (0..1)."""

    images: tuple[MediaItem, ...]
    videos: tuple[MediaItem, ...]
    image_share: float


def read_media(items: list[MediaItem], schedule: Schedule) -> tuple[list[MediaItem], list[str]]:
    """check_media at the schedule's smallest crop (any frame count): (files with sizes read, notes)."""
    smallest = DataSettings(1, min(p.height for p in schedule.phases), min(p.width for p in schedule.phases))
    try:
        return check_media(items, smallest)
    except FlashVideoInputError as exc:  # "a 1-frame WxH sample": the frame count is each phase's business
        raise FlashVideoInputError(str(exc).replace(" can give a 1-frame ", " can give a ", 1)) from None


def _fits(item: MediaItem, phase: Phase, frames: int) -> bool:
    return item.height >= phase.height and item.width >= phase.width and item.num_frames >= frames


def _reasons(items: list[MediaItem], phase: Phase) -> str:
    """Why the videos of `items` give no clip of `phase` (the first few, named)."""
    lines = [f"{v.path.name}: {v.num_frames} frames, {v.width}x{v.height}" for v in items if v.kind == "video"]
    shown = "; ".join(lines[:MAX_NOTES_SHOWN]) + ("; ..." if len(lines) > MAX_NOTES_SHOWN else "")
    return shown or "the data holds no videos"


def plan_phase(usable: list[MediaItem], phase: Phase, index: int) -> tuple[PhaseData, list[str]]:
    """The pools of one phase from files with sizes read; (PhaseData, notes). FlashVideoInputError naming
    the phase when its steps have nothing to draw from."""
    label, crop = phase.label(index), f"{phase.width}x{phase.height}"
    videos = tuple(i for i in usable if i.kind == "video" and _fits(i, phase, phase.frames))
    images = tuple(i for i in usable if i.kind == "image" and _fits(i, phase, 1))
    share = phase.image_share
    if share is None:  # as found: the share of images among the readable files, whether or not they fit
        kinds = [i.kind for i in usable]
        share = kinds.count("image") / len(kinds) if kinds else 0.0
    notes = []
    if share < 1.0 and not videos:
        raise FlashVideoInputError(
            f"{label} trains on {phase.frames}-frame {crop} clips (image share {share:g}), but no video is long and "
            f"large enough ({_reasons(usable, phase)}). Lower --frames or --size, give longer or larger clips, or "
            "train this phase on images only (--image-share 1, or image_share 1 in the schedule file).")
    if share > 0.0 and not images:
        frames = tuple(i for i in usable if i.kind == "video" and _fits(i, phase, 1))
        if not frames:
            raise FlashVideoInputError(f"{label} trains on {crop} images (image share {share:g}), but no image or "
                                       f"video frame is that large. Lower --size or give larger files.")
        notes.append(f"{label}: no image is {crop} or larger; its 1-frame samples are single frames of the videos.")
        images = frames
    used = {i.path for i in videos} | {i.path for i in images}
    skipped = [i for i in usable if i.path not in used and i.kind == "video" and share < 1.0]
    if skipped:
        notes.append(f"{label}: {len(skipped)} video(s) shorter than {phase.frames} frames or smaller than {crop} "
                     f"are not used for its clips (e.g. {skipped[0].path.name}).")
    return PhaseData(images, videos, float(share)), notes


def plan_media(usable: list[MediaItem], schedule: Schedule) -> tuple[tuple[PhaseData, ...], list[str]]:
    """plan_phase for every phase of `schedule`; (pools per phase, notes)."""
    pools, notes = [], []
    for index, phase in enumerate(schedule.phases):
        data, phase_notes = plan_phase(usable, phase, index)
        pools.append(data)
        notes.extend(phase_notes)
    return tuple(pools), notes


def split_holdout(usable: list[MediaItem], count: int, phase: Phase,
                  seed: int) -> tuple[list[MediaItem], list[MediaItem]]:
    """(training files, `count` held-out files) chosen with `seed` among the files that give `phase`'s
    samples (videos long enough when the phase needs clips, else any file of the crop's size).

    Raises FlashVideoInputError when fewer than count + 1 such files exist (training needs one too).
    """
    frames = phase.frames if phase.needs_video else 1
    candidates = [i for i in usable if _fits(i, phase, frames) and (i.kind == "video" or not phase.needs_video)]
    if isinstance(count, bool) or not isinstance(count, int) or count < 1 or count >= len(candidates):
        raise FlashVideoInputError(f"holdout={count!r}: hold out from 1 to {len(candidates) - 1} of the "
                                   f"{len(candidates)} files that give {frames}-frame {phase.width}x{phase.height} "
                                   "samples (or give a separate folder with --val).")
    order = torch.randperm(len(candidates), generator=torch.Generator().manual_seed(seed)).tolist()
    held = [candidates[i] for i in sorted(order[:count])]
    paths = {i.path for i in held}
    return [i for i in usable if i.path not in paths], held


class MediaSource:
    """A loop.SampleSource over media files (see the module docstring).

    pools: plan_media's PhaseData, one per phase of `schedule`; texts: caption -> (1, L, D) embedding.
    """

    def __init__(self, schedule: Schedule, pools: tuple[PhaseData, ...], texts: Callable[[str], torch.Tensor]):
        if len(pools) != len(schedule.phases):
            raise FlashVideoInputError(f"{len(pools)} phase pools for {len(schedule.phases)} phases.")
        self.schedule, self.pools, self.texts = schedule, pools, texts

    def draw(self, phase: Phase | None, batch: int, generator: torch.Generator) -> list[TrainingSample]:
        """`batch` samples of one shape for a step of `phase` (None: the first phase)."""
        index = 0 if phase is None else self.schedule.phases.index(phase)
        phase, pool = self.schedule.phases[index], self.pools[index]
        images = torch.rand(1, generator=generator, dtype=torch.float64).item() < pool.image_share
        items = pool.images if images else pool.videos
        settings = DataSettings(1 if images else phase.frames, phase.height, phase.width)
        samples = []
        for _ in range(batch):
            item = items[int(torch.randint(len(items), (1,), generator=generator).item())]
            sample = draw_sample(item, settings, generator)
            samples.append(TrainingSample(sample.pixels, self.texts(sample.caption)))
        return samples


def validation_items(items: list[MediaItem], phase: Phase) -> list[MediaItem]:
    """The held-out files that give a validation sample of `phase` (videos of phase.frames frames when the
    phase trains on clips, any file of the crop's size otherwise); FlashVideoInputError if none does."""
    usable = [i for i in items if _fits(i, phase, phase.frames if i.kind == "video" and phase.needs_video else 1)]
    if not usable:
        raise FlashVideoInputError(f"no held-out file gives a {phase.width}x{phase.height} validation sample "
                                   f"({phase.frames}-frame clips from videos, 1 frame from images); give held-out "
                                   "files as long and as large as the training samples.")
    return usable


def held_out_clips(items: list[MediaItem], phase: Phase, count: int, seed: int,
                   texts: Callable[[str], torch.Tensor]) -> list[TrainingSample]:
    """`count` fixed validation samples of `phase`'s size, cycling over validation_items(items, phase) (drawn
    once from `seed`): clips of phase.frames frames from videos, 1-frame samples from images."""
    generator = torch.Generator().manual_seed(seed)
    usable = validation_items(items, phase)
    clips = []
    for index in range(count):
        item = usable[index % len(usable)]
        frames = phase.frames if item.kind == "video" and phase.needs_video else 1
        sample = draw_sample(item, DataSettings(frames, phase.height, phase.width), generator)
        clips.append(TrainingSample(sample.pixels, texts(sample.caption)))
    return clips
