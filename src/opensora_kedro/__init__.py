"""Open-Sora's data and training system as a Kedro project."""

__version__ = "0.1.0"
