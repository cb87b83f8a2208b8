"""Training and fine-tuning of Stage II (the paper's Algorithm 1), LoRA included."""
