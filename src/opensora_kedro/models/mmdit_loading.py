"""Loading MMDiT weights without holding the model twice: build on the meta device, then read
each tensor from the safetensors file into the tensor the model keeps (converting an
Open-Sora / Flux-format file on the way), and write converted files one tensor at a time.

Files in our layout load strictly or not (``strict``); foreign files always load strictly:
every tensor of the model must come from the file and every tensor of the file must be used.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from opensora_kedro.files import resolve_path, weights_file
from opensora_kedro.models.mmdit import MMDiT, MMDiTConfig, config_from_params, mmdit_config
from opensora_kedro.models.mmdit_convert import (
    CheckpointMismatchError,
    Piece,
    Plan,
    check_keys,
    conversion_plan,
    identity_plan,
    is_foreign_format,
    rotate_half_to_interleaved,
    target_shapes,
)
from opensora_kedro.models.params import MMDiTParams
from opensora_kedro.models.safetensors_stream import SafetensorsReader, write_safetensors

logger = logging.getLogger(__name__)

# Layers a model gains when it is used with cond_embed: absent from a t2v file, they start
# at zero, which leaves the model's output as it was.
ZERO_STARTED = ("cond_in.",)


def plan_for(
    config: MMDiTConfig, reader: SafetensorsReader, strict: bool, liger_rope: bool
) -> tuple[Plan, list[str]]:
    """The plan that reads ``reader``'s file into a model of ``config``, and the model's
    tensors the file lacks (always none for a foreign file or with ``strict``).

    Raises:
        CheckpointMismatchError: a foreign file, or ``strict``, and the keys do not match.
    """
    keys = set(reader.keys())
    if is_foreign_format(keys):
        logger.info("%s is in Open-Sora/Flux format: converting (liger rope: %s), strictly",
                    reader.path, liger_rope)  # fmt: skip
        return conversion_plan(config, keys, liger_rope), []
    wanted = set(target_shapes(config))
    if strict:
        check_keys(identity_plan(wanted), keys)
    missing, unexpected = sorted(wanted - keys), sorted(keys - wanted)
    if not unexpected and missing and all(k.startswith(ZERO_STARTED) for k in missing):
        # A t2v model used with cond_embed: by design, as Open-Sora starts i2v from t2v.
        logger.info("%s has no %s: those layers start at zero", reader.path, missing)
    elif missing or unexpected:
        logger.warning("%s: missing %s, unexpected %s", reader.path, missing, unexpected)
    return identity_plan(wanted & keys), missing


def read_planned(
    reader: SafetensorsReader,
    pieces: tuple[Piece, ...],
    shape: tuple[int, ...],
    head_dim: int,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """One of our tensors from its ``pieces`` of the file, in ``dtype`` (else the file's).

    Raises:
        CheckpointMismatchError: the pieces do not make a tensor of ``shape``.
    """
    if len(pieces) == 1 and not pieces[0].permute and pieces[0].rows is None:
        info = reader.tensors[pieces[0].key]
        if info.shape != shape:
            raise CheckpointMismatchError(
                f"{pieces[0].key} has shape {list(info.shape)}, the model needs {list(shape)}"
            )
        out = reader.read(pieces[0].key)
        return out if dtype is None else out.to(dtype)
    parts = []
    for piece in pieces:
        info = reader.tensors[piece.key]
        rows = piece.rows
        if rows is not None and (not info.shape or rows[1] > info.shape[0]):
            raise CheckpointMismatchError(
                f"{piece.key} has shape {list(info.shape)}, too small for rows {list(rows)}"
            )
        part = reader.read(piece.key, rows)
        parts.append(rotate_half_to_interleaved(part, head_dim) if piece.permute else part)
    out = parts[0] if len(parts) == 1 else torch.cat(parts)
    if tuple(out.shape) != shape:
        names = ", ".join(p.key for p in pieces)
        raise CheckpointMismatchError(f"{names} make shape {list(out.shape)}, the model needs "
                                      f"{list(shape)}")  # fmt: skip
    return out if dtype is None else out.to(dtype)


def load_mmdit_file(
    config: MMDiTConfig,
    file: str | os.PathLike,
    *,
    strict: bool = True,
    liger_rope: bool = True,
    dtype: torch.dtype | None = None,
) -> MMDiT:
    """An :class:`MMDiT` of ``config`` with the weights of the safetensors ``file`` (ours, or
    Open-Sora / Flux format; ``liger_rope``: see :func:`conversion_plan`), on the CPU, in
    ``dtype`` (default: the file's). Tensors are read one at a time into a model built on the
    meta device, so host memory peaks near one copy of the weights. Tensors the file lacks
    (non-strict, our layout only) are initialised as in a new model (``cond_in`` at zero).
    """
    with torch.device("meta"):
        model = MMDiT(config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    head_dim = sum(config.axes_dim)
    with SafetensorsReader(file) as reader:
        plan, missing = plan_for(config, reader, strict, liger_rope)
        for key, pieces in plan.items():
            _assign(model, key, read_planned(reader, pieces, shapes[key], head_dim, dtype))
    _materialize(model, missing, dtype)
    logger.info("loaded %s (%d tensors)", file, len(plan))
    return model


def _assign(model: nn.Module, key: str, tensor: Tensor) -> None:
    """Make ``tensor`` the model's parameter ``key`` (replacing its meta placeholder)."""
    owner, _, name = key.rpartition(".")
    module = model.get_submodule(owner)
    old = module._parameters[name]
    module._parameters[name] = nn.Parameter(tensor, requires_grad=old.requires_grad)


def _materialize(model: MMDiT, missing: list[str], dtype: torch.dtype | None) -> None:
    """Initialise the parameters the file lacked, as a newly built model would."""
    modules = sorted({key.rpartition(".")[0] for key in missing})
    for name in modules:
        module = model.get_submodule(name)
        module.to_empty(device="cpu", recurse=False)
        if name == "cond_in":
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)
        elif hasattr(module, "reset_parameters"):
            module.reset_parameters()
        else:  # RMSNorm
            nn.init.ones_(module.scale)
        if dtype is not None:
            module.to(dtype)


def load_pretrained_mmdit(
    config: MMDiTConfig,
    source: str | os.PathLike,
    *,
    strict: bool,
    liger_rope: bool,
    dtype: torch.dtype | None = None,
    lora_path: str | os.PathLike | None = None,
) -> nn.Module:
    """:func:`load_mmdit_file` on ``source`` (a file, or a folder with ``model.safetensors``),
    with a LoRA adapter merged in: ``lora_path``, else the folder's ``lora/`` when it has one
    (a fine-tuning stage's unmerged export).
    """
    from opensora_kedro.models.lora import ADAPTER_CONFIG, merge_adapter

    source = Path(source)
    model = load_mmdit_file(config, weights_file(source, "diffusion model"), strict=strict,
                            liger_rope=liger_rope, dtype=dtype)  # fmt: skip
    adapter = Path(lora_path) if lora_path else source / "lora"
    if lora_path and not (adapter / ADAPTER_CONFIG).is_file():
        raise FileNotFoundError(f"no LoRA adapter at {adapter} (no {ADAPTER_CONFIG})")
    if (adapter / ADAPTER_CONFIG).is_file():
        model = merge_adapter(model, adapter)
    return model


def convert_mmdit_file(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    config: MMDiTConfig,
    *,
    liger_rope: bool = True,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``source`` (Open-Sora / Flux format) in our layout as the folder ``destination``
    (``model.safetensors`` + ``config.json``), one tensor at a time; returns the weights file.

    Raises:
        CheckpointMismatchError: the file does not fit ``config`` (naming the keys).
        ValueError: ``source`` is already in our layout.
    """
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    shapes = target_shapes(config)
    head_dim = sum(config.axes_dim)
    with SafetensorsReader(source) as reader:
        if not is_foreign_format(reader.keys()):
            raise ValueError(f"{source} is already in this project's layout: nothing to convert")
        plan = conversion_plan(config, reader.keys(), liger_rope)
        file_dtype = reader.tensors[plan["img_in.weight"][0].key].dtype
        out_dtype = dtype or file_dtype
        layout = [(key, out_dtype, shapes[key][0]) for key in sorted(plan)]
        target = destination / "model.safetensors"
        write_safetensors(
            target, layout,
            lambda key: read_planned(reader, plan[key], shapes[key][0], head_dim, out_dtype),
            metadata={"format": "pt", "converted_from": Path(source).name},
        )  # fmt: skip
    fields = dataclasses.asdict(config)
    fields.pop("grad_ckpt_settings")
    (destination / "config.json").write_text(json.dumps(fields, indent=1))
    logger.info("converted %s -> %s (%d tensors)", source, target, len(plan))
    return target


def _check_structure(params: MMDiTParams, folder: Path) -> None:
    """Fail clearly when the parameters describe another network than the one saved."""
    saved_file = folder / "config.json"
    if not saved_file.is_file():
        return
    saved = dataclasses.asdict(mmdit_config(json.loads(saved_file.read_text())))
    wanted = dataclasses.asdict(config_from_params(params))
    # cond_embed / guidance_embed may differ: their missing layers start at zero (t2v -> i2v).
    skip = {"cond_embed", "guidance_embed", "grad_ckpt_settings"}
    diff = {k: (wanted[k], saved[k]) for k in wanted if k not in skip and wanted[k] != saved[k]}
    if diff:
        raise ValueError(f"model parameters differ from {saved_file} (params, saved): {diff}")


def load_mmdit(
    params: MMDiTParams,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    base_dir: str | os.PathLike | None = None,
) -> nn.Module:
    """An MMDiT built from the ``model`` parameters with the weights of ``from_pretrained`` (a
    folder with ``model.safetensors`` [+ ``config.json``], or a ``.safetensors`` file, which
    may be in Open-Sora / Flux format: converted while it loads, strictly; see
    :mod:`~opensora_kedro.models.mmdit_convert`), with the LoRA adapter of ``lora_path`` (or
    of the folder's ``lora/``) merged in."""
    if not params.from_pretrained:
        raise ValueError("model.from_pretrained is not set: nothing to sample with")
    source = resolve_path(params.from_pretrained, base_dir)
    if source.is_dir():
        _check_structure(params, source)
    lora = params.lora_path
    model = load_pretrained_mmdit(
        config_from_params(params), source, strict=params.strict_load,
        liger_rope=params.use_liger_rope, dtype=dtype,
        lora_path=resolve_path(lora, base_dir) if lora else None,
    )  # fmt: skip
    return model.to(device).eval().requires_grad_(False)
