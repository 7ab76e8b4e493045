"""The DC-AE: shapes, the space<->channel shortcuts, linear attention, tiling geometry."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from opensora_kedro.models.vae import DCAEConfig, build_vae
from opensora_kedro.models.vae.dc_ae import (
    ChannelDuplicatingToSpace,
    LiteMLA,
    SpaceToChannelAveraging,
    _downsample,
    _upsample,
    channel_to_space,
    space_to_channel,
)


def tiny_dc_ae(**overrides: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_vae("tiny_dc_ae", **overrides).eval()


def random_clip(t: int, size: int = 64, batch: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, t, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_shapes_and_compression():
    model = tiny_dc_ae()
    x = random_clip(8, 64, batch=2)
    with torch.no_grad():
        z = model.encode(x)
        reconstruction, posterior = model(x)
        decoded = model.decode(z)
    assert z.shape == (2, 16, 2, 2, 2)
    assert reconstruction.shape == decoded.shape == x.shape
    assert posterior is None
    assert (model.spatial_compression, model.temporal_compression) == (32, 4)
    assert not model.is_causal
    assert model.latent_shape(32, 256, 192) == (8, 8, 6)
    assert model.num_frames_from_latent(8) == 32


@pytest.mark.parametrize(
    ("frames", "valid"), [(4, True), (32, True), (1, False), (5, False), (9, False)]
)
def test_frame_counts_are_multiples_of_four(frames, valid):
    model = tiny_dc_ae()
    assert model.valid_num_frames(frames) is valid
    if not valid:
        with pytest.raises(ValueError, match="multiple of 4"):
            model.latent_shape(frames, 64, 64)


def test_latent_is_deterministic_and_scaled():
    model = tiny_dc_ae(scaling_factor=2.0)
    x = random_clip(4)
    with torch.no_grad():
        z = model.encode(x)
        assert torch.equal(model.encode(x, sample=True), z)
        torch.testing.assert_close(z, 2.0 * model.encoder(x))


@pytest.mark.parametrize("ft", [1, 2])
def test_space_to_channel_is_inverted_by_channel_to_space(ft):
    x = torch.randn(2, 3, 4, 6, 8)
    packed = space_to_channel(x, ft, 2)
    assert packed.shape == (2, 3 * ft * 4, 4 // ft, 3, 4)
    assert torch.equal(channel_to_space(packed, ft, 2), x)


def test_spatial_space_to_channel_matches_pixel_unshuffle_per_frame():
    """Channel order as F.pixel_unshuffle (and Open-Sora), so the shortcuts group alike."""
    x = torch.randn(2, 3, 4, 6, 8)
    per_frame = F.pixel_unshuffle(x.transpose(1, 2).reshape(8, 3, 6, 8), 2)
    expected = per_frame.reshape(2, 4, 12, 3, 4).transpose(1, 2)
    assert torch.equal(space_to_channel(x, 1, 2), expected)


def test_averaging_shortcut_then_duplicating_shortcut_round_trip():
    """Duplicate-to-space followed by space-to-channel-average gives the input back exactly:
    the shortcuts carry the latent through the compression losslessly."""
    z = torch.randn(2, 16, 2, 3, 3)
    up = ChannelDuplicatingToSpace(16, 32, ft=2, fs=2)(z)
    assert up.shape == (2, 32, 4, 6, 6)
    torch.testing.assert_close(SpaceToChannelAveraging(32, 16, ft=2, fs=2)(up), z)


def test_down_and_up_blocks_are_residual_around_the_shortcut():
    x = torch.randn(1, 8, 4, 8, 8)
    down, up = _downsample(8, 16, temporal=True), _upsample(16, 8, temporal=True)
    for parameter in [*down.main.parameters(), *up.main.parameters()]:
        torch.nn.init.zeros_(parameter)  # silence the learned path: only the shortcut is left
    with torch.no_grad():
        low = down(x)
        assert low.shape == (1, 16, 2, 4, 4)
        torch.testing.assert_close(low, SpaceToChannelAveraging(8, 16, 2, 2)(x))
        torch.testing.assert_close(up(low), ChannelDuplicatingToSpace(16, 8, 2, 2)(low))


def test_linear_attention_matches_the_quadratic_form():
    """relu(q) relu(k)^T v / row sums, computed position by position, equals LiteMLA's
    linear-time form (checked on the plain heads; the aggregated heads use the same code)."""
    torch.manual_seed(0)
    attention = LiteMLA(16, head_dim=8, scales=())
    x = torch.randn(1, 16, 2, 3, 3)
    with torch.no_grad():
        qkv = attention.qkv(x).reshape(1, -1, 24, 18)
        q, k, v = F.relu(qkv[:, :, :8]), F.relu(qkv[:, :, 8:16]), qkv[:, :, 16:]
        scores = k.transpose(-1, -2) @ q  # [B, heads, keys, queries]
        out = (v @ scores) / (scores.sum(dim=2, keepdim=True) + 1e-15)
        expected = attention.proj(out.reshape(1, 16, 2, 3, 3))
        torch.testing.assert_close(attention(x), expected, rtol=1e-4, atol=1e-5)


def test_tiling_geometry_is_exact_for_a_local_map():
    """The non-causal temporal rule (latent t <-> frames 4t..4t+3) and the 32x spatial rule,
    checked through the model's own tile planning with a map that is exactly local."""
    model = tiny_dc_ae()

    def encode_like(x):
        return F.avg_pool3d(x, (4, 32, 32)).repeat(1, 6, 1, 1, 1)[:, :16]

    def decode_like(z):
        up = z[:, :3].repeat_interleave(4, 2).repeat_interleave(32, 3)
        return up.repeat_interleave(32, 4)

    model._encode_tile, model._decode_tile = encode_like, decode_like
    x = random_clip(32, 256)
    z = model.encode(x)
    decoded = model.decode(z)
    model.set_tiling(
        use_spatial_tiling=True,
        use_temporal_tiling=True,
        tile_sample_size=96,
        tile_sample_frames=12,
    )
    torch.testing.assert_close(model.encode(x), z)
    torch.testing.assert_close(model.decode(z), decoded)


def test_tiled_network_output_has_the_untiled_shape():
    model = tiny_dc_ae()
    x = random_clip(8, 96)  # latent 2x3x3, tiles 1x2x2: two tiles per axis
    with torch.no_grad():
        z = model.encode(x)
        model.set_tiling(
            use_spatial_tiling=True,
            use_temporal_tiling=True,
            tile_sample_size=64,
            tile_sample_frames=4,
        )
        z_tiled, decoded = model.encode(x), model.decode(z)
    assert z_tiled.shape == z.shape and decoded.shape == x.shape
    assert torch.isfinite(z_tiled).all() and torch.isfinite(decoded).all()


def test_gradients_reach_every_parameter():
    model = tiny_dc_ae(gradient_checkpointing=True).train()
    x = random_clip(4)
    reconstruction, _ = model(x)
    (reconstruction - x).abs().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"encoder_depth_list": (1, 1)}, "one entry per stage"),
        ({"block_types": ("ResBlock",) * 5 + ("Conv",)}, "unknown block types"),
        ({"temporal_downsample": (False,) * 5 + (True,)}, "last stage"),
        ({"width_list": (8, 24, 32, 32, 64, 64)}, "shortcut"),
        ({"latent_channels": 48}, "latent_channels"),
        ({"encoder_depth_list": (0, 1, 1, 1, 1, 1)}, "at least one block"),
    ],
)
def test_config_validation(overrides, match):
    base = build_vae("tiny_dc_ae").config
    fields = {name: getattr(base, name) for name in base.__dataclass_fields__}
    with pytest.raises(ValueError, match=match):
        DCAEConfig(**{**fields, **overrides})
