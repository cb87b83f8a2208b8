"""What an enhance run will do, settled before any model is called: its settings (checked once, when
made) and, for a given input, its plan: target size, windows and the noise step actually used."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .. import config
from ..errors import FlashVideoInputError
from ..sampling.settings import Stage2Settings, check_seed, offset_seed
from .latent_windows import check_planned_clip_fits
from .noise_rule import auto_noise_step
from .sizing import TargetSize, format_scale, resolve_target_size
from .windows import DEFAULT_OVERLAP, DEFAULT_WINDOW, Window, plan_windows

WINDOW_SEED_STRIDE = 1_000_003
"""Window i's Stage II seed is the run's seed + 1 + this x i (a prime: windows never share a seed)."""

BLENDS = ("pixel", "shared_noise", "co_denoise")
"""How windows are joined (latent_windows.py): "pixel" crossfades decoded frames over the overlap (each
window its own noise); "shared_noise" also draws the degradation noise per latent frame of the clip, so
overlapping windows start from the same noise there; "co_denoise" runs all windows' Euler steps together
on one clip latent, averaging their velocities where they overlap (holds the clip's latent in RAM)."""
DEFAULT_BLEND = "pixel"


@dataclass(frozen=True)
class EnhanceSettings:
    """Every knob of Stage II on any video; valid by construction (input-dependent checks in plan_enhance).

    Target: at most one of target (a resolved TargetSize) / scale / size ("1080p", ...) / long_edge;
    none means the official 1080p, refused beyond x4 the input's long edge unless allow_large_upscale.
    noise_step: an integer 0-999 or "auto" (noise_rule.py, from the window length and the size).
    seed: the run's seed (window i uses window_seed(seed, i)). window/overlap: frames per window
    (4k+1) and blended between windows. blend: one of BLENDS (the latent ones start windows on the
    VAE's 4-frame latent grid).
    """

    target: TargetSize | None = None
    scale: float | None = None
    size: str | None = None
    long_edge: int | None = None
    noise_step: int | str = "auto"
    steps: int = config.STAGE2_STEPS
    cfg: float = config.STAGE2_CFG
    shift: float = config.STAGE2_SHIFT
    seed: int = 0
    window: int = DEFAULT_WINDOW
    overlap: int = DEFAULT_OVERLAP
    color_match: bool = False
    allow_large_upscale: bool = False
    sequential_cfg: bool = False
    """The guidance halves as two batch-1 calls (sampling.settings.Stage2Settings.sequential_cfg)."""
    blend: str = DEFAULT_BLEND

    stage2: Stage2Settings = field(init=False, repr=False, compare=False)
    """The windows' Stage II settings (for "auto", at the default step until plan_enhance resolves it),
    made and so checked once, here."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise FlashVideoInputError naming the first invalid setting and its fix."""
        if self.target is not None and any(v is not None for v in (self.scale, self.size, self.long_edge)):
            raise FlashVideoInputError("give either target or one of scale / size / long_edge, not both.")
        if isinstance(self.noise_step, str) and not is_auto(self.noise_step):
            raise FlashVideoInputError(
                f"noise_step={self.noise_step!r} must be 'auto' or an integer 0-999 (default 675; paper 650-750)."
            )
        step = config.DEFAULT_NOISE_STEP if is_auto(self.noise_step) else self.noise_step
        stage2 = Stage2Settings(noise_step=step, steps=self.steps, cfg=self.cfg, shift=self.shift,
                                sequential_cfg=bool(self.sequential_cfg))  # checks them
        object.__setattr__(self, "stage2", stage2)
        check_seed(self.seed)
        if self.blend not in BLENDS:
            raise FlashVideoInputError(f"blend={self.blend!r} must be one of {', '.join(BLENDS)} "
                                       f"(default {DEFAULT_BLEND}).")
        plan_windows(self.window, self.window, self.overlap, window_align(self.blend))  # the window rules


@dataclass(frozen=True)
class EnhancePlan:
    """A run resolved for one input: sizes (in and target), windows in order, each window's Stage II
    settings (noise step resolved), the seed and whether colours are matched back to the input."""

    num_frames: int
    in_height: int
    in_width: int
    target: TargetSize
    windows: tuple[Window, ...]
    stage2: Stage2Settings
    seed: int
    color_match: bool
    noise_source: str
    """"auto" or "given": where the noise step came from (for describe_plan)."""
    blend: str = DEFAULT_BLEND


def plan_enhance(num_frames: int, in_height: int, in_width: int, settings: EnhanceSettings) -> EnhancePlan:
    """Resolve `settings` for an input of num_frames frames of in_width x in_height. Raises
    FlashVideoInputError for a target smaller than the input, an upscale beyond x4 by default, a
    co_denoise clip latent that would not fit the free RAM (latent_windows.check_planned_clip_fits), ...
    """
    target = settings.target
    if target is None:
        target = resolve_target_size(in_height, in_width, scale=settings.scale, size=settings.size,
                                     long_edge=settings.long_edge, allow_large_upscale=settings.allow_large_upscale)
    elif target.height < in_height or target.width < in_width:
        raise FlashVideoInputError(
            f"target {target.width}x{target.height} (WxH) is smaller than the input {in_width}x{in_height}."
        )
    windows = tuple(plan_windows(num_frames, settings.window, settings.overlap, window_align(settings.blend)))
    if settings.blend == "co_denoise":  # the clip's latent in RAM: refused now, before any model work
        check_planned_clip_fits(windows, target.work_height, target.work_width)
    stage2, source = settings.stage2, "given"
    if is_auto(settings.noise_step):  # the rule's step, from the window length and the size
        stage2 = replace(stage2, noise_step=auto_noise_step(windows[0].length, target.height, target.width))
        source = "auto"
    return EnhancePlan(num_frames, in_height, in_width, target, windows, stage2, settings.seed,
                       bool(settings.color_match), source, settings.blend)


def window_align(blend: str) -> int:
    """Frames window starts are a multiple of: 1 for the pixel crossfade, the VAE's temporal compression (4)
    for the latent blends, so overlapping windows hold whole latent frames in common."""
    return 1 if blend == "pixel" else config.VAE_TEMPORAL_COMPRESSION


def is_auto(noise_step) -> bool:
    """Whether a noise_step setting asks for the automatic rule ("auto", any case)."""
    return isinstance(noise_step, str) and noise_step.strip().lower() == "auto"


def window_seed(seed: int, index: int) -> int:
    """Stage II seed of window `index`: seed + 1 + WINDOW_SEED_STRIDE x index, wrapped into 0..SEED_MAX
    (window 0: seed + 1, as `generate` gives its Stage II); the window encodes with it and degrades with
    it + 1 (stage2_seeds)."""
    return offset_seed(seed, 1 + WINDOW_SEED_STRIDE * index)


def describe_plan(plan: EnhancePlan) -> str:
    """A few lines saying what a run will do: sizes (exact and work, width x height) and the upscale
    factor, windows, noise step and where it came from, the Stage II settings."""
    target, windows, stage2 = plan.target, plan.windows, plan.stage2
    work = (f"; the model works at {target.work_width}x{target.work_height} (edge-padded to multiples of 16, "
            "cropped back)" if target.padded else "")
    factor = format_scale(target.scale_from(plan.in_height, plan.in_width))
    lengths = sorted({w.length for w in windows})
    padding = windows[-1].padding  # only a clip shorter than one window is padded (windows.plan_windows)
    cut = (f"{len(windows)} window{'s' if len(windows) > 1 else ''} of {'/'.join(map(str, lengths))} frames"
           + (f", overlaps of {_span(w.overlap_after for w in windows[:-1])} frames blended ({plan.blend})"
              if len(windows) > 1 else "")
           + (f", {padding} padding frame{'s' if padding > 1 else ''} trimmed after" if padding else ""))
    source = (f"auto: {windows[0].length}-frame window at {target.width}x{target.height}, see noise_rule.py"
              if plan.noise_source == "auto" else "given")
    return "\n".join([
        f"size:   {plan.in_width}x{plan.in_height} -> {target.width}x{target.height} (WxH), x{factor} upscale{work}",
        f"frames: {plan.num_frames} in {cut}",
        f"noise:  step {stage2.noise_step} ({source}); {stage2.steps} Euler step{'s' if stage2.steps > 1 else ''}, "
        f"cfg {stage2.cfg:g}, shift {stage2.shift:g}, seed {plan.seed}, "
        f"colour match {'on' if plan.color_match else 'off'}",
    ])


def _span(values) -> str:
    """'8' or '8-9' for the smallest and largest of some integers."""
    values = sorted(set(values))
    return f"{values[0]}" if len(values) == 1 else f"{values[0]}-{values[-1]}"
