"""Latents -> latents: schedules, samplers, guidance, degradation, the two stages."""
