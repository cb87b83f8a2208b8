"""Loading a ~2 GB SAT-layout checkpoint: peak memory of the load vs the file size (target <= 1.3x).

Writes random transformers in the published SAT layouts (bf16, {'module': ...}), about 2 GB each:
  stage2: Stage II shape (hidden 1920, ref-step/frame-count embeddings), no LoRA, like stage2.pt;
  stage1: Stage I shape (hidden 3072) with LoRA factors on qkv/dense/adaLN, like stage1.pt.
Then, each in a fresh process (bench/isolated.py), loads it with loaders.load_stage1/2 in bf16 and
reads every weight once (so lazily mapped pages are really in memory), and prints the peak
resident memory over the process's baseline (after imports) divided by the file size.

    python bench/bench_load_sat.py [--workdir DIR] [--stage2-layers 18] [--stage1-layers 8]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from isolated import measure

TARGET = 1.3

WRITE = """
import torch
from flashvideo_core.config import TransformerConfig
from flashvideo_core.transformer import FlashVideoTransformer
from flashvideo_core.sat_transformer import save_sat_transformer
torch.manual_seed(0)
torch.set_default_dtype(torch.bfloat16)
shape = TransformerConfig(num_layers={layers}, num_heads={heads}, stage2_extras={stage2})
model = FlashVideoTransformer(shape)
save_sat_transformer(model, {path!r}, lora_rank={lora})
"""

SETUP = """
import torch
from flashvideo_core import loaders
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, help="where to write the checkpoints (default: a temporary folder)")
    parser.add_argument("--stage2-layers", type=int, default=18)
    parser.add_argument("--stage1-layers", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        ok = True
        for name, case in CASES.items():
            path = str(Path(tmp) / f"{name}.pt")
            layers = getattr(args, case["layers_arg"])
            measure(WRITE.format(layers=layers, heads=case["heads"], stage2=case["stage2"], path=path,
                                 lora=case["lora"]), "")
            size = Path(path).stat().st_size
            r = measure(SETUP, LOAD.format(stage=name[-1], path=path))
            load_bytes = (r["peak_kib"] - r["baseline_kib"]) * 1024
            ratio = load_bytes / size
            ok = ok and ratio <= TARGET
            print(f"{name}: {layers} layers, {r['value'] / 1e9:.2f} B parameters, file {size / 2**30:.2f} GiB; "
                  f"load peak {load_bytes / 2**30:.2f} GiB over baseline in {r['seconds']:.1f} s; "
                  f"ratio {ratio:.3f} (target <= {TARGET})", flush=True)
            Path(path).unlink()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
