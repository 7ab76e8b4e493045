"""Rectified flow: the time shift, noising, target and loss; visual-condition masks and sampling."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from opensora_kedro.diffusion.rectified_flow import (
    condition_frames,
    condition_masks,
    flow_loss,
    noise_input,
    prepare_visual_condition,
    sample_condition_types,
    sample_timesteps,
    shift_timesteps,
    time_shift_alpha,
    velocity_target,
)


@pytest.mark.parametrize(
    ("pixels", "frames", "expected"),
    [
        (256, 1, 1.0),  # 32x32 latent -> 256 tokens per frame
        (768, 1, 2.07),  # 96x96 latent -> 2304 tokens
        (1024, 1, 3.0),  # 128x128 latent -> 4096 tokens
        (256, 129, 5.74),  # T_lat = (129 - 1) / 4 + 1 = 33
        (768, 129, 11.87),
    ],
)
def test_time_shift_alpha_matches_reference_examples(
    pixels: int, frames: int, expected: float
) -> None:
    latent = pixels // 8
    latent_frames = (frames - 1) // 4 + 1
    alpha = time_shift_alpha((latent, latent), latent_frames, patch_size=2)
    assert alpha == pytest.approx(expected, abs=0.005)


def test_shift_timesteps() -> None:
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    assert torch.allclose(shift_timesteps(t, 1.0), t)
    shifted = shift_timesteps(t, 3.0)
    assert shifted[0] == 0 and shifted[-1] == 1
    assert shifted[2] == pytest.approx(0.75)  # 3·0.5 / (1 + 2·0.5)
    assert (shifted[1:3] > t[1:3]).all()  # towards noise


def test_sample_timesteps_is_logit_normal_and_seeded() -> None:
    t = sample_timesteps(20000, torch.Generator().manual_seed(0))
    assert t.shape == (20000,) and ((t > 0) & (t < 1)).all()
    logits = torch.logit(t.double())
    assert abs(logits.mean().item()) < 0.03 and abs(logits.std().item() - 1) < 0.03
    assert torch.equal(t, sample_timesteps(20000, torch.Generator().manual_seed(0)))


def test_noise_input_endpoints_and_velocity() -> None:
    # float64 and seeded: the finite difference below must not flake on rounding.
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 4, 2, 4, 4, generator=generator, dtype=torch.float64)
    noise = torch.randn(3, 4, 2, 4, 4, generator=generator, dtype=torch.float64)
    sigma = 1e-5
    assert torch.equal(noise_input(x0, noise, torch.ones(3), sigma), noise)
    assert torch.allclose(noise_input(x0, noise, torch.zeros(3), sigma), x0 + sigma * noise)
    # The target is the time derivative of x_t, whatever t.
    t, dt = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64), 1e-3
    finite = (noise_input(x0, noise, t + dt, sigma) - noise_input(x0, noise, t, sigma)) / dt
    v = velocity_target(x0, noise, sigma)
    assert torch.allclose(finite, v, atol=1e-6)
    assert torch.allclose(v, (1 - sigma) * noise - x0)


def test_flow_loss_is_float_mse() -> None:
    out = torch.ones(2, 3, dtype=torch.bfloat16)
    loss = flow_loss(out, torch.zeros(2, 3))
    assert loss.dtype == torch.float32 and loss.item() == 1.0


@pytest.mark.parametrize(
    ("cond_type", "frames"),
    [
        ("t2v", []),
        ("i2v_head", [0]),
        ("i2v_tail", [11]),
        ("i2v_loop", [0, 11]),
        ("v2v_head", list(range(9))),
        ("v2v_tail", list(range(3, 12))),
    ],
)
def test_condition_frames(cond_type: str, frames: list[int]) -> None:
    assert condition_frames(cond_type, 12).nonzero().flatten().tolist() == frames
    assert not condition_frames(cond_type, 1).any()  # images get no condition


def test_condition_frames_rejects_unknown_type() -> None:
    with pytest.raises(ValueError, match="unknown condition"):
        condition_frames("i2v_middle", 5)


def test_prepare_visual_condition() -> None:
    latent, separate = torch.randn(3, 4, 5, 2, 2), torch.randn(3, 4, 5, 2, 2)
    types = ["t2v", "i2v_head", "i2v_loop"]
    cond, mask = prepare_visual_condition(latent, types, cond_latent=separate)
    assert cond.shape == (3, 5, 5, 2, 2) and mask.shape == (3, 1, 5, 2, 2)
    assert torch.equal(cond[:, :1], mask)
    assert torch.equal(mask[:, 0, :, 0, 0], condition_masks(types, 5).float())
    assert torch.count_nonzero(cond[0]) == 0
    assert (
        torch.equal(cond[1, 1:, 0], separate[1, :, 0]) and torch.count_nonzero(cond[1, 1:, 1:]) == 0
    )
    assert torch.equal(cond[2, 1:, 4], separate[2, :, 4])
    own, _ = prepare_visual_condition(latent, "i2v_tail")
    assert torch.equal(own[:, 1:, -1], latent[:, :, -1])


def test_sample_condition_types_honours_weights() -> None:
    config = {"t2v": 1, "i2v_head": 5, "i2v_loop": 1, "i2v_tail": 1}
    draws = sample_condition_types(8000, config, torch.Generator().manual_seed(0))
    counts = Counter(draws)
    for name, weight in config.items():
        assert counts[name] / 8000 == pytest.approx(weight / 8, abs=0.02)
    assert sample_condition_types(4, None) == ["t2v"] * 4


def test_sample_condition_types_short_clips_and_images() -> None:
    config = {"t2v": 1.0, "v2v_head": 5.0, "v2v_tail": 5.0}
    short = sample_condition_types(200, config, torch.Generator().manual_seed(0), latent_frames=9)
    assert set(short) == {"t2v"}
    assert "v2v_head" in config  # the caller's config is left alone
    longer = sample_condition_types(200, config, torch.Generator().manual_seed(0), latent_frames=10)
    assert {"v2v_head", "v2v_tail"} <= set(longer)
    assert sample_condition_types(3, config, latent_frames=1) == ["t2v"] * 3
    with pytest.raises(ValueError, match="positive sum"):
        sample_condition_types(2, {"t2v": 0.0})
