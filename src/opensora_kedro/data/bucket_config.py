"""Open-Sora 2.0's ``bucket_config``, parsed and checked: per resolution its training ratio
table, frame keys, keep / skip probabilities and batch sizes."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opensora_kedro.data.aspect import _check_compression, resolution_table

if TYPE_CHECKING:  # annotation only: the schemas (and torch, via models.lora) stay unloaded here
    from opensora_kedro.params import BucketConfigTree

MERGE_DIRECTIVE = "_delete_"  # the config layer's "replace, don't merge" flag, not a resolution


@dataclass(frozen=True)
class ResolutionBuckets:
    """One resolution of a bucket config: its training ratio table and its frame keys."""

    name: str
    num_pixels: int
    ratios: tuple[str, ...]  # training-table order (nearest-ratio ties go to the earlier)
    heights: tuple[int, ...]
    widths: tuple[int, ...]
    frames: tuple[int, ...]  # descending, as Open-Sora walks them
    keep_probs: tuple[float, ...]
    skip_probs: tuple[float | None, ...]  # None where the prob was a plain float
    batch_sizes: tuple[int, ...]
    key_offset: int  # flat index of frames[0] over the whole config (names the draws)
    ratio_offset: int  # flat index of ratios[0] over the whole config

    @property
    def image_key(self) -> int | None:
        """Position of the ``1``-frame key in :attr:`frames`, or None."""
        return self.frames.index(1) if 1 in self.frames else None

    @property
    def num_buckets(self) -> int:
        """``#frame keys × #ratios``."""
        return len(self.frames) * len(self.ratios)


def is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _parse_frame_key(key: object, path: str) -> int:
    if is_int(key):
        frames = int(key)
    elif isinstance(key, str) and key.strip().lstrip("+").isdigit():
        frames = int(key)
    else:
        raise ValueError(f"{path}: frame key {key!r} is not an int (a frame count like 33)")
    if frames < 1:
        raise ValueError(f"{path}: frame key {frames} must be at least 1")
    return frames


def _parse_prob(value: object, path: str) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise ValueError(f"{path}: probability {value!r} is not a number")
    if not 0.0 <= float(value) <= 1.0:  # also rejects NaN
        raise ValueError(f"{path}: probability {value!r} is outside [0, 1]")
    return float(value)


def _parse_batch_size(value: object, path: str) -> int:
    if not is_int(value) or int(value) <= 0:
        raise ValueError(f"{path}: batch size {value!r} must be a positive int")
    return int(value)


def _parse_value(
    value: object, path: str, batch_size: int | None
) -> tuple[float, float | None, int]:
    """``prob`` | ``(prob, bs)`` | ``((p_keep, p_skip), bs)`` -> (keep, skip, bs)."""
    if isinstance(value, list | tuple):
        if len(value) not in (1, 2):
            raise ValueError(f"{path}: expected (prob, batch_size), got {value!r}")
        prob, size = value[0], (value[1] if len(value) == 2 else None)
    else:
        prob, size = value, None
    if isinstance(prob, list | tuple):
        if len(prob) != 2:
            raise ValueError(f"{path}: a probability pair is (p_keep, p_skip), got {prob!r}")
        keep, skip = _parse_prob(prob[0], path), _parse_prob(prob[1], path)
    else:
        keep, skip = _parse_prob(prob, path), None
    if batch_size is not None:
        return keep, skip, batch_size
    if size is None:
        raise ValueError(f"{path}: no batch size; write (prob, batch_size) or pass batch_size=")
    return keep, skip, _parse_batch_size(size, path)


def _parse_resolution(
    name: object, frames_raw: object, d: int, batch_size: int | None
) -> tuple[str, int, dict[str, tuple[int, int]], list[tuple[int, float, float | None, int]]]:
    path = f"bucket_config.{name}"
    try:
        total, table = resolution_table(str(name), d, training=True)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    if not isinstance(frames_raw, Mapping) or not frames_raw:
        raise ValueError(f"{path}: expected a non-empty mapping {{num_frames: (prob, batch_size)}}")
    keys: dict[int, tuple[int, float, float | None, int]] = {}
    for key, value in frames_raw.items():
        key_path = f"{path}.{key}"
        frames = _parse_frame_key(key, key_path)
        if frames in keys:
            raise ValueError(f"{key_path}: frame key {frames} is given twice")
        keys[frames] = (frames, *_parse_value(value, key_path, batch_size))
    return str(name), total, table, [keys[t] for t in sorted(keys, reverse=True)]


@dataclass(frozen=True)
class BucketConfig:
    """A validated ``bucket_config``: resolutions by pixel count, descending.

    A training group's validated ``bucket_config`` becomes one with :meth:`from_tree`;
    :meth:`from_dict` parses and checks the plain YAML/Python shape
    ``{res_name: {num_frames: (prob, batch_size)}}``, where ``prob`` is a float or a pair
    ``(p_keep_at_this_res, p_skip_to_shorter_t)``; keys may be ints or digit strings and
    values lists or tuples. A ``_delete_`` key (the config layer's merge flag) is ignored.
    """

    resolutions: tuple[ResolutionBuckets, ...]
    spatial_compression: int = 16

    @classmethod
    def from_dict(
        cls, raw: Mapping, spatial_compression: int = 16, *, batch_size: int | None = None
    ) -> BucketConfig:
        """Parse and validate ``raw``; errors are ValueErrors naming the key path.

        ``batch_size``, when given, overrides every bucket's batch size (Open-Sora's global
        ``batch_size`` key) and lets values be a bare probability.
        """
        if not isinstance(raw, Mapping) or not raw:
            raise ValueError(
                "bucket_config: expected a non-empty mapping "
                "{resolution: {num_frames: (prob, batch_size)}}"
            )
        _check_compression(spatial_compression)
        if batch_size is not None:
            batch_size = _parse_batch_size(batch_size, "batch_size")
        parsed = [
            _parse_resolution(name, frames, spatial_compression, batch_size)
            for name, frames in raw.items()
            if name != MERGE_DIRECTIVE
        ]
        if not parsed:
            raise ValueError("bucket_config: no resolutions")
        return cls._assemble(parsed, spatial_compression)

    @classmethod
    def from_tree(
        cls, tree: BucketConfigTree, spatial_compression: int = 16, *, batch_size_scale: float = 1.0
    ) -> BucketConfig:
        """From a training group's validated ``bucket_config`` (``config.schemas``' tree: its
        resolution names, int frame keys, probabilities and batch sizes already checked), with
        every batch size multiplied by ``batch_size_scale`` (at least 1). Only the resolution
        tables are computed here; nothing the schema checked is parsed again.

        Raises:
            ValueError: an empty config or resolution, or a resolution whose ratio is not in
                the training table of ``spatial_compression``.
        """
        if not tree:
            raise ValueError("bucket_config: no resolutions")
        _check_compression(spatial_compression)
        parsed = []
        for name, entries in tree.items():
            path = f"bucket_config.{name}"
            if not entries:
                raise ValueError(f"{path}: expected a non-empty mapping {{num_frames: (prob, "
                                 "batch_size)}")  # fmt: skip
            try:
                total, table = resolution_table(name, spatial_compression, training=True)
            except ValueError as error:
                raise ValueError(f"{path}: {error}") from None
            keys = []
            for frames in sorted(entries, reverse=True):
                prob, size = entries[frames]
                keep, skip = (prob[0], prob[1]) if isinstance(prob, tuple | list) else (prob, None)
                keys.append((frames, keep, skip, max(1, int(size * batch_size_scale))))
            parsed.append((name, total, table, keys))
        return cls._assemble(parsed, spatial_compression)

    @classmethod
    def _assemble(
        cls,
        parsed: list[tuple[str, int, dict[str, tuple[int, int]], list[tuple]]],
        spatial_compression: int,
    ) -> BucketConfig:
        """``(name, pixels, ratio table, [(frames, keep, skip, batch size)] descending)`` per
        resolution -> the config, resolutions by pixel count."""
        # Stable sort: equal pixel counts keep the config order, as in Open-Sora.
        parsed = sorted(parsed, key=lambda item: item[1], reverse=True)
        resolutions, key_offset, ratio_offset = [], 0, 0
        for name, total, table, keys in parsed:
            frames, keep, skip, sizes = (tuple(column) for column in zip(*keys, strict=True))
            resolutions.append(
                ResolutionBuckets(
                    name=name,
                    num_pixels=total,
                    ratios=tuple(table),
                    heights=tuple(h for h, _ in table.values()),
                    widths=tuple(w for _, w in table.values()),
                    frames=frames,
                    keep_probs=keep,
                    skip_probs=skip,
                    batch_sizes=sizes,
                    key_offset=key_offset,
                    ratio_offset=ratio_offset,
                )
            )
            key_offset += len(frames)
            ratio_offset += len(table)
        return cls(tuple(resolutions), spatial_compression)

    @property
    def num_bucket(self) -> int:
        """``Σ_res (#frame keys × #ratios)``: the row-seed multiplier."""
        return sum(res.num_buckets for res in self.resolutions)

    @property
    def names(self) -> tuple[str, ...]:
        """Resolution names, largest pixel count first."""
        return tuple(res.name for res in self.resolutions)

    def resolution(self, name: str) -> ResolutionBuckets:
        """The buckets of resolution ``name`` (KeyError if absent)."""
        for res in self.resolutions:
            if res.name == name:
                return res
        raise KeyError(f"resolution {name!r} not in bucket_config; have {list(self.names)}")

    def batch_size(self, resolution: str, num_frames: int) -> int:
        """Per-GPU batch size of bucket ``(resolution, num_frames)`` (KeyError if absent)."""
        res = self.resolution(resolution)
        if num_frames not in res.frames:
            raise KeyError(f"bucket_config.{resolution} has no frame key {num_frames}")
        return res.batch_sizes[res.frames.index(num_frames)]

    def to_dict(self) -> dict[str, dict[int, tuple]]:
        """The plain ``{res: {t: (prob, batch_size)}}`` shape (pairs for two-prob keys)."""
        return {
            res.name: {
                t: ((keep if skip is None else (keep, skip)), size)
                for t, keep, skip, size in zip(
                    res.frames, res.keep_probs, res.skip_probs, res.batch_sizes, strict=True
                )
            }
            for res in self.resolutions
        }
