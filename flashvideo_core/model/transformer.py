"""FlashVideo's Stage I and Stage II networks: diffusers' CogVideoX transformer with 3D RoPE,
plus (Stage II) the noise-step and frame-count embeddings.

emb = time_embed(sin(timestep)) [+ time_size_embedding(sin(T_lat)) + ref_step_time_embedding(sin(k))]
The two extra terms are added by a forward hook on the inner `time_embedding`, so diffusers'
forward is used as it is.
"""

from __future__ import annotations

import contextlib

import torch
from diffusers import CogVideoXTransformer3DModel
from diffusers.models.embeddings import TimestepEmbedding

from ..config import TransformerConfig
from ..errors import FlashVideoInputError
from .rope import rope_3d


def _diffusers_model(config: TransformerConfig) -> CogVideoXTransformer3DModel:
    if config.ffn_dim not in (None, 4 * config.hidden_size):
        raise FlashVideoInputError(f"ffn_dim={config.ffn_dim} unsupported: CogVideoX blocks use 4 x hidden.")
    return CogVideoXTransformer3DModel(
        num_attention_heads=config.num_heads,
        attention_head_dim=config.head_dim,
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        time_embed_dim=config.time_embed_dim,
        text_embed_dim=config.text_dim,
        num_layers=config.num_layers,
        patch_size=config.patch_size,
        use_rotary_positional_embeddings=True,
        use_learned_positional_embeddings=False,
    )


class FlashVideoTransformer(torch.nn.Module):
    """Stage I (config.stage2_extras False) or Stage II network.

    Attributes: config (TransformerConfig), stage (1 or 2), inner (CogVideoXTransformer3DModel),
    and for Stage II ref_step_time_embedding, time_size_embedding; source_file: the file it was
    loaded from (None when built in memory), named in errors about damaged weights.
    """

    source_file: str | None = None

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.stage = 2 if config.stage2_extras else 1
        self.inner = _diffusers_model(config)
        self._extra_embedding: torch.Tensor | None = None
        self._rope_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        if config.stage2_extras:
            self.ref_step_time_embedding = TimestepEmbedding(config.hidden_size, config.time_embed_dim)
            self.time_size_embedding = TimestepEmbedding(config.hidden_size, config.time_embed_dim)
            self.inner.time_embedding.register_forward_hook(self._add_extra_embedding)

    def _add_extra_embedding(self, module, args, output):
        if self._extra_embedding is None:
            raise FlashVideoInputError("Stage II needs noise_step; call the model through forward().")
        return output + self._extra_embedding.to(output.dtype)

    def _rope(self, frames: int, grid_h: int, grid_w: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (frames, grid_h, grid_w, str(device))
        if key not in self._rope_cache:
            self._rope_cache = {key: rope_3d(frames, grid_h, grid_w, self.config.head_dim, device=device)}
        return self._rope_cache[key]

    def _check_inputs(self, latents: torch.Tensor, text: torch.Tensor) -> None:
        cfg = self.config
        if latents.ndim != 5 or latents.shape[2] != cfg.in_channels:
            raise FlashVideoInputError(
                f"latents must be (batch, frames, {cfg.in_channels}, h, w); got {tuple(latents.shape)}."
            )
        if latents.shape[3] % cfg.patch_size or latents.shape[4] % cfg.patch_size:
            raise FlashVideoInputError(
                f"latent size {tuple(latents.shape[3:])} must be a multiple of the patch size {cfg.patch_size} "
                "(pixel size a multiple of 16)."
            )
        if text.ndim != 3 or text.shape[-1] != cfg.text_dim:
            raise FlashVideoInputError(
                f"text embedding must be (batch, tokens, {cfg.text_dim}); got {tuple(text.shape)}."
            )

    def forward(
        self,
        latents: torch.Tensor,
        text: torch.Tensor,
        timestep: torch.Tensor | float,
        noise_step: torch.Tensor | float | None = None,
    ) -> torch.Tensor:
        """latents (B, T, C, h, w), text (B, L, text_dim), timestep (B,) -> prediction (B, T, C_out, h, w).

        Stage II also needs noise_step ((B,) or a number), embedded exactly as given (in the
        official bf16 runs 675 arrives as 676.0); the latent frame count T feeds time_size_embedding.
        """
        self._check_inputs(latents, text)
        batch, frames, _, height, width = latents.shape
        dtype, device = latents.dtype, latents.device
        timestep = torch.as_tensor(timestep, device=device).reshape(-1).expand(batch)
        rope = self._rope(frames, height // self.config.patch_size, width // self.config.patch_size, device)
        context = contextlib.nullcontext()
        if self.stage == 2:
            if noise_step is None:
                raise FlashVideoInputError("The Stage II model needs noise_step (the degradation step, e.g. 675).")
            noise_step = torch.as_tensor(noise_step, device=device).reshape(-1).expand(batch)
            frame_count = torch.full((batch,), frames, device=device, dtype=dtype)
            sinusoid = self.inner.time_proj
            extra = self.time_size_embedding(sinusoid(frame_count).to(dtype))
            extra = extra + self.ref_step_time_embedding(sinusoid(noise_step).to(dtype))
            context = self._pending(extra)
        with context:
            return self.inner(
                hidden_states=latents,
                encoder_hidden_states=text,
                timestep=timestep,
                image_rotary_emb=rope,
                return_dict=False,
            )[0]

    @contextlib.contextmanager
    def _pending(self, extra: torch.Tensor):
        self._extra_embedding = extra
        try:
            yield
        finally:
            self._extra_embedding = None


def build_transformer(config: TransformerConfig, seed: int | None = None) -> FlashVideoTransformer:
    """A randomly initialised FlashVideoTransformer (deterministic for a given seed), in eval mode."""
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        # The official code zero-inits the extras' last layer for training; random here, so that
        # tests can see the noise step and frame count reach the output.
        model = FlashVideoTransformer(config)
    return model.eval()
