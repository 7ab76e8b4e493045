"""Learned quality scores of clips: LAION aesthetic score and CLIP caption-frames match."""
