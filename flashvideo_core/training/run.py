"""A whole Stage II training run from a folder of media: what `train-stage2` runs, usable from Python.

prepare(run) checks everything that can be checked before a model loads (settings, the output folder,
--resume and --init against each other, the weight files' kinds, every media file's size and length,
each phase's pools, the held-out files) and returns a Prepared plan; execute(run, prepared) then
computes the caption embeddings once with T5 (skipped when all are cached), frees T5, loads the VAE
and the Stage II model and trains (loop.train_stage2 over a source.MediaSource).

What a run writes in OUT_DIR: step-<N>/ checkpoints (checkpoints.py), caption-cache/ (one file per
caption, captions.CaptionCache), schedule.json (the phases used, if none is there yet) and, with a
hold-out, holdout.txt (the held-out files, read again on resume so they stay held out).
"""

from __future__ import annotations

import errno
import gc
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import config
from ..config import TransformerConfig
from ..devices import empty_cache, parse_device, parse_dtype
from ..errors import FlashVideoInputError
from ..progress import report
from ..weights.loaders import WeightPaths, load_stage2, load_text_encoder, load_vae
from .captions import CaptionCache
from .checkpoints import read_settings_json, weights_file
from .codec import VaeCodec
from .data import DataSettings, MediaItem, check_media, scan_media
from .loop import TrainResult, train_stage2
from .schedule import Schedule
from .settings import TrainSettings
from .setup import (
    check_cache_dir,
    check_init,
    check_out_dir,
    check_resume_fits,
    explain_save_error,
    resolve_resume,
    settings_changes,
    step_of,
)
from .source import (
    MediaSource,
    PhaseData,
    held_out_clips,
    plan_media,
    read_media,
    split_holdout,
    validation_items,
)
from .validation import HeldOut

CACHE_DIR, SCHEDULE_FILE, HOLDOUT_FILE = "caption-cache", "schedule.json", "holdout.txt"


@dataclass(frozen=True)
class TrainRun:
    """A training run: data folder, OUT_DIR, settings (with a schedule), the model to start from (init:
    a Stage II file or folder; None = from scratch with `scratch`), resume (a step or run folder),
    held-out samples (val: a folder, or holdout: that many files of data; val_clips samples drawn from
    them), the VAE and T5 (weights: WeightPaths with vae, text_encoder, tokenizer), the device and
    caption_cache: a folder of caption embeddings shared between runs (None: OUT_DIR/caption-cache)."""

    data: Path
    out_dir: Path
    settings: TrainSettings
    weights: WeightPaths
    init: Path | None = None
    scratch: TransformerConfig = config.STAGE2_2B
    resume: Path | None = None
    val: Path | None = None
    holdout: int | None = None
    val_clips: int = 4
    device: str | None = None
    caption_cache: Path | None = None

    def __post_init__(self) -> None:
        if self.settings.schedule is None:
            raise FlashVideoInputError("TrainRun.settings needs a schedule (Schedule.single for one phase).")
        if self.val is not None and self.holdout is not None:
            raise FlashVideoInputError("give held-out samples one way: --val DIR or --holdout N, not both.")
        if self.settings.lora is not None and self.init is None:
            raise FlashVideoInputError("--lora trains an adapter on a trained model; give that model with --init "
                                       "(e.g. weights/stage2.pt).")
        if self.settings.validate_every is not None and self.val is None and self.holdout is None:
            raise FlashVideoInputError("--validate-every needs held-out samples: --val DIR or --holdout N.")
        if isinstance(self.val_clips, bool) or not isinstance(self.val_clips, int) or self.val_clips < 1:
            raise FlashVideoInputError(f"--val-clips {self.val_clips!r} must be an integer >= 1.")

    @property
    def schedule(self) -> Schedule:
        return self.settings.schedule

    @property
    def cache_dir(self) -> Path:
        """Where the caption embeddings are kept: caption_cache, else OUT_DIR/caption-cache."""
        return self.caption_cache if self.caption_cache is not None else self.out_dir / CACHE_DIR


@dataclass
class Prepared:
    """What prepare found: the step folder to resume (or None) and its step, the phases' pools, the held-out
    files, every caption to embed, and notes (warnings) to show before training."""

    resume: Path | None
    start: int
    pools: tuple[PhaseData, ...]
    held: list[MediaItem]
    captions: list[str]
    notes: list[str] = field(default_factory=list)


def prepare(run: TrainRun) -> Prepared:
    """Every check before a model loads (see the module docstring); raises the first problem found."""
    parse_device(run.device)  # a device this machine lacks is named now, not after the captions
    folder = resolve_resume(run.resume) if run.resume is not None else None
    start = step_of(folder) if folder is not None else 0
    if start >= run.settings.steps:
        raise FlashVideoInputError(f"--resume {folder} is at step {start}, and this run has {run.settings.steps} "
                                   "steps: nothing to train. Raise --steps to train on.")
    check_out_dir(run.out_dir, start if folder is not None else None)
    if run.caption_cache is not None:
        check_cache_dir(run.caption_cache)
    run.weights.check("vae", "text_encoder")
    check_init(run.init, run.weights.text_encoder, run.weights.vae)
    notes: list[str] = []
    if folder is not None:
        check_resume_fits(folder, run.settings, run.init, run.scratch)
        notes += settings_changes(folder, read_settings_json(folder), run.settings)
    usable, skipped = read_media(scan_media(run.data), run.schedule)
    notes += skipped
    usable, held = _held_out(run, usable)
    if held:
        held = validation_items(held, run.schedule.phases[-1])  # refused here, before anything loads
    pools, more = plan_media(usable, run.schedule)
    pool_items = {item.path: item for pool in pools for item in (*pool.images, *pool.videos)}
    captions = list(dict.fromkeys(item.caption for item in (*pool_items.values(), *held)))
    return Prepared(folder, start, pools, held, captions, notes + more)


def _held_out(run: TrainRun, usable: list[MediaItem]) -> tuple[list[MediaItem], list[MediaItem]]:
    """(training files, held-out files): --val's folder, or --holdout N files of DATA (holdout.txt kept)."""
    final = run.schedule.phases[-1]
    if run.val is not None:
        try:
            held, _ = check_media(scan_media(run.val), DataSettings(1, final.height, final.width))
        except FlashVideoInputError as exc:
            raise FlashVideoInputError(f"--val {run.val}: {exc}") from None
        return usable, held
    if run.holdout is None:
        return usable, []
    listed = run.out_dir / HOLDOUT_FILE
    if listed.is_file():  # a resumed run keeps its held-out files
        names = set(listed.read_text(encoding="utf-8").splitlines())
        held = [item for item in usable if str(item.path.relative_to(run.data)) in names]
        return [item for item in usable if item not in held], held
    train, held = split_holdout(usable, run.holdout, final, run.settings.seed)
    return train, held


def encoder_id(weights: WeightPaths, dtype: torch.dtype) -> str:
    """Names the T5 (file or folder, its size) and dtype, so another encoder never reads these embeddings."""
    path = Path(weights.text_encoder)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in files)
    return f"{path.resolve()}:{size}:{config.TEXT_TOKENS}:{str(dtype).removeprefix('torch.')}"


def embed_captions(run: TrainRun, captions: list[str], device, dtype, log=print) -> CaptionCache:
    """A CaptionCache in run.cache_dir holding every caption; T5 is loaded only if one is missing (another run
    sharing the folder may have embedded them already), and freed after."""
    cache = CaptionCache(run.cache_dir, encoder_id(run.weights, dtype), None)
    missing = [c for c in captions if not cache.path_of(c).is_file()]
    if not missing:
        return cache
    log(f"computing {len(missing)} caption embedding(s) with T5 (once; then T5 is freed)")
    encoder = load_text_encoder(run.weights.text_encoder, run.weights.tokenizer, device=device, dtype=dtype)
    cache.encode = lambda caption: encoder.encode(caption).stage1.to(dtype)
    try:
        cache.precompute(missing)
    finally:
        cache.encode = encoder = None
        gc.collect()
        empty_cache(device)
    return cache


def load_model(run: TrainRun, resume: Path | None, device):
    """The Stage II model to train, fp32 on `device`: a full run's checkpoint when resuming one, else --init,
    else a new random model of run.scratch (seeded with the run's seed)."""
    from ..model.transformer import build_transformer

    full = resume is not None and run.settings.lora is None
    if full or run.init is not None:
        model = load_stage2(weights_file(resume) if full else run.init)
    else:
        model = build_transformer(run.scratch, seed=run.settings.seed)
    return model.to(device=device, dtype=torch.float32)


def execute(run: TrainRun, prepared: Prepared, callback=None, log=print) -> TrainResult:
    """Embed the captions, load the models and train (see the module docstring); returns loop's TrainResult.

    callback gets ProgressEvent("train", start, steps) once the models are loaded, then the loop's events.
    A checkpoint that cannot be written (a full disk) raises OSError naming the file and the last good
    checkpoint to resume from.
    """
    device = parse_device(run.device)
    dtype = parse_dtype(run.settings.precision, device)  # of T5 and the VAE; the trained weights stay fp32
    run.out_dir.mkdir(parents=True, exist_ok=True)
    cache = embed_captions(run, prepared.captions, device, dtype, log)
    _write_records(run, prepared)
    codec = VaeCodec(load_vae(run.weights.vae, device=device, dtype=dtype))
    model = load_model(run, prepared.resume, device)
    source = MediaSource(run.schedule, prepared.pools, cache.get)
    validator = None
    if prepared.held:
        clips = held_out_clips(prepared.held, run.schedule.phases[-1], run.val_clips, run.settings.seed + 1, cache.get)
        validator = HeldOut(clips, codec, run.settings.pixel, seed=run.settings.seed + 1)
    metadata = {"base_model": run.init.name if run.init else "", "data": run.data.name}
    report(callback, "train", prepared.start, run.settings.steps)  # the start, without values: models are loaded
    try:
        return train_stage2(model, codec, source, run.settings, run.out_dir, callback, prepared.resume, validator,
                            metadata)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise explain_save_error(exc, run.out_dir) from exc


def _write_records(run: TrainRun, prepared: Prepared) -> None:
    """schedule.json (if absent) and, for a hold-out, holdout.txt (if absent)."""
    schedule = run.out_dir / SCHEDULE_FILE
    if not schedule.exists():
        schedule.write_text(run.schedule.to_json(), encoding="utf-8")
    listed = run.out_dir / HOLDOUT_FILE
    if run.holdout is not None and not listed.exists():
        listed.write_text("".join(f"{item.path.relative_to(run.data)}\n" for item in prepared.held), encoding="utf-8")
