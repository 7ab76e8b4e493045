import pytest

from opensora_kedro.training.vae_job import image_probability


@pytest.mark.parametrize(
    ("ratio", "rank", "world", "expected"),
    [(0.2, 0, 1, 0.2), (0.2, 0, 4, 0.0), (0.2, 1, 4, 0.2 * 4 / 3), (0.9, 3, 2, 1.0)],
)
def test_mixed_video_image_probability_follows_open_sora(ratio, rank, world, expected):
    assert image_probability(ratio, rank, world) == pytest.approx(expected)
