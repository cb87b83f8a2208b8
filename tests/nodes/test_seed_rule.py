"""One Stage II seed rule for the CLI and the nodes: `generate --seed S` gives the same latents as the node
graph with Stage I seed S, Prepare Stage II seed S + 1 and Latent Degradation seed S + 2."""

import pytest
import torch

from flashvideo_core.pipeline import GenerateSettings, generate
from flashvideo_core.sampling.settings import Stage1Settings, Stage2Settings
from flashvideo_core.weights.loaders import find_weights
from nodes import NODE_CLASS_MAPPINGS as N

PROMPT = "A red fox runs through fresh snow at sunrise."


@pytest.mark.parametrize("seed", [0, 11])
def test_a_node_graph_and_generate_with_matching_seeds_give_the_same_latent(comfy_models, tiny_weights_dir,
                                                                             tmp_path, seed):
    stage1 = N["FlashVideoStage1Loader"]().load("stage1.pt", "auto", "offload after use")[0]
    stage2 = N["FlashVideoStage2Loader"]().load("stage2.pt", "auto", "offload after use")[0]
    vae = N["FlashVideoVAELoader"]().load("3d-vae.pt", "auto", "offload after use")[0]
    t5 = N["FlashVideoT5Loader"]().load("text_encoder/", "auto (tokenizer/ beside the encoder)", "auto",
                                        "offload after use")[0]
    embeds = N["FlashVideoTextEncode"]().encode(t5, PROMPT, True)[0]
    latent1 = N["FlashVideoStage1Sampler"]().sample(stage1, embeds, seed, 3, 8.0, 5.0, 9, 48, 32)[0]
    preview = N["FlashVideoVAEDecode"]().decode(vae, latent1, "auto", 2, 64, 8)[0]
    prepared = N["FlashVideoPrepareStage2"]().prepare(vae, preview, 96, 64, seed + 1)[0]
    degraded = N["FlashVideoLatentDegradation"]().degrade(prepared, 675, seed + 2)[0]
    final = N["FlashVideoStage2Sampler"]().sample(stage2, embeds, degraded, 2, 13.0, 2.5, "euler")[0]

    settings = GenerateSettings(stage1=Stage1Settings(num_frames=9, height=32, width=48, steps=3),
                                stage2=Stage2Settings(noise_step=675, steps=2), stage2_height=64, stage2_width=96,
                                stage2_prefix=True, seed=seed)
    result = generate(PROMPT, find_weights(tiny_weights_dir), tmp_path, settings)
    assert torch.equal(result.stage1_latent, latent1["samples"])
    assert torch.equal(result.stage2_latent, final["samples"])


def test_other_degradation_seeds_give_another_latent(comfy_models):
    """The test above is not blind: the degradation seed does reach the result."""
    vae = N["FlashVideoVAELoader"]().load("3d-vae.pt", "auto", "offload after use")[0]
    prepared = N["FlashVideoPrepareStage2"]().prepare(vae, torch.rand(5, 32, 48, 3), 96, 64, 1)[0]
    one = N["FlashVideoLatentDegradation"]().degrade(prepared, 675, 2)[0]["samples"]
    other = N["FlashVideoLatentDegradation"]().degrade(prepared, 675, 1)[0]["samples"]
    assert not torch.equal(one, other)
