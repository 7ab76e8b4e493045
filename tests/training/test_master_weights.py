"""fp32 master weights sliced as ZeRO slices them, on 2 CPU processes (gloo): the EMA updated
slice by slice and gathered, checkpoint states gathered, and slices loaded back."""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from opensora_kedro.runtime.distributed import free_port
from opensora_kedro.training.ema import create_ema_model, sync_ema_shards, update_ema
from opensora_kedro.training.master_weights import load_masters, model_state, zero_shard

WORLD = 2


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 3), nn.Linear(3, 1))  # 15, 3, 3 and 1 elements: padded


def _colossalai_slice(param: torch.Tensor, rank: int) -> torch.Tensor:
    """What LowLevelZeroOptimizer keeps on ``rank``: the flat parameter, zero-padded to a
    multiple of the world size, split evenly (``_create_master_param_current_rank``)."""
    padding = (WORLD - param.numel() % WORLD) % WORLD
    flat = nn.functional.pad(param.detach().float().reshape(-1), [0, padding])
    return flat.split(flat.numel() // WORLD)[rank].clone()


def _worker(rank: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        model, group = _model(), dist.group.WORLD
        ema, reference = create_ema_model(model), create_ema_model(model)
        full = {name: p.detach().float() * 1.5 + 0.01 for name, p in model.named_parameters()}
        masters = {name: zero_shard(_colossalai_slice(tensor, rank), tensor.numel(), rank, group)
                   for name, tensor in full.items()}  # fmt: skip
        for _ in range(3):
            update_ema(ema, model, 0.9, master_weights=masters)
            update_ema(reference, full, 0.9)
        sync_ema_shards(ema, masters)
        for name, tensor in reference.state_dict().items():
            torch.testing.assert_close(ema.state_dict()[name], tensor, rtol=0, atol=0)

        state = model_state(model, masters)  # gathered: every element from its owner
        assert all(torch.equal(state[name], tensor) for name, tensor in full.items())

        loaded = {name: zero_shard(torch.zeros_like(_colossalai_slice(t, rank)), t.numel(),
                                   rank, group) for name, t in full.items()}  # fmt: skip
        load_masters(loaded, state)
        for name in full:
            assert torch.equal(loaded[name].tensor, masters[name].tensor), name
        # Both ranks done before either tears gloo down: a rank destroying its group while
        # the other still holds a connection aborted the process now and then (SIGABRT).
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_zero_sliced_masters_feed_the_ema_and_the_checkpoint():
    mp.spawn(_worker, args=(free_port(),), nprocs=WORLD)


def test_whole_masters_replace_the_working_weights():
    model = _model().to(torch.bfloat16)
    masters = {name: p.detach().float() + 1e-3 for name, p in model.named_parameters()}
    state = model_state(model, masters)
    assert all(torch.equal(state[name], tensor) for name, tensor in masters.items())
    ema = create_ema_model(_model())
    update_ema(ema, model, 0.0, master_weights=masters)
    assert all(torch.equal(ema.state_dict()[name], tensor) for name, tensor in masters.items())
