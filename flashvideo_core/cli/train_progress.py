"""What `train-stage2` shows: the plan before it starts, one progress bar (loss, steps/s), checkpoint and
validation lines, a JSON-lines log in OUT_DIR (train-log.jsonl), and where the result is."""

from __future__ import annotations

import json
import sys
import time
from collections import deque

from tqdm import tqdm

from ..progress import ProgressEvent
from ..training.checkpoints import LORA_NAME, WEIGHTS_NAME, step_dir
from .interrupts import raise_if_interrupted

LOG_NAME = "train-log.jsonl"
TRAIN_BAR = ("{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} steps [{elapsed}<{remaining}, "
             "{rate_noinv_fmt}{postfix}]")
LOSS_WINDOW = 50
"""Steps the bar's mean loss is taken over."""


def _lr_curve(settings) -> str:
    """', warm-up N steps, cosine decay' or what of it applies ('' for a constant lr)."""
    warmup = f", warm-up {settings.lr_warmup} steps" if settings.lr_warmup else ""
    return warmup + (", cosine decay" if settings.lr_decay == "cosine" else "")


def _model_line(run, tiny: bool) -> str:
    s = run.settings
    if s.lora is not None:
        return (f"model:    a LoRA of rank {s.lora.rank} (alpha {s.lora.alpha:g}) on {run.init}; only the adapter "
                "trains")
    if run.resume is not None:
        return f"model:    full fine-tuning (every weight), resumed from {run.resume}"
    if run.init is not None:
        return f"model:    full fine-tuning of {run.init} (every weight)"
    c = run.scratch
    which = "the TINY test configuration" if tiny else "the published Stage II architecture"
    return (f"model:    FROM SCRATCH: random weights in {which} ({c.num_layers} layers x {c.hidden_size} wide, "
            f"{c.num_heads} heads, text width {c.text_dim}); pass --init stage2.pt to fine-tune the published model")


def describe_run(run, prepared, tiny: bool = False) -> str:
    """The plan of a run: model, data, phases, optimiser, degradations, validation, device and output."""
    from ..devices import parse_device

    s, pools = run.settings, prepared.pools
    pixel, noise = s.pixel, s.latent.noise_steps
    files = {item.path: item.kind for pool in pools for item in (*pool.images, *pool.videos)}
    kinds = list(files.values())
    lines = [_model_line(run, tiny), f"data:     {run.data}: {kinds.count('video')} video(s) and "
             f"{kinds.count('image')} image(s) used"]
    lines += [f"          {line}" for line in run.schedule.describe()]
    lines += [
        f"steps:    {s.steps}, batch {s.batch}, AdamW lr {s.lr:g}{_lr_curve(s)} (betas {s.betas[0]:g}/"
        f"{s.betas[1]:g}, weight decay {s.weight_decay:g}), grad clip {s.grad_clip:g}, unconditional "
        f"{s.uncond_fraction:.0%}, seed {s.seed}",
        f"DEG:      blur sigma {pixel.blur_sigma[0]:g}-{pixel.blur_sigma[1]:g} px (p {pixel.blur_probability:g}), "
        f"area downscale x{pixel.downscale[0]:g}-{pixel.downscale[1]:g}, noise steps {noise[0]}-{noise[1]} (unless "
        "a phase sets its own)",
    ]
    if prepared.held:
        every = f"every {s.validate_every} steps and at the end" if s.validate_every else "at the end"
        lines.append(f"validate: {every}, {run.val_clips} sample(s) of {len(prepared.held)} held-out file(s)")
    device = parse_device(run.device)
    autocast = "bf16 autocast" if s.bf16_autocast(device.type) else "fp32"
    checkpointing = ", gradient checkpointing" if s.gradient_checkpointing else ""
    lines.append(f"device:   {device}, {autocast} (weights fp32){checkpointing}")
    kind = LORA_NAME if s.lora is not None else WEIGHTS_NAME
    lines.append(f"output:   {run.out_dir}/step-<N>/{kind} + training-state.pt every {s.checkpoint_every} steps and "
                 "at the end")
    if run.caption_cache is not None:
        lines.append(f"captions: embeddings kept in {run.caption_cache} (shared with other runs)")
    if prepared.resume is not None:
        lines.append(f"resume:   from {prepared.resume} (step {prepared.start})")
    return "\n".join(lines)


class TrainBar:
    """A ProgressEvent callback for train_stage2: a tqdm bar of steps with the loss and steps/s, a line per
    checkpoint and validation pass, and every value appended to OUT_DIR/train-log.jsonl."""

    def __init__(self, run, enabled: bool = True, file=None):
        self.run, self.enabled, self.file = run, enabled, file
        self.bar = None
        self.losses: deque[float] = deque(maxlen=LOSS_WINDOW)
        self.step_done_at: float | None = None  # the bar's clock when the last step ended

    def _skip_pause(self) -> None:
        """Take the time since the last step (a validation pass) off the bar's clock: steps/s and the time
        left count training steps only."""
        if self.bar is None or self.step_done_at is None:
            return
        pause = self.bar._time() - self.step_done_at
        self.bar.start_t += pause
        self.bar.last_print_t += pause
        self.step_done_at = None

    def __call__(self, event: ProgressEvent) -> None:
        raise_if_interrupted()
        values = dict(event.values or {})
        kind = "start" if event.phase == "train" and event.values is None else event.phase
        self._log({"event": kind, "step": event.step, **values, "time": round(time.time(), 3)})
        if event.phase == "validate":
            self._skip_pause()
            self.write(f"step {event.step}: validation PSNR {values.get('psnr', float('nan')):.2f} dB, low-frequency "
                       f"PSNR {values.get('lowfreq_psnr', float('nan')):.2f} dB, log-spectral distance "
                       f"{values.get('lsd', float('nan')):.4f}")
            return
        if event.phase != "train":
            return
        if self.enabled and self.bar is None:
            self.bar = tqdm(total=event.total, initial=event.step, desc="train", unit="step", bar_format=TRAIN_BAR,
                            file=self.file or sys.stderr)
        if event.values is None:
            return  # the start event: the bar opens before the first step runs, so its rate is the steps'
        self.losses.append(values.get("loss", float("nan")))
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss {self.losses[-1]:.4f}, mean {sum(self.losses) / len(self.losses):.4f}",
                                     refresh=False)
            self.bar.update(event.step - self.bar.n)
            self.step_done_at = self.bar._time()
            if event.step >= event.total:
                self.close()  # the last step stops the clock: the final validation is not counted in steps/s
        if self.run.settings.checkpoint_due(event.step):
            self.write(f"checkpoint: {step_dir(self.run.out_dir, event.step)}")

    def write(self, text: str) -> None:
        """A line above the bar (or plain, without one)."""
        if self.bar is not None:
            self.bar.write(text, file=self.file or sys.stderr)
        else:
            print(text, file=self.file or sys.stderr)

    def _log(self, record: dict) -> None:
        self.run.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run.out_dir / LOG_NAME, "a", encoding="utf-8") as log:
            log.write(json.dumps(record) + "\n")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def summary(self, result) -> str:
        """Where the trained model is and how to use it."""
        folder = result.checkpoint
        if folder is None:
            return "no checkpoint written"
        if (folder / LORA_NAME).is_file():
            return (f"LoRA: {folder / LORA_NAME}\n  use: generate/enhance --stage2-lora {folder / LORA_NAME} "
                    "(or the FlashVideo Stage II LoRA node)")
        return (f"Stage II weights: {folder / WEIGHTS_NAME}\n  use: generate/enhance --stage2 {folder / WEIGHTS_NAME} "
                "(or the Stage II loader node)")
