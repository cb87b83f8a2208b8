"""The CogVideoX VAE: published-layout loading, and sliced decode/encode that matches and hides seams."""

import pytest
import torch

from flashvideo_core import config
from flashvideo_core.errors import CheckpointError, FlashVideoInputError
from flashvideo_core.rng import cpu_generator
from flashvideo_core.sampling.stage2_chain import resize_video, video_to_stage2_latent
from flashvideo_core.vae import (
    UNSLICED,
    SliceSpec,
    auto_slice_spec,
    build_vae,
    decode_latents,
    decode_preview_frame,
    diffusers_vae_to_sat,
    encode_video,
    infer_vae_config,
    load_vae,
    sat_vae_to_diffusers,
    save_sat_vae,
    temporal_chunks,
    tile_starts,
)
from flashvideo_core.vae.cost import bytes_per_output_voxel

from ..equivalence import assert_same_outputs, assert_same_weights


@pytest.fixture(scope="module")
def vae():
    return build_vae(config.TINY_VAE, seed=0)


def _latent(frames=3, height=8, width=12, seed=0):
    return torch.randn(1, 16, frames, height, width, generator=torch.Generator().manual_seed(seed))


def test_sat_layout_round_trip_and_loading(vae, tmp_path):
    sat = diffusers_vae_to_sat(vae.state_dict())
    assert any(k.startswith("decoder.up.3.block.0.") for k in sat) and "encoder.mid.block_1.norm1.weight" in sat
    assert set(sat_vae_to_diffusers(sat)) == set(vae.state_dict())
    path = save_sat_vae(vae, tmp_path / "3d-vae.pt")
    assert list(torch.load(path, weights_only=True)) == ["state_dict"]
    loaded = load_vae(path)
    z = _latent()
    assert_same_weights(loaded, vae)
    assert_same_outputs(decode_latents(loaded, z), decode_latents(vae, z))
    assert infer_vae_config(vae.state_dict()) == config.TINY_VAE


def test_diffusers_folder_loads(vae, tmp_path):
    vae.save_pretrained(tmp_path / "vae")
    loaded = load_vae(tmp_path / "vae")
    z = _latent()
    assert_same_weights(loaded, vae)
    assert_same_outputs(decode_latents(loaded, z), decode_latents(vae, z))


def test_wrong_model_and_corrupt_file(vae, tmp_path):
    stage1_key = "model.diffusion_model.transformer.layers.0.attention.query_key_value.weight"
    torch.save({"module": {stage1_key: torch.zeros(2, 2)}}, tmp_path / "s.pt")
    with pytest.raises(CheckpointError, match="looks like FlashVideo Stage I"):
        load_vae(tmp_path / "s.pt")
    path = save_sat_vae(vae, tmp_path / "3d-vae.pt")
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_vae(tmp_path / "cut.pt")


def test_one_slice_covering_everything_is_identical_to_unsliced(vae):
    z = _latent(frames=3)
    with torch.no_grad():
        reference, _ = vae.decoder(z)
    whole = SliceSpec(chunk_frames=4, tile_height=8, tile_width=12, overlap=4)
    assert torch.equal(decode_latents(vae, z, whole), reference.clamp(-1, 1))
    assert torch.equal(decode_latents(vae, z), reference.clamp(-1, 1))


@pytest.mark.parametrize("frames", [1, 2, 3, 4, 5])
def test_decoded_frame_count_is_4t_minus_3(vae, frames):
    for spec in (UNSLICED, SliceSpec(chunk_frames=2)):
        assert decode_latents(vae, _latent(frames=frames, height=4, width=4), spec).shape[2] == 4 * (frames - 1) + 1


def test_official_chunking_of_13_latent_frames():
    assert temporal_chunks(13, 2) == [(0, 3), (3, 5), (5, 7), (7, 9), (9, 11), (11, 13)]


SEAM_MARGIN = 16
"""Output pixels at each frame edge left out of the seam comparison: the decoder's zero padding puts
its own largest steps there (in the unsliced decode too), and those are not seams."""


@pytest.fixture(scope="module")
def smooth_vae():
    """The tiny VAE with its decoder's output conv scaled by 0.1 (the whole output scales by 0.1): on a
    smooth latent it stays within about +-0.16, so nothing reaches the +-1 clamp, which would flatten
    the steps a seam makes."""
    vae = build_vae(config.TINY_VAE, seed=0)
    with torch.no_grad():
        vae.decoder.conv_out.conv.weight.mul_(0.1)
        vae.decoder.conv_out.conv.bias.mul_(0.1)
    return vae


def _overlap_steps(starts: list[int], tile: int) -> set[int]:
    """Output-pixel steps (i = from pixel i to i + 1) across each strip two neighbouring latent tiles
    share: from the step onto the next tile's first pixel to the step off this tile's last pixel."""
    return {i for a, b in zip(starts[:-1], starts[1:], strict=True) for i in range(8 * b - 1, 8 * (a + tile))}


def _chunk_steps(chunks: list[tuple[int, int]]) -> set[int]:
    """Output-frame steps (i = from frame i to i + 1) onto each later chunk's first frame, 4 (start - 1) + 1."""
    return {4 * (start - 1) for start, _ in chunks[1:]}


def _largest_steps(video: torch.Tensor, axis: int, boundary: set[int]) -> tuple[float, float]:
    """video (B, 3, F, H, W): (largest |step| between neighbours along `axis` at the `boundary` steps,
    largest elsewhere), both over the frame's interior (SEAM_MARGIN pixels at each edge of H and W out)."""
    m = SEAM_MARGIN
    interior = video[..., m:-m, m:-m]
    steps = interior.diff(dim=axis).abs().amax(dim=[d for d in range(interior.ndim) if d != axis])
    first = 0 if axis == 2 else m  # interior step j is the video's step first + j
    at = torch.tensor([first + j in boundary for j in range(len(steps))])
    return steps[at].max().item(), steps[~at].max().item()


def _seam_excess(video, boundaries: dict[int, set[int]]) -> dict[int, float]:
    """For each axis: largest step at its boundaries / largest step elsewhere (above 1 = a seam)."""
    ratios = {}
    for axis, boundary in boundaries.items():
        at, elsewhere = _largest_steps(video, axis, boundary)
        ratios[axis] = at / elsewhere
    return ratios


def _decode_smooth_gradient(vae) -> tuple[torch.Tensor, dict[int, set[int]]]:
    """Sliced decode of a smooth latent -> (video (1, 3, 17, 96, 96), {axis: its slice-boundary steps}).

    The latent is a linear gradient in t, y and x of amplitude 0.1 (sign alternating over the 16
    channels), 5 latent frames of 12 x 12. Slices: 2 x 2 tiles of 8 latent pixels sharing 4 (blended
    strips of 32 px on both axes) and two chunks, [0:3] -> frames 0-8 and [3:5] -> frames 9-16, with
    the causal cache carried across.
    """
    frames, size, tile, overlap = 5, 12, 8, 4
    gradient = (torch.linspace(-1, 1, frames)[:, None, None] + torch.linspace(-1, 1, size)[None, :, None]
                + torch.linspace(-1, 1, size)[None, None, :])  # (T, h, w)
    signs = torch.tensor([(-1.0) ** c for c in range(16)])
    latent = 0.1 * signs[None, :, None, None, None] * gradient  # (1, 16, 5, 12, 12)
    starts, chunks = tile_starts(size, tile, overlap), temporal_chunks(frames, 2)
    assert starts == [0, 4] and chunks == [(0, 3), (3, 5)]
    boundaries = {2: _chunk_steps(chunks), 3: _overlap_steps(starts, tile), 4: _overlap_steps(starts, tile)}
    assert boundaries[2] == {8} and boundaries[4] == set(range(31, 64))
    spec = SliceSpec(chunk_frames=2, tile_height=tile, tile_width=tile, overlap=overlap)
    return decode_latents(vae, latent, spec), boundaries


def test_tiles_and_chunks_leave_no_seam_on_smooth_input(smooth_vae):
    video, boundaries = _decode_smooth_gradient(smooth_vae)
    assert video.abs().max() < 0.5  # far from the +-1 clamp: every step is the decoder's own
    # At the chunk boundary (frame 8 -> 9) and across the shared strips (row and column steps 31 -> 32
    # to 63 -> 64), no step is larger than the largest step elsewhere (5 % tolerance).
    for axis, ratio in _seam_excess(video, boundaries).items():
        assert ratio <= 1.05, f"axis {axis}: step at the slice boundaries {ratio:.2f}x the largest elsewhere"

    # The comparison catches a seam: the same video cut at the middle of each shared strip (pixel 48)
    # with the tiles shifted +-0.02 in a checkerboard, and the second chunk shifted 0.04 (steps of
    # 0.04, about the largest step elsewhere, in a video spanning about +-0.16), fails on every axis.
    side = (torch.arange(96) >= 48).float()  # (96,) 0 before the cut, 1 after
    checkerboard = 0.02 * (1 - 2 * ((side[:, None] + side[None, :]) % 2))  # (96, 96) +-0.02
    second_chunk = 0.04 * (torch.arange(video.shape[2]) >= 9).float()[:, None, None]  # (17, 1, 1)
    for axis, ratio in _seam_excess(video + checkerboard + second_chunk, boundaries).items():
        assert ratio > 1.05, f"axis {axis}: a 0.04 seam went unnoticed (ratio {ratio:.2f})"


@pytest.mark.parametrize(
    ("sabotage", "axis"),
    [("tiles averaged without ramps", 4), ("each chunk decoded without the previous one's cache", 2)],
)
def test_the_seam_check_fails_when_slicing_is_broken(smooth_vae, monkeypatch, sabotage, axis):
    import flashvideo_core.vae.slicing as slicing

    if sabotage.startswith("tiles"):
        monkeypatch.setattr(slicing, "_ramp", lambda length, *args: torch.ones(length))
    else:
        decoder = smooth_vae.decoder.forward
        monkeypatch.setattr(smooth_vae.decoder, "forward", lambda z, conv_cache=None: decoder(z))
    video, boundaries = _decode_smooth_gradient(smooth_vae)
    # Hard tile edges show across columns (1.9x; across rows this decoder's tiles happen to agree, 0.5x);
    # a cold second chunk shows at frames 8 -> 9 (1.3x).
    assert _seam_excess(video, boundaries)[axis] > 1.05


def test_encode_validates_and_samples_reproducibly(vae):
    video = torch.rand(1, 3, 9, 32, 48) * 2 - 1
    a = encode_video(vae, video, cpu_generator(1))
    assert a.shape == (1, 16, 3, 4, 6)
    assert torch.equal(a, encode_video(vae, video, cpu_generator(1)))
    assert not torch.equal(a, encode_video(vae, video, sample=False))
    with pytest.raises(FlashVideoInputError, match="4k\\+1"):
        encode_video(vae, torch.zeros(1, 3, 8, 32, 48), sample=False)
    with pytest.raises(FlashVideoInputError, match="multiple of 16"):
        encode_video(vae, torch.zeros(1, 3, 9, 40, 48), sample=False)
    with pytest.raises(FlashVideoInputError, match="generator"):
        encode_video(vae, video)


def test_sliced_encode_matches_shape_and_stays_close(vae):
    video = torch.rand(1, 3, 17, 64, 96) * 2 - 1
    whole = encode_video(vae, video, sample=False)
    sliced = encode_video(vae, video, sample=False, slices=SliceSpec(chunk_frames=2, tile_height=6, tile_width=8,
                                                                    overlap=2))
    assert sliced.shape == whole.shape
    assert torch.isfinite(sliced).all()


def test_latent_of_another_family_is_refused(vae):
    with pytest.raises(FlashVideoInputError, match="4 channels"):
        decode_latents(vae, torch.zeros(1, 4, 2, 8, 8))


def test_auto_slices_fit_the_budget_and_retry_on_oom(vae, monkeypatch):
    roomy = auto_slice_spec(vae, (1, 16, 13, 8, 12), free_bytes=10**12)
    assert roomy.tile_height is None
    tight = auto_slice_spec(vae, (1, 16, 13, 134, 240), free_bytes=2 * 10**9)
    assert tight.tile_height is not None and tight.tile_height < 134
    assert (4 * 2 + 2) * 64 * bytes_per_output_voxel(vae) * tight.tile_height * tight.tile_width <= 10**9
    import flashvideo_core.vae.slicing as slicing

    real = slicing.decode_latents
    attempts = []

    def flaky(vae_, latents, spec, callback=None):
        attempts.append(spec)
        if len(attempts) < 3:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(vae_, latents, spec, callback)

    monkeypatch.setattr(slicing, "decode_latents", flaky)
    out = decode_latents(vae, _latent(height=32, width=32), "auto", free_bytes=10**12)
    assert out.shape == (1, 3, 9, 256, 256)
    assert attempts[0].tile_height is None
    assert (attempts[1].tile_height, attempts[2].tile_height) == (16, 8)


def test_auto_slices_are_the_fewest_tiles_splitting_the_longer_axis_first(vae):
    # A 32 x 48 latent frame whose 2-frame chunk costs 1.5x the budget: 2 full-height tiles across
    # the width (26 wide, sharing 4: 1.08x the frame's area), not 4 squares of 31 (2.5x).
    frame_cost = (4 * 2 + 2) * 64 * bytes_per_output_voxel(vae) * 32 * 48
    spec = auto_slice_spec(vae, (1, 16, 13, 32, 48), free_bytes=int(2 * frame_cost / 1.5))
    assert spec == SliceSpec(chunk_frames=2, tile_height=None, tile_width=26, overlap=4)
    assert tile_starts(48, 26, 4) == [0, 22]


def test_auto_encode_uses_the_planned_slices_and_retries_with_the_same_noise(vae, monkeypatch):
    video = torch.rand(1, 3, 9, 128, 128, generator=torch.Generator().manual_seed(1)) * 2 - 1
    plain = encode_video(vae, video, cpu_generator(5), slices=SliceSpec(chunk_frames=2))
    assert torch.equal(encode_video(vae, video, cpu_generator(5), free_bytes=10**12), plain)
    import flashvideo_core.vae.slicing as slicing

    real = slicing.encode_video
    attempts = []

    def flaky(vae_, video_, generator, sample, spec, callback=None):
        attempts.append(spec)
        if len(attempts) == 1:
            torch.randn(3, generator=generator)  # noise drawn before the failure must not shift the retry's
            raise RuntimeError("CUDA out of memory")
        return real(vae_, video_, generator, sample, spec, callback)

    monkeypatch.setattr(slicing, "encode_video", flaky)
    retried = encode_video(vae, video, cpu_generator(5), free_bytes=10**12)
    assert attempts[0].tile_height is None and attempts[1].tile_height == 8
    assert torch.equal(retried, real(vae, video, cpu_generator(5), True, attempts[1]))


def stage1_to_stage2(vae, latent, height, width, seed, slices="auto"):
    """The hand-off as generate runs it: decode, resize, encode with a posterior sample."""
    return video_to_stage2_latent(vae, decode_latents(vae, latent, slices), height, width, seed, slices)


def test_handoff_slices_by_free_memory_by_default(vae):
    latent = _latent(frames=3, height=8, width=8)
    by_default = stage1_to_stage2(vae, latent, 64, 64, seed=3)
    official_chunks = stage1_to_stage2(vae, latent, 64, 64, seed=3, slices=SliceSpec(chunk_frames=2))
    assert torch.equal(by_default, official_chunks)  # plenty of memory: the official 2-frame chunks, no tiles


def test_preview_frame_and_handoff(vae):
    image = decode_preview_frame(vae, _latent(height=16, width=24), max_size=64)
    assert image.shape == (64, 96, 3) or max(image.shape[:2]) <= 64
    assert image.min() >= 0 and image.max() <= 1
    latent2 = stage1_to_stage2(vae, _latent(frames=3, height=4, width=6), height=64, width=96, seed=0)
    assert latent2.shape == (1, 16, 3, 8, 12)
    with pytest.raises(FlashVideoInputError, match="multiple of 16"):
        stage1_to_stage2(vae, _latent(), height=1080, width=1920, seed=0)
    resized = resize_video(torch.zeros(1, 3, 9, 32, 48), 64, 96)
    assert resized.shape == (1, 3, 9, 64, 96)


def test_slices_are_a_slice_spec_or_auto_and_nothing_else(vae):
    latent = _latent(frames=1, height=4, width=4)
    assert torch.equal(decode_latents(vae, latent, "auto", free_bytes=10**12), decode_latents(vae, latent, UNSLICED))
    with pytest.raises(FlashVideoInputError, match="slices=None must be a SliceSpec .* or 'auto'"):
        decode_latents(vae, latent, None)  # was "unsliced" here and "auto" one layer up
