"""The FlashVideo DiT (Stage I and II): architecture, 3D RoPE, SAT checkpoint loading."""
