"""Near-duplicate detection: the perceptual hash, and the band index against brute force."""

import numpy as np
import pandas as pd

from opensora_kedro.data.dedup import dhash, find_duplicates, hash_columns, near_pairs
from tests.conftest import gradient_frames


def _flip(code: np.uint64, bits: int, rng: np.random.Generator) -> np.uint64:
    mask = 0
    for bit in rng.choice(64, size=bits, replace=False):
        mask |= 1 << int(bit)
    return code ^ np.uint64(mask)


def test_dhash_sees_the_same_picture_at_another_size_and_not_another_picture():
    frame = gradient_frames(1, 96, 128)[0]
    rng = np.random.default_rng(0)
    other = rng.integers(0, 255, frame.shape, dtype=np.uint8)
    distance = lambda a, b: int(np.bitwise_count(np.uint64(a) ^ np.uint64(b)))  # noqa: E731
    assert distance(dhash(frame), dhash(frame[::2, ::2].copy())) <= 3
    assert distance(dhash(frame), dhash(other)) > 16


def test_the_band_index_finds_every_pair_brute_force_finds():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 2**63, size=(400, 2), dtype=np.int64).view(np.uint64)
    for source, target in zip(range(0, 60, 2), range(1, 60, 2), strict=True):  # planted pairs
        codes[target] = [_flip(code, int(rng.integers(0, 4)), rng) for code in codes[source]]
    t = 3
    found, compared = near_pairs(codes, t)
    within = (np.bitwise_count(codes[:, None, :] ^ codes[None, :, :]) <= t).all(axis=2)
    brute = {(i, j) for i, j in zip(*np.nonzero(within), strict=True) if i < j}
    assert {tuple(pair) for pair in found.tolist()} == brute and len(brute) >= 30
    assert compared < 400 * 399 // 2  # not every pair


def test_duplicates_keep_the_first_path_of_each_group():
    rng = np.random.default_rng(2)
    base = rng.integers(0, 2**63, size=2, dtype=np.int64).view(np.uint64)
    near = np.array([_flip(code, 2, rng) for code in base], dtype=np.uint64)
    far = rng.integers(0, 2**63, size=2, dtype=np.int64).view(np.uint64)
    rows = {"c.mp4": near, "a.mp4": base, "b.mp4": far}
    hashes = pd.DataFrame(
        [{"path": path, **dict(zip(hash_columns(2), codes.view(np.int64), strict=True))}
         for path, codes in rows.items()]
    )  # fmt: skip
    duplicates = find_duplicates(hashes, max_distance=3)
    assert list(duplicates["path"]) == ["c.mp4"]
    assert duplicates.iloc[0]["detail"].startswith("duplicate of a.mp4")
    assert find_duplicates(hashes, max_distance=1).empty
