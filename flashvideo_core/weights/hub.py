"""Explicit download of the published weights from Hugging Face (never called implicitly).

Files land in a folder the caller names, laid out as the loaders expect:
    dest/stage1.pt, dest/stage2.pt, dest/3d-vae.pt            (FoundationVision/FlashVideo)
    dest/text_encoder/..., dest/tokenizer/...                   (THUDM/CogVideoX-5b)
Interrupted downloads resume on the next call (huggingface_hub keeps the partial file).
Progress is reported in MB as the bytes arrive, so a caller's callback can show it and cancel.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

from ..errors import FlashVideoInputError
from ..progress import ProgressCallback, report

FLASHVIDEO_REPO = "FoundationVision/FlashVideo"
T5_REPO = "THUDM/CogVideoX-5b"


@dataclass(frozen=True)
class PublishedFile:
    """One downloadable file: where it lives on the Hub and its approximate size."""

    name: str
    repo_id: str
    filename: str
    size_gb: float


T5_FILES = (
    "text_encoder/config.json",
    "text_encoder/model.safetensors.index.json",
    "text_encoder/model-00001-of-00002.safetensors",
    "text_encoder/model-00002-of-00002.safetensors",
    "tokenizer/spiece.model",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/added_tokens.json",
)

T5_SIZES_GB = {
    "text_encoder/model-00001-of-00002.safetensors": 4.99,
    "text_encoder/model-00002-of-00002.safetensors": 4.53,
}

PUBLISHED_FILES: dict[str, list[PublishedFile]] = {
    "stage1": [PublishedFile("stage1", FLASHVIDEO_REPO, "stage1.pt", 11.8)],
    "stage2": [PublishedFile("stage2", FLASHVIDEO_REPO, "stage2.pt", 3.39)],
    "vae": [PublishedFile("vae", FLASHVIDEO_REPO, "3d-vae.pt", 1.18)],
    "t5": [PublishedFile("t5", T5_REPO, name, T5_SIZES_GB.get(name, 0.0)) for name in T5_FILES],
}


class DownloadError(RuntimeError):
    """A download that could not run (offline, missing repository, no permission)."""


MB = 2**20


def reporting_bar(callback: ProgressCallback | None, phase: str):
    """A tqdm class for huggingface_hub that also sends ProgressEvent(phase, MB done, MB total).

    The events start from the bytes already on disk (a resumed download) and come from the
    downloading thread, so an exception from the callback (a cancel) stops the download; the
    partial file stays for the next call to resume.
    """
    from huggingface_hub.utils import tqdm as hub_tqdm  # huggingface_hub: only for an explicit download

    class ReportingBar(hub_tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.bytes_done = kwargs.get("initial") or 0
            self.bytes_total = kwargs.get("total")

        def update(self, n=1):
            self.bytes_done += n or 0
            if self.bytes_total:
                total = max(1, round(self.bytes_total / MB))
                report(callback, phase, min(total, round(self.bytes_done / MB)), total)
            return super().update(n)

    return ReportingBar


def download_weights(
    dest_dir: str | Path,
    files: list[str] | None = None,
    callback: ProgressCallback | None = None,
) -> list[Path]:
    """Download published weights into `dest_dir`; returns the local paths.

    files: keys of PUBLISHED_FILES ("stage1", "stage2", "vae", "t5"); None = all of them.
    Already complete files are not downloaded again; partial files resume.
    Raises DownloadError with a clear message when offline (HF_HUB_OFFLINE=1 or no network).
    A failed or interrupted run leaves the target as it found it unless some bytes arrived (kept to resume).
    """
    keys = list(PUBLISHED_FILES) if files is None else files
    unknown = [k for k in keys if k not in PUBLISHED_FILES]
    if unknown:
        raise FlashVideoInputError(f"files={unknown} unknown; choose from {list(PUBLISHED_FILES)}.")
    wanted = [item for key in keys for item in PUBLISHED_FILES[key]]
    dest = Path(dest_dir)
    scratch = _Scratch(dest, wanted)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        return _download_all(wanted, dest, callback)
    except BaseException:
        scratch.remove_if_empty()
        raise


def _download_all(wanted: list[PublishedFile], dest: Path, callback: ProgressCallback | None) -> list[Path]:
    """hf_hub_download each of `wanted` into dest (existing folder); DownloadError names the failing file."""
    from huggingface_hub import hf_hub_download  # huggingface_hub: only for an explicit download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    takes_bar = "tqdm_class" in inspect.signature(hf_hub_download).parameters  # huggingface_hub >= 0.26
    paths = []
    for index, item in enumerate(wanted, start=1):
        phase = f"download {item.filename} ({index}/{len(wanted)})"
        bar = {"tqdm_class": reporting_bar(callback, phase)} if takes_bar else {}
        try:
            local = hf_hub_download(item.repo_id, item.filename, local_dir=dest, **bar)
        except (OfflineModeIsEnabled, LocalEntryNotFoundError) as exc:
            raise DownloadError(
                f"Cannot download {item.filename} from {item.repo_id}: this machine is offline "
                "or HF_HUB_OFFLINE is set. "
                f"Download it elsewhere and place it at {dest / item.filename}. ({exc})"
            ) from exc
        except HfHubHTTPError as exc:
            raise DownloadError(f"Download of {item.repo_id}/{item.filename} failed: {exc}") from exc
        except OSError as exc:
            raise DownloadError(f"Download of {item.repo_id}/{item.filename} failed (network or disk): {exc}") from exc
        paths.append(Path(local))
        report(callback, "download", index, len(wanted))  # files done (also when nothing was left to fetch)
    return paths


HUB_BOOKKEEPING = {"CACHEDIR.TAG", ".gitignore"}
"""Files huggingface_hub writes into `<local_dir>/.cache/huggingface` before it fetches anything."""


class _Scratch:
    """What a download run may create in its target: the folder itself, `.cache/huggingface` and the
    folders of nested files (text_encoder/, tokenizer/). Records what existed before the run so that
    `remove_if_empty` removes only what this run created, and only if no downloaded byte is in it."""

    def __init__(self, dest: Path, wanted: list[PublishedFile]):
        self.created_dirs = [p for p in (dest, *dest.parents) if not p.exists()]  # dest first
        self.roots = list(dict.fromkeys(
            [dest / ".cache"] + [dest / Path(item.filename).parts[0] for item in wanted if "/" in item.filename]))
        self.before = {p for root in self.roots if root.is_dir() for p in root.rglob("*")} | {
            root for root in self.roots if root.exists()}

    def remove_if_empty(self) -> None:
        """After a failed run: drop the lock files it made; if it left no data (no partial or finished
        file, whose bytes a later run resumes from), also the bookkeeping files and folders it made."""
        new = [p for root in self.roots if root.exists() for p in (root, *root.rglob("*")) if p not in self.before]
        for path in new:
            if path.is_file() and path.suffix == ".lock":
                path.unlink(missing_ok=True)
        if any(p.is_file() and p.exists() and p.name not in HUB_BOOKKEEPING for p in new):
            return  # partial or finished files: keep them (and their bookkeeping) for the next run
        for path in new:
            if path.is_file():
                path.unlink(missing_ok=True)
        for folder in sorted((p for p in new if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            _rmdir_if_empty(folder)
        for folder in self.created_dirs:
            if not _rmdir_if_empty(folder):
                break


def _rmdir_if_empty(folder: Path) -> bool:
    """Remove `folder` if it is an empty directory; True if it is gone."""
    try:
        folder.rmdir()
    except OSError:
        return not folder.exists()
    return True
