"""A training group's validated bucket_config becomes the fast BucketConfig without being
parsed again: the same config :meth:`BucketConfig.from_dict` parses from the YAML form."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter

from opensora_kedro.data.bucket_config import BucketConfig
from opensora_kedro.params import BucketConfigTree
from tests.data.test_bucket import STAGE1

# The YAML form: lists, a probability pair, resolutions out of pixel order.
RAW = {"256px": {1: [1.0, 45], 33: [1.0, 12], 5: [1.0, 12]}, "768px": {1: [[0.5, 0.2], 13]},
       "1024px": {1: [0.5, 7]}}  # fmt: skip


def tree(raw: dict) -> dict:
    return TypeAdapter(BucketConfigTree).validate_python(raw)


@pytest.mark.parametrize("raw", [RAW, STAGE1])
def test_the_validated_tree_gives_the_parsed_config(raw):
    assert BucketConfig.from_tree(tree(raw)) == BucketConfig.from_dict(raw)
    assert BucketConfig.from_tree(tree(raw), 8) == BucketConfig.from_dict(raw, 8)


def test_batch_sizes_scale_and_stay_at_least_one():
    scaled = BucketConfig.from_tree(tree(RAW), batch_size_scale=0.1)
    expected = {(res, t): max(1, int(entry[1] * 0.1)) for res, entries in RAW.items()
                for t, entry in entries.items()}  # fmt: skip
    assert {(res.name, t): size for res in scaled.resolutions
            for t, size in zip(res.frames, res.batch_sizes, strict=True)} == expected  # fmt: skip
    assert BucketConfig.from_tree(tree(RAW), batch_size_scale=1.0) == BucketConfig.from_dict(RAW)


def test_what_the_schema_leaves_open_is_still_refused():
    with pytest.raises(ValueError, match="no resolutions"):
        BucketConfig.from_tree({})
    with pytest.raises(ValueError, match="bucket_config.256px: expected a non-empty"):
        BucketConfig.from_tree({"256px": {}})
    with pytest.raises(ValueError, match="bucket_config.256px_ar5:1"):
        BucketConfig.from_tree(tree({"256px_ar5:1": {1: [1.0, 2]}}))
