"""FLUX.1's 2D autoencoder (t2i2v's img_flux_ae): the released key layout, a plain reference
computation over those tensors, and loading from Open-Sora's parameter names."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from opensora_kedro.models.vae.loading import load_image_autoencoder
from opensora_kedro.models.vae.registry import build_vae

TINY = dict(ch=8, ch_mult=(1, 2), num_res_blocks=1, norm_groups=4, latent_channels=4,
            scaling_factor=0.5, shift_factor=0.1)  # fmt: skip


def test_full_size_layout_is_flux_aes():
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in build_vae("autoencoder_2d").state_dict().items()}
    facts = {
        "encoder.conv_in.weight": (128, 3, 3, 3),
        "encoder.down.0.downsample.conv.weight": (128, 128, 3, 3),
        "encoder.down.1.block.0.nin_shortcut.weight": (256, 128, 1, 1),
        "encoder.down.3.block.1.norm2.weight": (512,),
        "encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
        "encoder.conv_out.weight": (32, 512, 3, 3),
        "decoder.conv_in.weight": (512, 16, 3, 3),
        "decoder.up.3.upsample.conv.weight": (512, 512, 3, 3),
        "decoder.up.1.block.0.nin_shortcut.weight": (256, 512, 1, 1),
        "decoder.up.0.block.2.conv2.weight": (128, 128, 3, 3),
        "decoder.conv_out.weight": (3, 128, 3, 3),
    }
    assert {k: shapes.get(k) for k in facts} == facts
    assert not any(
        k.startswith(("encoder.down.3.downsample", "decoder.up.0.upsample")) for k in shapes
    )
    assert 83e6 < sum(torch.Size(s).numel() for s in shapes.values()) < 84.5e6


def _resnet(sd, p, x, groups):
    h = F.conv2d(
        F.silu(F.group_norm(x, groups, sd[f"{p}.norm1.weight"], sd[f"{p}.norm1.bias"], 1e-6)),
        sd[f"{p}.conv1.weight"],
        sd[f"{p}.conv1.bias"],
        padding=1,
    )
    h = F.conv2d(
        F.silu(F.group_norm(h, groups, sd[f"{p}.norm2.weight"], sd[f"{p}.norm2.bias"], 1e-6)),
        sd[f"{p}.conv2.weight"],
        sd[f"{p}.conv2.bias"],
        padding=1,
    )
    if f"{p}.nin_shortcut.weight" in sd:
        x = F.conv2d(x, sd[f"{p}.nin_shortcut.weight"], sd[f"{p}.nin_shortcut.bias"])
    return x + h


def _attn(sd, p, x, groups):
    h = F.group_norm(x, groups, sd[f"{p}.norm.weight"], sd[f"{p}.norm.bias"], 1e-6)
    q, k, v = (F.conv2d(h, sd[f"{p}.{n}.weight"], sd[f"{p}.{n}.bias"]).flatten(2) for n in "qkv")
    weights = torch.softmax(q.transpose(1, 2) @ k / q.shape[1] ** 0.5, dim=-1)  # [B, HW, HW]
    out = (v @ weights.transpose(1, 2)).reshape(x.shape)
    return x + F.conv2d(out, sd[f"{p}.proj_out.weight"], sd[f"{p}.proj_out.bias"])


def _mid(sd, p, h, g):
    return _resnet(
        sd,
        f"{p}.mid.block_2",
        _attn(sd, f"{p}.mid.attn_1", _resnet(sd, f"{p}.mid.block_1", h, g), g),
        g,
    )


def _out(sd, p, h, g):
    h = F.silu(F.group_norm(h, g, sd[f"{p}.norm_out.weight"], sd[f"{p}.norm_out.bias"], 1e-6))
    return F.conv2d(h, sd[f"{p}.conv_out.weight"], sd[f"{p}.conv_out.bias"], padding=1)


def reference_encode_mean(sd, x, levels=2, blocks=1, g=4):
    h = F.conv2d(x, sd["encoder.conv_in.weight"], sd["encoder.conv_in.bias"], padding=1)
    for i in range(levels):
        for j in range(blocks):
            h = _resnet(sd, f"encoder.down.{i}.block.{j}", h, g)
        if i < levels - 1:
            w = sd[f"encoder.down.{i}.downsample.conv.weight"]
            h = F.conv2d(
                F.pad(h, (0, 1, 0, 1)), w, sd[f"encoder.down.{i}.downsample.conv.bias"], stride=2
            )
    return _out(sd, "encoder", _mid(sd, "encoder", h, g), g).chunk(2, dim=1)[0]


def reference_decode(sd, z, levels=2, blocks=1, g=4):
    h = _mid(
        sd,
        "decoder",
        F.conv2d(z, sd["decoder.conv_in.weight"], sd["decoder.conv_in.bias"], padding=1),
        g,
    )
    for i in reversed(range(levels)):
        for j in range(blocks + 1):
            h = _resnet(sd, f"decoder.up.{i}.block.{j}", h, g)
        if i:
            h = F.conv2d(
                F.interpolate(h, scale_factor=2.0),
                sd[f"decoder.up.{i}.upsample.conv.weight"],
                sd[f"decoder.up.{i}.upsample.conv.bias"],
                padding=1,
            )
    return _out(sd, "decoder", h, g)


def test_matches_a_plain_computation_and_loads_from_open_soras_parameters(tmp_path):
    torch.manual_seed(0)
    vae = build_vae("autoencoder_2d", **TINY)
    for p in vae.parameters():  # norms and biases away from their defaults too
        torch.nn.init.normal_(p, std=0.2)
    state = {k: v.detach().clone() for k, v in vae.state_dict().items()}
    save_file(state, str(tmp_path / "ae.safetensors"))
    params = {"type": "autoencoder_2d", "from_pretrained": str(tmp_path / "ae.safetensors"),
              "resolution": 256, "in_channels": 3, "ch": 8, "out_ch": 3, "ch_mult": [1, 2],
              "num_res_blocks": 1, "z_channels": 4, "scale_factor": 0.5, "shift_factor": 0.1}  # fmt: skip
    # Open-Sora's img_flux_ae parameter names; the tiny type only for its GroupNorm groups
    loaded = load_image_autoencoder({**params, "type": "tiny_autoencoder_2d"})
    x = torch.rand(2, 3, 3, 8, 8) * 2 - 1  # two clips of three frames
    frames = x.permute(0, 2, 1, 3, 4).flatten(0, 1)
    with torch.no_grad():
        mean = reference_encode_mean(state, frames)
        expected = ((mean - 0.1) * 0.5).unflatten(0, (2, 3)).permute(0, 2, 1, 3, 4)
        latent = loaded.encode(x)
        torch.testing.assert_close(latent, expected, atol=1e-5, rtol=1e-4)
        decoded = reference_decode(state, (latent / 0.5 + 0.1).permute(0, 2, 1, 3, 4).flatten(0, 1))
        torch.testing.assert_close(loaded.decode(latent), decoded.unflatten(0, (2, 3)).permute(0, 2, 1, 3, 4),
                                   atol=1e-5, rtol=1e-4)  # fmt: skip
    assert latent.shape == (2, 4, 3, 4, 4) and loaded.spatial_compression == 2


def test_residual_shortcut_adds_block_averages_and_no_parameters():
    torch.manual_seed(0)
    config = {**TINY, "latent_channels": 3, "scaling_factor": 1.0, "shift_factor": 0.0}
    plain = build_vae("autoencoder_2d", **config)
    shortcut = build_vae("autoencoder_2d", **config, residual_shortcut=True)
    shortcut.load_state_dict(plain.state_dict())  # the same tensors, strictly
    x = torch.rand(1, 3, 2, 8, 8) * 2 - 1
    with torch.no_grad():
        # the latent mean gains each 2x2 block's average colour; the decoder its nearest copy
        blocks = F.avg_pool3d(x, (1, 2, 2))
        torch.testing.assert_close(shortcut.encode(x), plain.encode(x) + blocks)
        z = torch.randn(1, 3, 2, 4, 4)
        nearest = F.interpolate(z, scale_factor=(1, 2, 2), mode="nearest")
        torch.testing.assert_close(shortcut.decode(z), plain.decode(z) + nearest)


def test_residual_shortcut_needs_latent_channels_that_divide_a_block():
    with pytest.raises(ValueError, match="latent_channels 5 must divide it"):
        build_vae("autoencoder_2d", **{**TINY, "latent_channels": 5}, residual_shortcut=True)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 2, 8, 8) * 2 - 1
    plain = build_vae("autoencoder_2d", **TINY)
    checkpointed = build_vae("autoencoder_2d", **TINY, gradient_checkpointing=True)
    checkpointed.load_state_dict(plain.state_dict())
    calls = []
    for vae in (plain, checkpointed):
        block = vae.encoder.down[0].block[0]
        block.register_forward_pre_hook(lambda *_, name=vae: calls.append(name))
        vae(x, sample=False)[0].square().mean().backward()
    for a, b in zip(plain.parameters(), checkpointed.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad)
    # recomputed in backward instead of stored
    assert calls.count(plain) == 1 and calls.count(checkpointed) == 2
