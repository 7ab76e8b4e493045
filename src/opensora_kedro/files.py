"""Files on disk: atomic writes, and where a relative path or a model's weights are."""

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


def resolve_path(path: str | os.PathLike, base_dir: str | os.PathLike | None) -> Path:
    """``path`` itself when absolute or without ``base_dir``, else ``base_dir / path``."""
    path = Path(path)
    return path if path.is_absolute() or base_dir is None else Path(base_dir) / path


def weights_file(source: Path, what: str, name: str = "model.safetensors") -> Path:
    """The weights of ``source``: the file itself, or ``name`` inside a folder.

    Raises:
        FileNotFoundError: naming ``what`` and the path.
    """
    file = source / name if source.is_dir() else source
    if not file.is_file():
        raise FileNotFoundError(f"no {what} weights at {file}; train or export it first")
    return file
