"""Tiny random weights in the published file layouts.

They let every code path (loading, conversion, both stages, the CLI, the ComfyUI nodes) run on a
machine without the real 17 GB of weights. Outputs are noise-like videos: the architecture and
file formats are real, the weights are not.

Both writers are atomic: the files are made in a hidden temporary folder and moved into place only
when all of them are finished, so an interrupted run leaves nothing that looks like tiny weights.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .. import config
from ..atomic import current_umask, signals_held, write_errors_named
from ..text.encoder import write_tiny_t5

TINY_LORA_RANK = 4
TINY_VERSION = "1"
"""Bump when the tiny layout changes, so cached tiny weights are rewritten."""

TINY_NAMES = {"stage1": "stage1.pt", "stage2": "stage2.pt", "vae": "3d-vae.pt",
              "text_encoder": "text_encoder", "tokenizer": "tokenizer"}
"""What write_tiny_weights puts in its folder: key of the returned dict -> file or folder name."""

COMPLETE = "COMPLETE"
"""Marker file of a finished tiny cache folder (ensure_tiny_weights)."""


def write_tiny_weights(dest_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write stage1.pt (with an unmerged LoRA), stage2.pt, 3d-vae.pt, text_encoder/ and tokenizer/.

    Returns {"stage1", "stage2", "vae", "text_encoder", "tokenizer"} -> path. Deterministic in `seed`.
    Never overwrites: if `dest_dir` already holds any of those names, FileExistsError names them
    before any work. A new `dest_dir` appears in one rename; into an existing one the finished
    files are moved one by one (an interrupt during the moves is held until they are done).
    """
    dest = Path(dest_dir)
    _refuse_existing(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with write_errors_named(dest), _building_folder(dest if dest.is_dir() else dest.parent,
                                                     f".{dest.name}.tiny-partial-") as tmp:
        _write_files(tmp, seed)
        _publish(tmp, dest)
    return {key: dest / name for key, name in TINY_NAMES.items()}


def default_tiny_dir() -> Path:
    """Cache folder for the embedded tiny default ($FLASHVIDEO_CACHE or ~/.cache/flashvideo)."""
    base = os.environ.get("FLASHVIDEO_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "flashvideo"
    )
    return Path(base) / f"tiny-v{TINY_VERSION}"


def ensure_tiny_weights(folder: str | Path | None = None) -> Path:
    """The tiny weights folder `folder` (default: default_tiny_dir()), built first unless complete.

    The folder is built beside its final place and renamed into it in one step, COMPLETE marker
    included, so a crashed build never leaves a half cache. If another process finishes first,
    its folder is used and this one's build is thrown away. A folder without the marker (left by
    an older, non-atomic version) is replaced if it holds nothing but tiny-weight names.
    """
    target = Path(folder) if folder else default_tiny_dir()
    if (target / COMPLETE).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _building_folder(target.parent, f".{target.name}.building-") as tmp:
        _write_files(tmp, seed=0)
        (tmp / COMPLETE).write_text("tiny random FlashVideo weights in the published layouts\n")
        with signals_held():
            _rename_into_place(tmp, target)
    return target


def _write_files(folder: Path, seed: int) -> None:
    """Write every tiny file into `folder` (an empty private folder: no care for partial files here)."""
    from ..model.sat_loading import save_sat_transformer  # these three import diffusers: only when writing
    from ..model.transformer import build_transformer
    from ..vae import build_vae, save_sat_vae

    save_sat_transformer(build_transformer(config.TINY_STAGE1, seed=seed), folder / TINY_NAMES["stage1"],
                         lora_rank=TINY_LORA_RANK)
    save_sat_transformer(build_transformer(config.TINY_STAGE2, seed=seed + 1), folder / TINY_NAMES["stage2"])
    save_sat_vae(build_vae(config.TINY_VAE, seed=seed + 2), folder / TINY_NAMES["vae"])
    write_tiny_t5(folder)


def _refuse_existing(dest: Path) -> None:
    if dest.exists() and not dest.is_dir():
        raise FileExistsError(f"{dest} is a file; tiny-weights needs a folder.")
    taken = [name for name in TINY_NAMES.values() if _occupied(dest / name)]
    if taken:
        raise FileExistsError(
            f"{dest} already holds {', '.join(taken)}; tiny weights never overwrite files. "
            "Remove them or choose another folder."
        )


def _occupied(path: Path) -> bool:
    return path.exists() or path.is_symlink()


@contextlib.contextmanager
def _building_folder(parent: Path, prefix: str) -> Iterator[Path]:
    """A new hidden folder in `parent`, removed with whatever is left in it when the block ends."""
    tmp: Path | None = None
    try:
        with signals_held():  # an interrupt between creating and remembering it would leak the folder
            tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        yield tmp
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: Path, dest: Path) -> None:
    """Move the finished entries of `tmp` to `dest`, replacing nothing; on failure remove what was moved."""
    with signals_held():
        if not dest.exists():
            _make_plain(tmp)
            with contextlib.suppress(OSError):  # dest appeared meanwhile: move entry by entry below
                os.rename(tmp, dest)
                return
        moved: list[Path] = []
        try:
            for name in TINY_NAMES.values():
                _move_no_replace(tmp / name, dest / name)
                moved.append(dest / name)
        except BaseException:
            for path in moved:
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            raise


def _move_no_replace(src: Path, dst: Path) -> None:
    """Rename `src` to `dst` unless something is already at `dst` (FileExistsError)."""
    appeared = FileExistsError(f"{dst} appeared while the tiny weights were written; not overwriting it.")
    if src.is_dir():
        if _occupied(dst):
            raise appeared
        os.rename(src, dst)  # refuses a non-empty folder at dst by itself
        return
    try:
        os.link(src, dst)  # unlike rename, never replaces an existing file
    except FileExistsError:
        raise appeared from None
    except OSError:  # a file system without hard links
        if _occupied(dst):
            raise appeared from None
        os.rename(src, dst)
    else:
        os.unlink(src)


def _rename_into_place(tmp: Path, target: Path) -> None:
    """Rename the built cache `tmp` onto `target`; keep a complete `target` another process made first."""
    _make_plain(tmp)
    try:
        os.rename(tmp, target)
        return
    except OSError:
        if (target / COMPLETE).exists():
            return  # lost the race to a finished build: use it (ours is removed with tmp)
        if not target.is_dir() or any(entry.name not in TINY_NAMES.values() for entry in target.iterdir()):
            raise FileExistsError(
                f"{target} exists but is not a finished tiny-weights folder (no {COMPLETE} marker, other "
                "files in it); not replacing it. Remove it or choose another folder."
            ) from None
    stale = Path(tempfile.mkdtemp(prefix=f".{target.name}.stale-", dir=target.parent))
    os.rename(target, stale / target.name)  # a half-written cache of an older version: swap it out
    os.rename(tmp, target)
    shutil.rmtree(stale, ignore_errors=True)


def _make_plain(folder: Path) -> None:
    """Give a mkdtemp folder (private, 0700) the permissions a plainly made folder gets."""
    os.chmod(folder, 0o777 & ~current_umask())
