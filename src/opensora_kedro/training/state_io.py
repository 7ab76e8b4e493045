"""Pickle-free serialisation of nested training state (brief §7.4, DESIGN "Data contracts").

A *state* is a tree of dicts, lists and tuples whose leaves are tensors, numpy arrays or
scalars, ``int``, ``float``, ``bool``, ``str`` or ``None``: a model or optimizer
``state_dict()``, an LR scheduler's state, the sampler's dict of ints. :func:`save_state`
writes the tensors to ``<name>.safetensors`` under flattened path keys (``state.0.exp_avg``;
a flat model ``state_dict`` keeps its own keys, so other tools can open the file) and the tree
to ``<name>.json``, where each tensor is a reference to its key. Dict keys keep their types
(the optimizer's ``state`` has int keys), tuples stay tuples, non-finite floats survive.

Loading reads only JSON and safetensors, so a checkpoint can never run code: no ``pickle``,
no ``torch.load``.

Tensors are stored detached, on CPU and contiguous. Two occurrences of the very same view
(tied weights) are stored once and come back as one tensor object; other views that share
storage are stored as independent copies. ``requires_grad``, the device and the
``_metadata`` attribute of a module ``state_dict`` are not kept.
"""

from __future__ import annotations

import json
import logging
import math
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

logger = logging.getLogger(__name__)

FORMAT = "opensora_kedro.state_io"
VERSION = 1

# Exact types only: subclasses (IntEnum, namedtuple, torch.Size) would come back as their
# base type, which is not the exact round trip this module promises.
_JSON_SCALARS = (bool, int, str)
_NON_FINITE = {"nan", "inf", "-inf"}


class StateFormatError(ValueError):
    """A state file does not describe a valid state (corrupt, foreign or newer format)."""


def flatten_state(state: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """Split ``state`` into a flat ``{key: tensor}`` dict and a JSON-safe description.

    Raises ``TypeError`` naming the path of any value that cannot be stored.
    """
    flattener = _Flattener()
    tree = flattener.encode(state, ())
    return flattener.tensors, tree


def unflatten_state(tensors: dict[str, torch.Tensor], tree: Any) -> Any:
    """Rebuild the state that :func:`flatten_state` split into ``tensors`` and ``tree``.

    Every tensor must be referenced and every reference must resolve, so a description
    paired with the wrong tensor file is rejected rather than half-loaded.
    """
    used: set[str] = set()
    try:
        state = _decode(tree, tensors, used)
    except (TypeError, KeyError, AttributeError) as error:  # a tampered or foreign file
        raise StateFormatError(f"invalid state description: {error!r}") from error
    unused = set(tensors) - used
    if unused:
        raise StateFormatError(f"tensors not referenced by the description: {sorted(unused)[:5]}")
    return state


def save_state(state: Any, directory: Path, name: str) -> list[Path]:
    """Write ``state`` as ``<name>.json`` (+ ``<name>.safetensors`` if it holds tensors).

    Returns the paths written. The files are closed but not fsynced; durability is the
    caller's concern (see :mod:`opensora_kedro.training.checkpoint`).
    """
    directory = Path(directory)
    tensors, tree = flatten_state(state)
    written = []
    tensor_file = None
    if tensors:
        tensor_file = f"{name}.safetensors"
        # "format": "pt" is what Hugging Face loaders expect to find in the header.
        save_file(tensors, directory / tensor_file, metadata={"format": "pt"})
        written.append(directory / tensor_file)
    document = {"format": FORMAT, "version": VERSION, "tensors": tensor_file, "tree": tree}
    json_path = directory / f"{name}.json"
    json_path.write_text(json.dumps(document, allow_nan=False, indent=1), encoding="utf-8")
    written.append(json_path)
    logger.debug("Wrote state %r to %s (%d tensors)", name, directory, len(tensors))
    return written


def load_state(directory: Path, name: str, device: str | torch.device = "cpu") -> Any:
    """Read the state :func:`save_state` wrote as ``name`` in ``directory``.

    Tensors are placed on ``device``. Raises :class:`StateFormatError` for files that do not
    describe a valid state.
    """
    directory = Path(directory)
    try:
        document = json.loads((directory / f"{name}.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise StateFormatError(f"{name}.json is not valid JSON: {error}") from error
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise StateFormatError(f"{name}.json is not a {FORMAT} file")
    if document.get("version") != VERSION:
        raise StateFormatError(f"{name}.json has unsupported version {document.get('version')}")
    tensor_file = document.get("tensors")
    tensors: dict[str, torch.Tensor] = {}
    if tensor_file is not None:
        # The description names its tensor file; refuse anything that escapes the directory.
        if not isinstance(tensor_file, str) or Path(tensor_file).name != tensor_file:
            raise StateFormatError(f"{name}.json names an invalid tensor file {tensor_file!r}")
        tensors = load_file(directory / tensor_file, device=str(device))
    return unflatten_state(tensors, document.get("tree"))


class _Flattener:
    """Walks a state once, collecting tensors under unique keys."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self._views: dict[tuple, str] = {}
        self._storages: set[tuple[str, int]] = set()

    def encode(self, value: Any, path: tuple[str, ...]) -> Any:
        """The JSON description of ``value``; tensors are replaced by references."""
        if value is None or type(value) in _JSON_SCALARS:
            return value
        if type(value) is float:
            return _encode_float(value)
        if isinstance(value, torch.Tensor):
            return {"type": "tensor", "key": self._add_tensor(value, path)}
        if isinstance(value, np.ndarray):
            key = self._add_tensor(torch.from_numpy(np.ascontiguousarray(value)), path)
            return {"type": "ndarray", "key": key, "dtype": value.dtype.str}
        if isinstance(value, np.bool_ | np.number):
            scalar = self.encode(value.item(), path)
            return {"type": "numpy", "dtype": value.dtype.str, "value": scalar}
        if type(value) in (list, tuple):
            items = [self.encode(item, (*path, str(i))) for i, item in enumerate(value)]
            return {"type": type(value).__name__, "items": items}
        if type(value) in (dict, OrderedDict):
            items = [
                [_encode_key(key, path), self.encode(item, (*path, str(key)))]
                for key, item in value.items()
            ]
            kind = "ordered_dict" if type(value) is OrderedDict else "dict"
            return {"type": kind, "items": items}
        raise TypeError(f"cannot store a {type(value).__name__} at {_dotted(path)}")

    def _add_tensor(self, tensor: torch.Tensor, path: tuple[str, ...]) -> str:
        tensor = tensor.detach()
        storage = (str(tensor.device), tensor.untyped_storage().data_ptr())
        layout = (tensor.storage_offset(), tuple(tensor.shape), tensor.stride(), tensor.dtype)
        view = (*storage, *layout)
        if view in self._views:
            return self._views[view]
        stored = tensor.cpu()
        # safetensors refuses non-contiguous tensors and tensors that overlap in memory, so
        # such views become independent copies.
        if storage in self._storages or not stored.is_contiguous():
            stored = stored.clone(memory_format=torch.contiguous_format)
        key = _unique_key(_dotted(path), self.tensors)
        self.tensors[key] = stored
        # Empty tensors all report data pointer 0: they share nothing and are never aliased.
        if storage[1] != 0:
            self._storages.add(storage)
            self._views[view] = key
        return key


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(path) if path else "<root>"


def _unique_key(key: str, taken: dict[str, torch.Tensor]) -> str:
    # Keys are names only (the description stores the exact key), so a collision such as
    # dict keys 0 and "0" just needs a distinct suffix.
    candidate, counter = key, 0
    while candidate in taken:
        counter += 1
        candidate = f"{key}#{counter}"
    return candidate


def _encode_float(value: float) -> Any:
    # Strict JSON has no NaN/Infinity; other floats round-trip exactly through repr.
    return value if math.isfinite(value) else {"type": "float", "value": repr(value)}


def _encode_key(key: Any, path: tuple[str, ...]) -> Any:
    if key is None or type(key) in _JSON_SCALARS:
        return key
    if type(key) is float:
        return _encode_float(key)
    if type(key) is tuple:
        return {"type": "tuple", "items": [_encode_key(item, path) for item in key]}
    raise TypeError(f"cannot store a dict key of type {type(key).__name__} at {_dotted(path)}")


def _decode(node: Any, tensors: dict[str, torch.Tensor], used: set[str]) -> Any:
    """Inverse of :meth:`_Flattener.encode`; ``used`` collects the tensor keys referenced."""
    if node is None or type(node) in (*_JSON_SCALARS, float):
        return node
    if not isinstance(node, dict) or not isinstance(node.get("type"), str):
        raise StateFormatError(f"invalid state node {str(node)[:80]}")
    kind = node["type"]
    if kind in ("tensor", "ndarray"):
        tensor = _tensor(node, tensors, used)
        return tensor if kind == "tensor" else tensor.numpy().astype(np.dtype(node["dtype"]))
    if kind == "float":
        if node.get("value") not in _NON_FINITE:
            raise StateFormatError(f"invalid non-finite float {node.get('value')!r}")
        return float(node["value"])
    if kind == "numpy":
        return np.dtype(node["dtype"]).type(_decode(node["value"], tensors, used))
    if kind in ("list", "tuple"):
        items = [_decode(item, tensors, used) for item in _items(node)]
        return items if kind == "list" else tuple(items)
    if kind in ("dict", "ordered_dict"):
        return _decode_dict(node, tensors, used)
    raise StateFormatError(f"unknown state node type {kind!r}")


def _decode_dict(node: dict, tensors: dict[str, torch.Tensor], used: set[str]) -> dict:
    result: dict = OrderedDict() if node["type"] == "ordered_dict" else {}
    for pair in _items(node):
        if not isinstance(pair, list) or len(pair) != 2:
            raise StateFormatError("dict items must be [key, value] pairs")
        # Keys never hold tensors, hence the empty tensor dict.
        result[_decode(pair[0], {}, set())] = _decode(pair[1], tensors, used)
    return result


def _items(node: dict) -> list:
    items = node.get("items")
    if not isinstance(items, list):
        raise StateFormatError(f"{node['type']} node without an items list")
    return items


def _tensor(node: dict, tensors: dict[str, torch.Tensor], used: set[str]) -> torch.Tensor:
    key = node.get("key")
    if key not in tensors:
        raise StateFormatError(f"tensor {key!r} is missing from the tensor file")
    used.add(key)
    return tensors[key]
