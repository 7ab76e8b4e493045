"""Writing a file so that readers see the old content or the new, never a part."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def write_atomic(path: str | os.PathLike, content: bytes) -> None:
    """Write ``content`` to ``path`` through a temporary sibling, then rename it into place.

    The temporary name is unique per call, so concurrent writers (ranks) never share one.
    """
    path = Path(path)
    temp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    try:
        with open(temp, "wb") as stream:
            stream.write(content)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
