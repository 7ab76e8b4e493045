from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pandas as pd
import pytest
import torch

from opensora_kedro.data.sampler import SampleKey, VariableShapeBatchSampler, build_epoch_plan

# Stand-in buckets: (resolution, T, aspect) -> (H, W, batch size).
BUCKETS = {
    ("256px", 1, "1:1"): (256, 256, 8),
    ("256px", 33, "16:9"): (192, 336, 3),
    ("256px", 33, "9:16"): (336, 192, 3),
    ("768px", 65, "1:1"): (768, 768, 2),
    ("768px", 1, "16:9"): (576, 1024, 5),
}
KEY_COLUMNS = ("bucket_resolution", "bucket_num_frames", "bucket_aspect")
SHAPE_COLUMNS = ("bucket_num_frames", "bucket_height", "bucket_width")
SHAPE_BATCH_SIZE = {(key[1], h, w): bs for key, (h, w, bs) in BUCKETS.items()}


def assignment_frame(keys: list[tuple | None], index: pd.Index, intervals=None) -> pd.DataFrame:
    """An ``assign_buckets``-shaped frame from one bucket key (or None) per row."""
    rows = []
    for key in keys:
        if key is None:
            rows.append((None, 0, None, 0, 0, 0, "no_bucket"))
        else:
            height, width, batch_size = BUCKETS[key]
            rows.append((*key, height, width, batch_size, None))
    columns = [
        "bucket_resolution", "bucket_num_frames", "bucket_aspect",
        "bucket_height", "bucket_width", "batch_size", "skip_reason",
    ]  # fmt: skip
    frame = pd.DataFrame(rows, columns=columns, index=index)
    frame["sampling_interval"] = 1 if intervals is None else intervals
    return frame


class StandInAssigner:
    """Random buckets per (seed, epoch), some rows skipped; counts its calls."""

    def __init__(self, num_rows: int = 300, seed: int = 7) -> None:
        self.index = pd.Index(1000 + 3 * np.arange(num_rows))  # labels, not positions
        self.seed = seed
        self.calls: list[int] = []

    def __call__(self, epoch: int) -> pd.DataFrame:
        self.calls.append(epoch)
        rng = np.random.default_rng([self.seed, epoch])
        choices = [*BUCKETS, None]
        picks = rng.choice(len(choices), size=len(self.index), p=[0.3, 0.2, 0.2, 0.1, 0.1, 0.1])
        intervals = rng.integers(1, 4, size=len(self.index))
        return assignment_frame([choices[i] for i in picks], self.index, intervals)


def fixed_assigner(counts: dict[tuple, int]):
    """The same assignment every epoch, ``counts`` rows per bucket, interleaved."""
    keys = [key for key, count in counts.items() for _ in range(count)]
    keys = [keys[i] for i in np.random.default_rng(0).permutation(len(keys))]
    frame = assignment_frame(keys, pd.RangeIndex(len(keys)))
    return lambda epoch: frame


def run_epoch(assign, num_replicas: int, epoch: int = 0, seed: int = 3, **kwargs):
    """Every rank's batches for one epoch."""
    out = []
    for rank in range(num_replicas):
        sampler = VariableShapeBatchSampler(
            assign, num_replicas=num_replicas, rank=rank, seed=seed, **kwargs
        )
        sampler.set_epoch(epoch)
        out.append(list(sampler))
    return out


def batch_ids(batches) -> list[tuple[int, ...]]:
    return [tuple(key.index for key in batch) for batch in batches]


@pytest.mark.parametrize("num_replicas", [1, 3, 4])
def test_batches_are_single_shape_full_and_disjoint(num_replicas):
    assign = StandInAssigner()
    frame = assign(0)
    per_rank = run_epoch(assign, num_replicas)
    assert len({len(batches) for batches in per_rank}) == 1  # every rank runs the same steps
    seen = []
    for batches in per_rank:
        for batch in batches:
            shapes = {(key.num_frames, key.height, key.width) for key in batch}
            assert len(shapes) == 1
            rows = frame.loc[[key.index for key in batch]]
            assert rows[list(KEY_COLUMNS)].nunique().max() == 1  # one bucket
            assert len(batch) == rows["batch_size"].iloc[0]
            assert shapes == {tuple(rows[list(SHAPE_COLUMNS)].iloc[0])}
            assert [key.sampling_interval for key in batch] == rows["sampling_interval"].tolist()
            seen += [key.index for key in batch]
    assert len(seen) == len(set(seen))  # no row twice, so ranks are disjoint


def test_union_over_ranks_is_the_single_rank_sequence_cut_to_whole_groups():
    assign = StandInAssigner()
    frame = assign(0)
    (single,) = run_epoch(assign, 1)
    # drop_last keeps the first len // bs * bs rows of each bucket, in row order.
    expected = set()
    for _, group in frame[frame["batch_size"] > 0].groupby(list(KEY_COLUMNS)):
        keep = len(group) // group["batch_size"].iloc[0] * group["batch_size"].iloc[0]
        expected |= set(group.index[:keep])
    assert {key.index for batch in single for key in batch} == expected
    for num_replicas in (3, 4):
        per_rank = run_epoch(assign, num_replicas)
        steps = len(single) // num_replicas
        interleaved = [per_rank[r][g] for g in range(steps) for r in range(num_replicas)]
        assert batch_ids(interleaved) == batch_ids(single[: steps * num_replicas])


def open_sora_reference(frame: pd.DataFrame, seed: int, epoch: int, num_replicas: int, rank: int):
    """A literal port of Open-Sora's ``VariableVideoBatchSampler.__iter__`` (drop_last)."""
    bucket_sample_dict = OrderedDict()
    for i, row in enumerate(frame.itertuples()):
        if row.batch_size > 0:
            bucket_id = (row.bucket_resolution, row.bucket_num_frames, row.bucket_aspect)
            bucket_sample_dict.setdefault(bucket_id, []).append(i)
    g = torch.Generator()
    g.manual_seed(seed + epoch)
    counts = OrderedDict()
    for bucket_id, data_list in bucket_sample_dict.items():
        bs = BUCKETS[bucket_id][2]
        remainder = len(data_list) % bs
        if remainder > 0:
            data_list = data_list[:-remainder]
        data_indices = torch.randperm(len(data_list), generator=g).tolist()
        bucket_sample_dict[bucket_id] = [data_list[i] for i in data_indices]
        counts[bucket_id] = len(data_list) // bs
    order = [bucket_id for bucket_id, n in counts.items() for _ in range(n)]
    order = [order[i] for i in torch.randperm(len(order), generator=g).tolist()]
    order = order[: len(order) - len(order) % num_replicas]
    consumed: dict = {}
    for i in range(len(order) // num_replicas):
        group = order[i * num_replicas : (i + 1) * num_replicas]
        bounds = []
        for bucket_id in group:
            start = consumed.get(bucket_id, 0)
            bounds.append((start, start + BUCKETS[bucket_id][2]))
            consumed[bucket_id] = start + BUCKETS[bucket_id][2]
        bucket_id = group[rank]
        height, width, _ = BUCKETS[bucket_id]
        yield [
            f"{frame.index[idx]}-{bucket_id[1]}-{height}-{width}"
            for idx in bucket_sample_dict[bucket_id][bounds[rank][0] : bounds[rank][1]]
        ]


@pytest.mark.parametrize("num_replicas", [1, 4])
def test_matches_open_sora_batch_for_batch(num_replicas):
    assign = StandInAssigner()
    for rank in range(num_replicas):
        sampler = VariableShapeBatchSampler(assign, num_replicas=num_replicas, rank=rank, seed=11)
        sampler.set_epoch(2)
        ours = [[str(key) for key in batch] for batch in sampler]
        assert ours == list(open_sora_reference(assign(2), 11, 2, num_replicas, rank))


def test_deterministic_per_seed_and_epoch():
    assign = StandInAssigner()
    first = batch_ids(run_epoch(assign, 2, epoch=1)[0])
    assert first == batch_ids(run_epoch(assign, 2, epoch=1)[0])
    assert first != batch_ids(run_epoch(assign, 2, epoch=2)[0])
    assert first != batch_ids(run_epoch(assign, 2, epoch=1, seed=4)[0])


def test_keys_carry_the_epoch_and_the_assignment_is_built_once_per_epoch():
    assign = StandInAssigner()
    sampler = VariableShapeBatchSampler(assign, num_replicas=2, rank=1, seed=0)
    sampler.set_epoch(5)
    assert len(sampler) == len(list(sampler)) > 0
    assert {key.epoch for batch in sampler for key in batch} == {5}
    assert assign.calls == [5]


@pytest.mark.parametrize("use_num_steps", [True, False])
def test_resume_with_the_same_rank_count(use_num_steps):
    assign = StandInAssigner()
    for rank in range(2):
        full = list(VariableShapeBatchSampler(assign, num_replicas=2, rank=rank, seed=1))
        sampler = VariableShapeBatchSampler(assign, num_replicas=2, rank=rank, seed=1)
        iterator = iter(sampler)
        taken = [next(iterator) for _ in range(5)]
        assert taken == full[:5]
        state = sampler.state_dict(5 if use_num_steps else None)
        assert state == {"seed": 1, "epoch": 0, "last_micro_batch_access_index": 10}
        resumed = VariableShapeBatchSampler(assign, num_replicas=2, rank=rank, seed=99)
        resumed.load_state_dict(state)
        resumed.set_epoch(0)  # the same epoch keeps the position
        assert len(resumed) == len(full) - 5
        assert list(resumed) == full[5:]
        assert len(resumed) == len(full)  # a finished epoch starts over


def test_resume_on_fewer_ranks_yields_what_the_original_had_left():
    # 10 + 6 + 4 = 20 micro-batches: divisible by 4 and 2, so nothing is cut at the end.
    assign = fixed_assigner(
        {("256px", 1, "1:1"): 80, ("256px", 33, "16:9"): 19, ("768px", 65, "1:1"): 9}
    )
    original = run_epoch(assign, 4, epoch=1)
    steps_done = 2
    remaining = {batch for batches in original for batch in batch_ids(batches[steps_done:])}
    state = {"seed": 3, "epoch": 1, "last_micro_batch_access_index": steps_done * 4}
    resumed = set()
    for rank in range(2):
        sampler = VariableShapeBatchSampler(assign, num_replicas=2, rank=rank, seed=0)
        sampler.load_state_dict(state)
        batches = list(sampler)
        assert len(batches) == (20 - steps_done * 4) // 2
        resumed |= set(batch_ids(batches))
    assert resumed == remaining


def test_len_matches_batches_for_every_rank():
    assign = StandInAssigner()
    for rank in range(3):
        sampler = VariableShapeBatchSampler(assign, num_replicas=3, rank=rank)
        assert len(sampler) == len(list(sampler))


def test_set_epoch_to_a_new_epoch_starts_at_its_beginning():
    assign = StandInAssigner()
    sampler = VariableShapeBatchSampler(assign, num_replicas=1, rank=0)
    sampler.load_state_dict({"seed": 0, "epoch": 0, "last_micro_batch_access_index": 4})
    sampler.set_epoch(1)
    assert sampler.state_dict()["last_micro_batch_access_index"] == 0
    assert len(list(sampler)) == len(sampler)


def test_without_drop_last_every_assigned_row_appears_in_full_batches():
    assign = StandInAssigner(num_rows=101)
    frame = assign(0)
    per_rank = run_epoch(assign, 3, drop_last=False)
    assert len({len(batches) for batches in per_rank}) == 1
    seen = {key.index for batches in per_rank for batch in batches for key in batch}
    assert seen == set(frame.index[frame["batch_size"] > 0])
    for batches in per_rank:
        for batch in batches:
            key = batch[0]
            assert len(batch) == SHAPE_BATCH_SIZE[(key.num_frames, key.height, key.width)]


def test_empty_assignment_yields_nothing():
    frame = assignment_frame([None] * 5, pd.RangeIndex(5))
    sampler = VariableShapeBatchSampler(lambda epoch: frame, num_replicas=2, rank=0)
    assert len(sampler) == 0 and list(sampler) == []


def test_inconsistent_or_incomplete_assignments_are_refused():
    frame = assignment_frame([("256px", 1, "1:1")] * 4, pd.RangeIndex(4))
    frame.loc[2, "batch_size"] = 3
    with pytest.raises(ValueError, match="batch_size differs"):
        build_epoch_plan(frame, seed=0, epoch=0, num_replicas=1, drop_last=True)
    with pytest.raises(ValueError, match="lacks columns"):
        build_epoch_plan(frame.drop(columns="sampling_interval"), seed=0, epoch=0,
                         num_replicas=1, drop_last=True)  # fmt: skip
    with pytest.raises(ValueError, match="invalid rank"):
        VariableShapeBatchSampler(lambda epoch: frame, num_replicas=2, rank=2)


def test_sample_key_string_form_round_trips():
    key = SampleKey(12, 33, 192, 336, sampling_interval=2, epoch=1)
    assert str(key) == "12-33-192-336"
    assert SampleKey.parse(str(key)) == SampleKey(12, 33, 192, 336)
    with pytest.raises(ValueError):
        SampleKey.parse("12-33-192")
