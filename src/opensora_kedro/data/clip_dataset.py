"""The training clip dataset: one bucket-shaped clip per :class:`SampleKey` (brief §2.2-2.4).

For a key ``(index, T, H, W)`` it reads ``T`` frames of the row's file with PyAV,
``temporal_random_crop``-style: a window of ``T * interval`` frames at a random
start, ``T`` indices spread over it by ``np.linspace``. Decoding stops after the last
frame needed. The frames are then resized and cropped to ``(H, W)`` and returned as
a float ``C x T x H x W`` tensor in ``[-1, 1]``.

The window start is drawn from a generator seeded by ``(seed, epoch, index)``, so a
resumed run reads exactly the clips the interrupted one would have, whatever the
worker that reads them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import av
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from opensora_kedro.data.aspect import map_target_fps
from opensora_kedro.data.sampler import SampleKey

# torchvision's IMG_EXTENSIONS, which Open-Sora uses to tell images from videos.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}
)
TRANSFORMS = ("resize_crop", "center")


class ClipReadError(RuntimeError):
    """A file whose frames could not be read; ``path`` names it."""

    def __init__(self, path: str | os.PathLike, detail: str) -> None:
        super().__init__(f"cannot read clip {path}: {detail}")
        self.path = str(path)


def window_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator that places the window of row ``index`` in ``epoch``."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


def temporal_window(
    total_frames: int, num_frames: int, interval: int, rng: np.random.Generator
) -> np.ndarray:
    """The frame indices of Open-Sora's ``temporal_random_crop``.

    A window of ``num_frames * interval`` frames starts uniformly in
    ``[0, max(0, total - size - 1)]`` (Open-Sora's bound, which never picks the last
    possible start) and is cut at the end of the clip; ``num_frames`` indices are
    ``linspace(start, end - 1)`` rounded down. Raises if the window is too short.
    """
    size = num_frames * interval
    start = int(rng.integers(0, max(0, total_frames - size - 1), endpoint=True))
    end = min(start + size, total_frames)
    if end - start < num_frames:
        raise ValueError(f"clip has {total_frames} frames, fewer than the {num_frames} needed")
    return np.linspace(start, end - 1, num_frames, dtype=int)


def _displayed(frame: av.VideoFrame) -> np.ndarray:
    """The frame as shown (the probe reports displayed sizes): the display matrix's
    rotation is counterclockwise, as ``np.rot90`` turns."""
    array = frame.to_ndarray(format="rgb24")
    quarter_turns = int(round((frame.rotation or 0) / 90)) % 4
    return np.rot90(array, k=quarter_turns) if quarter_turns else array


def read_frames_at(path: str | os.PathLike, indices: np.ndarray) -> np.ndarray:
    """Frames ``indices`` (in decode order) of ``path`` as ``T x H x W x 3`` uint8 RGB.

    Decodes from the start and stops after the last index; only the wanted frames
    are converted to RGB. Raises :class:`ClipReadError` for anything that goes wrong.
    """
    wanted, found = {int(index) for index in indices}, {}
    last = max(wanted)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ClipReadError(path, "no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for position, frame in enumerate(container.decode(stream)):
                if position in wanted:
                    found[position] = _displayed(frame)
                if position >= last:
                    break
    except (av.error.FFmpegError, OSError) as error:
        raise ClipReadError(path, f"{type(error).__name__}: {error}") from error
    if len(found) < len(wanted):
        raise ClipReadError(path, f"frame {last} needed, only {len(found)} of the wanted decoded")
    return np.stack([found[int(index)] for index in indices])


def _resize(video: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    # Open-Sora's tensor resize: bilinear, align_corners=False, no antialiasing.
    return F.interpolate(video, size=size, mode="bilinear", align_corners=False)


def resize_crop(video: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Open-Sora ``resize_crop``: resize ``T x C x h x w`` to fill ``size = (H, W)``
    keeping the aspect ratio, then crop the overflowing side centrally."""
    height, width = video.shape[-2:]
    target_h, target_w = size
    ratio_h, ratio_w = target_h / height, target_w / width
    if ratio_h > ratio_w:
        scaled = (target_h, round(width * ratio_h))
    else:
        scaled = (round(height * ratio_w), target_w)
    video = _resize(video, scaled)
    top, left = (scaled[0] - target_h) // 2, (scaled[1] - target_w) // 2
    return video[..., top : top + target_h, left : left + target_w]


def center_crop_square(video: torch.Tensor, size: int) -> torch.Tensor:
    """Open-Sora ``center`` (``UCFCenterCropVideo``): resize the short side to ``size``,
    then crop a ``size x size`` square from the middle."""
    height, width = video.shape[-2:]
    short = min(height, width)
    # Integer sizes: Open-Sora's scale_factor can floor the short side to size - 1.
    scaled = (height * size // short, width * size // short)
    video = _resize(video, (max(scaled[0], size), max(scaled[1], size)))
    top = int(round((video.shape[-2] - size) / 2))
    left = int(round((video.shape[-1] - size) / 2))
    return video[..., top : top + size, left : left + size]


def to_clip_tensor(frames: np.ndarray, size: tuple[int, int], transform: str) -> torch.Tensor:
    """``T x h x w x 3`` uint8 frames -> float ``3 x T x H x W`` in ``[-1, 1]``."""
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
    if transform == "resize_crop":
        video = resize_crop(video, size)
    elif transform == "center":
        if size[0] != size[1]:
            raise ValueError(f"the center transform needs a square size, got {size}")
        video = center_crop_square(video, size[0])
    else:
        raise ValueError(f"unknown transform {transform!r}; use one of {TRANSFORMS}")
    # Bilinear weights are convex, so [0, 1] stays [0, 1]; clamp only float noise.
    return (video * 2.0 - 1.0).clamp_(-1.0, 1.0).permute(1, 0, 2, 3).contiguous()


class ClipDataset(Dataset):
    """Bucket-shaped clips of the rows of a video table, addressed by :class:`SampleKey`.

    ``table`` needs ``path``, ``num_frames`` and ``fps``; ``text`` is passed through
    when present. Keys come from :class:`~opensora_kedro.data.sampler.VariableShapeBatchSampler`
    (use it as the ``DataLoader``'s ``batch_sampler``); Open-Sora's ``"idx-T-H-W"``
    strings work too, and then the stride comes from ``fps`` and ``fps_max`` and
    the epoch from :meth:`set_epoch`. Relative paths are resolved against ``root``.
    """

    def __init__(
        self,
        table: pd.DataFrame,
        *,
        seed: int = 0,
        fps_max: float | None = None,
        transform: str = "resize_crop",
        root: str | os.PathLike | None = None,
    ) -> None:
        missing = {"path", "num_frames", "fps"} - set(table.columns)
        if missing:
            raise ValueError(f"clip table lacks columns {sorted(missing)}")
        if transform not in TRANSFORMS:
            raise ValueError(f"unknown transform {transform!r}; use one of {TRANSFORMS}")
        if not table.index.is_unique:
            raise ValueError("clip table needs a unique index (the sampler's row ids)")
        self.seed, self.fps_max, self.transform = int(seed), fps_max, transform
        self.root = Path(root) if root is not None else None
        self.epoch = 0
        # Plain arrays: cheap to pickle into workers and to index per sample.
        self._index = table.index
        self._paths = table["path"].astype(str).to_numpy()
        self._num_frames = table["num_frames"].to_numpy(dtype=np.int64)
        self._fps = table["fps"].to_numpy(dtype=np.float64)
        texts = table["text"].fillna("").astype(str) if "text" in table else None
        self._texts = None if texts is None else texts.to_numpy()

    def __len__(self) -> int:
        return len(self._index)

    def set_epoch(self, epoch: int) -> None:
        """The epoch for keys that do not carry one (Open-Sora string keys)."""
        self.epoch = int(epoch)

    def _path(self, position: int) -> str:
        path = self._paths[position]
        if self.root is not None and not os.path.isabs(path):
            return str(self.root / path)
        return path

    def clip_path(self, index: int) -> str:
        """The file of row ``index`` (the table's label), as :meth:`__getitem__` opens it."""
        return self._path(self._index.get_loc(index))

    def _is_image(self, position: int) -> bool:
        return (
            self._num_frames[position] == 1
            or Path(self._paths[position]).suffix.lower() in IMAGE_EXTENSIONS
        )

    def frame_indices(self, key: SampleKey) -> np.ndarray:
        """Which frames of the row's file ``key`` reads (deterministic per seed, epoch, row)."""
        position = self._index.get_loc(key.index)
        if self._is_image(position):
            if key.num_frames != 1:
                raise ValueError(
                    f"{self._path(position)} is an image, but the key asks for {key.num_frames} "
                    "frames"
                )
            return np.zeros(1, dtype=int)
        interval = key.sampling_interval
        if interval is None:
            interval = map_target_fps(float(self._fps[position]), self.fps_max)[1]
        epoch = self.epoch if key.epoch is None else key.epoch
        rng = window_rng(self.seed, epoch, key.index)
        try:
            return temporal_window(int(self._num_frames[position]), key.num_frames, interval, rng)
        except ValueError as error:
            raise ValueError(f"{self._path(position)}: {error}") from error

    def __getitem__(self, key: SampleKey | str) -> dict[str, Any]:
        """``{"video": 3 x T x H x W float in [-1, 1], "index", "key", "path"[, "text"]}``.

        Raises :class:`ClipReadError` (naming the file) when it cannot be decoded.
        """
        if isinstance(key, str):
            key = SampleKey.parse(key)
        position = self._index.get_loc(key.index)
        path = self._path(position)
        frames = read_frames_at(path, self.frame_indices(key))
        item = {
            "video": to_clip_tensor(frames, (key.height, key.width), self.transform),
            "index": key.index,
            "key": key,
            "path": path,
        }
        if self._texts is not None:
            item["text"] = self._texts[position]
        return item


def collate_clips(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack a one-shape batch: ``video`` ``B x 3 x T x H x W``, ``index`` a long tensor,
    ``key``/``path``/``text`` lists. Raises if the clips differ in shape."""
    if not batch:
        raise ValueError("cannot collate an empty batch")
    shapes = {tuple(item["video"].shape) for item in batch}
    if len(shapes) > 1:
        raise ValueError(f"a batch must have one shape, got {sorted(shapes)}")
    collated = {
        "video": torch.stack([item["video"] for item in batch]),
        "index": torch.tensor([item["index"] for item in batch], dtype=torch.long),
        "key": [item["key"] for item in batch],
        "path": [item["path"] for item in batch],
    }
    if "text" in batch[0]:
        collated["text"] = [item["text"] for item in batch]
    return collated
