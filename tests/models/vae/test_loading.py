"""Loading the VAE an ``ae`` parameter group names: export folder, weights file, fallback."""

from __future__ import annotations

import json

import pytest
import torch

from opensora_kedro.models import loading
from opensora_kedro.models.params import AutoencoderParams
from opensora_kedro.models.vae.loading import (
    load_autoencoder,
    load_exported_autoencoder,
    load_image_autoencoder,
    resolve_vae_source,
)
from opensora_kedro.models.vae.registry import build_vae, save_vae_weights

SMALL = {"latent_channels": 4, "layers_per_block": 1}


def export(folder, type_: str = "tiny_vae", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    vae = build_vae(type_)
    save_vae_weights(vae, folder)
    (folder / "config.json").write_text(json.dumps({"type": type_, "config": {}}))
    return vae


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_an_export_folder_is_built_from_its_config(tmp_path):
    saved = export(tmp_path / "vae")
    params = AutoencoderParams(type="tiny_vae", from_pretrained=str(tmp_path / "vae"),
                               latent_channels=4, use_spatial_tiling=True)  # fmt: skip
    vae = load_autoencoder(params)
    assert same_weights(vae, saved) and vae.config.use_spatial_tiling
    assert not vae.training and not any(p.requires_grad for p in vae.parameters())


def test_an_export_of_another_type_is_a_clear_error(tmp_path):
    export(tmp_path / "vae")
    with pytest.raises(ValueError, match="ae.type is 'hunyuan_vae' but the VAE exported"):
        load_autoencoder(
            AutoencoderParams(type="hunyuan_vae", from_pretrained=str(tmp_path / "vae"))
        )


def test_a_weights_file_is_built_from_the_params_structure(tmp_path):
    torch.manual_seed(1)
    saved = build_vae("tiny_vae", **SMALL)
    file = save_vae_weights(saved, tmp_path / "tiny.safetensors")
    params = AutoencoderParams(type="tiny_vae", from_pretrained=str(file), **SMALL)
    assert same_weights(load_autoencoder(params), saved)
    # The schema's default layers_per_block (2) describes another network: strict loading says so.
    wrong = AutoencoderParams(type="tiny_vae", from_pretrained=str(file), latent_channels=4)
    with pytest.raises(ValueError, match="missing key|shape mismatch"):
        load_autoencoder(wrong)


def test_null_falls_back_to_the_pipeline_export(tmp_path):
    saved = export(tmp_path / "vae_model", seed=2)
    params = AutoencoderParams(type="tiny_vae", from_pretrained=None, latent_channels=4)
    assert same_weights(load_autoencoder(params, fallback=tmp_path / "vae_model"), saved)
    with pytest.raises(ValueError, match="ae.from_pretrained is not set"):
        load_autoencoder(params)
    nowhere = params.model_copy(update={"from_pretrained": str(tmp_path / "nowhere.safetensors")})
    with pytest.raises(FileNotFoundError, match="no autoencoder weights"):
        load_autoencoder(nowhere)


def test_latent_channels_must_match_the_export(tmp_path):
    export(tmp_path / "vae")
    with pytest.raises(ValueError, match="latent_channels 16"):
        load_autoencoder(AutoencoderParams(type="tiny_vae", from_pretrained=str(tmp_path / "vae"),
                                           latent_channels=16))  # fmt: skip


def test_from_scratch_loads_nothing_and_inference_shares_the_loader():
    assert resolve_vae_source(AutoencoderParams(type="tiny_vae", from_scratch=True)).weights is None
    assert loading.load_autoencoder is load_autoencoder


def test_an_export_folder_loads_on_its_own(tmp_path):
    saved = export(tmp_path / "vae", seed=3)
    vae = load_exported_autoencoder(tmp_path / "vae")
    assert same_weights(vae, saved) and not vae.training
    save_vae_weights(saved, tmp_path / "bare")  # weights without our export's config
    with pytest.raises(ValueError, match="not a VAE export"):
        load_exported_autoencoder(tmp_path / "bare")


def test_the_image_vae_block_loads_an_export_and_checks_its_type(tmp_path):
    saved = export(tmp_path / "vae", seed=4)
    assert same_weights(load_image_autoencoder({"from_pretrained": str(tmp_path / "vae")}), saved)
    with pytest.raises(ValueError, match="ae.type is 'hunyuan_vae' but the VAE exported"):
        load_image_autoencoder({"type": "hunyuan_vae", "from_pretrained": str(tmp_path / "vae")})
    with pytest.raises(ValueError, match="ae.out_ch 4 must equal in_channels"):
        load_image_autoencoder({"type": "tiny_vae", "from_pretrained": str(tmp_path / "vae"
                                / "model.safetensors"), "out_ch": 4})  # fmt: skip
