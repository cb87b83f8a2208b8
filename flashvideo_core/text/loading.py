"""Loading T5 v1.1 encoders and tokenizers from the layouts users have.

- a transformers folder (`text_encoder/` of THUDM/CogVideoX-5b: config.json + safetensors shards),
- a single `.safetensors` of encoder weights as ComfyUI users keep them (`t5xxl_fp16.safetensors`,
  `t5xxl_fp8_e4m3fn.safetensors`, incl. "scaled fp8" files with per-weight `scale_weight`): the
  config is read from the tensor shapes,
- tokenizers: a `tokenizer/` folder with `spiece.model` (needs sentencepiece and protobuf) or a
  `tokenizer.json` (as ComfyUI ships in comfy/text_encoders/t5_tokenizer).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, T5Config, T5EncoderModel

from ..checkpoint import check_json_files, load_strict, read_folder_config, read_state_dict, require_kind
from ..errors import CheckpointError, FlashVideoInputError
from ..progress import ProgressCallback

TIED_KEYS = {"encoder.embed_tokens.weight": "shared.weight"}
"""Names of the one token embedding (T5 ties the encoder's to the shared one): either in a file is enough."""
DROPPED_SUFFIXES = ("scale_weight", "scale_input", "scaled_fp8")


def infer_t5_config(state: dict[str, torch.Tensor]) -> T5Config:
    """T5 encoder config from tensor shapes (d_model, d_ff, layers, heads, d_kv, vocab, gated FFN)."""
    try:
        embed = state.get("shared.weight", state.get("encoder.embed_tokens.weight"))
        bias = state["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]  # (buckets, heads)
        query = state["encoder.block.0.layer.0.SelfAttention.q.weight"]  # (heads * d_kv, d_model)
        gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in state
        ff_key = "wi_0" if gated else "wi"
        d_ff = state[f"encoder.block.0.layer.1.DenseReluDense.{ff_key}.weight"].shape[0]
        layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.block."))
    except (KeyError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"Not a T5 encoder state dict (missing {exc}).") from exc
    if embed is None:
        raise CheckpointError("T5 weights have no token embedding (shared.weight).")
    heads = bias.shape[1]
    return T5Config(
        vocab_size=embed.shape[0],
        d_model=embed.shape[1],
        d_kv=query.shape[0] // heads,
        d_ff=d_ff,
        num_layers=layers,
        num_heads=heads,
        relative_attention_num_buckets=bias.shape[0],
        feed_forward_proj="gated-gelu" if gated else "relu",
        is_encoder_decoder=False,
        use_cache=False,
    )


def _dequantiser(state: dict[str, torch.Tensor], dtype: torch.dtype, keep_fp8: frozenset[str] = frozenset()):
    """A cast_state converter: upcasts (scaled) fp8 weights, drops ComfyUI's scaling marker tensors.
    The fp8 tensors named in keep_fp8 are kept as they are (their scales are applied by Fp8Linear)."""

    def convert(key: str, tensor: torch.Tensor) -> torch.Tensor | None:
        if key.endswith(DROPPED_SUFFIXES):
            return None
        if key in keep_fp8 and tensor.dtype == torch.float8_e4m3fn:
            return tensor
        scale = state.get(key[: -len("weight")] + "scale_weight") if key.endswith(".weight") else None
        if scale is None:
            return tensor.to(dtype)
        return (tensor.to(torch.float32) * scale.to(torch.float32)).to(dtype)

    return convert


def load_t5_encoder(
    path: str | Path, dtype: torch.dtype = torch.float32, callback: ProgressCallback | None = None,
    weights: str = "default",
) -> T5EncoderModel:
    """T5EncoderModel from a transformers folder or a single safetensors file (CPU, eval mode).

    weights "default": every tensor in `dtype` (fp8 files are upcast, as before). "fp8_e4m3fn"
    (modes.settings.WEIGHT_FORMATS): the blocks' Linear weights as modes.fp8.Fp8Linear; an fp8 file's
    weights (and "scaled fp8" scales) are kept bit for bit, not upcast; other files are quantised.

    Strict (checkpoint.load_strict): missing, unexpected and mis-shaped tensors are named in one
    CheckpointError; the decoder of a full T5 and ComfyUI's fp8 scale tensors are left out first.
    Progress of the read goes to `callback` as ProgressEvent("load <name>", MB done, MB total).
    """
    if weights not in ("default", "fp8_e4m3fn"):
        raise FlashVideoInputError(f"weights={weights!r} must be 'default' or 'fp8_e4m3fn'.")
    path = Path(path)
    state = read_state_dict(path)
    require_kind(state, "t5", path)
    state = {k: v for k, v in state.items() if not k.startswith("decoder.")}
    folder_config = read_folder_config(path) if path.is_dir() else None
    config = T5Config(**{**folder_config, "use_cache": False}) if folder_config else infer_t5_config(state)
    with torch.device("meta"):
        model = T5EncoderModel(config)
    linears = _block_linears(model) if weights == "fp8_e4m3fn" else {}
    dequantise = _dequantiser(state, dtype, frozenset(f"{name}.weight" for name in linears))  # reads the scales
    tensors = {k: v for k, v in state.items() if not k.endswith(DROPPED_SUFFIXES)}
    load_strict(model, tensors, path, "t5", dtype, callback, convert=dequantise, tied=TIED_KEYS)
    model.encoder.embed_tokens = model.shared
    if linears:
        from ..modes.fp8 import quantize_fp8

        scales = {name: state[f"{name}.scale_weight"] for name in linears if f"{name}.scale_weight" in state}
        quantize_fp8(model, dtype, scales=scales)
    return model.eval()


def _block_linears(model: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    """{name: layer} of the Linear layers in T5's encoder blocks (those fp8 mode stores in fp8)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith("encoder.block.")}


def find_tokenizer(encoder_path: str | Path, tokenizer_path: str | Path | None) -> Path:
    """The tokenizer folder to use: the given one, else `tokenizer/` beside the encoder, else the encoder's own."""
    if tokenizer_path is not None:
        candidates = [Path(tokenizer_path)]
    else:
        encoder = Path(encoder_path)
        base = encoder if encoder.is_dir() else encoder.parent
        candidates = [base.parent / "tokenizer", base / "tokenizer", base]
    for candidate in candidates:
        folder = candidate.parent if candidate.is_file() else candidate
        if (folder / "spiece.model").exists() or (folder / "tokenizer.json").exists():
            return folder
    raise CheckpointError(
        "No T5 tokenizer found (a folder with spiece.model or tokenizer.json). Searched: "
        + ", ".join(str(c) for c in candidates)
        + ". Pass the tokenizer folder (e.g. CogVideoX-5b's tokenizer/)."
    )


def load_t5_tokenizer(folder: str | Path):
    """Tokenizer from a folder holding spiece.model (+ json) or tokenizer.json; checks it is a real vocabulary."""
    folder = Path(folder)
    check_json_files(folder)  # transformers' own message for a broken json names neither file nor line
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, legacy=True)
    except Exception as exc:  # transformers raises many types here (missing sentencepiece/protobuf, bad json)
        raise CheckpointError(
            f"Could not load the T5 tokenizer in {folder}: {exc}. Folders with spiece.model need the "
            "sentencepiece and protobuf packages."
        ) from exc
    if len(tokenizer) < 16:
        raise CheckpointError(f"The tokenizer in {folder} has only {len(tokenizer)} tokens: not a T5 vocabulary.")
    return tokenizer
