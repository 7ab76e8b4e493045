"""Progress of long work: a tqdm bar on a terminal; off one (a log file, a pipe, a launched
worker's relayed output) a log line at most every ``PROGRESS_INTERVAL_S`` seconds, since a
redrawn bar there becomes one endless line."""

from __future__ import annotations

import io
import logging
import sys
import time
from typing import Any

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 30.0
LINE_FORMAT = (
    "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%) [{elapsed}<{remaining}, {rate_fmt}]{postfix}"
)


class LoggedProgress(tqdm):
    """tqdm's counting and timing, shown as a log line now and then instead of a redrawn bar:
    at most every ``interval`` seconds, and once at the end."""

    def __init__(self, *args: Any, interval: float = PROGRESS_INTERVAL_S, **kwargs: Any) -> None:
        kwargs.setdefault("bar_format", LINE_FORMAT)
        kwargs["file"] = io.StringIO()  # tqdm's own drawing goes nowhere
        self._interval, self._logged_n, self._logged_at = interval, 0, time.monotonic()
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        """Log the state when ``interval`` has passed since the last line, or when done."""
        done = self.total is not None and self.n >= self.total
        if done or time.monotonic() - self._logged_at >= self._interval:
            self._log()
        return True

    def close(self) -> None:
        """The last state, then tqdm's own closing."""
        if not self.disable:
            self._log()
        super().close()

    def _log(self) -> None:
        if self.n == self._logged_n:
            return
        self._logged_n, self._logged_at = self.n, time.monotonic()
        logger.info("%s", self.format_meter(**self.format_dict))


def progress(*args: Any, **kwargs: Any) -> tqdm:
    """A progress bar for ``tqdm(*args, **kwargs)``: drawn on a terminal, logged elsewhere."""
    if kwargs.get("disable") or sys.stderr.isatty():
        return tqdm(*args, **kwargs)
    return LoggedProgress(*args, **kwargs)
