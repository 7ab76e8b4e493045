"""Mapping a function over many files on a thread pool, in order, with a progress bar."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from opensora_kedro.progress import progress

Item = TypeVar("Item")
Result = TypeVar("Result")


def map_with_progress(
    function: Callable[[Item], Result], items: Sequence[Item], workers: int, desc: str
) -> list[Result]:
    """``[function(item) for item in items]`` on ``workers`` threads.

    Threads suffice for media work: PyAV releases the GIL while demuxing and decoding,
    and so does numpy on whole frames (measured 1.7x on 2 cores for probing 720p clips),
    and unlike processes they cost nothing to start.
    """
    settings = dict(total=len(items), desc=desc, unit="file", mininterval=1.0)
    with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
        return list(progress(pool.map(function, items), **settings))
