"""The Ray side of :mod:`opensora_kedro.data.engine`: a stage as a Ray Data ``map_batches``.

Rows and results cross to the workers as JSON strings (one column each), so Arrow never has to
type a stage's columns (NaN, None, lists of shots) and both engines see the same Python values.
Stages without a model run as Ray tasks (one CPU each); stages with a model as an actor pool
(the model is loaded once per actor, with ``gpus_per_model_worker`` GPUs each). A worker lost
mid-run is replaced and its unfinished blocks run again (Ray's defaults: a task lost with its
worker is retried 3 times; Ray Data restarts actors without limit); results are keyed by row
index, so a block run twice cannot give a clip twice.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pandas as pd
import ray
import ray.data

from opensora_kedro.data.engine import ClipStage, EngineSettings, Row, guarded, plain

if TYPE_CHECKING:  # the schemas import torch, which this module does without
    from opensora_kedro.data.params import RayParams

logger = logging.getLogger(__name__)

BLOCKS_PER_WORKER = 2  # blocks per worker: load balance against the ~0.3 s each block costs
MAX_BLOCK_ROWS = 1000


def connect(cluster: RayParams) -> None:
    """Join the configured Ray cluster, or start an instance on this machine (once)."""
    if ray.is_initialized():
        return
    options: dict[str, Any] = dict(
        include_dashboard=False,
        logging_level=logging.WARNING,
        runtime_env=dict(cluster.runtime_env) or None,
    )
    if cluster.address:
        ray.init(address=cluster.address, **options)
    else:
        ray.init(num_cpus=cluster.workers or os.cpu_count() or 1, **options)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the engine shows its own, in clips
    context.print_on_execution_start = False
    # Ray Data configures its logger when imported; its "execution finished" line per stage
    # run repeats what the engine's progress line says.
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logger.info("Ray: %s", ray.cluster_resources())


def _apply(batch: pd.DataFrame, stage: ClipStage) -> pd.DataFrame:
    rows = [json.loads(row) for row in batch["row"]]
    results = guarded(stage, rows)
    return pd.DataFrame(
        {"index": batch["index"].to_numpy(), "result": [json.dumps(r) for r in results]}
    )


class _StageActor:
    """Holds one stage (and so its loaded model) for the actor's lifetime."""

    def __init__(self, stage: ClipStage) -> None:
        self.stage = stage

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        return _apply(batch, self.stage)


def _workers(cluster: RayParams, uses_model: bool) -> int:
    if cluster.workers:
        return cluster.workers
    resources = ray.cluster_resources()
    if uses_model and cluster.gpus_per_model_worker > 0:
        return max(1, int(resources.get("GPU", 0) / cluster.gpus_per_model_worker))
    return max(1, int(resources.get("CPU", 1)))


def map_batches(
    stage: ClipStage, rows: list[Row], indices: list[int], engine: EngineSettings
) -> Iterator[tuple[list[int], list[Row]]]:
    """``stage`` over ``rows`` on Ray: ``(row indices, results)`` per finished batch."""
    if not rows:
        return
    cluster = engine.ray  # run_stage hands over only engines that have one
    connect(cluster)
    uses_model = bool(stage.uses_model)
    workers = _workers(cluster, uses_model)
    batch_size = getattr(stage, "batch_size", 1)
    block_rows = min(MAX_BLOCK_ROWS, math.ceil(len(rows) / (workers * BLOCKS_PER_WORKER)))
    items = [
        {"index": i, "row": json.dumps(row, default=plain)}
        for i, row in zip(indices, rows, strict=True)
    ]
    dataset = ray.data.from_items(
        items, override_num_blocks=math.ceil(len(rows) / max(block_rows, batch_size))
    )
    if uses_model:
        mapped = dataset.map_batches(
            _StageActor,
            fn_constructor_kwargs={"stage": stage},
            batch_size=batch_size,
            batch_format="pandas",
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=workers),
            num_cpus=1,  # Ray then sets OMP_NUM_THREADS=1: torch and decoders stay on it
            num_gpus=cluster.gpus_per_model_worker or None,
        )
    else:
        mapped = dataset.map_batches(
            _apply,
            fn_kwargs={"stage": stage},
            batch_size=batch_size,
            batch_format="pandas",
            compute=ray.data.TaskPoolStrategy(size=workers),
            num_cpus=1,
        )
    for batch in mapped.iter_batches(batch_size=None, batch_format="pandas"):
        yield batch["index"].tolist(), [json.loads(result) for result in batch["result"]]
