"""Prompts -> T5 embeddings: the encoder and its loading."""
