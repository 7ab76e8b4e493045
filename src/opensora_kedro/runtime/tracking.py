"""Step metrics from a job into the `kedro run`'s MLflow run (rank 0 only), and kept in memory."""

from __future__ import annotations

import logging
import time
from typing import Any

logger = logging.getLogger(__name__)


class MetricsLogger:
    """Logs ``{name: value}`` at a step to the MLflow run ``run_id`` (when given) and keeps
    the history. The run is addressed by id, so a launched worker logs into the run the
    Kedro process opened."""

    def __init__(self, tracking_uri: str | None, run_id: str | None, prefix: str, enabled: bool):
        self.history: list[dict[str, Any]] = []
        self.prefix = prefix
        self.enabled = enabled
        self._client = None
        self._run_id = run_id
        if enabled and run_id:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=tracking_uri)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Record ``metrics`` at optimizer update ``step``."""
        if not self.enabled:
            return
        self.history.append({"step": step, **metrics})
        if self._client is None:
            return
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        batch = [Metric(f"{self.prefix}{k}", float(v), timestamp, step) for k, v in metrics.items()]
        self._client.log_batch(self._run_id, metrics=batch)

    def log_files(self, folder: str, artifact_path: str) -> None:
        """Log the files of ``folder`` as artifacts under ``artifact_path`` of the run."""
        if self.enabled and self._client is not None:
            self._client.log_artifacts(self._run_id, folder, artifact_path)
