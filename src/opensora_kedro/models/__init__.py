"""Model code: the video autoencoders (``models.vae``); library code with no Kedro imports."""
