"""Round-trip exactness of the pickle-free state format."""

from __future__ import annotations

import json
import math
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from opensora_kedro.training.state_io import (
    StateFormatError,
    flatten_state,
    load_state,
    save_state,
    unflatten_state,
)


def assert_state_equal(actual: Any, expected: Any, path: str = "<root>") -> None:
    """Exact equality of nested states: same types (int vs str keys, tuple vs list), same
    key order, tensors equal in dtype, shape and bits (NaN == NaN)."""
    assert type(actual) is type(expected), f"{path}: {type(actual)} != {type(expected)}"
    if isinstance(expected, torch.Tensor):
        assert actual.dtype == expected.dtype and actual.shape == expected.shape, path
        assert torch.equal(_bits(actual), _bits(expected)), path
    elif isinstance(expected, np.ndarray):
        assert actual.dtype == expected.dtype and np.array_equal(actual, expected), path
    elif isinstance(expected, dict):
        assert list(actual) == list(expected), f"{path}: keys {list(actual)} != {list(expected)}"
        assert [type(k) for k in actual] == [type(k) for k in expected], f"{path}: key types"
        for key in expected:
            assert_state_equal(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list | tuple):
        assert len(actual) == len(expected), path
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_state_equal(a, e, f"{path}.{index}")
    elif isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(actual), path
    else:
        assert actual == expected, path
        if isinstance(expected, float):
            assert math.copysign(1, actual) == math.copysign(1, expected), path


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    # Bitwise view: NaN equals NaN, -0.0 differs from 0.0.
    return tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8)


def _round_trip(state: Any, tmp_path: Path, name: str = "part") -> Any:
    save_state(state, tmp_path, name)
    return load_state(tmp_path, name)


def _adamw_after_steps(steps: int = 3) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Linear(8, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, eps=1e-15, weight_decay=0.1)
    for _ in range(steps):
        _train_step(model, optimizer)
    return model, optimizer


def _train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    loss = model(torch.randn(5, 4)).pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def test_scalars_and_containers_round_trip_exactly(tmp_path: Path) -> None:
    state = {
        "ints": [0, -1, 2**70, True, False],
        "floats": (0.1, -0.0, 1e-300, float("inf"), float("-inf"), float("nan")),
        "strings": ["", "ünïcode ✓", "with.dots/and/slashes"],
        "none": None,
        3: "int key",
        "3": "str key",
        (1, "a"): "tuple key",
        None: "none key",
        2.5: "float key",
        "nested": {
            "empty_list": [],
            "empty_tuple": (),
            "empty_dict": {},
            "odict": OrderedDict(b=1, a=2),
        },
    }
    assert_state_equal(_round_trip(state, tmp_path), state)


def test_scalar_only_state_writes_json_only(tmp_path: Path) -> None:
    written = save_state(
        {"seed": 42, "epoch": 3, "last_micro_batch_access_index": 17}, tmp_path, "sampler"
    )
    assert [path.name for path in written] == ["sampler.json"]
    assert load_state(tmp_path, "sampler") == {
        "seed": 42,
        "epoch": 3,
        "last_micro_batch_access_index": 17,
    }


@pytest.mark.parametrize(
    "tensor",
    [
        torch.randn(3, 4),
        torch.randn(2, 3).to(torch.bfloat16),
        torch.tensor(7.0),
        torch.zeros(0, 5),
        torch.tensor([True, False]),
        torch.arange(10, dtype=torch.int64),
        torch.tensor([float("nan"), 1.0]),
    ],
    ids=["f32", "bf16", "scalar", "empty", "bool", "int64", "nan"],
)
def test_tensor_dtypes_and_shapes(tmp_path: Path, tensor: torch.Tensor) -> None:
    assert_state_equal(_round_trip({"t": tensor}, tmp_path), {"t": tensor})


def test_non_contiguous_and_shared_storage_tensors(tmp_path: Path) -> None:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = {
        "transposed": base.t(),  # non-contiguous
        "strided": base[:, ::2],  # non-contiguous, shares base's storage
        "row": base[1],  # contiguous slice of the same storage
        "base": base,
        "base_again": base,  # the very same tensor: stored once
        "empty": torch.zeros(0, 3),
        "other_empty": torch.zeros(0, 3),  # data pointer 0 like "empty", yet distinct
    }
    loaded = _round_trip(state, tmp_path)
    assert_state_equal(loaded, state)
    assert loaded["base_again"] is loaded["base"]
    assert loaded["other_empty"] is not loaded["empty"]
    # Distinct views come back independent, so writing one cannot change another.
    loaded["row"].zero_()
    assert torch.equal(loaded["base"], base)
    assert len(load_file(tmp_path / "part.safetensors")) == 6


def test_adamw_state_round_trips_and_training_continues_identically(tmp_path: Path) -> None:
    model, optimizer = _adamw_after_steps()
    saved = optimizer.state_dict()
    assert set(saved["state"]) == {0, 1, 2, 3}  # int keys, kept as ints
    loaded = _round_trip(saved, tmp_path, "optimizer")
    assert_state_equal(loaded, saved)

    clone = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Linear(8, 2))
    clone.load_state_dict(model.state_dict())
    clone_optimizer = torch.optim.AdamW(clone.parameters(), lr=1.0)
    clone_optimizer.load_state_dict(loaded)
    for net, opt in ((model, optimizer), (clone, clone_optimizer)):
        torch.manual_seed(1)
        for _ in range(2):
            _train_step(net, opt)
    for expected, actual in zip(model.parameters(), clone.parameters(), strict=True):
        assert torch.equal(expected, actual)


def test_model_state_dict_keeps_its_keys_in_safetensors(tmp_path: Path) -> None:
    model, _ = _adamw_after_steps(0)
    state = model.state_dict()
    save_state(state, tmp_path, "model")
    tensors = load_file(tmp_path / "model.safetensors")  # as any other tool would open it
    assert set(tensors) == set(state)
    for key, value in state.items():
        assert torch.equal(tensors[key], value)
    assert_state_equal(load_state(tmp_path, "model"), state)


def test_numpy_values_round_trip(tmp_path: Path) -> None:
    state = {
        "array": np.arange(6, dtype=np.uint32).reshape(2, 3),
        "float": np.float32(1.5),
        "int": np.int64(-3),
        "bool": np.bool_(True),
    }
    loaded = _round_trip(state, tmp_path)
    assert_state_equal(loaded, state)
    assert loaded["float"].dtype == np.float32


def test_flatten_unflatten_in_memory() -> None:
    state = {"a": [torch.ones(2), {"b": torch.zeros(1)}], "c": 1}
    tensors, tree = flatten_state(state)
    assert set(tensors) == {"a.0", "a.1.b"}
    json.dumps(tree, allow_nan=False)  # the description is strict JSON
    assert_state_equal(unflatten_state(tensors, tree), state)


def test_colliding_path_keys_stay_distinct(tmp_path: Path) -> None:
    state = {0: torch.zeros(1), "0": torch.ones(1)}
    assert_state_equal(_round_trip(state, tmp_path), state)


@pytest.mark.parametrize(
    "value",
    [object(), {1, 2}, torch.Size([2, 3]), b"bytes"],
    ids=["object", "set", "torch.Size", "bytes"],
)
def test_unsupported_values_are_rejected_with_their_path(tmp_path: Path, value: Any) -> None:
    with pytest.raises(TypeError, match=r"a\.0"):
        save_state({"a": [value]}, tmp_path, "bad")


def test_unsupported_dict_key_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="dict key"):
        save_state({frozenset({1}): 1}, tmp_path, "bad")


def test_loading_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, optimizer = _adamw_after_steps()
    save_state(optimizer.state_dict(), tmp_path, "optimizer")

    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("unpickling during load")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    assert_state_equal(load_state(tmp_path, "optimizer"), optimizer.state_dict())


@pytest.mark.parametrize(
    "tree",
    [
        {"type": "pickle", "data": "..."},
        {"type": "tensor", "key": "missing"},
        {"type": "dict", "items": [[["unhashable"], 1]]},
        {"type": "float", "value": "1e999"},
        {"type": "list"},
    ],
    ids=["unknown-type", "missing-tensor", "unhashable-key", "bad-float", "no-items"],
)
def test_invalid_descriptions_are_rejected(tmp_path: Path, tree: Any) -> None:
    document = {"format": "opensora_kedro.state_io", "version": 1, "tensors": None, "tree": tree}
    (tmp_path / "bad.json").write_text(json.dumps(document))
    with pytest.raises(StateFormatError):
        load_state(tmp_path, "bad")


def test_unreferenced_tensors_and_escaping_tensor_file_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(StateFormatError, match="not referenced"):
        unflatten_state({"x": torch.zeros(1)}, {"type": "list", "items": []})
    document = {
        "format": "opensora_kedro.state_io",
        "version": 1,
        "tensors": "../x.safetensors",
        "tree": None,
    }
    (tmp_path / "bad.json").write_text(json.dumps(document))
    with pytest.raises(StateFormatError, match="invalid tensor file"):
        load_state(tmp_path, "bad")
