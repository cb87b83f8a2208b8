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

from .errors import FlashVideoInputError
from .progress import ProgressCallback, report

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
    from huggingface_hub.utils import tqdm as hub_tqdm

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
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    keys = list(PUBLISHED_FILES) if files is None else files
    unknown = [k for k in keys if k not in PUBLISHED_FILES]
    if unknown:
        raise FlashVideoInputError(f"files={unknown} unknown; choose from {list(PUBLISHED_FILES)}.")
    wanted = [item for key in keys for item in PUBLISHED_FILES[key]]
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
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
