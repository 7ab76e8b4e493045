"""Open-Sora's variable-shape batch sampler (``VariableVideoBatchSampler``, brief §3.3).

Every micro-batch comes from one bucket, so all its samples share one shape
``(T, H, W)``; different ranks may run different shapes in the same step. The
per-epoch plan is built with numpy grouping (no per-row Python loop), so a
million-row table plans in well under a second.

Given the same bucket assignment, seed and epoch, the batches are exactly those
Open-Sora yields: buckets are visited in order of first appearance, the same
``torch.Generator`` (seeded ``seed + epoch``) draws the per-bucket shuffles and then
the global access-order shuffle, and consumption pointers advance for every access
of a group of ``num_replicas`` accesses.

Items are :class:`SampleKey` values; ``str(key)`` is Open-Sora's ``"{idx}-{T}-{H}-{W}"``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

logger = logging.getLogger(__name__)

BUCKET_KEY_COLUMNS = ("bucket_resolution", "bucket_num_frames", "bucket_aspect")
ASSIGNMENT_COLUMNS = (
    *BUCKET_KEY_COLUMNS,
    "bucket_height",
    "bucket_width",
    "batch_size",
    "sampling_interval",
)


@dataclass(frozen=True)
class SampleKey:
    """One sample of a micro-batch: which row to read and the shape to produce.

    ``index`` is the row's label in the table (the assignment's index). The sampler
    fills ``sampling_interval`` (the row's temporal stride from the assignment) and
    ``epoch`` (so a dataset in a persistent worker seeds its crop window without
    being told the epoch); keys parsed from Open-Sora strings leave them ``None``.
    """

    index: int
    num_frames: int
    height: int
    width: int
    sampling_interval: int | None = None
    epoch: int | None = None

    def __str__(self) -> str:
        return f"{self.index}-{self.num_frames}-{self.height}-{self.width}"

    @classmethod
    def parse(cls, text: str) -> SampleKey:
        """Read Open-Sora's ``"{idx}-{T}-{H}-{W}"`` string form."""
        parts = text.split("-")
        if len(parts) != 4:
            raise ValueError(f"sample key {text!r} is not of the form 'idx-T-H-W'")
        index, num_frames, height, width = (int(part) for part in parts)
        return cls(index, num_frames, height, width)


@dataclass(frozen=True)
class EpochPlan:
    """Everything one epoch's iteration needs, for every rank.

    Rows are positions in the assignment frame. ``rows`` holds each bucket's rows
    (after drop/pad and shuffle) one bucket after another, from ``bucket_start``;
    ``access`` is the bucket of each global micro-batch access and ``offset`` where
    in ``rows`` that access's micro-batch starts.
    """

    labels: np.ndarray
    intervals: np.ndarray
    rows: np.ndarray
    bucket_start: np.ndarray
    batch_size: np.ndarray
    shape: np.ndarray  # (num_buckets, 3): T, H, W
    access: np.ndarray
    offset: np.ndarray


def _check_assignment(frame: pd.DataFrame) -> None:
    missing = [column for column in ASSIGNMENT_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"bucket assignment lacks columns {missing}")
    if not pd.api.types.is_integer_dtype(frame.index.dtype) or not frame.index.is_unique:
        raise ValueError("bucket assignment needs a unique integer index (the table's row ids)")


def _valid_positions(frame: pd.DataFrame) -> np.ndarray:
    """Positions of the rows that have a bucket this epoch."""
    valid = (
        frame["bucket_resolution"].notna().to_numpy()
        & (frame["bucket_num_frames"].to_numpy() > 0)
        & (frame["batch_size"].to_numpy() > 0)
    )
    return np.flatnonzero(valid)


def _bucket_codes(frame: pd.DataFrame, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bucket code per valid row, numbered in order of first appearance (as Open-Sora's
    ``OrderedDict`` fills), and each bucket's first row position."""
    combined = np.zeros(len(positions), dtype=np.int64)
    for column in BUCKET_KEY_COLUMNS:
        # Factorising the whole column keeps pandas' fast path for Arrow strings.
        codes, uniques = pd.factorize(frame[column], use_na_sentinel=False)
        combined = combined * max(len(uniques), 1) + codes[positions]
    codes, _ = pd.factorize(combined)
    # Codes are numbered by first appearance, so a bucket starts where the running
    # maximum of the codes steps up.
    first = np.flatnonzero(np.diff(np.maximum.accumulate(codes), prepend=-1) > 0)
    return codes.astype(np.int64), positions[first]


def _per_bucket(
    frame: pd.DataFrame, column: str, positions: np.ndarray, codes: np.ndarray, first: np.ndarray
) -> np.ndarray:
    """A column that must be constant within a bucket, one value per bucket."""
    values = frame[column].to_numpy()
    per_bucket = values[first].astype(np.int64)
    if np.any(values[positions].astype(np.int64) != per_bucket[codes]):
        raise ValueError(f"bucket assignment: {column} differs within a bucket")
    return per_bucket


def _shuffle_buckets(
    grouped: np.ndarray,
    counts: np.ndarray,
    batch_size: np.ndarray,
    drop_last: bool,
    g: torch.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Drop or pad each bucket to a multiple of its batch size, then shuffle it.

    Like Open-Sora, the remainder is cut from the end in row order *before* the
    shuffle, and every bucket draws a ``randperm`` (even an empty one) so the
    generator advances exactly as there. Padding repeats the bucket cyclically
    (Open-Sora repeats only its head, which falls short for tiny buckets).
    """
    pieces, bounds = [], np.cumsum(counts) - counts
    for bucket, (start, count) in enumerate(zip(bounds, counts, strict=True)):
        rows = grouped[start : start + count]
        size = int(batch_size[bucket])
        keep = (count // size) * size if drop_last else -(-count // size) * size
        rows = np.resize(rows, keep) if keep > count else rows[:keep]
        pieces.append(rows[torch.randperm(keep, generator=g).numpy()])
    lengths = np.array([len(piece) for piece in pieces], dtype=np.int64)
    flat = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    return flat, np.cumsum(lengths) - lengths


def _access_order(
    num_batches: np.ndarray, num_replicas: int, drop_last: bool, g: torch.Generator
) -> np.ndarray:
    """Bucket ids repeated once per micro-batch, shuffled, cut or padded to a multiple
    of ``num_replicas``."""
    order = np.repeat(np.arange(len(num_batches)), num_batches)
    order = order[torch.randperm(len(order), generator=g).numpy()]
    remainder = len(order) % num_replicas
    if remainder and drop_last:
        order = order[: len(order) - remainder]
    elif remainder:
        order = np.resize(order, len(order) + num_replicas - remainder)
    return order


def _access_offsets(
    access: np.ndarray, bucket_start: np.ndarray, batch_size: np.ndarray, bucket_len: np.ndarray
) -> np.ndarray:
    """Where each access's micro-batch starts: its bucket's start plus one batch per
    earlier access of that bucket, over *all* ranks (Open-Sora's consumption
    pointers). Padded accesses wrap round their bucket instead of running off it."""
    order = np.argsort(access, kind="stable")
    counts = np.bincount(access, minlength=len(bucket_start))
    first = np.cumsum(counts) - counts
    occurrence = np.empty_like(access)
    occurrence[order] = np.arange(len(access)) - np.repeat(first, counts)
    consumed = occurrence * batch_size[access]
    return bucket_start[access] + consumed % np.maximum(bucket_len[access], 1)


def build_epoch_plan(
    frame: pd.DataFrame, *, seed: int, epoch: int, num_replicas: int, drop_last: bool
) -> EpochPlan:
    """The whole epoch's micro-batch plan (for all ranks) from one bucket assignment."""
    _check_assignment(frame)
    positions = _valid_positions(frame)
    codes, first = _bucket_codes(frame, positions)
    batch_size = _per_bucket(frame, "batch_size", positions, codes, first)
    shape = np.stack(
        [
            _per_bucket(frame, column, positions, codes, first)
            for column in ("bucket_num_frames", "bucket_height", "bucket_width")
        ],
        axis=1,
    ).reshape(-1, 3)
    counts = np.bincount(codes, minlength=len(first))
    grouped = positions[np.argsort(codes, kind="stable")]  # row order within each bucket
    g = torch.Generator()
    g.manual_seed(seed + epoch)
    rows, bucket_start = _shuffle_buckets(grouped, counts, batch_size, drop_last, g)
    bucket_len = np.diff(np.append(bucket_start, len(rows)))
    access = _access_order(bucket_len // np.maximum(batch_size, 1), num_replicas, drop_last, g)
    return EpochPlan(
        labels=frame.index.to_numpy(),
        intervals=frame["sampling_interval"].to_numpy(dtype=np.int64),
        rows=rows,
        bucket_start=bucket_start,
        batch_size=batch_size,
        shape=shape,
        access=access,
        offset=_access_offsets(access, bucket_start, batch_size, bucket_len),
    )


def _default_replicas(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    distributed = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if distributed else 1
    if rank is None:
        rank = dist.get_rank() if distributed else 0
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ValueError(f"invalid rank {rank} for num_replicas {num_replicas}")
    return num_replicas, rank


class VariableShapeBatchSampler(Sampler[list[SampleKey]]):
    """Batches of :class:`SampleKey`, one bucket (one shape) per batch, for one rank.

    ``assign(epoch)`` returns that epoch's bucket assignment (the frame of
    ``data.bucket.assign_buckets``, indexed by the table's integer row ids); it is
    called once per epoch and cached. Use as ``DataLoader(dataset, batch_sampler=...)``.

    ``len()`` is the number of batches the next iteration yields on this rank (the
    remaining ones after a resume). Iterating to the end resets the position to the
    start of the epoch; ``set_epoch`` to a different epoch does too.
    """

    def __init__(
        self,
        assign: Callable[[int], pd.DataFrame],
        *,
        num_replicas: int | None = None,
        rank: int | None = None,
        seed: int = 0,
        drop_last: bool = True,
    ) -> None:
        self.assign = assign
        self.num_replicas, self.rank = _default_replicas(num_replicas, rank)
        self.seed = int(seed)
        self.drop_last = drop_last
        self.epoch = 0
        self.last_micro_batch_access_index = 0  # global accesses consumed this epoch
        self._assignment: tuple[int, pd.DataFrame] | None = None
        self._plan_cache: tuple[tuple[int, int], EpochPlan] | None = None

    def assignment(self, epoch: int | None = None) -> pd.DataFrame:
        """The bucket assignment of ``epoch`` (default: the current one), cached per epoch."""
        epoch = self.epoch if epoch is None else epoch
        if self._assignment is None or self._assignment[0] != epoch:
            self._assignment = (epoch, self.assign(epoch))
        return self._assignment[1]

    def _plan(self) -> EpochPlan:
        key = (self.seed, self.epoch)
        if self._plan_cache is None or self._plan_cache[0] != key:
            plan = build_epoch_plan(
                self.assignment(),
                seed=self.seed,
                epoch=self.epoch,
                num_replicas=self.num_replicas,
                drop_last=self.drop_last,
            )
            self._plan_cache = (key, plan)
            if self.rank == 0:
                logger.log(
                    logging.INFO if self.epoch == 0 else logging.DEBUG,
                    "epoch %d: %d samples in %d buckets, %d micro-batches, %d steps per rank",
                    self.epoch,
                    len(plan.rows),
                    len(plan.bucket_start),
                    len(plan.access),
                    len(plan.access) // self.num_replicas,
                )
        return self._plan_cache[1]

    def _batch(self, plan: EpochPlan, access: int) -> list[SampleKey]:
        bucket, start = int(plan.access[access]), int(plan.offset[access])
        rows = plan.rows[start : start + int(plan.batch_size[bucket])]
        num_frames, height, width = (int(value) for value in plan.shape[bucket])
        labels, intervals = plan.labels[rows].tolist(), plan.intervals[rows].tolist()
        return [
            SampleKey(label, num_frames, height, width, interval, self.epoch)
            for label, interval in zip(labels, intervals, strict=True)
        ]

    def __iter__(self) -> Iterator[list[SampleKey]]:
        plan = self._plan()
        num_groups = len(plan.access) // self.num_replicas
        # Resume at a whole group; with a different rank count than the run that
        # saved the state this may repeat part of a group (as Open-Sora does).
        start = self.last_micro_batch_access_index // self.num_replicas
        self.last_micro_batch_access_index = start * self.num_replicas
        for group in range(start, num_groups):
            self.last_micro_batch_access_index += self.num_replicas
            yield self._batch(plan, group * self.num_replicas + self.rank)
        self.last_micro_batch_access_index = 0

    def __len__(self) -> int:
        num_groups = len(self._plan().access) // self.num_replicas
        return max(num_groups - self.last_micro_batch_access_index // self.num_replicas, 0)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch; a different epoch than the current one starts at its beginning."""
        if epoch != self.epoch:
            self.epoch = int(epoch)
            self.last_micro_batch_access_index = 0

    def state_dict(self, num_steps: int | None = None) -> dict[str, int]:
        """``{"seed", "epoch", "last_micro_batch_access_index"}``.

        ``num_steps`` is the number of steps of this epoch actually trained; pass it
        when a ``DataLoader`` prefetches, since the sampler itself runs ahead of the
        training loop. Without it, the batches this sampler has yielded are counted.
        """
        consumed = self.last_micro_batch_access_index
        if num_steps is not None:
            consumed = int(num_steps) * self.num_replicas
        return {"seed": self.seed, "epoch": self.epoch, "last_micro_batch_access_index": consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume from :meth:`state_dict`, also one saved with a different ``num_replicas``."""
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self.last_micro_batch_access_index = int(state["last_micro_batch_access_index"])
