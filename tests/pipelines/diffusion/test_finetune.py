"""diffusion_finetune end to end on the tiny chain: LoRA from a trained stage's weights,
adapters exported beside the base weights, resumed, merged, and loaded for inference."""

import torch
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from safetensors.torch import load_file

from opensora_kedro.datasets.embedding_cache import EmbeddingCacheDataset
from opensora_kedro.datasets.handover import HandoverTableDataset
from opensora_kedro.datasets.model_dir import ModelDirDataset
from opensora_kedro.datasets.run_dir import RunDirectoryDataset
from opensora_kedro.models.mmdit_loading import load_mmdit
from opensora_kedro.models.params import MMDiTParams
from opensora_kedro.pipelines.diffusion_stage import stage_pipeline
from tests.pipelines.conftest import INPROCESS

STAGE = "diffusion_finetune"


def _run(chain, **lora):
    root = chain.root
    overrides = {STAGE: {
        "max_steps": 2, "ckpt_every": 2, "log_every": 1, "eval": {"holdout_fraction": 0.3},
        "ae": {"from_pretrained": str(root / "vae")},
        "dataset": {"latent_cache_dir": str(root / "latents")},
        "bucket_config": {"_delete_": True, "96px": {1: [1.0, 2], 9: [1.0, 2]}},
        "model": {"from_pretrained": str(root / "diffusion_stage1")}, "lora": lora,
    }}  # fmt: skip
    params = chain.params(overrides)[STAGE]
    catalog = DataCatalog({
        "training_table": MemoryDataset(chain.table),
        "text_embeddings": EmbeddingCacheDataset(str(root / "text_embeddings")),
        "vae_model": ModelDirDataset(str(root / "vae")),
        "params:launcher": MemoryDataset(INPROCESS),
        f"params:{STAGE}": MemoryDataset(params),
        f"{STAGE}.job_table": HandoverTableDataset(str(chain.job_table(STAGE))),
        f"{STAGE}.run_dir": RunDirectoryDataset(str(root / f"{STAGE}_training")),
        f"{STAGE}.model": ModelDirDataset(str(root / STAGE)),
    })  # fmt: skip
    SequentialRunner().run(stage_pipeline(STAGE), catalog)
    return params


def _sample_inputs(model: MMDiTParams):
    g = torch.Generator().manual_seed(0)
    channels = model.in_channels // model.patch_size**2  # conf/local's latent channels
    return (torch.randn(1, channels, 1, 4, 4, generator=g), torch.randn(1, 3, 64, generator=g),
            torch.randn(1, 64, generator=g), torch.rand(1, generator=g))  # fmt: skip


def test_finetune_trains_adapters_on_the_pretrained_weights(trained_chain):
    root = trained_chain.root
    params = _run(trained_chain)
    assert params.ema_decay is None and params.lora.r == 4
    folder = root / STAGE
    assert (folder / "lora" / "adapter_model.safetensors").is_file()
    base, parent = (
        load_file(str(folder / "model.safetensors")),
        load_file(str(root / "diffusion_stage1" / "model.safetensors")),
    )
    assert all(torch.equal(base[k], v) for k, v in parent.items())  # only adapters trained
    assert base["cond_in.weight"].abs().sum() == 0  # stage1 had none: zero, and not a target
    adapters = load_file(str(folder / "lora" / "adapter_model.safetensors"))
    assert any(v.abs().sum() > 0 for k, v in adapters.items() if "lora_B" in k)
    checkpoint = root / f"{STAGE}_training" / "checkpoints" / "step-00000002"
    assert all("lora_" in k for k in load_file(str(checkpoint / "model.safetensors")))

    model_params = params.model.model_copy(update={"from_pretrained": str(folder)})
    with torch.no_grad():
        tuned = load_mmdit(model_params)(
            *_sample_inputs(model_params)
        )  # base + lora/, as inference loads
        plain = load_mmdit(
            model_params.model_copy(update={"from_pretrained": str(folder / "model.safetensors")})
        )
        assert (tuned - plain(*_sample_inputs(model_params))).abs().max() > 0

    # again with merge: resumes at the last checkpoint (nothing left to train), exports merged
    _run(trained_chain, merge=True)
    assert not (folder / "lora").exists()
    with torch.no_grad():
        merged = load_mmdit(model_params)(*_sample_inputs(model_params))
    torch.testing.assert_close(merged, tuned, atol=1e-6, rtol=1e-5)
