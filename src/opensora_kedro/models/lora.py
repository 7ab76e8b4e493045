"""LoRA adapters on the MMDiT through peft (Open-Sora's ``lora_config``, brief §7.3).

Adapters live in peft's folder format (``adapter_config.json`` + ``adapter_model.safetensors``),
which is what ColossalAI's ``booster.save_lora_as_pretrained`` writes and
``booster.enable_lora(pretrained_dir=...)`` / ``PeftModel.from_pretrained`` read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from torch import Tensor, nn

if TYPE_CHECKING:
    from opensora_kedro.training.params import LoraParams

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"


def lora_config(params: LoraParams):
    """A peft ``LoraConfig`` from a stage's ``lora`` block."""
    from peft import LoraConfig

    return LoraConfig(
        r=params.r, lora_alpha=params.lora_alpha, lora_dropout=params.lora_dropout,
        target_modules=list(params.target_modules), bias="none",
    )  # fmt: skip


def is_lora(model: nn.Module) -> bool:
    """Whether ``model`` carries peft adapters (is a ``PeftModel``)."""
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def add_lora(model: nn.Module, params: LoraParams, pretrained_dir: str | None = None):
    """``model`` with trainable adapters (new ones, or those of ``pretrained_dir``) and every
    other parameter frozen: the calls ColossalAI's ``enable_lora`` makes for DDP and ZeRO."""
    from peft import PeftModel, get_peft_model

    if pretrained_dir:
        return PeftModel.from_pretrained(model, pretrained_dir, is_trainable=True)
    return get_peft_model(model, lora_config(params))


def adapter_state(model: nn.Module) -> dict[str, Tensor]:
    """The adapter weights of a ``PeftModel`` (what a LoRA checkpoint needs to keep)."""
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().cpu() for k, v in get_peft_model_state_dict(model).items()}


def load_adapter_state(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Set a ``PeftModel``'s adapters from :func:`adapter_state`.

    Raises:
        ValueError: the state does not hold every adapter tensor of the model.
    """
    from peft.utils import set_peft_model_state_dict

    wanted = set(adapter_state(model))
    if missing := sorted(wanted - set(state)):
        raise ValueError(f"the checkpoint lacks adapter tensors: {missing[:10]}")
    set_peft_model_state_dict(model, dict(state))


def save_adapter(model: nn.Module, folder: str | os.PathLike) -> Path:
    """Write a ``PeftModel``'s adapters as safetensors into ``folder``; returns it."""
    folder = Path(folder)
    model.save_pretrained(str(folder), safe_serialization=True)
    (folder / "README.md").unlink(missing_ok=True)  # peft's empty model card
    return folder


def merge_adapter(model: nn.Module, folder: str | os.PathLike) -> nn.Module:
    """``model`` (a plain MMDiT) with the adapters of ``folder`` merged into its weights."""
    from peft import PeftModel

    logger.info("merging LoRA adapter %s", folder)
    return PeftModel.from_pretrained(model, str(folder)).merge_and_unload()


def merged_model(model: nn.Module) -> nn.Module:
    """The base model of a ``PeftModel`` with its adapters merged in (modifies ``model``)."""
    return model.merge_and_unload()


def base_model(model: nn.Module) -> nn.Module:
    """The base model of a ``PeftModel`` without its adapters (modifies ``model``)."""
    return model.unload()
