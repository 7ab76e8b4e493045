from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from opensora_kedro.data import clip_dataset
from opensora_kedro.data.clip_dataset import (
    ClipDataset,
    ClipReadError,
    center_crop_square,
    collate_clips,
    read_frames_at,
    resize_crop,
    temporal_window,
    to_clip_tensor,
    window_rng,
)
from opensora_kedro.data.sampler import SampleKey, VariableShapeBatchSampler
from opensora_kedro.video.codec import encode_image
from tests.conftest import corrupt_media_data, gradient_frames, write_video

NUM_FRAMES, HEIGHT, WIDTH = 30, 32, 48


def numbered_frames(num_frames: int, height: int, width: int) -> np.ndarray:
    """Uniform grey frames whose level encodes their index: 8 * t + 4."""
    levels = (8 * np.arange(num_frames) + 4).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (num_frames, height, width, 3)).copy()


def frame_numbers(video: torch.Tensor) -> list[int]:
    """Read the frame indices back from a ``C x T x H x W`` clip in [-1, 1]."""
    levels = ((video + 1) / 2 * 255).mean(dim=(0, 2, 3))
    return [int(round((level - 4) / 8)) for level in levels.tolist()]


@pytest.fixture
def table(tmp_path) -> pd.DataFrame:
    clip = write_video(tmp_path / "numbered.mp4", numbered_frames(NUM_FRAMES, HEIGHT, WIDTH), 30)
    image = tmp_path / "still.png"
    image.write_bytes(encode_image(gradient_frames(1, 40, 60)[0], ".png"))
    wide = write_video(tmp_path / "wide.mp4", gradient_frames(12, 32, 64), fps=24)
    return pd.DataFrame(
        {
            "path": [str(clip), image.name, str(wide)],
            "num_frames": [NUM_FRAMES, 1, 12],
            "fps": [30.0, math.nan, 24.0],
            "text": ["numbers", "a still", None],
        },
        index=[10, 11, 12],
    )


def test_temporal_window_is_open_soras_linspace_over_a_random_window():
    starts = set()
    for seed in range(200):
        indices = temporal_window(30, 5, 2, np.random.default_rng(seed))
        start = indices[0]
        assert 0 <= start <= 30 - 10 - 1
        assert indices.tolist() == np.linspace(start, start + 9, 5, dtype=int).tolist()
        starts.add(int(start))
    assert starts == set(range(20))
    # A clip exactly as long as the window, and one shorter than it (cut at the end).
    assert temporal_window(10, 5, 2, np.random.default_rng(0)).tolist() == [0, 2, 4, 6, 9]
    assert temporal_window(7, 5, 2, np.random.default_rng(0)).tolist() == [0, 1, 3, 4, 6]
    with pytest.raises(ValueError, match="fewer than"):
        temporal_window(4, 5, 1, np.random.default_rng(0))


def test_reads_the_strided_window_of_a_real_clip(table):
    dataset = ClipDataset(table, seed=5)
    key = SampleKey(10, 5, HEIGHT, WIDTH, sampling_interval=2, epoch=3)
    item = dataset[key]
    expected = temporal_window(NUM_FRAMES, 5, 2, window_rng(5, 3, 10))
    assert frame_numbers(item["video"]) == expected.tolist()
    assert item["video"].shape == (3, 5, HEIGHT, WIDTH) and item["video"].dtype == torch.float32
    assert (item["index"], item["key"], item["text"]) == (10, key, "numbers")


def test_string_keys_take_the_stride_from_fps_and_the_epoch_from_set_epoch(table):
    dataset = ClipDataset(table, seed=5, fps_max=15)  # 30 fps -> every 2nd frame
    dataset.set_epoch(3)
    numbers = frame_numbers(dataset["10-5-32-48"]["video"])
    assert numbers[-1] - numbers[0] == 9
    keyed = SampleKey(10, 5, HEIGHT, WIDTH, sampling_interval=2, epoch=3)
    assert numbers == frame_numbers(dataset[keyed]["video"])


def test_window_is_deterministic_per_seed_epoch_and_row(table):
    def indices(seed: int, epoch: int) -> list[int]:
        key = SampleKey(10, 4, HEIGHT, WIDTH, sampling_interval=1, epoch=epoch)
        return ClipDataset(table, seed=seed).frame_indices(key).tolist()

    assert indices(1, 0) == indices(1, 0)
    assert len({tuple(indices(1, epoch)) for epoch in range(10)}) > 1
    assert len({tuple(indices(seed, 0)) for seed in range(10)}) > 1


def test_an_image_is_one_frame_and_a_relative_path_uses_the_root(table, tmp_path):
    dataset = ClipDataset(table, root=tmp_path)
    item = dataset[SampleKey(11, 1, 16, 16)]
    assert item["video"].shape == (3, 1, 16, 16)
    assert item["path"] == str(tmp_path / "still.png")
    with pytest.raises(ValueError, match="is an image"):
        dataset[SampleKey(11, 4, 16, 16)]


def test_resize_crop_fills_then_crops_the_middle():
    # Middle third white, the sides black, in a 3:1 frame and its 1:3 transpose.
    wide = torch.zeros(2, 3, 20, 60)
    wide[..., 20:40] = 1.0
    assert torch.equal(resize_crop(wide, (16, 16)), torch.ones(2, 3, 16, 16))
    tall = wide.transpose(-1, -2)
    assert torch.equal(resize_crop(tall, (16, 16)), torch.ones(2, 3, 16, 16))
    assert resize_crop(torch.zeros(1, 3, 40, 40), (8, 16)).shape == (1, 3, 8, 16)
    assert resize_crop(torch.zeros(1, 3, 33, 47), (192, 336)).shape == (1, 3, 192, 336)


def test_center_resizes_the_short_side_then_crops_a_centred_square():
    wide = torch.zeros(1, 3, 30, 90)
    wide[..., 30:60] = 1.0
    assert torch.equal(center_crop_square(wide, 24), torch.ones(1, 3, 24, 24))
    assert center_crop_square(torch.zeros(1, 3, 360, 641), 256).shape == (1, 3, 256, 256)
    with pytest.raises(ValueError, match="square"):
        to_clip_tensor(np.zeros((1, 8, 8, 3), np.uint8), (8, 16), "center")


def test_output_spans_minus_one_to_one():
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    frames[:, :, 4:] = 255
    video = to_clip_tensor(frames, (4, 4), "resize_crop")
    assert video.shape == (3, 2, 4, 4)
    assert video.min() == -1.0 and video.max() == 1.0


def test_center_transform_through_the_dataset(table):
    item = ClipDataset(table, transform="center")[SampleKey(12, 3, 16, 16, 1, 0)]
    assert item["video"].shape == (3, 3, 16, 16)
    assert -1.0 <= item["video"].min() and item["video"].max() <= 1.0


def test_rotated_clip_is_read_as_displayed(tmp_path):
    frames = np.zeros((2, 48, 80, 3), np.uint8)
    frames[:, :16, :16] = 255  # a white block at the stored top-left
    path = write_video(tmp_path / "rot.mp4", frames, rotation=90)
    shown = read_frames_at(path, np.array([0, 1]))
    assert shown.shape == (2, 80, 48, 3)
    # A 90 degree counterclockwise display turn moves the top-left to the bottom-left.
    assert shown[0, -8:, :8].mean() > 200 and shown[0, :8, :8].mean() < 50


def test_a_file_that_does_not_decode_raises_naming_it(table, tmp_path):
    broken = corrupt_media_data(write_video(tmp_path / "broken.mp4", gradient_frames(6, 32, 32)))
    rows = pd.DataFrame({"path": [str(broken), str(tmp_path / "gone.mp4")], "num_frames": 6,
                         "fps": 24.0})  # fmt: skip
    dataset = ClipDataset(rows)
    for index, name in enumerate(["broken.mp4", "gone.mp4"]):
        with pytest.raises(ClipReadError, match=name) as error:
            dataset[SampleKey(index, 2, 32, 32, 1, 0)]
        assert error.value.path.endswith(name)


def test_a_table_that_promises_more_frames_than_the_file_holds(table):
    rows = table.loc[[10]].assign(num_frames=200)
    with pytest.raises(ClipReadError, match="numbered.mp4"):
        ClipDataset(rows)[SampleKey(10, 4, 32, 48, 40, 0)]


def test_collate_stacks_one_shape_and_refuses_mixed_shapes(table, tmp_path):
    dataset = ClipDataset(table, root=tmp_path)
    items = [dataset[SampleKey(index, 1, 8, 8, 1, 0)] for index in (10, 11, 12)]
    batch = collate_clips(items)
    assert batch["video"].shape == (3, 3, 1, 8, 8)
    assert batch["index"].tolist() == [10, 11, 12]
    assert batch["text"] == ["numbers", "a still", ""]
    with pytest.raises(ValueError, match="one shape"):
        collate_clips([items[0], dataset[SampleKey(12, 2, 8, 8, 1, 0)]])


def test_dataloader_with_the_variable_shape_sampler(table):
    videos = table.drop(index=11)
    frame = pd.DataFrame(
        {
            "bucket_resolution": "tiny", "bucket_num_frames": 4, "bucket_aspect": "1:1",
            "bucket_height": 16, "bucket_width": 16, "batch_size": 2, "sampling_interval": 2,
            "skip_reason": None,
        },
        index=videos.index,
    )  # fmt: skip
    sampler = VariableShapeBatchSampler(lambda epoch: frame, num_replicas=1, rank=0)
    loader = DataLoader(ClipDataset(videos), batch_sampler=sampler, collate_fn=collate_clips)
    (batch,) = list(loader)
    assert batch["video"].shape == (2, 3, 4, 16, 16)
    assert sorted(batch["index"].tolist()) == [10, 12]


def test_decoding_stops_after_the_last_needed_frame(table, monkeypatch):
    decoded = []
    real_open = clip_dataset.av.open

    class CountingContainer:
        def __init__(self, container) -> None:
            self._container = container

        def __getattr__(self, name):
            return getattr(self._container, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc_info) -> None:
            self._container.close()

        def decode(self, *args, **kwargs):
            for frame in self._container.decode(*args, **kwargs):
                decoded.append(frame.pts)
                yield frame

    monkeypatch.setattr(
        clip_dataset.av, "open", lambda *a, **k: CountingContainer(real_open(*a, **k))
    )
    frames = read_frames_at(table.loc[10, "path"], np.array([0, 2, 4]))
    assert len(frames) == 3 and len(decoded) == 5
