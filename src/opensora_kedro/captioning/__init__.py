"""Captioning clips with a vision-language model (transformers image-text-to-text)."""
