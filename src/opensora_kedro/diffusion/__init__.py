"""Rectified flow: the noising, timesteps and loss training uses, and the denoising loop
(guidance, conditioning) sampling runs."""
