"""The `train-stage2` subcommand's flags (argparse builders); cli/train.py turns them into a training.run.TrainRun.

Flags that have a library default are None here when not given, so a flag that conflicts with a
schedule file can be named; each help text states the default.
"""

from __future__ import annotations

import argparse

from ..training.latent_degradation import DEFAULT_NOISE_STEPS, FINE_NOISE_STEPS
from ..training.pixel_degradation import PixelDegradation
from ..training.settings import LR_DECAYS, PRECISIONS, TrainSettings

TRAIN_DEFAULTS = TrainSettings()
PIXEL_DEFAULTS = PixelDegradation()
DEFAULT_SIZE, DEFAULT_FRAMES = "720x480", 49
DEFAULT_VAL_CLIPS = 4


def add_train_stage2(sub) -> None:
    """Add the train-stage2 subcommand to the subparsers `sub`."""
    train = sub.add_parser("train-stage2", help="train or fine-tune Stage II (full, or a LoRA) on a folder of "
                           "videos and images", description="Train Stage II with the paper's Algorithm 1 "
                           "(DEG_pixel + DEG_latent, flow matching from the degraded to the clean latent).")
    train.add_argument("data", help="folder of videos and/or images (searched recursively; a same-name .txt "
                       "beside a file is its caption, else the caption is empty)")
    train.add_argument("-o", "--output-dir", help="run folder for the checkpoints (step-<N>/), the caption cache "
                       "and the training log; never overwritten (required unless --resume gives the run folder)")
    _add_train_model(train)
    _add_train_run(train)
    _add_train_samples(train)
    _add_train_degradation(train)
    _add_train_validation(train)
    _add_train_weights(train)


def _add_train_model(train: argparse.ArgumentParser) -> None:
    train.add_argument("--init", metavar="STAGE2", help="the Stage II model to fine-tune: stage2.pt, a converted "
                       ".safetensors, a diffusers transformer folder or a checkpoint of an earlier run "
                       "(default: none = train FROM SCRATCH with the published architecture, said before it starts)")
    train.add_argument("--lora", type=int, metavar="RANK", help="train a LoRA of this rank (e.g. 64) on --init "
                       "instead of every weight: checkpoints hold only the small adapter, which generate/enhance "
                       "--stage2-lora and the LoRA node apply (default: full fine-tuning)")
    train.add_argument("--lora-alpha", type=float, metavar="A", help="LoRA scale numerator (scale = alpha / rank; "
                       "default: the rank, scale 1)")
    train.add_argument("--gradient-checkpointing", action="store_true", help="recompute each block's activations "
                       "in the backward pass: much less memory, about a third slower")


def _add_train_run(train: argparse.ArgumentParser) -> None:
    d = TRAIN_DEFAULTS
    train.add_argument("--steps", type=int, help=f"optimiser steps in all (default {d.steps}; with a schedule "
                       "file: the sum of its phases)")
    train.add_argument("--batch", type=int, help=f"samples per step (default {d.batch}; a schedule phase may set "
                       "its own)")
    train.add_argument("--lr", type=float, help=f"AdamW learning rate (default {d.lr:g}, the paper's)")
    train.add_argument("--lr-warmup", type=int, metavar="N", help="raise the learning rate linearly over the first "
                       "N steps (default 0: none; a few hundred steps keep a fresh LoRA or Adam state from jolting "
                       "the model)")
    train.add_argument("--lr-decay", choices=LR_DECAYS, help="after the warm-up: constant (default, the paper's) "
                       "or cosine (falls toward 0 by the last step)")
    train.add_argument("--weight-decay", type=float, help=f"AdamW weight decay (default {d.weight_decay:g}, the "
                       f"paper's; betas {d.betas[0]:g}/{d.betas[1]:g})")
    train.add_argument("--grad-clip", type=float, help=f"gradient norm clip (default {d.grad_clip:g}, the paper's)")
    train.add_argument("--seed", type=int, help=f"seed of every random draw of the run: samples, crops, "
                       f"degradations, t (default {d.seed}); a run and its resumption give the same result")
    train.add_argument("--checkpoint-every", type=int, metavar="N", help="steps between checkpoints; one is also "
                       f"written at the end (default {d.checkpoint_every})")
    train.add_argument("--resume", metavar="RUN_OR_STEP", help="continue a run: its folder (latest complete "
                       "checkpoint) or one step-<N> folder; weights, optimizer and random state are restored "
                       "(pass the run's own --lora and --init)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_train_samples(train: argparse.ArgumentParser) -> None:
    train.add_argument("--size", help=f"training crop WIDTHxHEIGHT, multiples of 16 (default {DEFAULT_SIZE}; the "
                       "paper's last phase is 1920x1080)")
    train.add_argument("--frames", type=int, help=f"frames of a video sample, 4k+1 (default {DEFAULT_FRAMES})")
    train.add_argument("--image-share", type=float, metavar="P", help="chance that a step trains on images "
                       "(1-frame samples) instead of clips; a batch never mixes them (default: the share of "
                       "images among the usable files)")
    train.add_argument("--schedule", metavar="FILE|coarse-to-fine", help="phases of steps, size, frames, image "
                       "share and noise steps: a JSON file (see the README), or coarse-to-fine: 30%% images, 30%% "
                       "mixed (share 0.5), 40%% video with noise steps narrowed to "
                       f"{FINE_NOISE_STEPS[0]}-{FINE_NOISE_STEPS[1]}, as the paper (default: one phase)")
    train.add_argument("--caption-cache", metavar="DIR", help="folder of caption embeddings to share between runs "
                       "on the same captions, so a new run loads T5 only for captions no run embedded yet (default: "
                       "OUT_DIR/caption-cache); each entry is keyed by its caption and the T5 file, size and dtype, "
                       "so another T5 never reads it")
    train.add_argument("--uncond-fraction", type=float, metavar="P", help="share of samples trained with the zero "
                       f"(unconditional) text embedding, so CFG works (default {TRAIN_DEFAULTS.uncond_fraction:g})")


def _add_train_degradation(train: argparse.ArgumentParser) -> None:
    p = PIXEL_DEFAULTS
    train.add_argument("--blur-sigma", metavar="LOW,HIGH", help="DEG_pixel Gaussian blur in pixels, drawn "
                       f"uniformly per clip (default {p.blur_sigma[0]:g},{p.blur_sigma[1]:g}; one number = fixed)")
    train.add_argument("--blur-probability", type=float, metavar="P", help="chance a clip is blurred at all "
                       f"(default {p.blur_probability:g})")
    train.add_argument("--downscale", metavar="LOW,HIGH", help="DEG_pixel area downscale factor, then back up "
                       f"(default {p.downscale[0]:g},{p.downscale[1]:g}: the paper's 2-4x)")
    train.add_argument("--noise-steps", metavar="LOW,HIGH", help="DEG_latent noise steps 0-999, drawn uniformly "
                       f"and fed to the noise-step embedding (default {DEFAULT_NOISE_STEPS[0]},"
                       f"{DEFAULT_NOISE_STEPS[1]}, the paper's first range; it narrows to {FINE_NOISE_STEPS[0]},"
                       f"{FINE_NOISE_STEPS[1]} at the end)")


def _add_train_validation(train: argparse.ArgumentParser) -> None:
    train.add_argument("--val", metavar="DIR", help="folder of held-out videos/images for validation (never "
                       "trained on)")
    train.add_argument("--holdout", type=int, metavar="N", help="hold out N files of DATA for validation instead "
                       "(chosen with --seed, listed in OUT_DIR/holdout.txt, kept on resume)")
    train.add_argument("--validate-every", type=int, metavar="N", help="steps between validation passes, which "
                       "print PSNR, low-frequency PSNR and log-spectral distance (default: only at the end, when "
                       "--val or --holdout is given)")
    train.add_argument("--val-clips", type=int, metavar="K", help="samples drawn once from the held-out files, "
                       f"at the last phase's size (default {DEFAULT_VAL_CLIPS})")


def _add_train_weights(train: argparse.ArgumentParser) -> None:
    train.add_argument("--weights", help="folder with 3d-vae.pt, text_encoder/, tokenizer/ (as generate takes it; "
                       "default: the embedded tiny random weights, for trying the command)")
    for name in ("vae", "text-encoder", "tokenizer"):
        train.add_argument(f"--{name}", help=f"path of the {name} weights (overrides --weights)")
    train.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    train.add_argument("--precision", choices=PRECISIONS, default="auto", help="auto (default): bf16 autocast on "
                       "CUDA, fp32 on CPU; the trained weights and optimizer state stay fp32 in every case")
