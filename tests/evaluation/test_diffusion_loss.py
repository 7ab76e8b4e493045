"""Open-Sora v1.3's evaluation loss: fixed grid, fixed noise, per-bucket averages."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

from opensora_kedro.config.schemas.diffusion import DiffusionStageParams
from opensora_kedro.data.clip_batches import fixed_bucket_keys
from opensora_kedro.data.clip_dataset import ClipDataset
from opensora_kedro.evaluation.diffusion_loss import (
    LOSS_COLUMNS,
    bucket_losses,
    diffusion_eval_loss,
    eval_timesteps,
    fixed_noise,
)
from opensora_kedro.hashing import caption_hash
from opensora_kedro.models.mmdit import build_mmdit
from opensora_kedro.models.vae.registry import build_vae
from opensora_kedro.video.codec import encode_mp4
from opensora_kedro.video.render import ClipSpec, render_frames

SIGMA = 1e-5
ENCODER = {"from_pretrained": "encoder", "max_length": 8}
PARAMS = DiffusionStageParams.model_validate({
    "bucket_config": {"64px": {9: [1.0, 2], 17: [1.0, 2]}},
    "seed": 3,
    "dataset": {"fps_max": 24, "transform_name": "resize_crop"},
    "model": {"patch_size": 2},
    "sigma_min": SIGMA,
    # a stage's other required settings, which the loss does not read
    "optim": {"lr": 1e-4}, "plugin_config": {}, "dropout_ratio": {}, "ae": {"type": "tiny_vae"},
    "t5": ENCODER, "clip": ENCODER,
})  # fmt: skip
# (colour, direction, frames): two 9-frame clips, one 17-frame clip, one too short for a bucket.
CLIPS = [("red", "left", 9), ("blue", "up", 17), ("green", "down", 5), ("purple", "right", 9)]


class FakeText:
    """The embedding cache's ``lookup``: a fixed random embedding per caption hash."""

    def lookup(self, hashes, encoder="t5"):
        shape = (8, 64) if encoder == "t5" else (64,)
        seeds = [int(h[:8], 16) + (0 if encoder == "t5" else 1) for h in hashes]
        return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s))
                            for s in seeds])  # fmt: skip


class Identity(nn.Module):
    """Predicts ``x_t`` itself: a loss that depends on ``t`` in a known way."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, img, txt, y, timesteps, cond=None):
        return img


@pytest.fixture(scope="module")
def held(tmp_path_factory):
    root = tmp_path_factory.mktemp("held")
    rows = []
    for number, (colour, direction, frames) in enumerate(CLIPS):
        spec = ClipSpec(f"c{number}", colour, "circle", direction, 64, 64, 24.0, frames)
        path = root / f"{spec.name}.mp4"
        path.write_bytes(encode_mp4(render_frames(spec), 24.0, crf=18))
        rows.append({"path": str(path), "text": spec.caption, "num_frames": frames,
                     "height": 64, "width": 64, "fps": 24.0,
                     "caption_hash": caption_hash(spec.caption)})  # fmt: skip
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return build_vae("tiny_vae").eval()


def random_mmdit(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build_mmdit("tiny")
    nn.init.normal_(model.final_layer.linear.weight, std=0.02)  # not the all-zero init
    return model.eval()


def latents_and_noise(held, vae):
    """Per held-out clip (table order): its latent and noise, computed without the module."""
    dataset = ClipDataset(held, seed=PARAMS.seed, fps_max=24, transform="resize_crop")
    out = {}
    for key in fixed_bucket_keys(held, PARAMS):
        with torch.no_grad():
            x0 = vae.encode(dataset[key]["video"][None], sample=False)[0]
        out[key.index] = (x0, fixed_noise(tuple(x0.shape), PARAMS.seed, key.index))
    return out


def test_grid_is_v13_linspace_without_the_ends():
    expected = torch.linspace(0, 1000, 12, dtype=torch.float64)[1:-1] / 1000
    torch.testing.assert_close(eval_timesteps(10), expected)
    assert eval_timesteps(1).tolist() == [0.5]
    with pytest.raises(ValueError):
        eval_timesteps(0)


def test_same_inputs_give_identical_numbers(held, vae):
    model = random_mmdit()
    first, summary = diffusion_eval_loss(model, vae, FakeText(), held, PARAMS, num_timesteps=3)
    second, again = diffusion_eval_loss(model, vae, FakeText(), held, PARAMS, num_timesteps=3)
    pd.testing.assert_frame_equal(first, second)
    assert summary == again
    assert list(first.columns) == LOSS_COLUMNS
    # One clip per forward pass gives the same numbers up to float rounding.
    single, _ = diffusion_eval_loss(model, vae, FakeText(), held, PARAMS, 3, batch_size=1)
    torch.testing.assert_close(torch.tensor(single["loss"].values),
                               torch.tensor(first["loss"].values), rtol=1e-4, atol=1e-6)  # fmt: skip


def test_zero_model_loss_is_the_mean_squared_target_per_bucket(held, vae):
    model = build_mmdit("tiny").eval()  # the output layer starts at zero: predicts 0
    table, summary = diffusion_eval_loss(model, vae, FakeText(), held, PARAMS, num_timesteps=4)
    data = latents_and_noise(held, vae)
    target = {i: ((1 - SIGMA) * n - x0).square().mean().item() for i, (x0, n) in data.items()}
    # Clips 0 and 3 share the 9-frame bucket, clip 1 is alone at 17; clip 2 is too short.
    expected = {9: (target[0] + target[3]) / 2, 17: target[1]}
    assert sorted(table["num_frames"].unique()) == [9, 17] and len(table) == 2 * 4
    for frames, value in expected.items():
        rows = table[table["num_frames"] == frames]
        assert rows["loss"].tolist() == pytest.approx([value] * 4, rel=1e-5)
        assert set(rows["n_samples"]) == {2 if frames == 9 else 1}
    assert summary["loss"] == pytest.approx(sum(target.values()) / 3, rel=1e-5)
    assert summary["bucket_mean_loss"] == pytest.approx(sum(expected.values()) / 2, rel=1e-5)
    assert summary["samples"] == 3 and summary["buckets"] == 2
    assert bucket_losses(table)["loss"].tolist() == pytest.approx(
        [expected[f] for f in bucket_losses(table)["num_frames"]], rel=1e-5
    )


def test_identity_model_loss_follows_the_fixed_t(held, vae):
    table, _ = diffusion_eval_loss(Identity(), vae, FakeText(), held, PARAMS, num_timesteps=3)
    x0, noise = latents_and_noise(held, vae)[1]  # the 17-frame bucket's only clip
    for t, loss in table[table["num_frames"] == 17][["t", "loss"]].itertuples(index=False):
        x_t = (1 - t) * x0 + (1 - (1 - SIGMA) * (1 - t)) * noise
        expected = (x_t - ((1 - SIGMA) * noise - x0)).square().mean().item()
        assert loss == pytest.approx(expected, rel=1e-5)
    assert table["t"].tolist()[:3] == pytest.approx([0.25, 0.5, 0.75])
    assert (table["t"] == table["t_model"]).all()


def test_time_shift_feeds_shifted_t(held, vae):
    table, _ = diffusion_eval_loss(Identity(), vae, FakeText(), held, PARAMS, num_timesteps=2,
                                   time_shift=True)  # fmt: skip
    assert (table["t_model"] != table["t"]).all()
    assert ((table["t_model"] > 0) & (table["t_model"] < 1)).all()


def test_no_clip_in_a_bucket_raises(held, vae):
    params = PARAMS.model_copy(update={"bucket_config": {"64px": {33: (1.0, 2)}}})
    with pytest.raises(ValueError, match="fits a bucket"):
        diffusion_eval_loss(Identity(), vae, FakeText(), held, params)


def test_condition_model_is_evaluated_as_text_to_video(held, vae):
    """``cond=None`` is the all-zero t2v condition: a zero-bias condition embedder adds nothing."""
    plain = random_mmdit(1)
    conditioned = build_mmdit("tiny", cond_embed=True).eval()
    conditioned.load_state_dict(plain.state_dict(), strict=False)
    nn.init.normal_(conditioned.cond_in.weight)
    expected, _ = diffusion_eval_loss(plain, vae, FakeText(), held, PARAMS, num_timesteps=2)
    table, _ = diffusion_eval_loss(conditioned, vae, FakeText(), held, PARAMS, num_timesteps=2)
    assert table["loss"].tolist() == pytest.approx(expected["loss"].tolist(), rel=1e-5)
