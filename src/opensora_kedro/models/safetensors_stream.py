"""Safetensors files read and written one tensor at a time, with plain file reads.

``safetensors.torch.load_file`` materialises a whole state dict, and ``safe_open`` reads
through a memory map whose touched pages count towards the process's resident memory until
the file is closed, so loading an 11B model (24 GB in bf16) that way needs it about twice in
host memory. :class:`SafetensorsReader` reads each tensor (or a range of its rows) with
``readinto`` straight into the tensor that keeps it, and :func:`write_safetensors` writes a
file from tensors produced one at a time, so neither holds more than the tensors it returns.

The format: an 8-byte little-endian header length, a JSON header mapping each name to its
``dtype``, ``shape`` and ``data_offsets`` (relative to the end of the header), then the data.
"""

from __future__ import annotations

import json
import math
import os
import struct
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch
from torch import Tensor

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}  # fmt: skip
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}
MAX_HEADER_BYTES = 100_000_000


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lies in a safetensors file (``start``/``end``: absolute offsets)."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def row_bytes(self) -> int:
        """Bytes of one slice along dimension 0."""
        return (self.end - self.start) // self.shape[0] if self.shape and self.shape[0] else 0


class SafetensorsReader:
    """The header of a safetensors file, and its tensors read on demand.

    Use as a context manager (or call :meth:`close`).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._file: BinaryIO = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        try:
            self.tensors, self.metadata = _read_header(self._file, self.path)
        except BaseException:
            self._file.close()
            raise

    def __enter__(self) -> SafetensorsReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def keys(self) -> list[str]:
        """Tensor names, in file order."""
        return list(self.tensors)

    def read(
        self, key: str, rows: tuple[int, int] | None = None, out: Tensor | None = None
    ) -> Tensor:
        """Tensor ``key`` (or its rows ``[start, end)`` along dimension 0), read into ``out``
        when given (a contiguous CPU tensor of the file's dtype and the result's shape)."""
        info = self.tensors[key]
        start, end, shape = info.start, info.end, info.shape
        if rows is not None:
            first, last = rows
            if not 0 <= first <= last <= (shape[0] if shape else 0):
                raise ValueError(f"{self.path}: rows {rows} outside {key} of shape {shape}")
            start, end = start + first * info.row_bytes, start + last * info.row_bytes
            shape = (last - first, *shape[1:])
        if out is None:
            out = torch.empty(shape, dtype=info.dtype)
        elif tuple(out.shape) != shape or out.dtype != info.dtype or not out.is_contiguous():
            raise ValueError(f"{key}: cannot read {info.dtype}{list(shape)} into {out.dtype}"
                             f"{list(out.shape)}")  # fmt: skip
        if end > start:
            self._file.seek(start)
            view = memoryview(out.reshape(-1).view(torch.uint8).numpy())
            if self._file.readinto(view) != end - start:
                raise ValueError(f"{self.path} is truncated inside tensor {key}")
        return out


def _read_header(stream: BinaryIO, path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    prefix = stream.read(8)
    if len(prefix) != 8:
        raise ValueError(f"{path} is not a safetensors file (too short)")
    (length,) = struct.unpack("<Q", prefix)
    if length > MAX_HEADER_BYTES:
        raise ValueError(f"{path} is not a safetensors file (header of {length} bytes)")
    try:
        header = json.loads(stream.read(length))
    except ValueError as error:
        raise ValueError(f"{path} is not a safetensors file: {error}") from None
    metadata = header.pop("__metadata__", None) or {}
    base = 8 + length
    size = os.fstat(stream.fileno()).st_size
    tensors = {}
    for key, entry in header.items():
        if entry["dtype"] not in DTYPES:
            raise ValueError(f"{path}: tensor {key} has unsupported dtype {entry['dtype']}")
        begin, end = entry["data_offsets"]
        info = TensorInfo(DTYPES[entry["dtype"]], tuple(entry["shape"]), base + begin, base + end)
        expected = math.prod(info.shape) * DTYPES[entry["dtype"]].itemsize
        if end - begin != expected or info.end > size:
            raise ValueError(f"{path}: tensor {key} has inconsistent offsets")
        tensors[key] = info
    return tensors, metadata


def write_safetensors(
    path: str | os.PathLike,
    layout: Iterable[tuple[str, torch.dtype, tuple[int, ...]]],
    produce: Callable[[str], Tensor],
    metadata: dict[str, str] | None = None,
) -> None:
    """Write a safetensors file whose tensors are given by ``produce(name)`` one at a time,
    in the order of ``layout`` (``(name, dtype, shape)`` of each); atomically (temporary
    sibling, then rename).

    Raises:
        ValueError: a produced tensor does not have its declared dtype and shape.
    """
    path = Path(path)
    entries, header, offset = list(layout), {}, 0
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape in entries:
        nbytes = math.prod(shape) * dtype.itemsize
        header[name] = {"dtype": DTYPE_NAMES[dtype], "shape": list(shape),
                        "data_offsets": [offset, offset + nbytes]}  # fmt: skip
        offset += nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    temp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    try:
        with open(temp, "wb") as stream:
            stream.write(struct.pack("<Q", len(encoded)) + encoded)
            for name, dtype, shape in entries:
                tensor = produce(name)
                if tensor.dtype != dtype or tuple(tensor.shape) != tuple(shape):
                    raise ValueError(f"{name}: produced {tensor.dtype}{list(tensor.shape)}, "
                                     f"declared {dtype}{list(shape)}")  # fmt: skip
                flat = tensor.detach().cpu().contiguous().reshape(-1)
                if flat.numel():
                    stream.write(memoryview(flat.view(torch.uint8).numpy()))
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
