"""Recaptioning: synthetic captions from a captioning model (open_clip CoCa, a transformers VLM, or an
OpenAI-compatible endpoint), written beside the original alt-text, never over it; caption policies at
shard time decide which of the two (or both) a training set sees."""
