"""Distributed training state on 2 CPU processes: the hybrid plugin's sequence parallelism
(sp=2, our MMDiT policy) leaves the same checkpoint and export as one process."""

import os

import pytest
import torch
from safetensors.torch import load_file

from opensora_kedro.data.holdout import split_holdout
from opensora_kedro.datasets.handover import HandoverTableDataset
from opensora_kedro.runtime.launcher import launch, make_job_spec
from opensora_kedro.runtime.params import LauncherParams
from opensora_kedro.training import diffusion_job

STAGE = "diffusion_stage1"
ONE = LauncherParams(type="inprocess")
TWO = LauncherParams(
    type="colossalai", nproc_per_node=2, nnodes=1, node_rank=0, hostfile=None,
    master_addr="127.0.0.1", master_port=29500, rdzv_timeout_s=120, backend="gloo",
)  # fmt: skip
SP2 = {"tp_size": 1, "pp_size": 1, "sp_size": 2, "zero_stage": 0,
       "enable_sequence_parallelism": True, "sequence_parallelism_mode": "all_to_all"}  # fmt: skip


def _train(chain, name: str, launcher: LauncherParams, **params) -> dict:
    world = {"launcher": {"type": launcher.type, "nproc_per_node": launcher.nproc_per_node}}
    # No cosine decay: its length is max_steps, which the interrupted run shortens.
    settings = {"max_steps": 3, "ckpt_every": 1, "use_cosine_scheduler": False, **params}
    stage = chain.params({STAGE: settings, **world})[STAGE]
    train, _ = split_holdout(chain.table, stage.eval.holdout_fraction)
    table = chain.root / f"{name}_job_table.parquet"  # as the stage's hand-over node writes it
    HandoverTableDataset(str(table)).save(train)
    inputs = {"training_table": str(table), "text_embeddings": str(chain.root / "text_embeddings"),
              "vae_model": str(chain.root / "vae")}  # fmt: skip
    spec = make_job_spec(diffusion_job.run, stage, str(chain.root / name), inputs, name=STAGE)
    return launch(spec, launcher)


@pytest.mark.slow
def test_sequence_parallel_training_saves_resumes_and_exports_the_whole_model(chain):
    whole = _train(chain, "sp_one", ONE)
    _train(chain, "sp_two", TWO, plugin="hybrid", plugin_config=SP2, max_steps=2)
    # resumes at 2; rank 0 draws samples at 3 alone (the model's sp group is set aside)
    samples = {"every": 3, "count": 1, "num_steps": 1}
    split = _train(chain, "sp_two", TWO, plugin="hybrid", plugin_config=SP2, samples=samples)
    assert [h["step"] for h in split["history"]] == [3]
    assert (chain.root / "sp_two" / "samples" / "step-00000003" / "samples.png").is_file()
    for kind in ("export", "checkpoint"):
        name = "model.safetensors"
        expected = load_file(os.path.join(whole[kind], name))
        got = load_file(os.path.join(split[kind], name))
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            torch.testing.assert_close(got[key], value, rtol=1e-4, atol=1e-5, msg=f"{kind} {key}")
    torch.testing.assert_close(split["history"][0]["loss"], whole["history"][2]["loss"],
                               rtol=1e-4, atol=1e-6)  # fmt: skip
