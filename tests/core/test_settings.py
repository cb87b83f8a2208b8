"""Settings are checked once, when made; seeds derived from them stay valid seeds."""

import numpy as np
import torch

from flashvideo_core import config
from flashvideo_core.enhance.plan import EnhanceSettings, plan_enhance, window_seed
from flashvideo_core.enhance.run import enhance_frames
from flashvideo_core.model.transformer import build_transformer
from flashvideo_core.sampling.settings import SEED_MAX, clip_stage2_seed, stage2_seeds
from flashvideo_core.sampling.stage2_chain import Stage2Models
from flashvideo_core.vae import build_vae


def _models():
    cond = torch.randn(1, 226, 32, generator=torch.Generator().manual_seed(0))
    return Stage2Models(build_transformer(config.TINY_STAGE2, seed=0), build_vae(config.TINY_VAE, seed=0), cond)


def _clip(frames=9):
    return [np.full((16, 32, 3), 40 + 10 * i, np.uint8) for i in range(frames)]


def test_the_noise_step_of_an_enhance_run_is_checked_once(monkeypatch):
    from flashvideo_core.sampling import degradation, settings

    checks = []
    real = degradation.check_noise_step
    for module in (degradation, settings):
        monkeypatch.setattr(module, "check_noise_step", lambda *a, **k: checks.append(a) or real(*a, **k))
    enhance = EnhanceSettings(scale=2, window=5, overlap=1, noise_step=600, steps=1)
    out = list(enhance_frames(_clip(), 9, _models(), enhance))  # 2 windows
    assert len(out) == 9
    assert len(checks) == 1  # was 5 (+1 per window): settings, plan, Stage II settings, degradation, run_stage2


def test_auto_noise_step_is_resolved_by_the_rule_without_a_second_check():
    plan = plan_enhance(49, 270, 480, EnhanceSettings(size="1080p"))
    assert plan.stage2.noise_step == 675 and plan.noise_source == "auto"
    assert EnhanceSettings(size="1080p").stage2.noise_step == config.DEFAULT_NOISE_STEP  # until planned


def test_seeds_at_the_top_of_the_range_wrap_into_it():
    assert stage2_seeds(SEED_MAX) == (SEED_MAX, 0)
    assert clip_stage2_seed(SEED_MAX) == 0
    assert 0 <= window_seed(SEED_MAX, 3) <= SEED_MAX
    out = list(enhance_frames(_clip(5), 5, _models(), EnhanceSettings(scale=2, window=5, overlap=0, steps=1,
                                                                       seed=SEED_MAX)))
    assert len(out) == 5  # was: seed + 1 refused after the models had loaded
