"""Third-party warnings a user cannot act on are dropped where they arise, each with the reason
(:data:`KNOWN_WARNINGS`); both as ``warnings`` filters and on the ``py.warnings`` logger,
since some libraries (MLflow) reset the filters around their own imports.
"""

from __future__ import annotations

import logging
import re
import warnings

# (message pattern, why it is not worth a user's attention)
KNOWN_WARNINGS = (
    (r"register_new_resolver", "Kedro 1.7 calls OmegaConf's deprecated resolver API"),
    (r"Add type hints to the `predict` method",
     "kedro-mlflow's pipeline model has no type hints; MLflow 3 flags it on import"),
    (r"One or more dataset names contain '\.' characters",
     "Kedro flags dotted names outside a node's namespace; ours (`<stage>.model` read by the "
     "next stage and by evaluation) are Kedro's own namespaces"),
    (r"Please install apex from source",
     "ColossalAI's fused RMSNorm kernel; its PyTorch fallback is what runs"),
    (r"Please install the latest tensornvme", "ColossalAI's async save, which is not used"),
    (r"`broadcast_buffers` is deprecated", "ColossalAI's hybrid plugin passes the old DDP name"),
    (r"`torch\.jit\.script(_method)?` is deprecated", "ColossalAI's kernels use TorchScript"),
    (r"Option '--pipeline' is deprecated",
     "Kedro 1.7 still runs `--pipeline=X`, the form this project documents (as Open-Sora's "
     "users know it); `--pipelines=X` is the new spelling"),
)  # fmt: skip


class KnownWarningsFilter(logging.Filter):
    """Drops records of :data:`KNOWN_WARNINGS` (on the ``py.warnings`` logger)."""

    pattern = re.compile("|".join(f"(?:{p})" for p, _ in KNOWN_WARNINGS))

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a known third-party warning."""
        return self.pattern.search(record.getMessage()) is None


def quiet_known_warnings() -> None:
    """Ignore :data:`KNOWN_WARNINGS` and route the other warnings through logging."""
    for pattern, _ in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=f".*{pattern}")
    logging.captureWarnings(True)
    captured = logging.getLogger("py.warnings")
    if not any(isinstance(f, KnownWarningsFilter) for f in captured.filters):
        captured.addFilter(KnownWarningsFilter())
