"""The whole text-to-video run, one model on the device at a time: T5 -> Stage I -> preview -> Stage II -> video.

Used by the CLI. The ComfyUI nodes call the same stage functions one node at a time.
"""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from . import config
from .atomic import Reservation, reserved_output
from .devices import free_memory, on_device, parse_device, parse_dtype
from .errors import FlashVideoInputError
from .layout import check_pixel_size, image_to_video, to_uint8, video_to_image
from .memory_floor import check_fits, video_floor
from .model.lora_adapter import LoraChoice
from .modes.settings import ModelModes
from .planning import lower_bound
from .planning.auto import AS_SET, AUTO, RunMemory, check_auto_alone, choose_run
from .planning.call import StageCall
from .planning.out_of_memory import VAE_HINT, MemoryWatch, release
from .planning.room import smaller_mode_hint
from .planning.use import apply_modes, check_modes_device, load_with_modes
from .progress import ProgressCallback
from .sampling import stages
from .sampling.settings import Stage1Settings, Stage2Settings, check_seed, clip_stage2_seed
from .sampling.stage2_chain import Stage2Models, refine_video
from .text.encoder import check_prompt
from .vae import decode_latents
from .video import check_fps, check_writable_folder, write_video
from .weights import loaders
from .weights.loaders import WeightPaths


@dataclass(frozen=True)
class GenerateSettings:
    """Every knob of a text-to-video run, valid by construction; defaults are the official ones (SPEC.md).

    stage1/stage2: each stage's settings; stage2_height/width: the Stage II size (multiples of 16);
    seed: Stage I's seed S (Stage II uses S + 1, see sampling.settings.stage2_seeds); fps of the
    written videos; device/precision as devices.parse_device/parse_dtype take them; stage2_lora: a
    LoRA (file and strength) applied to Stage II after it loads, None for the model as it is; modes: how
    both transformers are stored and run (fp8 weights also for T5; block swap 'auto' resolved by the
    planner for each stage's size), ModelModes() for the plain way; memory: "as set" (modes and the stages'
    sequential_cfg as given) or "auto" (planning.auto: fp8 weights, sequential CFG and block swap chosen
    per model for its size and the free memory; then modes may set only attention and compile, and no
    stage sequential_cfg).
    """

    stage1: Stage1Settings = Stage1Settings()
    stage2: Stage2Settings = Stage2Settings()
    stage2_height: int = config.STAGE2_HEIGHT
    stage2_width: int = config.STAGE2_WIDTH
    stage2_prefix: bool = False
    seed: int = 0
    fps: float = config.DEFAULT_FPS
    preview_only: bool = False
    device: str | None = None
    precision: str = "auto"
    stage2_lora: LoraChoice | None = None
    modes: ModelModes = ModelModes()
    memory: str = AS_SET

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise FlashVideoInputError for any invalid setting (the stages' own settings check themselves)."""
        for name, value, kind in (("stage1", self.stage1, Stage1Settings), ("stage2", self.stage2, Stage2Settings)):
            if not isinstance(value, kind):
                raise FlashVideoInputError(f"{name} must be a {kind.__name__}; got {type(value).__name__}.")
        if not isinstance(self.modes, ModelModes):
            raise FlashVideoInputError(f"modes must be a ModelModes; got {type(self.modes).__name__}.")
        check_auto_alone(self.memory, self.modes, {"stage1.sequential_cfg": self.stage1.sequential_cfg,
                                                   "stage2.sequential_cfg": self.stage2.sequential_cfg})
        if self.stage2_lora is not None and not isinstance(self.stage2_lora, LoraChoice):
            raise FlashVideoInputError(f"stage2_lora must be a LoraChoice; got {type(self.stage2_lora).__name__}.")
        check_pixel_size(self.stage2_height, self.stage2_width, "Stage II size")
        check_seed(self.seed)
        check_fps(self.fps)  # the writer's own rule, checked before Stage I


@dataclass
class GenerateResult:
    """What `generate` made: the files (final_path None with preview_only), the prompt's token counts,
    and the RAW latents of each stage (stage1_latent (1, 16, T, h, w); stage2_latent None with
    preview_only), e.g. to compare with a node graph or to decode again."""

    preview_path: Path
    final_path: Path | None = None
    prompt_tokens: int = 0
    truncated_tokens: int = 0
    stage2_truncated_tokens: int = 0
    stage1_latent: torch.Tensor | None = None
    stage2_latent: torch.Tensor | None = None


def generate(
    prompt: str,
    weights: WeightPaths,
    out_dir: str | Path,
    settings: GenerateSettings | None = None,
    callback: ProgressCallback | None = None,
) -> GenerateResult:
    """Text -> Stage I preview mp4 (and, unless preview_only, the Stage II mp4) in `out_dir`.

    Models are loaded when needed and released after, so device memory holds one model plus
    activations. Output names never overwrite existing files: they are claimed before any work, so a
    concurrent run with the same prompt and seed takes the next free names. A run that fails before
    the preview is written leaves nothing behind (not even the folder it made).
    """
    settings = settings or GenerateSettings()
    check_prompt(prompt)
    needed = ["text_encoder", "stage1", "vae"] + ([] if settings.preview_only else ["stage2"])
    weights.check(*needed)
    if settings.stage2_lora is not None and not settings.preview_only:
        settings.stage2_lora.check_weights(weights.stage2)  # a LoRA of another model: named before Stage I
    device = parse_device(settings.device)
    dtype = parse_dtype(settings.precision, device)
    check_modes_device(settings.modes, device)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FlashVideoInputError(
            f"output folder {out} is a file; generate writes two videos (preview and final) into a folder."
        )
    check_writable_folder(out, "output folder")
    free = free_memory(device)
    memory = _run_memory(settings, weights, device, dtype, free)
    watch, bounds = _check_memory_floor(settings, memory, weights, device, dtype, free)
    stages = ("stage1",) if settings.preview_only else ("stage1", "stage2")
    with watch.guard(), _claimed_names(out, _slug(prompt), settings.seed, stages) as claims:
        return _generate(prompt, weights, settings, memory, (device, dtype), claims, watch.track(callback),
                         (watch, bounds))


def _generate(prompt, weights, settings, memory: RunMemory, where: tuple, claims: dict, callback,
              watched) -> GenerateResult:
    """generate's work once everything is checked and the output names are claimed (atomic.Reservation);
    memory: the modes each model runs with; where = (device, dtype); watched = (MemoryWatch, {stage: (least
    bytes, out-of-memory hint)}): each part says the watch where it is."""
    (device, dtype), (watch, bounds) = where, watched
    watch.at("T5 (the text encoder)", *bounds["T5"])
    text_encoder = loaders.load_text_encoder(weights.text_encoder, weights.tokenizer, device=device, dtype=dtype,
                                             callback=callback, weights=memory.t5_weights)
    embeds = text_encoder.encode(prompt, stage2_prefix=settings.stage2_prefix)
    del text_encoder
    release(device)

    knobs = replace(settings.stage1, sequential_cfg=memory.sequential_cfg(1))
    watch.at("Stage I", *bounds["Stage I"])
    stage1 = load_with_modes(loaders.load_stage1, weights.stage1, memory.modes(1), device, dtype, callback,
                             (knobs.num_frames, knobs.height, knobs.width, knobs.sequential_cfg))
    latent1 = stages.run_stage1(stage1, embeds.stage1, knobs, seed=settings.seed, device=device, dtype=dtype,
                                callback=callback)
    del stage1
    release(device)

    watch.at("the VAE (Stage I preview)", hint=lambda: VAE_HINT)
    vae = loaders.load_vae(weights.vae, device=device, dtype=dtype, callback=callback)
    preview = video_to_image(decode_latents(vae, latent1, callback=callback))  # (F, H, W, 3) in [0, 1]
    result = GenerateResult(_write(claims["stage1"], preview, settings.fps), None, embeds.num_tokens,
                            embeds.num_truncated, embeds.stage2_truncated, stage1_latent=latent1)
    if settings.preview_only:
        return result

    # Stage II starts from the preview as a ComfyUI IMAGE holds it (the VAE Decode -> Prepare Stage II
    # nodes), so a node graph with the same seeds gives the same latent (sampling.settings.stage2_seeds).
    vae.to("cpu")
    watch.at("Stage II", *bounds["Stage II"])
    stage2 = loaders.load_stage2(weights.stage2, device="cpu", dtype=dtype, callback=callback)
    if settings.stage2_lora is not None:
        stage2 = settings.stage2_lora.apply(stage2)
    knobs = replace(settings.stage2, sequential_cfg=memory.sequential_cfg(2))
    size = (settings.stage1.num_frames, settings.stage2_height, settings.stage2_width, knobs.sequential_cfg)
    apply_modes(stage2, memory.modes(2), device, dtype, size)
    models = Stage2Models(stage2, vae, embeds.stage2, use=lambda module: on_device(module, device, "cpu"))
    refined = refine_video(models, image_to_video(preview), (settings.stage2_height, settings.stage2_width),
                           knobs, clip_stage2_seed(settings.seed), device=device, dtype=dtype, callback=callback)
    del models, stage2, preview
    release(device)
    result.stage2_latent = refined.latent
    result.final_path = _write(claims["stage2"], video_to_image(refined.video), settings.fps)
    return result


def _run_memory(settings: GenerateSettings, weights, device: torch.device, dtype: torch.dtype, free: int) -> RunMemory:
    """The modes each model runs with: settings.modes and the stages' sequential_cfg as set, or with memory
    'auto' the planner's choice per model for `free` device bytes (planning.auto; logged, or refused)."""
    sequential = {1: settings.stage1.sequential_cfg, 2: settings.stage2.sequential_cfg}
    if settings.memory != AUTO:
        return RunMemory.as_set(settings.modes, sequential)
    one, frames = settings.stage1, settings.stage1.num_frames
    stages = [(1, "Stage I", weights.stage1, (frames, one.height, one.width))]
    if not settings.preview_only:
        stages.append((2, "Stage II", weights.stage2, (frames, settings.stage2_height, settings.stage2_width)))
    return choose_run(weights.text_encoder, stages, dtype, device, free, settings.modes)


def _check_memory_floor(settings: GenerateSettings, memory: RunMemory, weights, device: torch.device,
                        dtype: torch.dtype, free_device: int):
    """Refuse, before any model loads, a run whose least memory exceeds what is free (planning.lower_bound):
    T5's weights alone, then each stage's weights in its modes (`memory`) + one call's activations on the
    device, and each decoded video in RAM. Returns (MemoryWatch with the free device memory, {stage: (least
    bytes, hint for an out-of-memory mid-run)})."""
    free_ram = free_memory("cpu")
    t5 = lower_bound.check_t5(weights.text_encoder, dtype, memory.t5_weights, device, free_device)
    bounds = {"T5": (t5, lower_bound.t5_hint(memory.t5_weights))}
    frames = settings.stage1.num_frames
    sizes = [("Stage I", weights.stage1, settings.stage1.height, settings.stage1.width)]
    if not settings.preview_only:
        sizes.append(("Stage II", weights.stage2, settings.stage2_height, settings.stage2_width))
    for number, (stage, path, height, width) in enumerate(sizes, start=1):
        call = StageCall(number, frames, height, width, dtype, device, memory.modes(number),
                         memory.sequential_cfg(number), lower_bound.file_config(path))
        room = lower_bound.planned_room(call, free_device)
        need = lower_bound.check_stage(stage, call, room)
        check_fits(f"{stage}'s decoded video", video_floor(frames, height, width), free_ram, "cpu", frames, height,
                   width)
        bounds[stage] = (need, smaller_mode_hint(call, room))
    return MemoryWatch(device, free_device), bounds


def with_overrides(settings, **overrides):
    """Copy of a settings dataclass with the non-None overrides applied (checked again on the way)."""
    return replace(settings, **{k: v for k, v in overrides.items() if v is not None})


def _write(claim: Reservation, images: torch.Tensor, fps: float) -> Path:
    """IMAGE frames (F, H, W, 3) in [0, 1] -> the claimed mp4."""
    return write_video(claim.target, iter(to_uint8(images).numpy()), fps=fps, overwrite=False, reservation=claim)


def _slug(prompt: str, length: int = 40) -> str:
    """The prompt's first words as a file-name stem ('a_red_fox_runs'), 'flashvideo' if none."""
    words = re.sub(r"[^a-zA-Z0-9]+", "_", prompt.strip().lower()).strip("_")
    return (words[:length].rstrip("_") or "flashvideo")


@contextlib.contextmanager
def _claimed_names(folder: Path, slug: str, seed: int, stages: tuple[str, ...]) -> Iterator[dict[str, Reservation]]:
    """Claims on `<slug>_<seed>[_<n>]_<stage>.mp4` for every stage, with the first n whose names are free of
    files and of live runs (atomic.reserved_output); held until the block ends."""
    base = f"{slug}_{seed}"
    for counter in itertools.count(1):
        stem = base if counter == 1 else f"{base}_{counter}"
        if any(folder.glob(f"{stem}_stage*.mp4")):
            continue
        with contextlib.ExitStack() as stack:
            try:
                claims = {stage: stack.enter_context(reserved_output(folder / f"{stem}_{stage}.mp4"))
                          for stage in stages}
            except FileExistsError:  # appeared, or being written by a run that got here first
                continue
            yield claims
            return
