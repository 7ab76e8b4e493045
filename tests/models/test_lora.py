"""LoRA on the MMDiT: what trains, adapter files, merging, and loading base + adapter."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from opensora_kedro.models.lora import (
    adapter_state,
    add_lora,
    load_adapter_state,
    merge_adapter,
    merged_model,
    save_adapter,
)
from opensora_kedro.models.mmdit import build_mmdit, mmdit_config
from opensora_kedro.models.mmdit_loading import load_pretrained_mmdit
from opensora_kedro.training.params import DEFAULT_TARGETS, LoraParams

LORA = LoraParams(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=list(DEFAULT_TARGETS))


def _base(seed: int = 0):
    torch.manual_seed(seed)
    model = build_mmdit("tiny")
    torch.nn.init.normal_(model.final_layer.linear.weight, std=0.1)  # not the zero output
    return model


def _inputs():
    g = torch.Generator().manual_seed(1)
    return (torch.randn(2, 4, 2, 4, 4, generator=g), torch.randn(2, 5, 64, generator=g),
            torch.randn(2, 64, generator=g), torch.rand(2, generator=g))  # fmt: skip


def _trained_adapter(seed: int = 0):
    model = add_lora(_base(seed), LORA)
    torch.manual_seed(2)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero: give the adapter an effect
            torch.nn.init.normal_(param, std=0.05)
    return model


def test_only_adapter_parameters_get_gradients():
    model = add_lora(_base(), LORA)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    # every default target got an adapter: both block kinds, attention and MLP
    for suffix in (
        "img_qkv.q_proj",
        "txt_proj",
        "txt_mlp.2",
        "single_blocks.1.qkv.v_proj",
        "mlp_in",
        "linear2",
    ):
        assert any(suffix in n for n in trainable), suffix
    model(*_inputs()).square().mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(grads[n] is None for n in grads if n not in trainable)
    assert all(grads[n].abs().sum() > 0 for n in trainable if ".lora_B." in n)


def test_adapters_round_trip_and_merged_equals_unmerged(tmp_path):
    model = _trained_adapter()
    x = _inputs()
    with torch.no_grad():
        unmerged = model(*x)
        assert (unmerged - _base()(*x)).abs().max() > 1e-3  # the adapter matters
    folder = save_adapter(model, tmp_path / "lora")
    assert {p.name for p in folder.iterdir()} == {
        "adapter_config.json",
        "adapter_model.safetensors",
    }
    assert all(".lora_" in k for k in load_file(str(folder / "adapter_model.safetensors")))
    # a fresh base + the saved adapter, merged at load
    with torch.no_grad():
        torch.testing.assert_close(
            merge_adapter(_base(), folder)(*x), unmerged, atol=1e-5, rtol=1e-5
        )
    # a checkpoint's adapter state into a fresh adapter
    other = add_lora(_base(), LORA)
    load_adapter_state(other, adapter_state(model))
    with torch.no_grad():
        torch.testing.assert_close(other(*x), unmerged, atol=0, rtol=0)
        torch.testing.assert_close(merged_model(model)(*x), unmerged, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="lacks adapter tensors"):
        load_adapter_state(other, {})


def test_continue_training_from_an_adapter_folder(tmp_path):
    folder = save_adapter(_trained_adapter(), tmp_path / "lora")
    model = add_lora(_base(), LORA, pretrained_dir=str(folder))
    assert any(p.requires_grad for n, p in model.named_parameters() if ".lora_B." in n)
    torch.testing.assert_close(adapter_state(model), adapter_state(_trained_adapter()))


def test_load_pretrained_applies_the_folders_adapter(tmp_path):
    model = _trained_adapter()
    x = _inputs()
    with torch.no_grad():
        expected = model(*x)
    export = tmp_path / "export"
    save_adapter(model, export / "lora")
    save_file(_base().state_dict(), str(export / "model.safetensors"))
    config = mmdit_config("tiny")
    loaded = load_pretrained_mmdit(config, export, strict=True, liger_rope=False)
    with torch.no_grad():
        torch.testing.assert_close(loaded(*x), expected, atol=1e-5, rtol=1e-5)
    # or the adapter named explicitly, on top of a plain weights file
    plain = load_pretrained_mmdit(config, export / "model.safetensors", strict=True,
                                  liger_rope=False, lora_path=export / "lora")  # fmt: skip
    with torch.no_grad():
        torch.testing.assert_close(plain(*x), expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(FileNotFoundError, match="no LoRA adapter"):
        load_pretrained_mmdit(config, export, strict=True, liger_rope=False, lora_path=tmp_path)
