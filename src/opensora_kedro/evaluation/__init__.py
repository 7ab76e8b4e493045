"""Evaluation metrics and pictures (library code, no Kedro imports)."""
