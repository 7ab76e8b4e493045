"""The training loop every job shares: Booster, accumulation, clipping, warm-up, EMA,
atomic checkpoints and exact resume. What is trained comes from a :class:`TrainTask`."""

from __future__ import annotations

import logging
import resource
import time
from pathlib import Path
from typing import Any

import torch
from colossalai.accelerator import get_accelerator
from torch import nn
from torch.utils.data import DataLoader

from opensora_kedro.models.lora import (
    adapter_state,
    add_lora,
    is_lora,
    load_adapter_state,
    lora_config,
)
from opensora_kedro.progress import progress
from opensora_kedro.runtime.booster import clips_inside_plugin, make_plugin
from opensora_kedro.runtime.compat import check_precision, has_cuda, make_optimizer
from opensora_kedro.runtime.distributed import rank, world_size
from opensora_kedro.runtime.tracking import MetricsLogger
from opensora_kedro.training import rng
from opensora_kedro.training.checkpoint import (
    CheckpointManager,
    TrainingDataChangedError,
    check_model_fits,
)
from opensora_kedro.training.ema import (
    create_ema_model,
    ema_state_dict,
    load_ema_state_dict,
    sync_ema_shards,
    update_ema,
)
from opensora_kedro.training.loop_settings import (
    MetricsWindow,
    Running,
    TrainResult,
    TrainTask,
)
from opensora_kedro.training.lr_schedule import WarmupLR
from opensora_kedro.training.master_weights import load_masters, master_weights, model_state
from opensora_kedro.training.params import LoopParams
from opensora_kedro.training.samples import sample_folder

logger = logging.getLogger(__name__)


def _to_device(batch: Any, device: torch.device) -> Any:
    """Tensors of a (dict) batch on the training device; everything else as it is."""
    if isinstance(batch, dict):
        return {
            k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
            for k, v in batch.items()
        }
    return batch


def _gather(value: Any) -> list[Any]:
    """``value`` of every rank, in rank order (on every rank)."""
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [value]
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside a plugin's wrapper; a peft model stays one (ColossalAI's wrappers
    would otherwise hide its adapters behind the base model's key names)."""
    return model.unwrap(unwrap_peft=False) if hasattr(model, "unwrap") else model


def _data_shard(plugin: Any, rank: int, world: int) -> tuple[int, int]:
    """``(rank, world)`` for the data sampler: the plugin's data-parallel group when it has one
    (HybridParallelPlugin), since its sp/tp ranks must see the same batch."""
    group = getattr(plugin, "dp_group", None)
    if group is None:
        return rank, world
    import torch.distributed as dist

    # Not plugin.dp_size: with sequence parallelism that counts the dp x sp ranks.
    return dist.get_group_rank(group, rank), dist.get_world_size(group)


class Trainer:
    """One training run of ``task`` with ``settings``, checkpointing under ``output_dir``."""

    def __init__(
        self,
        task: TrainTask,
        settings: LoopParams,
        output_dir: Path,
        metrics: MetricsLogger,
        policy: Any = None,
    ) -> None:
        from colossalai.booster import Booster

        self.task, self.settings, self.metrics = task, settings, metrics
        self.rank, self.world = rank(), world_size()
        self.device = get_accelerator().get_current_device()
        torch.manual_seed(settings.seed)  # same initial weights on every rank
        model = task.build_model()
        check_precision(settings.plugin, settings.dtype)
        # DDP over a single process only copies gradients around: one process trains bare.
        single = settings.plugin == "ddp" and self.world == 1
        if single:
            model.to(self.device)
        plugin = None if single else make_plugin(
            settings.plugin, settings.plugin_config, settings.dtype, settings.grad_clip, policy
        )  # fmt: skip
        self.booster = Booster(plugin=plugin)
        if settings.lora is not None:
            model = self._add_lora(model, plugin)
        self.ema = self._make_ema(model)
        optimizer = make_optimizer(
            [p for p in model.parameters() if p.requires_grad], settings.optim
        )
        scheduler = WarmupLR(
            optimizer, warmup_steps=settings.warmup,
            total_steps=settings.max_steps if settings.cosine_decay else None,
        )  # fmt: skip
        self.model, self.optimizer, _, _, self.scheduler = self.booster.boost(
            model, optimizer, lr_scheduler=scheduler
        )
        if settings.compile:
            # In place, under the plugin's wrapper: state-dict keys stay those of the model.
            self.module.compile()
        if self.ema is not None:
            self.ema.to(self.device)  # beside the weights it follows
        # fp32 masters of a mixed-precision plugin: the EMA follows them, checkpoints hold them.
        self.masters = master_weights(self.optimizer, self.module)
        # Ranks of one sp group also share the global RNG stream (seeded alike above), so
        # they draw the same noise and timesteps for their shared batch.
        data_rank, data_world = _data_shard(plugin, self.rank, self.world)
        self.dataset, self.sampler, self.collate = task.build_data(data_rank, data_world)
        self.output_dir = Path(output_dir)
        self.checkpoints = CheckpointManager(
            self.output_dir / "checkpoints", settings.keep_n_latest
        )
        self.running = Running()
        self.data_fingerprint: str | None = None  # of the training table (see resume)

    @property
    def module(self) -> nn.Module:
        """The model being trained, without the plugin's wrapper."""
        return _unwrap(self.model)

    def _make_ema(self, model: nn.Module) -> nn.Module | None:
        if self.settings.ema_decay is not None and self.settings.lora is not None:
            logger.info("EMA is off under LoRA (as in Open-Sora)")
            return None
        return None if self.settings.ema_decay is None else create_ema_model(model)

    def _add_lora(self, model: nn.Module, plugin: Any) -> nn.Module:
        """Adapters on ``model`` (before boosting): through ``booster.enable_lora`` when the
        plugin supports it (DDP, ZeRO, hybrid), else (one process, no plugin) the same peft
        calls directly."""
        lora = self.settings.lora
        pretrained = lora.pretrained_dir
        if plugin is not None and plugin.support_lora():
            config = None if pretrained else lora_config(lora)
            model = self.booster.enable_lora(model, pretrained_dir=pretrained, lora_config=config)
        else:
            model = add_lora(model, lora, pretrained)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        logger.info("LoRA rank %d: %d of %d parameters train (%.2f%%)", lora.r, trainable,
                    total, 100 * trainable / max(total, 1))  # fmt: skip
        return model

    # -- checkpoints ------------------------------------------------------------------------

    def model_state(self) -> dict[str, torch.Tensor]:
        """The trained weights on the CPU, fp32 masters where the plugin keeps them (gathered
        from the ZeRO ranks: every rank calls this)."""
        return model_state(self.module, self.masters)

    def save(self) -> Path | None:
        """Write a checkpoint of everything the run needs to continue exactly (rank 0 writes;
        every rank calls it, as gathering the states is collective)."""
        module = self.module
        if self.ema is not None:
            sync_ema_shards(self.ema, self.masters)
        parts = {
            "model": adapter_state(module) if is_lora(module) else self.model_state(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.scheduler.state_dict(),
            "sampler": self.sampler.state_dict(self.running.step),
            "rng": {"ranks": _gather(rng.capture())},
            "running": vars(self.running).copy(),
        }
        if self.ema is not None:
            parts["ema"] = ema_state_dict(self.ema)
        if self.data_fingerprint is not None:
            parts["data"] = {"table_fingerprint": self.data_fingerprint}
        if self.rank != 0:
            return None
        return self.checkpoints.save(self.running.update_step, parts)

    def resume(self, force: bool = False) -> bool:
        """Continue from the latest complete checkpoint, if there is one.

        Raises:
            TrainingDataChangedError: the training table differs from the checkpoint's (its
                data position would point into another table), unless ``force``.
        """
        latest = self.checkpoints.latest()
        if latest is None:
            return False
        state = self.checkpoints.load(latest)
        self._check_data(latest, state.get("data", {}).get("table_fingerprint"), force)
        if is_lora(self.module):  # the base weights came from from_pretrained again
            load_adapter_state(self.module, state["model"])
        else:
            check_model_fits(latest, state["model"], self.module.state_dict())
            self.module.load_state_dict(state["model"])
        if self.masters and not is_lora(self.module):
            load_masters(self.masters, state["model"])  # fp32, not rounded via the weights
        elif hasattr(self.model, "update_master_params"):  # the plugin keeps masters apart
            self.model.update_master_params()
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["lr_scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        if self.ema is not None and "ema" in state:
            load_ema_state_dict(self.ema, state["ema"])
        self.running = Running(**state["running"])
        ranks = state["rng"]["ranks"]
        if len(ranks) != self.world:
            logger.warning(
                "resuming %d ranks from %d: random streams differ", self.world, len(ranks)
            )
        rng.restore(ranks[self.rank % len(ranks)])
        self._apply_configured_optimizer()
        logger.info("resumed from %s (update step %d)", latest, self.running.update_step)
        return True

    def _check_data(self, checkpoint: Path, saved: str | None, force: bool) -> None:
        current = self.data_fingerprint
        if saved is None or current is None or saved == current:
            return
        if force:
            logger.warning("resuming %s although the training table changed (force_resume)",
                           checkpoint)  # fmt: skip
            return
        raise TrainingDataChangedError(checkpoint, saved, current)

    def _apply_configured_optimizer(self) -> None:
        """A resumed run uses the configured lr (as Open-Sora resets lr and eps on load)."""
        optim = self.settings.optim
        for group in self.optimizer.param_groups:
            group["eps"] = optim.eps
        if list(self.scheduler.base_lrs) != [optim.lr] * len(self.scheduler.base_lrs):
            logger.info("resumed with lr %g from the parameters", optim.lr)
            self.scheduler.base_lrs = [optim.lr] * len(self.scheduler.base_lrs)
            self.scheduler.set_step(self.running.update_step)

    def discard_checkpoints(self) -> None:
        """Start afresh: the old run's checkpoints are moved aside (rank 0), not deleted."""
        root = self.checkpoints.root
        if self.rank == 0 and root.exists() and any(root.iterdir()):
            aside = root.with_name(f"{root.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
            root.rename(aside)
            logger.info("resume is off: moved the earlier checkpoints to %s", aside)

    # -- the loop ---------------------------------------------------------------------------

    def _autocast(self):
        """bf16 autocast for plain DDP on GPUs (ZeRO and hybrid plugins cast by themselves)."""
        enabled = self.settings.plugin == "ddp" and self.settings.dtype == "bf16" and has_cuda()
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=enabled)

    def _backward(self, loss: torch.Tensor) -> None:
        if hasattr(self.optimizer, "backward"):  # boosted by a plugin
            self.booster.backward(loss, self.optimizer)
        else:
            loss.backward()

    def _update(self, want_norm: bool) -> float:
        """Clip, step, schedule, EMA; returns the gradient norm (NaN when not measured)."""
        settings = self.settings
        norm = float("nan")
        if clips_inside_plugin(settings.plugin):
            norm = float(self.optimizer.get_grad_norm() or 0.0)
        elif settings.grad_clip or want_norm:  # the norm costs a pass over the gradients
            max_norm = settings.grad_clip or float("inf")
            norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            update_ema(self.ema, self.module, settings.ema_decay, master_weights=self.masters)
        self.running.update_step += 1
        return norm

    def train_step(self, batch: Any) -> float:
        """One micro-batch and one optimizer update outside :meth:`fit` (no data loader,
        accumulation, logging or checkpoints): what the batch-size probe measures."""
        with self._autocast():
            loss, _ = self.task.loss(self.model, _to_device(batch, self.device))
        self._backward(loss)
        self._update(want_norm=False)
        return float(loss.detach())

    def _done(self) -> bool:
        max_steps = self.settings.max_steps
        return max_steps is not None and self.running.update_step >= max_steps

    def _samples(self) -> None:
        """Rank 0 writes the task's sample set of the current weights (the EMA when kept)
        and logs it to MLflow; the other ranks go on to the next collective and wait there."""
        if self.rank != 0 or not hasattr(self.task, "samples"):
            return
        model = self.ema if self.ema is not None else self.module
        step = self.running.update_step
        folder = sample_folder(self.output_dir, step)
        training, sp_group = model.training, getattr(model, "sp_group", None)
        model.eval()
        if sp_group is not None:  # rank 0 samples alone: no all-to-all with the others
            model.enable_sequence_parallel(None)
        try:
            with torch.no_grad(), rng.preserved():  # the run's random streams stay in step
                self.task.samples(model, folder)
        finally:
            model.train(training)
            if sp_group is not None:
                model.enable_sequence_parallel(sp_group)
        self.metrics.log_files(str(folder), f"samples/step-{step:08d}")

    def _log(self, window: MetricsWindow, norm: float) -> None:
        memory = (torch.cuda.max_memory_allocated() / 2**20 if has_cuda()
                  else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # fmt: skip
        self.metrics.log(self.running.update_step, {
            **window.metrics(), "grad_norm": norm, "lr": self.optimizer.param_groups[0]["lr"],
            "memory_mib": memory,
        })  # fmt: skip

    def fit(self) -> TrainResult:
        """Train until ``max_steps`` updates or ``epochs`` passes; checkpoint on the way."""
        settings, running = self.settings, self.running
        acc = settings.accumulation_steps
        window, norm = MetricsWindow(), 0.0
        bar = progress(
            total=settings.max_steps, initial=running.update_step, desc="training",
            disable=self.rank != 0,
        )  # fmt: skip
        last_saved, saved_step = None, None
        while running.epoch < settings.epochs and not self._done():
            self.sampler.set_epoch(running.epoch)
            if len(self.sampler) == 0 and running.step == 0:
                raise ValueError(
                    f"epoch {running.epoch} has no full batch: no clip of the training table fits "
                    "bucket_config, or there are fewer clips than a bucket's batch size"
                )
            # A generator of its own: a DataLoader iterator otherwise draws from the global
            # torch RNG when created, and a resumed run creates one more than a whole run.
            loader = DataLoader(self.dataset, batch_sampler=self.sampler, collate_fn=self.collate,
                                num_workers=settings.num_workers,
                                prefetch_factor=settings.prefetch_factor
                                if settings.num_workers else None,
                                generator=torch.Generator().manual_seed(settings.seed))  # fmt: skip
            for batch in loader:
                with self._autocast():
                    loss, parts = self.task.loss(self.model, _to_device(batch, self.device))
                self._backward(loss / acc)
                size = len(batch["index"]) if isinstance(batch, dict) and "index" in batch else 1
                window.add(float(loss.detach()), parts, size)
                running.step += 1
                if running.step % acc:
                    continue
                logging_now = (running.update_step + 1) % settings.log_interval == 0
                norm = self._update(want_norm=logging_now)
                bar.update(1)
                if running.update_step % settings.log_interval == 0:
                    self._log(window, norm)
                    bar.set_postfix(loss=f"{window.mean_loss():.4f}")
                    window = MetricsWindow()
                if settings.samples.every and running.update_step % settings.samples.every == 0:
                    self._samples()
                if running.update_step % settings.ckpt_every == 0 or self._done():
                    last_saved, saved_step = self.save() or last_saved, running.update_step
                if self._done():
                    break
            else:
                if running.step % acc:  # an epoch's last, incomplete accumulation is dropped
                    self.optimizer.zero_grad(set_to_none=True)
                    window = MetricsWindow()
                running.epoch, running.step = running.epoch + 1, 0
        bar.close()
        if saved_step != running.update_step:  # decided alike on every rank (saving is collective)
            last_saved = self.save() or last_saved
        return TrainResult(
            str(last_saved) if last_saved else None, running.update_step, self.metrics.history
        )
