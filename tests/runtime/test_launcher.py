"""Jobs on workers started by ColossalAI's launcher (2 CPU processes, gloo, the ddp plugin)."""

import os

import pytest

from opensora_kedro.runtime.launcher import JobSpec, entry_point, launch, resolve_entry
from opensora_kedro.runtime.params import LauncherParams
from tests.conftest import PROJECT_ROOT
from tests.training import toy_job
from tests.training.test_loop import PARAMS

LAUNCHER = LauncherParams(type="colossalai", nproc_per_node=2, rdzv_timeout_s=120)


@pytest.fixture(autouse=True)
def importable_tests(monkeypatch):
    # The workers import the toy job from this test package.
    monkeypatch.setenv(
        "PYTHONPATH", f"{PROJECT_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    )


def _spec(tmp_path, **params):
    return JobSpec[toy_job.ToyParams](
        entry=toy_job.run, params={**PARAMS, **params}, output_dir=str(tmp_path)
    )


def test_workers_get_only_variables_bash_can_export():
    import sys
    from pathlib import Path

    from opensora_kedro.runtime.launcher import worker_env

    env = worker_env({"HOME": "/h", "-*-command-variables-*-": "ARGS=-q", "PATH": "/usr/bin"})
    assert set(env) == {"HOME", "PATH", "PYTHONUNBUFFERED"}
    assert env["PATH"].split(os.pathsep) == [str(Path(sys.executable).parent), "/usr/bin"]


@pytest.mark.slow
def test_two_workers_train_checkpoint_and_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("-*-command-variables-*-", "ARGS=-q")  # what `make test ARGS=...` sets
    first = launch(_spec(tmp_path, max_steps=4), LAUNCHER)
    assert first["update_steps"] == 4 and first["checkpoint"].endswith("step-00000004")
    second = launch(_spec(tmp_path, max_steps=6), LAUNCHER)
    assert [entry["step"] for entry in second["history"]] == [5, 6]
    assert second["checkpoint"].endswith("step-00000006")


@pytest.mark.slow
def test_workers_resolve_auto_values_themselves(tmp_path):
    # As if launched from a bf16 GPU machine: the CPU workers settle on fp32 between them.
    spec = _spec(tmp_path, max_steps=1, dtype="bf16", auto_on_workers=["dtype"])
    assert launch(spec, LAUNCHER)["dtype"] == "fp32"


@pytest.mark.slow
def test_lora_through_the_boosters_enable_lora_with_ddp(tmp_path):
    from tests.training.test_loop import TOY_LORA

    result = launch(_spec(tmp_path, lora=TOY_LORA, max_steps=2, ckpt_every=2), LAUNCHER)
    assert result["update_steps"] == 2
    weights = (tmp_path / "weights.json").read_text()
    assert "base_model.model.0.lora_A" in weights  # a peft model inside TorchDDPPlugin's wrapper


@pytest.mark.slow
def test_hybrid_plugin_as_data_parallelism_on_cpu(tmp_path):
    config = {"tp_size": 1, "pp_size": 1, "sp_size": 1, "zero_stage": 0}
    result = launch(_spec(tmp_path, plugin="hybrid", plugin_config=config, max_steps=3), LAUNCHER)
    assert result["update_steps"] == 3 and result["checkpoint"].endswith("step-00000003")


@pytest.mark.slow
def test_a_failing_worker_fails_with_its_own_error(tmp_path):
    with pytest.raises(RuntimeError) as error:
        launch(_spec(tmp_path, fail_at_loss=True), LAUNCHER)
    message = str(error.value)
    assert "the toy task was told to fail" in message and "error-rank" in message
    assert "export " not in message  # colossalai's dump of the environment stays out


@pytest.mark.slow
def test_a_stuck_rendezvous_times_out_naming_the_setting(tmp_path):
    waiting = LAUNCHER.model_copy(
        update={"nproc_per_node": 1, "nnodes": 2, "rdzv_timeout_s": 8, "master_port": 29731}
    )
    with pytest.raises(TimeoutError, match=r"launcher.rdzv_timeout_s=8"):
        launch(_spec(tmp_path), waiting)


@pytest.mark.gpu
@pytest.mark.parametrize(
    "plugin, config",
    [("zero2", {"reduce_bucket_size_in_m": 128}),
     ("hybrid", {"tp_size": 1, "pp_size": 1, "sp_size": 1, "zero_stage": 2})],
)  # fmt: skip
def test_gpu_plugins_train_and_resume(tmp_path, plugin, config):
    import torch

    gpus = min(torch.cuda.device_count(), 2)
    launcher = LAUNCHER.model_copy(update={"nproc_per_node": gpus})
    params = dict(plugin=plugin, plugin_config=config, dtype="bf16", max_steps=4)
    first = launch(_spec(tmp_path, **params), launcher)
    assert first["update_steps"] == 4
    second = launch(_spec(tmp_path, **{**params, "max_steps": 6}), launcher)
    assert [entry["step"] for entry in second["history"]] == [5, 6]
    from safetensors.torch import load_file

    saved = tmp_path / "checkpoints" / "step-00000006"
    model, ema = (load_file(str(saved / f"{part}.safetensors")) for part in ("model", "ema"))
    assert all(t.dtype == torch.float32 for t in model.values())  # ZeRO's masters, gathered
    assert model.keys() == ema.keys()


def test_an_entry_point_is_checked_to_lead_back_to_its_function():
    assert entry_point(toy_job.run) == "tests.training.toy_job:run"
    assert resolve_entry(entry_point(toy_job.run)) is toy_job.run

    def nested(spec):  # a worker could not import it
        return {}

    with pytest.raises(ValueError, match="module-level function"):
        entry_point(nested)


def test_a_spec_holds_the_parameters_its_entry_declares_and_crosses_as_json(tmp_path):
    from pydantic import ValidationError

    from opensora_kedro.runtime.launcher import make_job_spec, read_spec
    from opensora_kedro.runtime.params import LauncherParams as NotToyParams

    spec = make_job_spec(toy_job.run, toy_job.ToyParams(**PARAMS), str(tmp_path), {"x": "y"})
    again = read_spec(spec.model_dump_json())
    assert again.entry is toy_job.run and isinstance(again.params, toy_job.ToyParams)
    assert again.params == spec.params and again.inputs == {"x": "y"}
    with pytest.raises(ValidationError, match="ToyParams"):  # refused here, not on a worker
        make_job_spec(toy_job.run, NotToyParams(), str(tmp_path), {})
