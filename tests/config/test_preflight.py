"""Checks before a run: inputs that must exist, parameter-named files, the machine."""

from pathlib import Path

import pytest

from opensora_kedro.config.hardware import Hardware
from opensora_kedro.config.preflight import (
    DatasetInput,
    dataset_issues,
    machine_issues,
    parameter_path_issues,
)
from opensora_kedro.config.resolve import resolve_parameters
from tests.config.conftest import CPU, project_layers

GPUS_2 = Hardware(gpu_count=2, gpu_memory_gib=80.0, bf16=True)


def _resolved(env, params=None, hardware=CPU):
    return resolve_parameters(project_layers(env, params), hardware)


def test_missing_catalog_inputs_are_named_unless_optional_or_produced(tmp_path):
    inputs = [
        DatasetInput("raw_videos", str(tmp_path / "raw"), exists=False),
        DatasetInput("previous", str(tmp_path / "prev.parquet"), False, loads_when_missing=True),
        DatasetInput("vae_model", str(tmp_path / "models/vae"), exists=False),
        DatasetInput("table", str(tmp_path / "t.parquet"), exists=True),
    ]
    issues = dataset_issues(inputs, produced=[tmp_path / "models"])
    assert [issue.key for issue in issues] == ["catalog.raw_videos"]


def test_weights_named_by_parameters_must_exist(tmp_path):
    resolved = _resolved("cluster")
    issues = parameter_path_issues(resolved.models, ["diffusion_stage1"], resolved.sources,
                                   base_dir=tmp_path)  # fmt: skip
    assert [(i.key, i.value) for i in issues] == [
        ("diffusion_stage1.ae.from_pretrained", "./ckpts/hunyuan_vae.safetensors")
    ]  # the stage's t5 / clip are not loaded by training: not required
    assert issues[0].source.startswith("conf/cluster/parameters_diffusion_image.yml")
    (tmp_path / "ckpts").mkdir()
    (tmp_path / "ckpts/hunyuan_vae.safetensors").write_bytes(b"")
    assert not parameter_path_issues(resolved.models, ["diffusion_stage1"], resolved.sources,
                                     base_dir=tmp_path)  # fmt: skip


def test_a_path_a_node_of_the_run_writes_is_not_required(tmp_path):
    resolved = _resolved("local")
    groups = ["diffusion_stage1", "inference"]
    missing = parameter_path_issues(resolved.models, groups, resolved.sources, [], tmp_path)
    assert "diffusion_stage1.ae.from_pretrained" in [i.key for i in missing]
    produced = [tmp_path / "data/06_models"]
    assert not parameter_path_issues(resolved.models, groups, resolved.sources, produced, tmp_path)


def test_a_prompt_csv_given_with_params_must_exist(tmp_path):
    resolved = _resolved("local", {"inference": {"prompt_csv": "prompts.csv"}})
    produced = [tmp_path / "data"]
    issues = parameter_path_issues(resolved.models, ["inference"], resolved.sources, produced,
                                   tmp_path)  # fmt: skip
    assert [(i.key, i.source) for i in issues] == [("inference.prompt_csv", "--params")]


def test_curation_models_must_exist_when_their_stage_is_on(tmp_path):
    on = {"data_processing": {"captioning": {"enabled": True, "model": "models/vlm"},
                              "dedup": {"enabled": True, "method": "clip", "clip_model": "models/clip"}}}  # fmt: skip
    resolved = _resolved("local", on)
    issues = parameter_path_issues(resolved.models, ["data_processing"], resolved.sources,
                                   [tmp_path / "data"], tmp_path)  # fmt: skip
    assert sorted(i.key for i in issues) == [
        "data_processing.captioning.model", "data_processing.dedup.clip_model"]  # fmt: skip
    # conf/local builds its tiny quality models; the cluster env names real ones
    cluster = _resolved("cluster")
    issues = parameter_path_issues(cluster.models, ["data_processing"], cluster.sources,
                                   [], tmp_path)  # fmt: skip
    assert sorted(i.key for i in issues) == [
        "data_processing.quality.aesthetic_head", "data_processing.quality.clip_model"]  # fmt: skip


def test_the_cluster_env_on_a_machine_without_gpus():
    resolved = _resolved("cluster")
    issues = machine_issues(resolved.models, ["diffusion_stage1", "launcher"], CPU,
                            resolved.sources)  # fmt: skip
    rules = {issue.key: issue.rule for issue in issues}
    assert "run only on CUDA GPUs" in rules["diffusion_stage1.plugin"]
    assert "this machine has no GPU" in rules["launcher.nproc_per_node"]
    assert not machine_issues(resolved.models, ["diffusion_stage1"], CPU, resolved.sources)


def test_more_workers_than_gpus_and_nccl_without_gpus():
    resolved = _resolved("cluster", {"launcher": {"nproc_per_node": 8}})
    issues = machine_issues(resolved.models, ["launcher"], GPUS_2, resolved.sources)
    assert [(i.key, i.source) for i in issues] == [("launcher.nproc_per_node", "--params")]
    assert "has 2 GPU(s)" in issues[0].rule
    nccl = _resolved("cluster", {"launcher": {"backend": "nccl"}})
    keys = [i.key for i in machine_issues(nccl.models, ["launcher"], CPU, nccl.sources)]
    assert "launcher.backend" in keys


def test_gloo_runs_cpu_workers_on_purpose():
    params = {"launcher": {"backend": "gloo"},
              "diffusion_stage1": {"plugin": "ddp"}}  # fmt: skip
    resolved = _resolved("cluster", params)
    assert not machine_issues(resolved.models, ["launcher", "diffusion_stage1"], CPU,
                              resolved.sources)  # fmt: skip


@pytest.mark.skipif(Path("/dev/nvidia0").exists(), reason="checks a machine without CUDA")
def test_backend_nccl_fails_clearly_on_a_cpu_worker():
    from opensora_kedro.runtime.compat import use_backend

    with pytest.raises(RuntimeError, match="nccl, which needs CUDA GPUs"):
        use_backend("nccl")
