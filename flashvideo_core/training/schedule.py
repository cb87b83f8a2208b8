"""The coarse-to-fine schedule of a Stage II training run: phases, each a number of steps at one sample size.

The paper trains Stage II coarse to fine: image patches first, then images and videos mixed, then full
video, with DEG_latent's noise steps drawn from 600-900 at first and from 650-750 at the end. A
Schedule is that list of phases; a run without one is a single phase (Schedule.single).

Phase fields: steps; width, height (the crop, multiples of 16); frames (4k+1 pixel frames of a
video sample); image_share (the chance that a step's batch is all images, 1-frame samples: a batch
never mixes images and clips; None = as found, the share of images among the usable files);
noise_steps (DEG_latent range, None = the run's); batch (None = the run's); name (for messages).

A schedule file is JSON: {"phases": [{"name": "image patches", "steps": 2000, "image_share": 1.0},
{"steps": 2000, "image_share": 0.5}, {"steps": 4000, "image_share": 0, "noise_steps": [650, 750],
"size": "1920x1080", "frames": 49}]}. Fields left out take the run's values (--size, --frames,
--batch, --noise-steps); every error names the file, the phase and the field.
"""

from __future__ import annotations

import json
import numbers
import re
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import FlashVideoInputError
from ..layout import check_num_frames, check_pixel_size
from .latent_degradation import FINE_NOISE_STEPS, LatentDegradation

PRESETS = ("coarse-to-fine",)
"""Built-in schedules (coarse_to_fine); anything else given to --schedule is a file."""

PRESET_SHARES = ((0.3, "image patches", 1.0), (0.3, "mixed", 0.5), (0.4, "video", 0.0))
"""coarse-to-fine: (share of the steps, name, image share); the last phase narrows the noise steps."""

FILE_FIELDS = ("name", "steps", "size", "frames", "image_share", "noise_steps", "batch")


@dataclass(frozen=True)
class Phase:
    """One phase of a schedule (see the module docstring); checked at construction."""

    steps: int
    width: int
    height: int
    frames: int
    image_share: float | None = None
    noise_steps: tuple[int, int] | None = None
    batch: int | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, numbers.Integral) or self.steps < 1:
            raise FlashVideoInputError(f"steps={self.steps!r} must be an integer >= 1.")
        check_pixel_size(self.height, self.width, "size")
        check_num_frames(self.frames, "frames")
        share = self.image_share
        if share is not None and (isinstance(share, bool) or not isinstance(share, numbers.Real)
                                  or not 0.0 <= share <= 1.0):
            raise FlashVideoInputError(f"image_share={share!r} must be a number from 0 (all video) to 1 (all images).")
        if self.noise_steps is not None:  # LatentDegradation checks the pair; keep it as a tuple
            object.__setattr__(self, "noise_steps", LatentDegradation(self.noise_steps).noise_steps)
        if self.batch is not None and (isinstance(self.batch, bool) or not isinstance(self.batch, int)
                                       or self.batch < 1):
            raise FlashVideoInputError(f"batch={self.batch!r} must be an integer >= 1.")
        if not isinstance(self.name, str):
            raise FlashVideoInputError(f"name={self.name!r} must be text.")

    @property
    def needs_video(self) -> bool:
        """True when some steps of this phase draw clips of `frames` frames (image_share below 1)."""
        return self.image_share is None or self.image_share < 1.0

    def label(self, index: int) -> str:
        """'phase 2 ("mixed")' for messages (index from 0)."""
        return f"phase {index + 1}" + (f" ({self.name!r})" if self.name else "")


@dataclass(frozen=True)
class Schedule:
    """Phases run in order; step s (1-based) belongs to the phase whose steps cover it."""

    phases: tuple[Phase, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "phases", tuple(self.phases))
        if not self.phases or not all(isinstance(p, Phase) for p in self.phases):
            raise FlashVideoInputError("a schedule needs at least one phase (Phase objects).")

    @classmethod
    def single(cls, steps: int, width: int, height: int, frames: int, image_share: float | None = None) -> Schedule:
        """The one-phase schedule of a run without a schedule file."""
        return cls((Phase(steps, width, height, frames, image_share),))

    @property
    def total_steps(self) -> int:
        return sum(phase.steps for phase in self.phases)

    def phase_at(self, step: int) -> tuple[int, Phase]:
        """(index, phase) of 1-based `step`; the last phase for a step past the end."""
        end = 0
        for index, phase in enumerate(self.phases):
            end += phase.steps
            if step <= end:
                return index, phase
        return len(self.phases) - 1, self.phases[-1]

    def describe(self) -> list[str]:
        """One line per phase: steps, sample size, image share, noise steps, batch."""
        lines, start = [], 1
        for index, p in enumerate(self.phases):
            share = "images as found" if p.image_share is None else f"image share {p.image_share:g}"
            noise = "" if p.noise_steps is None else f", noise steps {p.noise_steps[0]}-{p.noise_steps[1]}"
            batch = "" if p.batch is None else f", batch {p.batch}"
            samples = "images (1 frame)" if p.image_share == 1 else f"{p.frames}-frame clips, {share}"
            lines.append(f"{p.label(index)}: steps {start}-{start + p.steps - 1}, {p.width}x{p.height}, "
                         f"{samples}{noise}{batch}")
            start += p.steps
        return lines

    def to_json(self) -> str:
        """The schedule as a schedule file (loadable with load_schedule)."""
        phases = []
        for p in self.phases:
            entry = {"name": p.name, "steps": p.steps, "size": f"{p.width}x{p.height}", "frames": p.frames,
                     "image_share": p.image_share, "noise_steps": p.noise_steps, "batch": p.batch}
            phases.append({k: list(v) if isinstance(v, tuple) else v for k, v in entry.items() if v not in (None, "")})
        return json.dumps({"phases": phases}, indent=2) + "\n"


def coarse_to_fine(steps: int, width: int, height: int, frames: int,
                   noise_steps: tuple[int, int] | None = None) -> Schedule:
    """The built-in coarse-to-fine schedule over `steps` (>= 3): 30% image patches (image share 1),
    30% mixed (0.5), 40% video (0) with the noise steps narrowed to FINE_NOISE_STEPS (650-750); the
    first two phases use `noise_steps` (None = the run's range)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < len(PRESET_SHARES):
        raise FlashVideoInputError(f"steps={steps!r}: the coarse-to-fine schedule needs at least "
                                   f"{len(PRESET_SHARES)} steps (one per phase).")
    counts = [max(1, round(steps * share)) for share, _, _ in PRESET_SHARES[:-1]]
    counts.append(steps - sum(counts))
    phases = [Phase(count, width, height, frames, image_share, noise_steps, name=name)
              for count, (_, name, image_share) in zip(counts, PRESET_SHARES, strict=True)]
    phases[-1] = replace(phases[-1], noise_steps=FINE_NOISE_STEPS)
    return Schedule(tuple(phases))


def parse_size(text, name: str = "size") -> tuple[int, int]:
    """'WxH' (e.g. '1920x1080') -> (width, height), checked as a training crop; FlashVideoInputError naming `name`."""
    try:
        width, height = (int(part) for part in str(text).lower().split("x"))
    except ValueError:
        raise FlashVideoInputError(f"{name}={text!r} must be WIDTHxHEIGHT, e.g. 720x480 or 1920x1080.") from None
    check_pixel_size(height, width, name)
    return width, height


def load_schedule(path: str | Path, width: int, height: int, frames: int) -> Schedule:
    """Read a schedule file (see the module docstring); width, height, frames fill phases that leave them out.

    Raises FlashVideoInputError naming the file, and the phase and field where one is wrong.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FlashVideoInputError(f"schedule file {path} not found (or give --schedule {PRESETS[0]}).") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FlashVideoInputError(f"schedule file {path} is not readable JSON: {exc}") from None
    phases = data.get("phases") if isinstance(data, dict) else None
    if not isinstance(phases, list) or not phases:
        raise FlashVideoInputError(f'schedule file {path}: expected {{"phases": [{{"steps": ...}}, ...]}} with at '
                                   "least one phase.")
    return Schedule(tuple(_phase(entry, index, path, width, height, frames) for index, entry in enumerate(phases)))


def _phase(entry, index: int, path: Path, width: int, height: int, frames: int) -> Phase:
    """One phase of a schedule file; errors prefixed with the file and the phase."""
    where = f"schedule file {path}, phase {index + 1}"
    if not isinstance(entry, dict):
        raise FlashVideoInputError(f"{where}: a phase is an object such as {{\"steps\": 1000}}; got {entry!r}.")
    if isinstance(entry.get("name"), str) and entry["name"]:
        where += f" ({entry['name']!r})"
    unknown = sorted(set(entry) - set(FILE_FIELDS))
    if unknown:
        raise FlashVideoInputError(f"{where}: unknown field {unknown[0]!r}; a phase has {', '.join(FILE_FIELDS)}.")
    if "steps" not in entry:
        raise FlashVideoInputError(f"{where}: field 'steps' is missing (how many optimiser steps the phase runs).")
    values = {"width": width, "height": height, "frames": frames}
    for key in ("name", "steps", "frames", "image_share", "noise_steps", "batch"):
        if key in entry:
            values[key] = tuple(entry[key]) if key == "noise_steps" and isinstance(entry[key], list) else entry[key]
    try:
        if "size" in entry:
            values["width"], values["height"] = parse_size(entry["size"])
        return Phase(**values)
    except FlashVideoInputError as exc:
        field = re.split(r"[= ]", str(exc), maxsplit=1)[0]
        field = field if field in FILE_FIELDS else None
        raise FlashVideoInputError(f"{where}, field {field!r}: {exc}" if field else f"{where}: {exc}") from None
