"""Sampling: Open-Sora 2.0's Euler denoiser with three-branch guidance and the prompt suffix."""
