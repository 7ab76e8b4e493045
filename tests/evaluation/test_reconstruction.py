"""PSNR, SSIM and the side-by-side picture."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from opensora_kedro.evaluation.reconstruction import (
    gaussian_window,
    psnr,
    reconstruction_metrics,
    side_by_side,
    ssim,
)


def random_video(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# -- PSNR ---------------------------------------------------------------------------------------


def test_psnr_of_identical_videos_is_infinite():
    x = random_video((2, 3, 4, 16, 16), 0)
    assert math.isinf(float(psnr(x, x))) and float(psnr(x, x)) > 0


def test_psnr_of_a_known_mse():
    """A 0.2 offset in [-1, 1] is 0.1 in [0, 1]: MSE 0.01, PSNR 20 dB."""
    x = torch.zeros(2, 3, 4, 16, 16)
    per_frame = psnr(x, x + 0.2, reduction="none")
    assert per_frame.shape == (2, 4)
    torch.testing.assert_close(per_frame, torch.full((2, 4), 20.0, dtype=torch.float64))
    torch.testing.assert_close(psnr(x, x - 0.02), torch.tensor(40.0, dtype=torch.float64))


def test_psnr_is_per_frame_then_averaged():
    x = torch.zeros(1, 3, 2, 8, 8)
    y = x.clone()
    y[:, :, 0] += 0.2  # frame 0: 20 dB
    y[:, :, 1] += 0.02  # frame 1: 40 dB
    torch.testing.assert_close(psnr(x, y), torch.tensor(30.0, dtype=torch.float64))


def test_values_outside_the_range_are_clamped():
    x = torch.full((1, 3, 1, 8, 8), 1.0)
    assert math.isinf(float(psnr(x, x + 0.5)))


# -- SSIM ---------------------------------------------------------------------------------------


def slow_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. (2004) written out window by window: one image pair in [0, 1]."""
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    window = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for i in range(a.shape[0] - 10):
        for j in range(a.shape[1] - 10):
            pa, pb = a[i : i + 11, j : j + 11], b[i : i + 11, j : j + 11]
            mu_a, mu_b = (window * pa).sum(), (window * pb).sum()
            var_a = (window * (pa - mu_a) ** 2).sum()
            var_b = (window * (pb - mu_b) ** 2).sum()
            cov = (window * (pa - mu_a) * (pb - mu_b)).sum()
            values.append(
                (2 * mu_a * mu_b + c1)
                * (2 * cov + c2)
                / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
            )
    return float(np.mean(values))


def test_ssim_matches_a_window_by_window_reference():
    x = random_video((2, 3, 2, 16, 18), 0)
    y = (x + 0.3 * random_video((2, 3, 2, 16, 18), 1)).clamp(-1, 1)
    per_frame = ssim(x, y, reduction="none")
    assert per_frame.shape == (2, 2)
    a, b = ((x.double() + 1) / 2).numpy(), ((y.double() + 1) / 2).numpy()
    for video in range(2):
        for frame in range(2):
            expected = np.mean(
                [slow_ssim(a[video, c, frame], b[video, c, frame]) for c in range(3)]
            )
            assert float(per_frame[video, frame]) == pytest.approx(expected, abs=1e-10)
    assert float(ssim(x, y)) == pytest.approx(float(per_frame.mean()))


def test_ssim_of_identical_videos_is_one_and_symmetric():
    x, y = random_video((1, 3, 3, 20, 20), 2), random_video((1, 3, 3, 20, 20), 3)
    assert float(ssim(x, x)) == pytest.approx(1.0, abs=1e-12)
    assert float(ssim(x, y)) == pytest.approx(float(ssim(y, x)))
    assert float(ssim(x, y)) < 0.5


def test_ssim_of_constant_frames_has_a_closed_form():
    """No variance: SSIM = (2ab + C1) / (a^2 + b^2 + C1) for constant levels a, b."""
    a, b = 0.25, 0.75  # [0, 1] units
    x = torch.full((1, 1, 1, 12, 12), 2 * a - 1)
    y = torch.full((1, 1, 1, 12, 12), 2 * b - 1)
    c1 = 0.01**2
    assert float(ssim(x, y)) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1))


def test_gaussian_window_is_normalised_and_symmetric():
    window = gaussian_window()
    assert window.shape == (11,)
    assert float(window.sum()) == pytest.approx(1.0)
    torch.testing.assert_close(window, window.flip(0))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: ssim(torch.zeros(1, 3, 1, 8, 8), torch.zeros(1, 3, 1, 8, 8)), "at least 11x11"),
        (lambda: psnr(torch.zeros(1, 3, 1, 8, 8), torch.zeros(1, 3, 2, 8, 8)), "shapes differ"),
        (lambda: psnr(torch.zeros(8, 8), torch.zeros(8, 8)), "expected"),
        (
            lambda: psnr(torch.zeros(3, 1, 8, 8), torch.ones(3, 1, 8, 8), reduction="sum"),
            "reduction",
        ),
    ],
)
def test_bad_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_reconstruction_metrics_are_floats():
    x = random_video((1, 3, 2, 16, 16), 0)
    metrics = reconstruction_metrics(x, x + 0.2)
    assert set(metrics) == {"psnr", "ssim"} and all(isinstance(v, float) for v in metrics.values())


# -- side by side -------------------------------------------------------------------------------


def test_side_by_side_layout():
    original = random_video((3, 9, 16, 20), 0)
    reconstruction = random_video((3, 9, 16, 20), 1)
    image = side_by_side(original, reconstruction, frames=3, gap=2)
    assert image.dtype == np.uint8 and image.shape == (3 * 16 + 2 * 2, 2 * 20 + 2, 3)
    # The second row is frame 4 (0, 4, 8 evenly spaced); left original, right reconstruction.
    expected_left = ((original[:, 4] + 1) / 2 * 255).round().permute(1, 2, 0).numpy()
    expected_right = ((reconstruction[:, 4] + 1) / 2 * 255).round().permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(image[18:34, :20], expected_left.astype(np.uint8))
    np.testing.assert_array_equal(image[18:34, 22:], expected_right.astype(np.uint8))
    assert (image[:, 20:22] == 255).all() and (image[16:18] == 255).all()


def test_side_by_side_grey_batched_and_chosen_frames():
    grey = random_video((1, 1, 5, 12, 12), 0)
    image = side_by_side(grey, grey, frames=[4])
    assert image.shape == (12, 26, 3)
    np.testing.assert_array_equal(image[..., 0], image[..., 2])
    with pytest.raises(ValueError, match="outside"):
        side_by_side(grey, grey, frames=[5])


def test_kept_compares_what_the_clip_and_its_reconstruction_show():
    from opensora_kedro.evaluation.vae import _kept
    from opensora_kedro.video.render import ClipSpec, render_frames

    def clip(colour: str, direction: str) -> torch.Tensor:
        frames = render_frames(ClipSpec("c", colour, "circle", direction, 48, 48, 24.0, 9))
        return torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1

    same = clip("red", "left")
    assert _kept(same, same) == {"colour_kept": 1.0, "direction_kept": 1.0}
    assert _kept(same, clip("blue", "left")) == {"colour_kept": 0.0, "direction_kept": 1.0}
    assert _kept(same, clip("red", "up")) == {"colour_kept": 1.0, "direction_kept": 0.0}
