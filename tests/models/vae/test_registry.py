"""The VAE registry: named sizes, overrides, errors, and the safetensors weight round trip."""

from __future__ import annotations

import json
import logging
import struct
from typing import get_args

import pytest
import torch
from safetensors.torch import save_file

from opensora_kedro.models.params import VaeType
from opensora_kedro.models.vae import (
    DCAE,
    VAE_REGISTRY,
    CausalVideoVAE,
    available_vaes,
    build_vae,
    load_vae_weights,
    save_vae_weights,
    vae_config,
)
from opensora_kedro.models.vae.autoencoder_2d import Autoencoder2D


def test_available_types():
    assert available_vaes() == (
        "hunyuan_vae", "tiny_vae", "dc_ae", "tiny_dc_ae", "autoencoder_2d", "tiny_autoencoder_2d",
    )  # fmt: skip


def test_parameter_schemas_accept_every_registered_type():
    assert get_args(VaeType) == available_vaes()


@pytest.mark.parametrize(
    ("name", "cls", "spatial", "temporal", "latent", "causal", "params_millions"),
    [
        ("hunyuan_vae", CausalVideoVAE, 8, 4, 16, True, (246, 247)),
        ("dc_ae", DCAE, 32, 4, 128, False, (459, 460)),
        ("tiny_vae", CausalVideoVAE, 8, 4, 4, True, (0.1, 1.0)),
        ("tiny_dc_ae", DCAE, 32, 4, 16, False, (0.5, 2.0)),
        ("autoencoder_2d", Autoencoder2D, 8, 1, 16, False, (83, 84.5)),
        ("tiny_autoencoder_2d", Autoencoder2D, 8, 1, 4, False, (0.01, 1.0)),
    ],
)
def test_named_sizes(name, cls, spatial, temporal, latent, causal, params_millions):
    with torch.device("meta"):  # full sizes without allocating their weights
        model = build_vae(name)
    assert isinstance(model, cls)
    assert (model.spatial_compression, model.temporal_compression) == (spatial, temporal)
    assert (model.latent_channels, model.is_causal) == (latent, causal)
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    assert params_millions[0] <= millions <= params_millions[1]


def test_full_size_configs_follow_the_reference():
    hunyuan = vae_config("hunyuan_vae")
    assert hunyuan.block_out_channels == (128, 256, 512, 512)
    assert (hunyuan.layers_per_block, hunyuan.norm_num_groups) == (2, 32)
    assert hunyuan.mid_block_attention and hunyuan.scaling_factor == 0.476986
    dc = vae_config("dc_ae")
    assert dc.width_list == (128, 256, 512, 512, 1024, 1024)
    assert dc.encoder_depth_list == (2, 2, 2, 3, 3, 3) and dc.decoder_depth_list == (3,) * 6
    assert dc.temporal_downsample == (False, False, False, True, True, False)
    assert dc.scaling_factor == pytest.approx(1 / 0.493)
    tiny = vae_config("tiny_vae")
    assert (tiny.latent_channels, tiny.layers_per_block, tiny.block_out_channels[0]) == (4, 1, 16)


def test_overrides_apply_and_lists_become_tuples():
    model = build_vae("tiny_vae", latent_channels=8, block_out_channels=[16, 16, 32, 32])
    assert model.latent_channels == 8
    assert model.config.block_out_channels == (16, 16, 32, 32)
    assert VAE_REGISTRY["tiny_vae"].config.latent_channels == 4  # the registry is untouched


def test_unknown_type_lists_the_available_ones():
    with pytest.raises(ValueError, match="available: hunyuan_vae, tiny_vae, dc_ae, tiny_dc_ae"):
        build_vae("sd_vae")


def test_unknown_override_lists_the_valid_fields():
    with pytest.raises(
        ValueError, match=r"unknown config field\(s\) \['latent_dim'\].*latent_channels"
    ):
        build_vae("tiny_vae", latent_dim=8)


def test_inconsistent_override_is_rejected():
    with pytest.raises(ValueError, match="norm_num_groups"):
        build_vae("tiny_vae", norm_num_groups=5)


# -- weights -------------------------------------------------------------------------------------


@pytest.mark.parametrize("as_directory", [False, True])
def test_weights_round_trip(tmp_path, as_directory):
    torch.manual_seed(0)
    source = build_vae("tiny_vae").eval()
    target_path = tmp_path / "ckpt" if as_directory else tmp_path / "vae.safetensors"
    written = save_vae_weights(source, target_path)
    assert written.name == ("model.safetensors" if as_directory else "vae.safetensors")
    torch.manual_seed(1)
    target = build_vae("tiny_vae").eval()
    report = load_vae_weights(target, target_path)
    assert report.complete and report.loaded == len(source.state_dict())
    x = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(source.encode(x), target.encode(x))


def test_weights_file_is_safetensors_not_pickle(tmp_path):
    file = save_vae_weights(build_vae("tiny_dc_ae"), tmp_path / "w.safetensors")
    raw = file.read_bytes()
    (header_size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_size])
    assert "encoder.project_in.conv.weight" in header
    assert header["__metadata__"] == {"format": "pt"}


def test_missing_and_unexpected_keys_are_reported(tmp_path, caplog):
    model = build_vae("tiny_vae")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    dropped = "decoder.conv_out.conv.bias"
    del state[dropped]
    state["extra.weight"] = torch.zeros(2)
    save_file(state, str(tmp_path / "w.safetensors"))
    with caplog.at_level(logging.WARNING):
        report = load_vae_weights(model, tmp_path / "w.safetensors")
    assert report.missing_keys == (dropped,) and report.unexpected_keys == ("extra.weight",)
    assert not report.complete
    assert "1 missing key(s)" in caplog.text and "extra.weight" in caplog.text
    with pytest.raises(ValueError, match="missing key"):
        load_vae_weights(model, tmp_path / "w.safetensors", strict=True)


def test_shape_mismatch_and_missing_file_raise(tmp_path):
    small = build_vae("tiny_vae")
    save_vae_weights(build_vae("tiny_vae", latent_channels=8), tmp_path)
    with pytest.raises(ValueError, match="shape mismatch"):
        load_vae_weights(small, tmp_path)
    with pytest.raises(FileNotFoundError):
        load_vae_weights(small, tmp_path / "nowhere")
