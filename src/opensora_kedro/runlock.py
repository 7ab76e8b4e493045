"""One ``kedro run`` per project at a time: an OS lock on a file that names its holder.

Two runs in one project share the data folders, the embedding and latent caches, the
checkpoints and ``mlflow.db``; rather than prove every writer safe against a concurrent
one, a second run stops at once, naming the run that holds the project. The lock is an
``flock`` on ``<project>/.kedro-run.lock``: the kernel releases it when the holder exits
in any way (``kill -9`` included), so a crashed run never leaves a stale lock behind; the
file's content (pid, host, start time, command) is only there to tell the user who holds it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from opensora_kedro.config.errors import UserConfigError

LOCK_FILE = ".kedro-run.lock"


class ProjectBusyError(UserConfigError):
    """Another run holds the project's lock."""

    def __init__(self, path: Path, holder: dict[str, Any]) -> None:
        self.holder = holder
        who = ", ".join(f"{key} {value}" for key, value in holder.items()) or "unknown holder"
        super().__init__(
            "another kedro run is using this project",
            [
                f"{path} is held by: {who}",
                "wait for that run to finish or stop it (kill <pid>); runs of one project "
                "share its data, caches, checkpoints and mlflow.db, so they never overlap",
            ],
        )


class RunLock:
    """The project's run lock; ``acquire`` fails at once when another process holds it."""

    def __init__(self, project_path: str | os.PathLike) -> None:
        self.path = Path(project_path) / LOCK_FILE
        self._stream = None

    def holder(self) -> dict[str, Any]:
        """What the holder wrote about itself (empty when unreadable)."""
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def acquire(self, command: str = "") -> None:
        """Take the lock for this process, or raise :class:`ProjectBusyError` at once."""
        if self._stream is not None:
            return
        stream = open(self.path, "a+")  # noqa: SIM115 - held open for the whole run
        try:
            fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            stream.close()
            raise ProjectBusyError(self.path, self.holder()) from None
        stream.seek(0)
        stream.truncate()
        stream.write(json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": command,
        }))  # fmt: skip
        stream.flush()
        self._stream = stream

    def release(self) -> None:
        """Let the next run in (the file stays; only the OS lock matters)."""
        if self._stream is None:
            return
        self._stream.seek(0)
        self._stream.truncate()
        fcntl.flock(self._stream.fileno(), fcntl.LOCK_UN)
        self._stream.close()
        self._stream = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._stream is not None
