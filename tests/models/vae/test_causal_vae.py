"""The causal video VAE: shapes, causality, posterior, scaling, tiling, and that it trains."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from opensora_kedro.models.vae import VAELoss, build_vae
from opensora_kedro.models.vae import causal_vae as causal_vae_module
from opensora_kedro.models.vae.base import (
    DiagonalGaussianDistribution,
    plan_axis,
    ramp_weights,
    run_tiled,
    tile_starts,
)

# Smaller than tiny_vae (same structure: 8x spatial, 4x temporal, 4 latent channels) so the
# many forward passes below stay fast.
SMALL = {"block_out_channels": (8, 8, 16, 16), "norm_num_groups": 4}


def small_vae(**overrides: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_vae("tiny_vae", **{**SMALL, **overrides}).eval()


def random_clip(t: int, h: int = 32, w: int = 32, batch: int = 1, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, t, h, w, generator=generator) * 2 - 1


def relative_rms(a: torch.Tensor, reference: torch.Tensor) -> float:
    return float((a - reference).square().mean().sqrt() / reference.std())


# -- shapes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("frames", [1, 5, 9, 17])
def test_encode_decode_shapes_follow_the_causal_rule(frames):
    model = small_vae()
    x = random_clip(frames, 32, 48, batch=2)
    with torch.no_grad():
        z = model.encode(x)
        y = model.decode(z)
        reconstruction, posterior = model(x)
    latent_frames = (frames - 1) // 4 + 1
    assert z.shape == (2, 4, latent_frames, 4, 6)
    assert model.latent_shape(frames, 32, 48) == (latent_frames, 4, 6)
    assert y.shape == x.shape == reconstruction.shape
    assert model.num_frames_from_latent(latent_frames) == frames
    assert posterior.mean.shape == posterior.logvar.shape == z.shape


def test_compression_properties():
    model = small_vae()
    assert (model.spatial_compression, model.temporal_compression) == (8, 4)
    assert model.latent_channels == 4 and model.is_causal


@pytest.mark.parametrize(
    ("frames", "valid"), [(1, True), (5, True), (17, True), (0, False), (4, False), (8, False)]
)
def test_valid_num_frames(frames, valid):
    assert small_vae().valid_num_frames(frames) is valid


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((1, 3, 8, 32, 32), "4k\\+1"),
        ((1, 3, 9, 36, 32), "multiples of 8"),
        ((1, 4, 9, 32, 32), "expected"),
        ((3, 9, 32, 32), "expected"),
    ],
)
def test_encode_rejects_bad_inputs(shape, match):
    with pytest.raises(ValueError, match=match):
        small_vae().encode(torch.zeros(shape))


def test_decode_rejects_wrong_latent_channels():
    with pytest.raises(ValueError, match="latent"):
        small_vae().decode(torch.zeros(1, 3, 2, 4, 4))


# -- causality ----------------------------------------------------------------------------------


@pytest.mark.parametrize("attention", [False, True])
@pytest.mark.parametrize("perturbed", [1, 4, 5, 8])
def test_encoder_is_causal(perturbed, attention):
    """Latent frame j sees input frames <= 4j: changing frame t leaves j < ceil(t/4) intact."""
    model = small_vae(mid_block_attention=attention)
    x = random_clip(9)
    changed = x.clone()
    changed[:, :, perturbed] = -changed[:, :, perturbed]
    with torch.no_grad():
        diff = (model.encode(x) - model.encode(changed)).abs().amax(dim=(0, 1, 3, 4))
    first_affected = math.ceil(perturbed / 4)
    assert torch.all(diff[:first_affected] == 0)
    assert diff[first_affected] > 1e-4


@pytest.mark.parametrize("perturbed_latent", [1, 2])
def test_decoder_is_causal(perturbed_latent):
    """Latent frame k decodes to frames 4k-3..4k; frames before 4k-3 cannot change."""
    model = small_vae()
    with torch.no_grad():
        z = model.encode(random_clip(9))
        changed = z.clone()
        changed[:, :, perturbed_latent] += 1.0
        diff = (model.decode(z) - model.decode(changed)).abs().amax(dim=(0, 1, 3, 4))
    first_affected = 4 * perturbed_latent - 3
    assert torch.all(diff[:first_affected] == 0)
    assert diff[first_affected] > 1e-4


def test_clip_wide_norm_statistics_are_not_strictly_causal():
    """HunyuanVideo's GroupNorm (causal_norm=False) lets a late frame shift early latents;
    the causality tests above would catch it."""
    model = small_vae(causal_norm=False)
    x = random_clip(9)
    changed = x.clone()
    changed[:, :, 8] = -changed[:, :, 8]
    with torch.no_grad():
        diff = (model.encode(x) - model.encode(changed)).abs().amax(dim=(0, 1, 3, 4))
    assert diff[0] > 0


def test_first_frame_encodes_like_an_image():
    model = small_vae()
    x = random_clip(9)
    with torch.no_grad():
        torch.testing.assert_close(model.encode(x[:, :, :1]), model.encode(x)[:, :, :1])


# -- posterior and scaling ------------------------------------------------------------------------


def test_standard_normal_posterior_has_zero_kl():
    posterior = DiagonalGaussianDistribution(torch.zeros(2, 8, 3, 4, 4))
    torch.testing.assert_close(posterior.kl(), torch.zeros(2))
    assert torch.equal(posterior.mode(), torch.zeros(2, 4, 3, 4, 4))


def test_kl_matches_the_closed_form():
    mean, logvar = torch.randn(2, 3, 1, 2, 2), torch.randn(2, 3, 1, 2, 2)
    posterior = DiagonalGaussianDistribution(torch.cat([mean, logvar], dim=1))
    expected = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).flatten(1).sum(1)
    torch.testing.assert_close(posterior.kl(), expected)
    assert torch.all(posterior.kl() > 0)


def test_samples_follow_mean_and_std_and_logvar_is_clamped():
    moments = torch.cat(
        [torch.full((1, 1, 1, 200, 200), 2.0), torch.full((1, 1, 1, 200, 200), -2.0)], 1
    )
    posterior = DiagonalGaussianDistribution(moments)
    sample = posterior.sample(torch.Generator().manual_seed(0))
    assert abs(float(sample.mean()) - 2.0) < 0.01
    assert abs(float(sample.std()) - math.exp(-1.0)) < 0.01
    clamped = DiagonalGaussianDistribution(torch.tensor([[0.0, 100.0]]).view(1, 2, 1, 1, 1))
    assert float(clamped.logvar) == 20.0


def test_encode_mode_vs_sample():
    model = small_vae()
    x = random_clip(5)
    with torch.no_grad():
        mode = model.encode(x)
        assert torch.equal(mode, model.encode(x))
        draw = model.encode(x, sample=True, generator=torch.Generator().manual_seed(1))
        again = model.encode(x, sample=True, generator=torch.Generator().manual_seed(1))
    assert torch.equal(draw, again)
    assert not torch.allclose(draw, mode)


def test_scaling_and_shift_are_applied_in_encode_and_undone_in_decode():
    model = small_vae(scaling_factor=0.5, shift_factor=0.25)
    x = random_clip(5)
    with torch.no_grad():
        _, posterior = model(x)
        z = model.encode(x)
        reconstruction, _ = model(x, sample=False)
        torch.testing.assert_close(z, (posterior.mode() - 0.25) * 0.5)
        # decode divides by the scale again: equal up to float rounding
        torch.testing.assert_close(model.decode(z), reconstruction, rtol=1e-4, atol=1e-4)


def test_gradients_reach_every_parameter_and_checkpointing_changes_nothing():
    x = random_clip(5)
    grads = []
    for checkpointing in (False, True):
        model = small_vae(gradient_checkpointing=checkpointing).train()
        reconstruction, posterior = model(x, sample=False)
        ((reconstruction - x).abs().mean() + posterior.kl().mean()).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        assert all(g is not None and torch.isfinite(g).all() for g in grads[-1])
    for plain, recomputed in zip(*grads, strict=True):
        torch.testing.assert_close(plain, recomputed)


# -- tiling -------------------------------------------------------------------------------------


def test_tile_starts_cover_the_axis_with_full_tiles():
    assert tile_starts(8, 8, 0.25) == [0]
    assert tile_starts(12, 4, 0.25) == [0, 3, 6, 8]
    assert tile_starts(10, 4, 0.5) == [0, 2, 4, 6]


def test_ramp_weights_sum_to_one_where_tiles_overlap():
    spans = [(0, 8), (6, 14), (10, 18)]
    total = torch.zeros(18)
    for (start, end), weight in zip(spans, ramp_weights(spans), strict=True):
        assert torch.all(weight > 0)
        total[start:end] += weight
    torch.testing.assert_close(total, torch.ones(18))


def test_tiled_run_is_exact_for_a_local_causal_map():
    """Tiles are cut in latent units and mapped to pixels with the causal rule; a map that is
    exactly local under that rule must come out of the tiled run unchanged."""

    def decode_like(z):  # latent frame 0 -> 1 frame, every other -> 4 frames; 8x in space
        frames = torch.cat([z[:, :, :1], z[:, :, 1:].repeat_interleave(4, dim=2)], dim=2)
        return frames.repeat_interleave(8, dim=3).repeat_interleave(8, dim=4)

    def encode_like(x):  # frame 4j, 8x8 average
        return torch.nn.functional.avg_pool3d(x[:, :, ::4], (1, 8, 8))

    def causal(start, end):
        return 4 * start, 4 * (end - 1) + 1

    def spatial(start, end):
        return 8 * start, 8 * end

    z = torch.randn(1, 2, 9, 12, 10)
    x = decode_like(z) + 0.1 * torch.randn(1, 2, 33, 96, 80)
    for encoding, fn, data in ((False, decode_like, z), (True, encode_like, x)):
        plans = [
            plan_axis(9, 4, 0.25, causal, encoding),
            plan_axis(12, 4, 0.25, spatial, encoding),
            plan_axis(10, 4, 0.5, spatial, encoding),
        ]
        torch.testing.assert_close(run_tiled(fn, data, plans), fn(data))


@pytest.mark.parametrize(
    "tiling",
    [
        {"use_spatial_tiling": True, "tile_sample_size": 32},
        {"use_temporal_tiling": True, "tile_sample_frames": 8},
        {
            "use_spatial_tiling": True,
            "use_temporal_tiling": True,
            "tile_sample_size": 32,
            "tile_sample_frames": 8,
            "tile_overlap_factor": 0.5,
        },
    ],
)
def test_tiled_equals_untiled_within_tolerance(tiling, monkeypatch):
    """Small tiles on the real network. GroupNorm takes its statistics per tile (as in
    HunyuanVideo), which on a *random* network moves whole tiles by O(1); that is a property of
    the weights, not of the tiling, so the norms are made the identity here. What remains is
    each conv's view across tile borders, which the overlap and blending must absorb."""
    monkeypatch.setattr(causal_vae_module.GroupNorm, "forward", lambda self, x: x)
    model = small_vae()
    x = random_clip(17, 64, 64)
    with torch.no_grad():
        z, y = model.encode(x), model.decode(model.encode(x))
        model.set_tiling(**tiling)
        z_tiled, y_tiled = model.encode(x), model.decode(z)
    assert z_tiled.shape == z.shape and y_tiled.shape == y.shape
    assert relative_rms(z_tiled, z) < 0.05
    assert relative_rms(y_tiled, y) < 0.05


def test_first_temporal_tile_is_exact_with_norms_on():
    """Causality makes the first temporal tile's latents (before the first overlap) exact."""
    model = small_vae()
    x = random_clip(33)
    with torch.no_grad():
        z = model.encode(x)
        model.set_tiling(use_temporal_tiling=True, tile_sample_frames=16)  # 5-latent tiles
        z_tiled = model.encode(x)
    # Tiles start at latent 0, 3, 6 (stride int(5 * 0.75) = 3): latents 0..2 are tile 0 only.
    torch.testing.assert_close(z_tiled[:, :, :3], z[:, :, :3])
    assert torch.isfinite(z_tiled).all()


def test_set_tiling_validates():
    model = small_vae()
    with pytest.raises(ValueError, match="unknown tiling"):
        model.set_tiling(tile_size=32)
    with pytest.raises(ValueError, match="multiple of 8"):
        model.set_tiling(use_spatial_tiling=True, tile_sample_size=30)
    with pytest.raises(ValueError, match="multiple of 4"):
        model.set_tiling(use_temporal_tiling=True, tile_sample_frames=6)
    assert not model.config.use_spatial_tiling  # a rejected change leaves the model as it was


# -- training -----------------------------------------------------------------------------------


def blob_clip(frames: int = 9, size: int = 32) -> torch.Tensor:
    """A smooth clip: a bright blob moving down, a vertical wave, a horizontal ramp."""
    t = torch.arange(frames).float()[:, None, None] / frames
    h = torch.arange(size).float()[None, :, None] / size
    w = torch.arange(size).float()[None, None, :] / size
    blob = torch.exp(-((h - 0.3 - 0.4 * t) ** 2 + (w - 0.5) ** 2) / 0.05) * 1.6 - 0.8
    wave = 0.5 * torch.cos(3 * h + 2 * t) + 0 * w
    ramp = (w - 0.5) + 0 * h + 0 * t
    return torch.stack([blob, wave, ramp])[None]


def test_tiny_vae_overfits_one_clip():
    """50 Adam steps on one 9x32x32 clip with Open-Sora's loss (no LPIPS here)."""
    torch.manual_seed(0)
    model = build_vae("tiny_vae").train()
    loss_fn = VAELoss(perceptual_loss_weight=0.0, kl_loss_weight=1e-6)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    x = blob_clip()
    losses = []
    for _ in range(50):
        reconstruction, posterior = model(x, generator=generator)
        loss = loss_fn(x, reconstruction, posterior)["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert statistics.mean(losses[-5:]) < 0.7 * statistics.mean(losses[:5])
