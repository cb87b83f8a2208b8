"""Loading a ~2 GB SAT-layout checkpoint: peak memory vs file size, and .pt vs converted .safetensors time.

Writes random transformers in the published SAT layouts (bf16, {'module': ...}), about 2 GB each:
  stage2: Stage II shape (hidden 1920, ref-step/frame-count embeddings), no LoRA, like stage2.pt;
  stage1: Stage I shape (hidden 3072) with LoRA factors on qkv/dense/adaLN, like stage1.pt.
Converts each with flashvideo_core.weights.convert (as `python -m flashvideo_core convert` does) to a
.safetensors (diffusers keys, LoRA merged). Then, each load in a fresh process (bench/isolated.py),
loads the .pt and the .safetensors with loaders.load_stage1/2 in bf16 and reads every weight once
(so lazily mapped pages are really in memory). Prints, per file, the peak resident memory over the
process's baseline (after imports) divided by the file size (target <= 1.3 for both), and the
load time, best of --repeats runs, in two cache states:
  warm: the file is in the OS page cache (just written or read: a second load in a session);
  cold: the file's cached pages are dropped first (posix_fadvise DONTNEED on that file only), so
        the load reads it from the disk (a first load after a reboot; where the platform allows it).
The time ratio safetensors / pt below 1 means the converted file loads faster.

    python bench/bench_load_sat.py [--workdir DIR] [--stage2-layers 18] [--stage1-layers 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from isolated import measure

TARGET = 1.3

WRITE = """
import torch
from flashvideo_core.config import TransformerConfig
from flashvideo_core.model.transformer import FlashVideoTransformer
from flashvideo_core.model.sat_loading import save_sat_transformer
torch.manual_seed(0)
torch.set_default_dtype(torch.bfloat16)
shape = TransformerConfig(num_layers={layers}, num_heads={heads}, stage2_extras={stage2})
model = FlashVideoTransformer(shape)
save_sat_transformer(model, {path!r}, lora_rank={lora})
"""

CONVERT = """
from flashvideo_core.weights.convert import convert_checkpoint
convert_checkpoint({src!r}, {dst!r})
"""

SETUP = """
import torch
from flashvideo_core.weights import loaders
"""

LOAD = """
model = loaders.load_stage{stage}({path!r}, dtype=torch.bfloat16)
total = 0.0
for param in model.parameters():
    total += float(param.detach().view(-1)[:: 4096].float().sum())
    param.detach().max()  # reads every page of the tensor
result = sum(p.numel() for p in model.parameters())
"""

CASES = {
    "stage2": {"heads": 30, "stage2": True, "lora": None, "layers_arg": "stage2_layers"},
    "stage1": {"heads": 48, "stage2": False, "lora": 128, "layers_arg": "stage1_layers"},
}
CACHE_STATES = ("warm", "cold")


def drop_from_page_cache(path: Path) -> bool:
    """Ask the OS to forget the cached pages of this one file (written to disk first); False if it cannot."""
    if not hasattr(os, "posix_fadvise"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return True


def read_through(path: Path, chunk: int = 64 * 2**20) -> None:
    """Read the whole file once (in chunks) so that it is in the OS page cache."""
    with open(path, "rb") as handle:
        while handle.read(chunk):
            pass


def time_loads(stage: str, files: dict[str, Path], repeats: int) -> dict:
    """{(format, cache state): (best seconds, peak bytes over baseline of that run)}; formats alternate."""
    best: dict = {}
    for _ in range(repeats):
        for cache in CACHE_STATES:
            for fmt, path in files.items():
                if cache == "cold" and not drop_from_page_cache(path):
                    continue
                if cache == "warm":
                    read_through(path)
                r = measure(SETUP, LOAD.format(stage=stage, path=str(path)))
                run = (r["seconds"], (r["peak_kib"] - r["baseline_kib"]) * 1024)
                if (fmt, cache) not in best or run[0] < best[fmt, cache][0]:
                    best[fmt, cache] = run
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, help="where to write the checkpoints (default: a temporary folder)")
    parser.add_argument("--stage2-layers", type=int, default=18)
    parser.add_argument("--stage1-layers", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="load runs per file and cache state (best kept)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        ok = True
        for name, case in CASES.items():
            files = {"pt": Path(tmp) / f"{name}.pt", "safetensors": Path(tmp) / f"{name}.safetensors"}
            layers = getattr(args, case["layers_arg"])
            measure(WRITE.format(layers=layers, heads=case["heads"], stage2=case["stage2"], path=str(files["pt"]),
                                 lora=case["lora"]), "")
            converted = measure("", CONVERT.format(src=str(files["pt"]), dst=str(files["safetensors"])))
            sizes = {fmt: path.stat().st_size for fmt, path in files.items()}
            print(f"{name}: {layers} layers, .pt {sizes['pt'] / 2**30:.2f} GiB, converted to .safetensors "
                  f"{sizes['safetensors'] / 2**30:.2f} GiB in {converted['seconds']:.1f} s", flush=True)
            best = time_loads(name[-1], files, args.repeats)
            for (fmt, cache), (seconds, load_bytes) in sorted(best.items()):
                ratio = load_bytes / sizes[fmt]
                ok = ok and ratio <= TARGET
                print(f"  {fmt:>11} {cache}: load {seconds:.2f} s (best of {args.repeats}); peak "
                      f"{load_bytes / 2**30:.2f} GiB over baseline, ratio to file {ratio:.3f} (target <= {TARGET})",
                      flush=True)
            for cache in CACHE_STATES:
                if ("pt", cache) in best and ("safetensors", cache) in best:
                    time_ratio = best["safetensors", cache][0] / best["pt", cache][0]
                    print(f"  {cache} load time safetensors / pt: {time_ratio:.2f} "
                          f"({'faster' if time_ratio < 1 else 'not faster'})", flush=True)
            for path in files.values():
                path.unlink()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
