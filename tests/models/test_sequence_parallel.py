"""Ulysses sequence parallelism of the MMDiT: 2 CPU processes (gloo) against one model."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from opensora_kedro.models.mmdit import build_mmdit
from opensora_kedro.models.sequence_parallel import padded_length
from opensora_kedro.runtime.distributed import free_port

# 4 heads so that each of 2 ranks holds several; gradient checkpointing on the first blocks
# checks that recomputation repeats the collectives correctly.
OVERRIDES = dict(num_heads=4, axes_dim=(4, 6, 6), cond_embed=True, grad_ckpt_settings=(1, 1))
# (T, H, W) of the latent: 2·2·3 = 12 image tokens (even) and 1·3·3 = 9 (padded to 10).
SHAPES = [(2, 4, 6), (1, 6, 6)]


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_mmdit("tiny", **OVERRIDES)
    torch.nn.init.normal_(model.final_layer.linear.weight, std=0.1)  # zero-init hides grads
    torch.nn.init.normal_(model.cond_in.weight, std=0.1)
    return model


def _inputs(shape: tuple[int, int, int]) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    t, h, w = shape
    return {
        "img": torch.randn(2, 4, t, h, w, generator=generator),
        "txt": torch.randn(2, 5, 64, generator=generator),
        "y": torch.randn(2, 64, generator=generator),
        "timesteps": torch.rand(2, generator=generator),
        "cond": torch.randn(2, 5, t, h, w, generator=generator),
    }


def _forward_backward(model, inputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    out = model(**inputs)
    weights = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
    (out * weights).sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def _check_shape(model, shape: tuple[int, int, int]) -> None:
    inputs = _inputs(shape)
    model.enable_sequence_parallel(None)
    expected, expected_grads = _forward_backward(model, inputs)
    model.enable_sequence_parallel(dist.group.WORLD)
    out, grads = _forward_backward(model, inputs)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    for name, grad in grads.items():
        dist.all_reduce(grad)  # averaged over the sp ranks, as the plugin's dp x sp group does
        torch.testing.assert_close(
            grad / 2, expected_grads[name], rtol=1e-4, atol=1e-5, msg=f"{shape} {name}"
        )


def _worker(rank: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        model = _model()
        for shape in SHAPES:
            _check_shape(model, shape)
        odd_heads = build_mmdit("tiny", hidden_size=48, num_heads=3, axes_dim=(4, 6, 6))
        with pytest.raises(ValueError, match="num_heads 3 must be divisible"):
            odd_heads.enable_sequence_parallel(dist.group.WORLD)
    finally:
        dist.destroy_process_group()


def test_padded_length():
    assert [padded_length(n, 2) for n in (8, 9, 1)] == [8, 10, 2]


def test_two_ranks_match_one_model_in_output_and_gradients():
    mp.spawn(_worker, args=(free_port(),), nprocs=2)


def _plugin_worker(rank: int, port: int, gpu: bool) -> None:
    """Boost the tiny MMDiT with HybridParallelPlugin(sp=2) and our policy; compare with the
    same model run whole, then take one optimizer step."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2")  # fmt: skip
    import colossalai
    from colossalai.booster import Booster
    from colossalai.booster.plugin import HybridParallelPlugin

    from opensora_kedro.runtime.mmdit_policy import MMDiTPolicy
    from opensora_kedro.training.loop import _data_shard

    colossalai.launch_from_torch(verbose=False, backend="nccl" if gpu else "gloo")
    device = torch.device("cuda", rank) if gpu else torch.device("cpu")
    try:
        model = _model()
        reference = _model().to(device)
        # ZeRO needs half precision (a GPU); on a CPU only zero_stage 0 in fp32 runs.
        plugin = HybridParallelPlugin(
            tp_size=1, pp_size=1, sp_size=2, enable_sequence_parallelism=True,
            sequence_parallelism_mode="all_to_all", zero_stage=1 if gpu else 0,
            precision="bf16" if gpu else "fp32", custom_policy=MMDiTPolicy(),
            find_unused_parameters=True, enable_metadata_cache=False,
        )  # fmt: skip
        assert _data_shard(plugin, rank, 2) == (0, 1)  # both ranks are one sp group: same data
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        booster = Booster(plugin=plugin)
        boosted, optimizer, *_ = booster.boost(model, optimizer)
        inputs = {k: v.to(device) for k, v in _inputs((1, 6, 6)).items()}
        out, expected = boosted(**inputs), reference(**inputs)
        tolerance = 3e-2 * float(expected.abs().max()) if gpu else 1e-5
        torch.testing.assert_close(out.float(), expected, rtol=0, atol=tolerance)
        weights = torch.linspace(-1, 1, out.numel(), device=device).reshape(out.shape)
        booster.backward((out.float() * weights).sum(), optimizer)
        (expected * weights).sum().backward()
        if not gpu:  # ZeRO keeps gradients in its own store
            references = dict(reference.named_parameters())
            for name, param in boosted.unwrap().named_parameters():
                torch.testing.assert_close(param.grad, references[name].grad, msg=name)
        optimizer.step()
        _check_step(boosted.unwrap(), _model().to(device), reference)
    finally:
        dist.destroy_process_group()


def _check_step(stepped: torch.nn.Module, before: torch.nn.Module, reference) -> None:
    """Parameters moved, and alike on both sp ranks; in fp32 exactly as one SGD step."""
    pairs = list(zip(stepped.parameters(), before.parameters(), strict=True))
    flat = torch.cat([p.detach().float().flatten() for p, _ in pairs])
    start = torch.cat([q.detach().to(p.dtype).float().flatten() for p, q in pairs])
    assert torch.isfinite(flat).all() and not torch.equal(flat, start)
    other = flat.clone()
    dist.broadcast(other, src=0)
    torch.testing.assert_close(flat, other)
    if flat.device.type == "cpu":
        sgd = torch.cat([(p - 0.1 * p.grad).detach().flatten() for p in reference.parameters()])
        torch.testing.assert_close(flat, sgd, rtol=1e-4, atol=1e-6)


def test_hybrid_parallel_plugin_with_the_policy_on_cpu():
    mp.spawn(_plugin_worker, args=(free_port(), False), nprocs=2)


@pytest.mark.gpu
def test_hybrid_parallel_plugin_sp2_zero1_on_two_gpus():
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 GPUs")
    mp.spawn(_plugin_worker, args=(free_port(), True), nprocs=2)
