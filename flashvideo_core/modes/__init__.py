"""Memory modes and speed options of the transformers: fp8 weights, block swap, attention backends,
regional torch.compile, and the planner that predicts peak memory for a setting before anything runs."""
