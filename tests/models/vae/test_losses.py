"""VAELoss and the LPIPS network it loads.

LPIPS weights here come from a *random* initialisation written to a file: these tests check
the loading path and the loss arithmetic, not perceptual quality (that needs the published
VGG16 + LPIPS weights, which are not available offline).
"""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import save_file

from opensora_kedro.models.vae import LPIPS, VAELoss
from opensora_kedro.models.vae.base import DiagonalGaussianDistribution


@pytest.fixture(scope="module")
def lpips_file(tmp_path_factory):
    """A complete LPIPS weights file from a random init (a loading test, not a metric).

    The lin weights are made non-negative, as LPIPS's training keeps them, so distances are
    non-negative."""
    torch.manual_seed(0)
    untrained = LPIPS()
    for index in range(5):
        getattr(untrained, f"lin{index}").model[1].weight.abs_()
    path = tmp_path_factory.mktemp("lpips") / "lpips_vgg.safetensors"
    save_file({k: v.contiguous() for k, v in untrained.state_dict().items()}, str(path))
    return path, untrained.state_dict()


def frames(n: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_lpips_key_layout_matches_the_lpips_package():
    keys = set(LPIPS().state_dict())
    assert {"net.slice1.0.weight", "net.slice2.5.weight", "net.slice5.28.bias"} <= keys
    assert {f"lin{i}.model.1.weight" for i in range(5)} <= keys
    assert len([k for k in keys if k.startswith("net.")]) == 26  # 13 convs, weight + bias


def test_lpips_loads_every_tensor_and_stays_frozen(lpips_file):
    path, state = lpips_file
    lpips = LPIPS.from_pretrained(path)
    for key, value in lpips.state_dict().items():
        assert torch.equal(value, state[key])
    assert not any(p.requires_grad for p in lpips.parameters())
    lpips.train()
    assert not lpips.training


def test_lpips_distance_properties(lpips_file):
    lpips = LPIPS.from_pretrained(lpips_file[0])
    x, y = frames(seed=0), frames(seed=1)
    same = lpips(x, x)
    assert same.shape == (2, 1, 1, 1)
    torch.testing.assert_close(same, torch.zeros_like(same))
    torch.testing.assert_close(lpips(x, y), lpips(y, x))
    assert torch.all(lpips(x, y) > 0)
    y.requires_grad_(True)
    lpips(x, y).sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0


def test_lpips_refuses_incomplete_or_missing_weights(tmp_path, lpips_file):
    path, state = lpips_file
    partial = {k: v.contiguous() for k, v in state.items() if not k.startswith("lin")}
    save_file(partial, str(tmp_path / "partial.safetensors"))
    with pytest.raises(ValueError, match="lack 5 tensor"):
        LPIPS.from_pretrained(tmp_path / "partial.safetensors")
    with pytest.raises(FileNotFoundError):
        LPIPS.from_pretrained(tmp_path / "absent.safetensors")


@pytest.mark.parametrize("path", [None, "missing/lpips.safetensors"])
def test_perceptual_term_is_off_with_a_warning_without_weights(path, caplog):
    with caplog.at_level(logging.WARNING):
        loss = VAELoss(perceptual_loss_weight=0.5, perceptual_weights_path=path)
    assert not loss.perceptual_enabled
    assert "perceptual (LPIPS) loss is OFF" in caplog.text
    x = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    assert float(loss(x, x.flip(-1))["perceptual"]) == 0.0


def test_zero_perceptual_weight_needs_no_weights(caplog):
    with caplog.at_level(logging.WARNING):
        loss = VAELoss(perceptual_loss_weight=0.0)
    assert not loss.perceptual_enabled and caplog.text == ""


def test_loss_terms_follow_open_soras_reduction(lpips_file):
    """Sum over elements / batch for L1 and KL; LPIPS per frame, spread over its pixels."""
    loss = VAELoss(
        perceptual_loss_weight=0.5, kl_loss_weight=1e-3, perceptual_weights_path=lpips_file[0]
    )
    assert loss.perceptual_enabled
    x = torch.rand(2, 3, 5, 32, 32) * 2 - 1
    y = torch.rand(2, 3, 5, 32, 32) * 2 - 1
    posterior = DiagonalGaussianDistribution(torch.randn(2, 8, 2, 4, 4))
    terms = loss(x, y, posterior)
    assert set(terms) == {"reconstruction", "l2", "perceptual", "kl", "total"}
    torch.testing.assert_close(terms["reconstruction"], (x - y).abs().sum() / 2)
    torch.testing.assert_close(terms["kl"], posterior.kl().sum() / 2)
    x_frames = x.transpose(1, 2).reshape(10, 3, 32, 32)
    y_frames = y.transpose(1, 2).reshape(10, 3, 32, 32)
    per_frame = loss.lpips(x_frames, y_frames).sum()
    torch.testing.assert_close(terms["perceptual"], per_frame * 3 * 32 * 32 / 2)
    expected = terms["reconstruction"] + 0.5 * terms["perceptual"] + 1e-3 * terms["kl"]
    torch.testing.assert_close(terms["total"], expected)


def test_loss_without_posterior_and_with_grey_frames(lpips_file):
    loss = VAELoss(perceptual_weights_path=lpips_file[0])
    x = torch.rand(1, 1, 4, 32, 32) * 2 - 1
    y = (torch.rand(1, 1, 4, 32, 32) * 2 - 1).requires_grad_(True)
    terms = loss(x, y)
    assert terms["kl"].item() == 0.0 and terms["perceptual"].item() > 0
    terms["total"].backward()
    assert y.grad is not None and torch.isfinite(y.grad).all()


def test_optional_squared_error_term():
    x = torch.zeros(2, 3, 1, 8, 8)
    reconstruction = torch.full_like(x, 0.5)
    plain = VAELoss(perceptual_loss_weight=0.0, kl_loss_weight=0.0)(x, reconstruction)
    with_l2 = VAELoss(perceptual_loss_weight=0.0, kl_loss_weight=0.0, l2_loss_weight=2.0)(
        x, reconstruction
    )
    assert float(plain["l2"]) == 0.0  # off by default, as in Open-Sora
    per_sample = 3 * 8 * 8
    assert float(with_l2["l2"]) == pytest.approx(0.25 * per_sample)
    assert float(with_l2["total"]) == pytest.approx(0.5 * per_sample + 2.0 * 0.25 * per_sample)


def test_l1_weight_scales_the_reconstruction_term():
    x = torch.zeros(1, 3, 1, 4, 4)
    reconstruction = torch.full_like(x, 0.5)
    terms = VAELoss(perceptual_loss_weight=0.0, kl_loss_weight=0.0, l2_loss_weight=1.0,
                    l1_loss_weight=0.0)(x, reconstruction)  # fmt: skip
    assert float(terms["reconstruction"]) == pytest.approx(0.5 * 48)  # reported, not counted
    assert float(terms["total"]) == pytest.approx(0.25 * 48)
