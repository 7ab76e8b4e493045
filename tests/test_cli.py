"""The project's `kedro config` commands, through Kedro's own CLI entry point."""

import pytest
import torch
import yaml
from click.testing import CliRunner
from kedro.framework.cli.cli import KedroCLI
from kedro.framework.startup import bootstrap_project

from tests.conftest import PROJECT_ROOT


@pytest.fixture
def kedro(monkeypatch):
    monkeypatch.chdir(PROJECT_ROOT)
    bootstrap_project(PROJECT_ROOT)
    cli = KedroCLI(project_path=PROJECT_ROOT)

    def invoke(*args: str):
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)

    return invoke


def test_check_passes_on_every_shipped_env(kedro):
    result = kedro("config", "check")
    assert result.exit_code == 0, result.output
    assert {"base: ok", "local: ok", "cluster: ok", "gpu: ok"} <= {
        line.split(" (")[0] for line in result.output.splitlines()
    }


def test_check_fails_on_a_bad_env(kedro, tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    (conf / "base").mkdir(parents=True)
    (conf / "base" / "parameters.yml").write_text("demo_data: {num_clips: -1}\n")
    monkeypatch.setattr("kedro.framework.project.settings.CONF_SOURCE", str(conf))
    result = kedro("config", "check")
    assert result.exit_code == 1
    assert "demo_data.num_clips = -1" in result.output
    assert "demo_data.sizes" in result.output  # every issue, not just the first


def test_show_prints_the_resolved_stage(kedro):
    result = kedro(
        "config",
        "show",
        "diffusion_stage1_i2v",
        "--env",
        "base",
        "--params",
        "diffusion_image.seed=7",
    )
    assert result.exit_code == 0, result.output
    stage = yaml.safe_load(result.output)["diffusion_stage1_i2v"]
    assert stage["optim"]["lr"] == 1e-5 and stage["seed"] == 7 and stage["model"]["cond_embed"]
    assert stage["bucket_config"]["256px"][33] == [1.0, 12]


def test_show_a_pipeline_lists_the_groups_its_nodes_read(kedro):
    result = kedro("config", "show", "demo_data")
    assert result.exit_code == 0, result.output
    assert list(yaml.safe_load(result.output)) == ["demo_data"]


def test_show_reports_a_bad_override(kedro):
    result = kedro(
        "config", "show", "diffusion_stage1", "--params", "diffusion_stage1.optim.lr=abc"
    )
    assert result.exit_code == 1
    assert "diffusion_stage1.optim.lr = 'abc'" in result.output and "[--params]" in result.output


def test_diff_two_stages_and_two_envs(kedro):
    result = kedro("config", "diff", "diffusion_stage1", "diffusion_stage1_i2v", "--env", "base")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "~ optim.lr: 5e-05 -> 1e-05" in lines
    assert "~ model.cond_embed: False -> True" in lines
    assert "+ condition_config.i2v_head: 5.0" in lines
    envs = kedro("config", "diff", "local:diffusion_stage2", "cluster:diffusion_stage2")
    assert "~ plugin: 'ddp' -> 'hybrid'" in envs.output.splitlines()


def test_explain_names_the_file(kedro):
    result = kedro("config", "explain", "diffusion_stage2_i2v.optim.lr", "--env", "base")
    assert result.exit_code == 0, result.output
    assert "peak learning rate" in result.output
    assert "5e-05" in result.output
    assert (
        "conf/base/parameters_diffusion_stage2.yml (inherited from diffusion_stage2)"
        in result.output
    )


def test_run_with_an_unknown_env_names_the_envs_without_a_traceback(kedro):
    result = kedro("run", "--env", "locl")
    assert result.exit_code == 1
    assert (
        "unknown env 'locl'" in result.output and "envs: base, cluster, gpu, local" in result.output
    )
    assert "Traceback" not in result.output and "mlflow" not in result.output.lower()


def test_the_traceback_is_kept_on_request(kedro, monkeypatch):
    from opensora_kedro.config.errors import UnknownEnvError

    with pytest.raises(UnknownEnvError):
        kedro("run", "--env", "locl", "--verbose")
    monkeypatch.setenv("OPENSORA_KEDRO_TRACEBACK", "1")
    with pytest.raises(UnknownEnvError):
        kedro("run", "--env", "locl")


def test_run_checks_inputs_and_named_files_before_any_node(kedro, tmp_path):
    # the cluster env names ./ckpts weights and reads a training table: neither is here
    result = kedro("run", "--pipeline=diffusion_stage1", "--env=cluster",
                   "--params", f"diffusion_stage1.model.from_pretrained={tmp_path}/none.st")  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "problem(s) found before running in env 'cluster'" in result.output
    assert "catalog.training_table" in result.output
    assert (
        "diffusion_stage1.ae.from_pretrained = './ckpts/hunyuan_vae.safetensors'" in result.output
    )
    assert (
        "diffusion_stage1.model.from_pretrained" in result.output and "[--params]" in result.output
    )
    assert "Traceback" not in result.output


def test_check_reports_a_missing_raw_folder(kedro):
    result = kedro("config", "check", "--env", "cluster", "--pipeline", "data_processing")
    assert result.exit_code == 1
    assert "catalog.raw_videos = '/data/opensora/raw/videos': no such file or folder" in (
        result.output
    )


def test_check_names_the_file_and_line_of_a_duplicate_key(kedro, tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    (conf / "base").mkdir(parents=True)
    (conf / "base" / "parameters.yml").write_text("demo_data:\n  seed: 1\n  seed: 2\n")
    monkeypatch.setattr("kedro.framework.project.settings.CONF_SOURCE", str(conf))
    result = kedro("config", "check", "--env", "base")
    assert result.exit_code == 1
    assert f"{conf}/base/parameters.yml, line 3, column 3: " in result.output
    assert "found duplicate key seed" in result.output


def test_run_fails_at_once_while_another_run_holds_the_project(kedro):
    import subprocess
    import sys

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from opensora_kedro.runlock import RunLock; "
         "lock = RunLock(sys.argv[1]); lock.acquire('kedro run (test)'); print('held', flush=True); "
         "time.sleep(120)", str(PROJECT_ROOT)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        result = kedro("run", "--pipeline=demo_data")
        assert result.exit_code == 1
        assert "another kedro run is using this project" in result.output
        assert f"pid {holder.pid}" in result.output and "Traceback" not in result.output
    finally:
        holder.kill()
        holder.wait()


def test_check_passes_on_the_gpu_kit_env(kedro):
    result = kedro("config", "check")  # every env's parameters
    assert result.exit_code == 0, result.output
    assert "gpu: ok" in result.output
    # Checked to run here, on a machine without a GPU, it says what it would need.
    if not __import__("torch").cuda.is_available():
        here = kedro("config", "check", "--env", "gpu")
        assert here.exit_code == 1 and "ZeRO and model parallelism run only on CUDA" in here.output


def test_probe_dry_run_lists_the_buckets_by_tokens(kedro):
    result = kedro("opensora", "probe-batch-sizes", "--stage", "diffusion_stage1", "--env",
                   "base", "--dry-run")  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [
        line.split()
        for line in result.output.splitlines()
        if line.startswith(("256px", "768px", "1024px"))
    ]
    assert len(rows) == 35  # every bucket of Open-Sora's stage1.py
    assert rows[0][:2] == ["256px", "1f"] and rows[-1][:2] == ["256px", "129f"]
    assert rows[-1][-1] == "3"  # its configured batch
    tokens = [int(row[-2].replace(",", "")) for row in rows]
    assert tokens == sorted(tokens)


def test_probe_refuses_a_group_that_is_not_a_stage(kedro):
    result = CliRunner().invoke(
        KedroCLI(project_path=PROJECT_ROOT),
        ["opensora", "probe-batch-sizes", "--stage", "vae_training", "--dry-run"],
    )
    assert result.exit_code != 0
    assert "not a diffusion stage" in result.output


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="CPU behaviour")
def test_probe_without_a_gpu_says_so(kedro, tmp_path):
    result = kedro("opensora", "probe-batch-sizes", "--stage", "diffusion_stage1", "--out",
                   str(tmp_path))  # fmt: skip
    assert result.exit_code == 1
    assert "CUDA GPU" in result.output
    assert not any(tmp_path.iterdir())


def test_opensora_convert_writes_a_loadable_model_folder(kedro, tmp_path):
    import dataclasses

    from safetensors.torch import save_file

    from opensora_kedro.models.mmdit import MMDiTConfig
    from opensora_kedro.models.mmdit_loading import load_mmdit
    from opensora_kedro.models.params import MMDiTParams
    from tests.models.mmdit_reference import foreign_state

    config = MMDiTConfig(in_channels=16, vec_in_dim=8, context_in_dim=8, hidden_size=32,
                         num_heads=2, depth=1, depth_single_blocks=1, axes_dim=(4, 6, 6),
                         cond_embed=True)  # fmt: skip
    save_file(foreign_state(config, fused=True), str(tmp_path / "os.safetensors"))
    out = tmp_path / "converted"
    result = kedro("opensora", "convert", str(tmp_path / "os.safetensors"), str(out),
                   "--axes-dim", "4,6,6", "--dtype", "bf16")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "cond_embed True" in result.output
    structure = {k: v for k, v in dataclasses.asdict(config).items() if k != "grad_ckpt_settings"}
    params = MMDiTParams(**structure, from_pretrained=str(out), strict_load=True)
    model = load_mmdit(params, dtype=torch.bfloat16)
    assert model.cond_in.weight.dtype == torch.bfloat16
    # a wrong structure is refused with the keys named, and nothing else happens
    bad = kedro("opensora", "convert", str(tmp_path / "os.safetensors"), str(tmp_path / "b"))
    assert bad.exit_code == 1 and "axes_dim" in bad.output


def test_show_as_json_with_frame_counts_in_numeric_order(kedro):
    import json

    result = kedro("config", "show", "diffusion_stage1", "--env", "base", "--format", "json")
    assert result.exit_code == 0, result.output
    frames = list(json.loads(result.output)["diffusion_stage1"]["bucket_config"]["256px"])
    assert frames == sorted(frames, key=int) and frames[:3] == ["1", "5", "9"]


def test_diff_lists_frame_counts_in_numeric_order(kedro):
    result = kedro("config", "diff", "diffusion_stage1", "diffusion_stage2", "--env", "base")
    keys = [line.split(":")[0].split(" ")[1] for line in result.output.splitlines()]
    frames = [int(k.split(".")[2]) for k in keys if k.startswith("bucket_config.256px.")]
    assert len(frames) > 3 and frames == sorted(frames)


def test_show_writes_only_yaml_to_stdout(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    kedro = str(Path(sys.executable).parent / "kedro")
    result = subprocess.run([kedro, "config", "show", "diffusion_stage1"], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"})  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert list(yaml.safe_load(result.stdout)) == ["diffusion_stage1", "launcher"]
    assert "INFO" in result.stderr and "WARNING" not in result.stderr  # no warning noise
    assert all(len(line) < 400 for line in result.stderr.splitlines())
