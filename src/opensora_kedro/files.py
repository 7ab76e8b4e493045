"""Files on disk: atomic writes, and where a relative path or a model's weights are."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: str | os.PathLike, content: bytes) -> None:
    """Write ``content`` to ``path`` through a temporary sibling, then rename it into place.

    The temporary name is unique per call, so concurrent writers (ranks) never share one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    try:
        with open(temp, "wb") as stream:
            stream.write(content)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def build_folder(folder: str | os.PathLike, fill: Callable[[Path], None], what: str) -> Path:
    """Let ``fill`` write ``folder``, which must not exist, through a temporary sibling renamed
    into place: an interrupted build never leaves a half-written ``what`` where it is loaded.

    Raises:
        FileExistsError: ``folder`` exists (a built model is never overwritten).
    """
    folder = Path(folder)
    if folder.exists():
        raise FileExistsError(f"{folder} exists; a {what} is only built where none is")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; a model folder is not
        fill(staging)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


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
