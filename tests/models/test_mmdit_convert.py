"""Open-Sora / Flux-format MMDiT checkpoints: key facts, conversion, strict and streamed loading.

The foreign checkpoints are built from the published layout (tests/models/mmdit_reference.py),
not from our model, and outputs are checked against a plain computation over those tensors.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from opensora_kedro.models.mmdit import MMDIT_SIZES, MMDiTConfig, build_mmdit
from opensora_kedro.models.mmdit_convert import (
    CheckpointMismatchError,
    conversion_plan,
    infer_config,
    is_foreign_format,
    rotate_half_to_interleaved,
    target_shapes,
)
from opensora_kedro.models.mmdit_loading import convert_mmdit_file, load_mmdit_file
from opensora_kedro.models.safetensors_stream import SafetensorsReader, write_safetensors
from tests.models.mmdit_reference import foreign_shapes, foreign_state, reference_forward

SMALL = MMDiTConfig(
    in_channels=16, vec_in_dim=24, context_in_dim=20, hidden_size=32, num_heads=2, depth=2,
    depth_single_blocks=2, axes_dim=(4, 6, 6), mlp_ratio=2.0,
)  # fmt: skip


def _inputs(config: MMDiTConfig, frames: int = 2, h: int = 6, w: int = 4):
    g = torch.Generator().manual_seed(3)
    c = config.latent_channels
    img = torch.randn(2, c, frames, h, w, generator=g)
    cond = torch.randn(2, c + 1, frames, h, w, generator=g)
    return dict(
        img=img, txt=torch.randn(2, 5, config.context_in_dim, generator=g),
        y=torch.randn(2, config.vec_in_dim, generator=g), t=torch.rand(2, generator=g),
        cond=cond if config.cond_embed else None,
        guidance=torch.full((2,), 4.0) if config.guidance_embed else None,
    )  # fmt: skip


def _ours(model, x):
    return model(x["img"], x["txt"], x["y"], x["t"], cond=x["cond"], guidance=x["guidance"])


def _reference(state, config, x, rotate_half):
    return reference_forward(state, config, x["img"], x["txt"], x["y"], x["t"], x["cond"],
                             x["guidance"], rotate_half)  # fmt: skip


def test_full_size_key_facts_and_structure_inference():
    """1082 tensors with cond_embed (1080 without), 1158 of ours; all used, none missing."""
    config = dataclasses.replace(MMDIT_SIZES["open_sora_2"], cond_embed=True)
    shapes = foreign_shapes(config, fused=False)
    assert len(shapes) == 1082 and len(target_shapes(config)) == 1158
    assert len(foreign_shapes(dataclasses.replace(config, cond_embed=False), False)) == 1080
    assert is_foreign_format(shapes) and not is_foreign_format(target_shapes(config))
    for fused in (False, True):
        plan = conversion_plan(config, foreign_shapes(config, fused), liger_rope=True)
        assert set(plan) == set(target_shapes(config))
    assert infer_config(shapes) == config
    params = sum(torch.Size(s).numel() for s in shapes.values())
    assert params == sum(torch.Size(s).numel() for s, _ in target_shapes(config).values())
    assert 11.8e9 < params < 12.0e9


@pytest.mark.parametrize(
    ("fused", "liger", "cond", "guidance", "ours_fused"),
    [
        (False, True, True, False, False),  # Open-Sora 2.0's release
        (True, False, False, True, False),  # FLUX.1-dev as released (interleaved RoPE)
        (True, True, False, True, True),  # Open-Sora's img_flux, fused into our fused layout
    ],
)
def test_foreign_file_loads_and_matches_the_reference(
    tmp_path, fused, liger, cond, guidance, ours_fused
):
    config = dataclasses.replace(SMALL, cond_embed=cond, guidance_embed=guidance)
    state = foreign_state(config, fused)
    save_file(state, str(tmp_path / "foreign.safetensors"))
    ours = dataclasses.replace(config, fused_qkv=ours_fused)
    model = load_mmdit_file(ours, tmp_path / "foreign.safetensors", liger_rope=liger)
    x = _inputs(config)
    with torch.no_grad():
        expected = _reference(state, config, x, rotate_half=liger)
        assert expected.abs().mean() > 0.1
        torch.testing.assert_close(_ours(model, x), expected, atol=2e-5, rtol=1e-4)
        # the other RoPE convention really differs: the flag matters
        other = _reference(state, config, x, rotate_half=not liger)
        assert (other - expected).abs().max() > 1e-3


def test_converted_folder_loads_strictly_and_equals_the_foreign_file(tmp_path):
    config = dataclasses.replace(SMALL, cond_embed=True)
    state = foreign_state(config, fused=False, seed=5)
    save_file({k: v.to(torch.bfloat16) for k, v in state.items()}, str(tmp_path / "os.safetensors"))
    inferred = infer_config({k: tuple(v.shape) for k, v in state.items()}, axes_dim=(4, 6, 6))
    assert inferred == config
    weights = convert_mmdit_file(tmp_path / "os.safetensors", tmp_path / "ours", inferred)
    converted = load_file(str(weights))  # the reference reader accepts the streamed file
    assert set(converted) == set(build_mmdit(config).state_dict())
    assert all(v.dtype == torch.bfloat16 for v in converted.values())
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["cond_embed"] is True
    x = _inputs(config)
    direct = load_mmdit_file(config, tmp_path / "os.safetensors", dtype=torch.float32)
    native = load_mmdit_file(config, weights, strict=True, dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(_ours(native, x), _ours(direct, x), atol=0, rtol=0)
    with pytest.raises(ValueError, match="already in this project's layout"):
        convert_mmdit_file(weights, tmp_path / "again", config)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("drop", "missing 1 key.*single_blocks.1.v_mlp.weight"),
        ("extra", "unexpected 1 key.*guidance_in.in_layer.weight"),
        ("shape", "single_blocks.0.linear2.weight has shape"),
    ],
)
def test_foreign_files_load_strictly(tmp_path, change, message):
    state = foreign_state(SMALL, fused=False)
    if change == "drop":
        del state["single_blocks.1.v_mlp.weight"]
    elif change == "extra":
        state["guidance_in.in_layer.weight"] = torch.zeros(32, 256)
    else:
        state["single_blocks.0.linear2.weight"] = torch.zeros(32, 7)
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointMismatchError, match=message):
        load_mmdit_file(SMALL, tmp_path / "bad.safetensors", strict=False)


def test_native_files_strict_or_not(tmp_path):
    t2v = build_mmdit(SMALL)
    save_file(t2v.state_dict(), str(tmp_path / "t2v.safetensors"))
    i2v = dataclasses.replace(SMALL, cond_embed=True)
    with pytest.raises(CheckpointMismatchError, match="missing 2 key.*cond_in.bias"):
        load_mmdit_file(i2v, tmp_path / "t2v.safetensors", strict=True)
    model = load_mmdit_file(i2v, tmp_path / "t2v.safetensors", strict=False)
    assert not model.cond_in.weight.is_meta and model.cond_in.weight.abs().sum() == 0
    assert not any(p.is_meta for p in model.parameters())
    assert torch.equal(model.txt_in.weight, t2v.txt_in.weight)


def test_rotate_half_permutation():
    rows = torch.arange(8.0)[:, None]  # two heads of four dims
    assert rotate_half_to_interleaved(rows, 4).flatten().tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_streaming_reader_and_writer(tmp_path):
    tensors = {
        "a": torch.randn(5, 3).to(torch.bfloat16),
        "b": torch.arange(4),
        "c": torch.tensor(2.5),
    }
    save_file(tensors, str(tmp_path / "x.safetensors"))
    with SafetensorsReader(tmp_path / "x.safetensors") as reader:
        assert torch.equal(reader.read("a"), tensors["a"])
        assert torch.equal(reader.read("a", rows=(1, 4)), tensors["a"][1:4])
        assert torch.equal(reader.read("c"), tensors["c"])
        with pytest.raises(ValueError, match="outside"):
            reader.read("b", rows=(2, 9))
    layout = [(k, v.dtype, tuple(v.shape)) for k, v in tensors.items()]
    write_safetensors(tmp_path / "y.safetensors", layout, tensors.__getitem__, {"k": "v"})
    again = load_file(str(tmp_path / "y.safetensors"))
    assert all(torch.equal(again[k], tensors[k]) for k in tensors)
    with pytest.raises(ValueError, match="declared"):
        write_safetensors(tmp_path / "z.safetensors", layout, lambda k: torch.zeros(1))
    assert not (tmp_path / "z.safetensors").exists()


def test_from_pretrained_naming_a_foreign_file_converts_it(tmp_path):
    from opensora_kedro.models.mmdit_loading import load_mmdit
    from opensora_kedro.models.params import MMDiTParams

    state = foreign_state(SMALL, fused=False, seed=9)
    save_file(state, str(tmp_path / "Open_Sora_v2.safetensors"))
    structure = {k: v for k, v in dataclasses.asdict(SMALL).items() if k != "grad_ckpt_settings"}
    params = MMDiTParams(**structure, type="flux", use_liger_rope=True,
                         from_pretrained="Open_Sora_v2.safetensors", strict_load=False)  # fmt: skip
    model = load_mmdit(params, base_dir=tmp_path)
    x = _inputs(SMALL)
    with torch.no_grad():
        torch.testing.assert_close(
            _ours(model, x), _reference(state, SMALL, x, True), atol=2e-5, rtol=1e-4
        )
