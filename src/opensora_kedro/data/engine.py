"""Running a per-clip stage over many clips: on local threads, or on Ray Data across machines.

A stage is a picklable callable ``stage(rows: list[dict]) -> list[dict]``: one result per row,
in order, each holding the row's ``path`` and either its result columns or ``reason`` and
``detail`` (the stage records a bad clip; it does not raise). Its ``uses_model`` attribute says
whether it loads a model (built once per worker: a Ray actor, or one local thread) and its
``batch_size`` how many clips one call takes (models batch their forward passes).

Both engines return the same results in the same (input) order. Each finished batch is appended
to a journal file, so a run that stops half-way (a crash, a lost driver) resumes with the clips
it had finished; the journal is removed once the stage has returned all its results.
"""

from __future__ import annotations

import json
import logging
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from opensora_kedro.progress import progress

if TYPE_CHECKING:  # the schemas import torch: the engine (and Ray's workers) need not
    from opensora_kedro.data.params import RayParams

logger = logging.getLogger(__name__)

Row = dict[str, Any]


class ClipStage(Protocol):
    """What the engine runs (see the module docstring)."""

    uses_model: bool

    def __call__(self, rows: list[Row]) -> list[Row]: ...


@dataclass(frozen=True)
class EngineSettings:
    """Where the per-clip stages run: local threads, or the Ray cluster ``ray`` describes.

    ``workers``: local threads (None: one per CPU core). ``ray``: the cluster (its address,
    tasks or actors in flight, GPUs per model actor and runtime_env); None runs locally.
    """

    workers: int | None = None
    ray: RayParams | None = None

    @property
    def kind(self) -> Literal["local", "ray"]:
        """``"local"`` or ``"ray"``."""
        return "local" if self.ray is None else "ray"


LOCAL_ENGINE = EngineSettings()


@dataclass(frozen=True)
class PerClip:
    """A stage made of a function of one row (a top-level function or a ``partial`` of one,
    so it pickles)."""

    function: Callable[[Row], Row]
    uses_model: bool = False
    batch_size: int = 1

    def __call__(self, rows: list[Row]) -> list[Row]:
        return [self.function(row) for row in rows]


def guarded(stage: ClipStage, rows: list[Row]) -> list[Row]:
    """``stage(rows)``, with anything it raises for a batch recorded per row instead: the
    batch is retried clip by clip and a clip that still raises gets ``stage_failed``."""
    try:
        results = stage(rows)
        if len(results) != len(rows):
            raise RuntimeError(f"stage returned {len(results)} results for {len(rows)} rows")
        return results
    except Exception:  # noqa: BLE001 - one bad clip must not abort the stage
        if len(rows) > 1:
            return [result for row in rows for result in guarded(stage, [row])]
    try:
        return stage(rows)
    except Exception as error:  # noqa: BLE001
        detail = f"{type(error).__name__}: {error}"
        return [{"path": rows[0].get("path"), "reason": "stage_failed", "detail": detail}]


class Journal:
    """Results of finished batches, appended as they arrive (one JSON line per clip, keyed by
    the row's ``key`` and the stage's ``fingerprint``), for a run that must resume."""

    def __init__(self, path: str | os.PathLike, fingerprint: str) -> None:
        self.path, self.fingerprint = Path(path), fingerprint

    def load(self) -> dict[str, Row]:
        """Finished results of this stage configuration, by key (a torn last line is skipped)."""
        found: dict[str, Row] = {}
        if not self.path.exists():
            return found
        for line in self.path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # the line being written when the run stopped
            if entry.get("fingerprint") == self.fingerprint:
                found[entry["key"]] = entry["result"]
        return found

    def append(self, keys: Sequence[str], results: Sequence[Row]) -> None:
        """Add results and make them durable before going on."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(
            json.dumps(
                {"fingerprint": self.fingerprint, "key": key, "result": result}, default=plain
            )
            + "\n"
            for key, result in zip(keys, results, strict=True)
        )
        with open(self.path, "a") as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())

    def remove(self) -> None:
        """The stage returned everything: its table holds the results now."""
        self.path.unlink(missing_ok=True)


def run_stage(
    stage: ClipStage,
    rows: Sequence[Row],
    engine: EngineSettings,
    desc: str,
    journal: Journal | None = None,
    key: Callable[[Row], str] | None = None,
) -> list[Row]:
    """``stage`` over ``rows`` on ``engine``: one result per row, in the order of ``rows``.

    With a ``journal``, results already in it (same key, same stage fingerprint) are reused
    and new ones are added batch by batch; it is removed when all results are in. A row's
    ``key`` is :func:`file_key` unless given.
    """
    keys = [(key or file_key)(row) for row in rows]
    done = journal.load() if journal else {}
    todo = [index for index, k in enumerate(keys) if k not in done]
    if done:
        logger.info("%s: %d clip(s) resumed from %s", desc, len(rows) - len(todo), journal.path)
    results: dict[int, Row] = {i: done[k] for i, k in enumerate(keys) if k in done}
    batches = _run_batches if engine.kind == "local" else _run_batches_on_ray
    bar = progress(total=len(todo), desc=desc, unit="clip", mininterval=1.0)
    with bar:
        for indices, batch_results in batches(stage, [rows[i] for i in todo], todo, engine):
            if journal:
                journal.append([keys[i] for i in indices], batch_results)
            results.update(zip(indices, batch_results, strict=True))
            bar.update(len(indices))
    if journal:
        journal.remove()
    return [results[i] for i in range(len(rows))]


def file_key(row: Row) -> str:
    """What identifies a clip: path, size and modification time (a changed file is new), and
    its caption where the row has one (a score of the caption changes with it)."""
    names = ("path", "file_size", "file_mtime_ns", "caption_hash")
    return "|".join(str(row.get(name, "")) for name in names)


def plain(value: Any) -> Any:
    """numpy scalars (pandas rows hold them) as the Python values JSON writes."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} cannot be written as JSON")


def _run_batches(
    stage: ClipStage, rows: list[Row], indices: list[int], engine: EngineSettings
) -> Iterator[tuple[list[int], list[Row]]]:
    """Local threads (media work releases the GIL: PyAV decodes and numpy on whole frames);
    a model stage keeps one thread, as its model uses every core itself. At most two batches
    per thread are in flight, so memory stays flat however many clips there are."""
    size = getattr(stage, "batch_size", 1)
    workers = 1 if stage.uses_model else engine.workers or os.cpu_count() or 1
    pending: deque = deque()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(rows), size):
            batch = rows[start : start + size]
            pending.append((indices[start : start + size], pool.submit(guarded, stage, batch)))
            if len(pending) >= 2 * workers:
                batch_indices, future = pending.popleft()
                yield batch_indices, future.result()
        while pending:
            batch_indices, future = pending.popleft()
            yield batch_indices, future.result()


def _run_batches_on_ray(
    stage: ClipStage, rows: list[Row], indices: list[int], engine: EngineSettings
) -> Iterator[tuple[list[int], list[Row]]]:
    """Ray Data ``map_batches`` over the rows, streamed back batch by batch."""
    from opensora_kedro.data import ray_engine  # Ray is imported only when it is used

    yield from ray_engine.map_batches(stage, rows, indices, engine)
