"""The MMDiT: shapes, zero initialisation, RoPE ids, conditioning, checkpointing, training."""

from __future__ import annotations

import pytest
import torch

from opensora_kedro.diffusion.rectified_flow import flow_loss, prepare_visual_condition
from opensora_kedro.models import mmdit as mmdit_module
from opensora_kedro.models.mmdit import (
    MMDIT_SIZES,
    NON_STRUCTURAL_FIELDS,
    MMDiTConfig,
    build_mmdit,
    config_from_params,
    mmdit_config,
)
from opensora_kedro.models.mmdit_layers import image_position_ids, pack, rope_frequencies, unpack
from opensora_kedro.models.params import MMDiTParams


def _inputs(batch: int = 2, channels: int = 4, frames: int = 1, h: int = 8, w: int = 8):
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(batch, channels, frames, h, w, generator=g),
        torch.randn(batch, 5, 64, generator=g),
        torch.randn(batch, 64, generator=g),
        torch.rand(batch, generator=g),
    )


def _randomise_output(model: torch.nn.Module) -> None:
    """Give the zero-initialised output layer weights so gradients reach the trunk."""
    torch.manual_seed(1)
    torch.nn.init.normal_(model.final_layer.linear.weight, std=0.1)


@pytest.mark.parametrize(
    ("patch", "frames", "h", "w"),
    [(2, 1, 8, 8), (2, 3, 8, 6), (1, 1, 4, 6), (1, 2, 5, 3), (2, 2, 7, 5)],
)
def test_output_shape(patch: int, frames: int, h: int, w: int) -> None:
    model = build_mmdit("tiny", patch_size=patch, in_channels=4 * patch**2)
    _randomise_output(model)
    img, txt, y, t = _inputs(frames=frames, h=h, w=w)
    out = model(img, txt, y, t)
    assert out.shape == img.shape
    assert torch.isfinite(out).all()


def test_zero_init_gives_zero_output() -> None:
    model = build_mmdit("tiny")
    assert torch.count_nonzero(model(*_inputs(frames=2))) == 0


def test_pack_roundtrip_and_token_count() -> None:
    x = torch.randn(2, 4, 3, 8, 6)
    tokens = pack(x, 2)
    assert tokens.shape == (2, 3 * 4 * 3, 16)
    assert torch.equal(unpack(tokens, 2, 3, 8, 6), x)


def test_rope_ids_and_frequencies() -> None:
    ids = image_position_ids(2, 3, 4, 5)
    assert ids.shape == (2, 3 * 4 * 5, 3)
    # Row-major (t, h, w): the last token sits at the far corner of the last frame.
    assert ids[0, 0].tolist() == [0, 0, 0] and ids[0, -1].tolist() == [2, 3, 4]
    assert ids[0, 5].tolist() == [0, 1, 0]
    pe = rope_frequencies(ids, (8, 12, 12), 10000)
    assert pe.shape == (2, 1, 60, 16, 2, 2)
    # Position 0 is the identity rotation (where the text tokens sit).
    assert torch.allclose(pe[0, 0, 0], torch.eye(2).expand(16, 2, 2))


def test_cond_embed_is_inert_at_init_but_trainable() -> None:
    model = build_mmdit("tiny", cond_embed=True)
    _randomise_output(model)
    img, txt, y, t = _inputs(frames=3)
    cond, _ = prepare_visual_condition(torch.randn_like(img), "i2v_head")
    assert cond.shape == (2, 5, 3, 8, 8)
    out = model(img, txt, y, t, cond=cond)
    assert torch.allclose(out, model(img, txt, y, t))
    out.square().mean().backward()
    assert model.cond_in.weight.grad.abs().sum() > 0


def test_guidance_embed_requires_guidance() -> None:
    model = build_mmdit("tiny", guidance_embed=True)
    img, txt, y, t = _inputs()
    with pytest.raises(ValueError, match="guidance"):
        model(img, txt, y, t)
    assert model(img, txt, y, t, guidance=torch.full((2,), 4.0)).shape == img.shape


def test_gradient_checkpointing_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def counting_checkpoint(*args, **kwargs):
        calls.append(args[0])
        return torch.utils.checkpoint.checkpoint(*args, **kwargs)

    monkeypatch.setattr(mmdit_module, "checkpoint", counting_checkpoint)
    torch.manual_seed(0)
    plain = build_mmdit("tiny")
    _randomise_output(plain)
    ckpt = build_mmdit("tiny", grad_ckpt_settings=(1, 100))
    ckpt.load_state_dict(plain.state_dict())
    inputs = _inputs(frames=2)
    outs, grads = [], []
    for model in (plain, ckpt):
        out = model(*inputs)
        out.square().mean().backward()
        outs.append(out)
        grads.append([p.grad.clone() for p in model.parameters()])
    # The first double block and (capped at the depth) both single blocks were checkpointed.
    assert len(calls) == 3
    assert torch.allclose(outs[0], outs[1], atol=1e-6)
    for a, b in zip(grads[0], grads[1], strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    with torch.no_grad():
        ckpt(*inputs)
    assert len(calls) == 3  # no checkpointing without a graph to save memory for


def test_config_validation_and_registry() -> None:
    with pytest.raises(ValueError, match="num_heads"):
        MMDiTConfig(hidden_size=64, num_heads=2, axes_dim=(8, 8, 8))
    with pytest.raises(ValueError, match="unknown MMDiT field"):
        mmdit_config({"size": "tiny", "hiden_size": 3})
    full = MMDIT_SIZES["open_sora_2"]
    assert (full.hidden_size, full.depth, full.depth_single_blocks) == (3072, 19, 38)
    # A parameter-file mapping: lists accepted, loader-only keys ignored.
    params = {"size": "tiny", "type": "flux", "use_liger_rope": False, "axes_dim": [8, 12, 12]}
    assert mmdit_config(params) == MMDIT_SIZES["tiny"]


def test_the_parameters_give_the_model_its_config() -> None:
    # Every structural parameter reaches the config, and the schema's defaults are the 11B's.
    structural = set(MMDiTParams.model_fields) - NON_STRUCTURAL_FIELDS
    assert structural == {f for f in MMDiTConfig.__dataclass_fields__} - {"grad_ckpt_settings"}
    assert config_from_params(MMDiTParams()) == MMDIT_SIZES["open_sora_2"]
    tiny = {f: getattr(MMDIT_SIZES["tiny"], f) for f in structural}
    params = MMDiTParams(**tiny, from_pretrained="x", use_liger_rope=False)
    assert config_from_params(params) == MMDIT_SIZES["tiny"]
    assert config_from_params(params, (1, 2)).grad_ckpt_settings == (1, 2)


def test_the_schema_and_the_model_apply_one_hidden_size_rule() -> None:
    params = MMDiTParams(hidden_size=64, num_heads=2, axes_dim=(8, 8, 8))
    [(path, value, rule)] = params.cross_checks({})
    assert (path, value) == (("hidden_size",), 64)
    with pytest.raises(ValueError) as error:
        config_from_params(params)
    assert str(error.value) == f"hidden_size 64 {rule}"
    assert rule == "must equal num_heads * sum(axes_dim) = 2 * 24"


def test_training_reduces_loss() -> None:
    torch.manual_seed(0)
    model = build_mmdit("tiny")
    img, txt, y, t = _inputs(frames=2)
    target = torch.randn_like(img)
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = flow_loss(model(img, txt, y, t), target)
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_overfits_one_batch_tenfold():
    """Rectified-flow loss on one fixed batch (fixed t and noise) drops by 10x."""
    from opensora_kedro.diffusion import rectified_flow as rf

    torch.manual_seed(0)
    model = build_mmdit("tiny")
    x0 = torch.randn(2, 4, 3, 8, 8)
    noise, t = torch.randn_like(x0), torch.tensor([0.3, 0.7])
    txt, y = torch.randn(2, 5, 64), torch.randn(2, 64)
    x_t, target = rf.noise_input(x0, noise, t), rf.velocity_target(x0, noise)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(300):
        loss = rf.flow_loss(model(x_t, txt, y, t), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss))
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])
