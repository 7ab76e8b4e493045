import math

import pytest
import torch
from torch import Tensor, nn

from opensora_kedro.diffusion.denoiser import (
    denoise,
    guidance_scales,
    num_latent_frames,
    oscillation_scale,
    sampling_timesteps,
    seeded_noise,
    temporal_image_guidance,
)
from opensora_kedro.diffusion.rectified_flow import prepare_visual_condition
from opensora_kedro.models.mmdit import build_mmdit

# --------------------------------------------------------------------------- schedule


def test_num_latent_frames() -> None:
    assert num_latent_frames(129) == 33
    assert num_latent_frames(1) == 1
    assert num_latent_frames(128, causal=False) == 32


@pytest.mark.parametrize("shift", [True, False])
def test_schedule_endpoints_and_monotone(shift: bool) -> None:
    t = sampling_timesteps(50, (32, 32), 33, patch_size=2, shift=shift)
    assert t.shape == (51,)
    assert t[0] == 1.0 and t[-1] == 0.0
    assert torch.all(t[1:] < t[:-1])


def test_schedule_shift_values() -> None:
    # 256px 129 frames: 256 tokens per frame, T_lat 33 -> alpha = sqrt(33) (brief §7.1: 5.74)
    t = sampling_timesteps(4, (32, 32), 33, patch_size=2)
    alpha = math.sqrt(33)
    expected = [alpha * s / (1 + (alpha - 1) * s) for s in (1.0, 0.75, 0.5, 0.25, 0.0)]
    assert torch.allclose(t, torch.tensor(expected), atol=1e-6)
    assert torch.allclose(sampling_timesteps(4, (32, 32), 33, shift=False), torch.linspace(1, 0, 5))
    # flow_shift overrides alpha
    assert torch.allclose(sampling_timesteps(2, (8, 8), 1, flow_shift=3.0)[1], torch.tensor(0.75))


# --------------------------------------------------------------------------- guidance scales


def test_oscillation_rule() -> None:
    # full scale for steps 0-9, then the scale on even steps and 1.0 on odd ones
    assert [oscillation_scale(7.5, i) for i in (0, 1, 9, 10, 11, 12, 13, 49)] == [
        7.5,
        7.5,
        7.5,
        7.5,
        1.0,
        7.5,
        1.0,
        1.0,
    ]
    assert guidance_scales(3.0, 13, oscillate=True) == [3.0] * 11 + [1.0, 3.0]
    assert guidance_scales(3.0, 13, oscillate=False) == [3.0] * 13


def test_temporal_image_guidance() -> None:
    # 4 steps, g_img 3: per-step upper bounds linspace(3, 1, 5) = 3, 2.5, 2, 1.5, 1
    assert torch.allclose(
        temporal_image_guidance(3.0, 0, 4, 5), torch.tensor([1, 1.5, 2, 2.5, 3.0])
    )
    assert torch.allclose(temporal_image_guidance(3.0, 2, 4, 3), torch.tensor([1, 1.5, 2.0]))
    assert torch.allclose(temporal_image_guidance(3.0, 3, 4, 2), torch.tensor([1, 1.5]))


# --------------------------------------------------------------------------- denoising


def _text(batch: int = 1, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 5, 64, generator=g), torch.randn(batch, 64, generator=g)


def _tiny(cond_embed: bool = False) -> nn.Module:
    model = build_mmdit("tiny", cond_embed=cond_embed).eval()
    torch.manual_seed(0)
    # The zero-initialised output layer would predict v = 0 and make every test trivial.
    for layer in [model.final_layer.linear] + ([model.cond_in] if cond_embed else []):
        nn.init.normal_(layer.weight, std=0.02)
    return model


def test_same_seed_same_video_different_seed_differs() -> None:
    model = _tiny()
    txt, y = _text()
    null_txt, null_y = _text(seed=1)
    ts = sampling_timesteps(3, (4, 4), 2, patch_size=2)

    def sample(seed: int) -> Tensor:
        noise = seeded_noise((1, 4, 2, 4, 4), seed)
        return denoise(model, noise, txt, y, null_txt, null_y, ts, guidance=5.0)

    torch.manual_seed(123)  # global RNG state must not matter
    first = sample(7)
    torch.manual_seed(456)
    assert torch.equal(first, sample(7))
    assert not torch.allclose(first, sample(8))
    assert torch.equal(seeded_noise((2, 3), 5), seeded_noise((2, 3), 5))


class _ExactVelocity(nn.Module):
    """Predicts ``noise − target``: the true velocity of the straight path noise -> target."""

    def __init__(self, noise: Tensor, target: Tensor) -> None:
        super().__init__()
        self.velocity = noise - target

    def forward(self, img: Tensor, txt: Tensor, y: Tensor, t: Tensor, **_: object) -> Tensor:
        return self.velocity.repeat(img.shape[0] // self.velocity.shape[0], 1, 1, 1, 1)


@pytest.mark.parametrize("shift", [True, False])
def test_euler_reaches_target_with_exact_velocity(shift: bool) -> None:
    noise, target = seeded_noise((2, 4, 3, 4, 4), 0), seeded_noise((2, 4, 3, 4, 4), 1)
    txt, y = _text(2)
    ts = sampling_timesteps(7, (4, 4), 3, shift=shift)
    out = denoise(_ExactVelocity(noise, target), noise, txt, y, *_text(1, 3), ts, guidance=7.5)
    # identical branches: guidance has nothing to amplify, Euler on a straight line is exact
    assert torch.allclose(out, target, atol=1e-5)


def test_guidance_one_with_identical_branches_is_conditional_prediction() -> None:
    model = _tiny()
    txt, y = _text()
    noise = seeded_noise((1, 4, 1, 4, 4), 3)
    ts = sampling_timesteps(2, (4, 4), 1)
    guided = denoise(model, noise, txt, y, txt, y, ts, guidance=1.0)
    with torch.no_grad():
        x = noise
        for t_curr, t_next in zip(ts[:-1], ts[1:], strict=True):
            x = x + (t_next - t_curr) * model(x, txt, y, t_curr.repeat(1))
    assert torch.allclose(guided, x, atol=1e-6)


def test_guidance_combines_three_branches() -> None:
    """One step: v = v_u2 + g_img (v_u − v_u2) + g_txt (v_c − v_u), with the branches told apart
    by the text (prompt vs null) and by whether the condition mask is set."""

    class Branches(nn.Module):
        def forward(self, img, txt, y, t, cond=None, **_):  # noqa: ANN001, ANN003, ANN202
            has_text = txt[:, :1, :1, None, None]  # 1 for the prompt, 0 for the null prompt
            has_cond = cond[:, :1].amax(dim=(2, 3, 4), keepdim=True)
            return torch.ones_like(img) * (1 + 10 * has_text + 100 * has_cond)

    latent = torch.zeros(1, 2, 3, 2, 2)
    cond, _ = prepare_visual_condition(latent, "i2v_head")
    txt, null = torch.ones(1, 1, 1), torch.zeros(1, 1, 1)
    y = torch.zeros(1, 1)
    ts = torch.tensor([1.0, 0.0])
    out = denoise(
        Branches(), latent, txt, y, null, y, ts, 2.0, 3.0, cond, pin_condition_every_step=False
    )
    v_c, v_u, v_u2 = 111.0, 101.0, 1.0
    v = v_u2 + 3.0 * (v_u - v_u2) + 2.0 * (v_c - v_u)
    assert torch.allclose(out[:, :, 1:], torch.full_like(out[:, :, 1:], -v))
    assert torch.equal(out[:, :, :1], latent[:, :, :1])  # conditioned frame = reference


@pytest.mark.parametrize("every_step", [True, False])
def test_i2v_head_keeps_reference_frame(every_step: bool) -> None:
    model = _tiny(cond_embed=True)
    txt, y = _text()
    ref = seeded_noise((1, 4, 3, 4, 4), 11)
    cond, _ = prepare_visual_condition(ref, "i2v_head")
    noise = seeded_noise((1, 4, 3, 4, 4), 12)
    seen: list[Tensor] = []
    hook = model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    out = denoise(
        model,
        noise,
        txt,
        y,
        *_text(seed=2),
        sampling_timesteps(3, (4, 4), 3),
        7.5,
        3.0,
        cond,
        text_osci=True,
        image_osci=True,
        scale_temporal_osci=True,
        pin_condition_every_step=every_step,
    )
    hook.remove()
    assert torch.equal(out[:, :, 0], ref[:, :, 0])
    assert not torch.allclose(out[:, :, 1:], noise[:, :, 1:])
    if every_step:  # the model saw the clean reference frame at every step
        assert len(seen) == 3
        assert all(torch.equal(x[:, :, 0], ref[:, :, 0].expand_as(x[:, :, 0])) for x in seen)


def test_per_frame_image_guidance_override_and_null_broadcast() -> None:
    model = _tiny(cond_embed=True)
    txt, y = _text(2)
    ref = seeded_noise((2, 4, 2, 4, 4), 1)
    cond, _ = prepare_visual_condition(ref, "i2v_tail")
    noise = seeded_noise((2, 4, 2, 4, 4), 2)
    ts = sampling_timesteps(2, (4, 4), 2)
    null_txt, null_y = _text(1, 5)
    flat = denoise(model, noise, txt, y, null_txt, null_y, ts, 4.0, 2.0, cond)
    frames = denoise(
        model,
        noise,
        txt,
        y,
        null_txt,
        null_y,
        ts,
        4.0,
        9.0,
        cond,
        guidance_img_frames=torch.tensor([2.0, 2.0]),
    )
    assert torch.allclose(flat, frames, atol=1e-6)
    assert torch.equal(flat[:, :, -1], ref[:, :, -1])


def test_null_text_of_other_length_runs_branches_separately() -> None:
    model = _tiny()
    txt, y = _text()
    noise = seeded_noise((1, 4, 1, 4, 4), 0)
    ts = sampling_timesteps(2, (4, 4), 1)
    null_txt, null_y = _text(seed=1)
    out = denoise(model, noise, txt, y, null_txt[:, :3], null_y, ts, guidance=3.0)
    assert out.shape == noise.shape and torch.isfinite(out).all()
