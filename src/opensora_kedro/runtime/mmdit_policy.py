"""A ColossalAI shardformer policy for the MMDiT: sequence parallelism, no weight sharding.

HybridParallelPlugin calls the policy while boosting; :meth:`MMDiTPolicy.postprocess` turns
on the model's Ulysses (all-to-all) sequence parallelism over the plugin's sp group. Facts
about the plugin this relies on (colossalai 0.5, ``hybrid_parallel_plugin.py``):

- In the ``all_to_all`` and ``ring_attn`` modes the plugin averages gradients (DDP when
  zero_stage is 0, ZeRO otherwise) over ``mixed_dp_group`` = dp x sp ranks, and its
  ``sync_sp_grads`` does nothing more. The MMDiT computes the full output and loss on every
  sp rank and scales its gradients so that this average is the full-batch gradient.
- Ranks of one sp group must train on the same batch (and draw the same noise): the loop
  shards data over ``plugin.dp_group``; ``plugin.dp_size`` is dp x sp in these modes.

``ring_attn`` is served by all-to-all attention (logged): the plugin's sp group and gradient
reduction are the same for both modes, and all-to-all needs only ``num_heads % sp == 0``.
"""

from __future__ import annotations

import logging

from colossalai.shardformer.policies.base_policy import Policy
from torch import nn

logger = logging.getLogger(__name__)

SP_MODES = ("all_to_all", "ring_attn")


class MMDiTPolicy(Policy):
    """Sequence parallelism for :class:`~opensora_kedro.models.mmdit.MMDiT` under
    HybridParallelPlugin; tensor and pipeline parallelism are refused (nothing is sharded)."""

    def config_sanity_check(self) -> None:
        """Refuse the parallelism this policy does not provide.

        Raises:
            ValueError: tp > 1, pp > 1 or a sequence-parallelism mode other than
                ``all_to_all`` / ``ring_attn``.
        """
        config = self.shard_config
        if config.enable_tensor_parallelism:
            raise ValueError("the MMDiT policy has no tensor parallelism: set tp_size 1")
        if config.pipeline_stage_manager is not None:
            raise ValueError("the MMDiT policy has no pipeline parallelism: set pp_size 1")
        mode = config.sequence_parallelism_mode
        if config.enable_sequence_parallelism and mode not in SP_MODES:
            raise ValueError(f"sequence_parallelism_mode {mode!r} is not supported; use all_to_all")

    def preprocess(self) -> nn.Module:
        """Check the configuration (ColossalAI does not call the sanity check itself)."""
        self.config_sanity_check()
        if not hasattr(self.model, "enable_sequence_parallel"):
            raise TypeError(f"MMDiTPolicy needs an MMDiT, got {type(self.model).__name__}")
        return self.model

    def module_policy(self) -> dict:
        """No module is replaced."""
        return {}

    def postprocess(self) -> nn.Module:
        """Give the model the plugin's sequence-parallel group (when sp > 1)."""
        config = self.shard_config
        if not config.enable_sequence_parallelism or config.sequence_parallel_size == 1:
            return self.model
        if config.sequence_parallelism_mode == "ring_attn":
            logger.warning(
                "sequence_parallelism_mode ring_attn: the MMDiT runs all-to-all (Ulysses) "
                "attention over the same sp group instead"
            )
        self.model.enable_sequence_parallel(config.sequence_parallel_process_group)
        logger.info("MMDiT sequence parallelism over %d ranks", config.sequence_parallel_size)
        return self.model

    def get_held_layers(self) -> list[nn.Module]:
        """The whole model (no pipeline stages)."""
        return [self.model]

    def get_shared_params(self) -> list:
        """No parameters are shared between stages."""
        return []
