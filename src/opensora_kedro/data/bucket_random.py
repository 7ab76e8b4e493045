"""Counter-based uniforms for bucket assignment: one random number per (row, decision).

**Random numbers.** Open-Sora draws ``u`` from ``np.random.default_rng(row_seed)`` per row,
with ``row_seed = seed + epoch + row_id * num_bucket``. A Generator per row cannot be
vectorised, so each decision here gets a counter-based uniform instead: a SplitMix64 hash of
``(row_seed, draw)``, where ``draw = 2 * flat_key + kind`` names the decision (``flat_key``
counts (resolution, frame key) pairs in config order, like Open-Sora's ``bucket_id``
counter; ``kind`` is 0 for "keep at this resolution", 1 for "skip to a shorter t"). It gives
the same semantics and the same determinism (a function of seed, epoch and row only, new
draws every epoch) but not Open-Sora's exact random stream.
"""

from __future__ import annotations

import numpy as np

_MASK64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15  # SplitMix64's increment (odd, golden ratio)
_MUL1, _MUL2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_TO_UNIT = 2.0**-53


def row_seed(seed: int, epoch: int, row_id: int, num_bucket: int) -> int:
    """Open-Sora's per-row seed ``seed + epoch + row_id * num_bucket``, modulo 2**64."""
    return (seed + epoch + row_id * num_bucket) & _MASK64


def _mix64(z: int) -> int:
    """SplitMix64's finaliser on Python ints (the scalar twin of :func:`_mix64_array`)."""
    z = ((z ^ (z >> 30)) * _MUL1) & _MASK64
    z = ((z ^ (z >> 27)) * _MUL2) & _MASK64
    return z ^ (z >> 31)


def _mix64_array(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on a uint64 array (numpy wraps multiplication modulo 2**64)."""
    z = z ^ (z >> np.uint64(30))
    z *= np.uint64(_MUL1)
    z ^= z >> np.uint64(27)
    z *= np.uint64(_MUL2)
    z ^= z >> np.uint64(31)
    return z


def uniform(seed_of_row: int, draw: int) -> float:
    """The uniform in [0, 1) for decision ``draw`` of a row with seed ``seed_of_row``.

    ``mix(mix(row_seed) + (draw + 1) * GAMMA) >> 11``, scaled by 2**-53: the ``draw``-th
    output of a SplitMix64 stream started at ``mix(row_seed)``. Hashing the row seed first
    decorrelates rows whose seeds differ by ``num_bucket``.
    """
    key = _mix64(seed_of_row & _MASK64)
    return (_mix64((key + (draw + 1) * _GAMMA) & _MASK64) >> 11) * _TO_UNIT


def row_keys(row_seeds: np.ndarray) -> np.ndarray:
    """``mix(row_seed)`` per row: hashed once, reused by every draw of the row."""
    return _mix64_array(np.asarray(row_seeds, dtype=np.uint64))  # the first xor copies


def uniform_from_keys(keys: np.ndarray, draw: int | np.ndarray) -> np.ndarray:
    if isinstance(draw, np.ndarray):
        offset = (draw.astype(np.uint64) + np.uint64(1)) * np.uint64(_GAMMA)
    else:
        offset = np.uint64(((draw + 1) * _GAMMA) & _MASK64)
    bits = _mix64_array(keys + offset) >> np.uint64(11)
    return bits.astype(np.float64) * _TO_UNIT


def uniform_array(row_seeds: np.ndarray, draw: int | np.ndarray) -> np.ndarray:
    """Vectorised :func:`uniform` over uint64 row seeds (bit-identical to the scalar form)."""
    return uniform_from_keys(row_keys(row_seeds), draw)


def row_seeds(row_ids: np.ndarray, seed: int, epoch: int, num_bucket: int) -> np.ndarray:
    """Vectorised :func:`row_seed` (uint64, wrapping like the scalar form)."""
    base = np.uint64((seed + epoch) & _MASK64)
    ids = np.asarray(row_ids).astype(np.int64).astype(np.uint64)
    return ids * np.uint64(num_bucket & _MASK64) + base
