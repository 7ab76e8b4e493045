"""The shared training loop, in-process: training, checkpoints, exact resume."""

import json

import pytest

from opensora_kedro.runtime.launcher import JobSpec, launch
from opensora_kedro.runtime.params import LauncherParams
from tests.training import toy_job

PARAMS = {
    "seed": 3, "epochs": 100, "max_steps": 8, "accumulation_steps": 2, "grad_clip": 1.0,
    "log_every": 1, "ckpt_every": 2, "keep_n_latest": 3, "ema_decay": 0.9, "warmup_steps": 2,
    "dtype": "fp32", "plugin": "ddp", "plugin_config": {}, "num_workers": 0,
    "optim": {"cls": "HybridAdam", "lr": 1e-2, "eps": 1e-8, "weight_decay": 0.0,
              "adamw_mode": True, "betas": (0.9, 0.999)},
}  # fmt: skip
INPROCESS = LauncherParams(type="inprocess")


def _run(tmp_path, name, **params):
    spec = JobSpec[toy_job.ToyParams](
        entry=toy_job.run, params={**PARAMS, **params}, output_dir=str(tmp_path / name)
    )
    return launch(spec, INPROCESS)


def test_trains_logs_and_checkpoints(tmp_path):
    result = _run(tmp_path, "a")
    assert result["update_steps"] == 8
    losses = [entry["loss"] for entry in result["history"]]
    assert len(losses) == 8 and losses[-1] < losses[0]
    assert {"grad_norm", "lr", "samples_per_s", "memory_mib"} <= set(result["history"][0])
    assert {"tokens_per_s", "abs_error"} <= set(result["history"][0])  # the task's own parts
    checkpoints = sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir())
    assert checkpoints == ["step-00000004", "step-00000006", "step-00000008"]  # keep_n_latest 3
    assert result["checkpoint"].endswith("step-00000008")


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    whole = _run(tmp_path, "whole")
    _run(tmp_path, "parts", max_steps=4)  # stops after update 4 (a checkpoint)
    rest = _run(tmp_path, "parts")  # picks up at update 4 and goes on to 8
    assert [h["step"] for h in rest["history"]] == [5, 6, 7, 8]
    assert [h["loss"] for h in rest["history"]] == [h["loss"] for h in whole["history"][4:]]
    weights = [
        json.loads((tmp_path / name / "weights.json").read_text()) for name in ("whole", "parts")
    ]
    assert weights[0] == weights[1]


def test_resume_can_be_turned_off(tmp_path):
    _run(tmp_path, "a", max_steps=4)
    spec = JobSpec[toy_job.ToyParams](
        entry=toy_job.run, params={**PARAMS, "resume": False}, output_dir=str(tmp_path / "a")
    )
    result = launch(spec, INPROCESS)
    assert [h["step"] for h in result["history"]][0] == 1


def test_gpu_only_plugins_fail_clearly_on_cpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(RuntimeError, match="plugin 'zero2' needs a CUDA GPU"):
        _run(tmp_path, "z", plugin="zero2")
    with pytest.raises(RuntimeError, match="plugin 'hybrid' needs a CUDA GPU"):
        _run(tmp_path, "h", plugin="hybrid", plugin_config={"tp_size": 2, "zero_stage": 0})


def test_compile_compiles_the_model_in_place(tmp_path, monkeypatch):
    import torch

    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compiled.append(self))
    result = _run(tmp_path, "c", compile=True, max_steps=2)
    assert len(compiled) == 1 and result["update_steps"] == 2
    _run(tmp_path, "d", max_steps=2)
    assert len(compiled) == 1  # off by default


def _trainer(tmp_path, fingerprint, **params):
    from pathlib import Path

    from opensora_kedro.runtime.tracking import MetricsLogger
    from opensora_kedro.training.loop import Trainer
    from tests.training.toy_job import ToyParams, ToyTask

    settings = ToyParams(**{**PARAMS, **params})
    trainer = Trainer(ToyTask(settings), settings, Path(tmp_path),
                      MetricsLogger(None, None, "toy.", True))  # fmt: skip
    trainer.data_fingerprint = fingerprint
    return trainer


def test_a_resume_on_a_changed_training_table_stops_and_says_how_to_go_on(tmp_path):
    from opensora_kedro.runtime.distributed import process_group
    from opensora_kedro.training.checkpoint import TrainingDataChangedError

    with process_group():
        _trainer(tmp_path, "table-a", max_steps=2).fit()
        assert _trainer(tmp_path, "table-a").resume()  # the same table resumes
        with pytest.raises(TrainingDataChangedError) as error:
            _trainer(tmp_path, "table-b").resume()
        assert "resume=false" in str(error.value) and "force_resume=true" in str(error.value)
        assert _trainer(tmp_path, "table-b").resume(force=True)


def test_a_resume_into_another_model_stops_and_says_how_to_go_on(tmp_path):
    from opensora_kedro.runtime.distributed import process_group
    from opensora_kedro.training.checkpoint import CheckpointModelMismatchError

    with process_group():
        _trainer(tmp_path, "table", max_steps=2).fit()
        with pytest.raises(CheckpointModelMismatchError) as error:
            _trainer(tmp_path, "table", toy_hidden=32).resume()
    message = str(error.value)
    assert "step-00000002" in message and "0.weight (16, 8) -> (32, 8)" in message
    assert "resume=false" in message


def test_the_table_fingerprint_ignores_where_the_folder_lies_but_not_the_content():
    import pandas as pd

    from opensora_kedro.data.table_paths import table_fingerprint

    def table(root, frames=9):
        return pd.DataFrame({"path": [f"{root}/a.mp4", f"{root}/sub/b.mp4"],
                             "num_frames": [frames, 17], "text": ["x", "y"]})  # fmt: skip

    assert table_fingerprint(table("/data/v")) == table_fingerprint(table("/moved/elsewhere/v"))
    assert table_fingerprint(table("/data/v")) != table_fingerprint(table("/data/v", frames=5))
    assert table_fingerprint(table("/data/v")) != table_fingerprint(table("/data/v").iloc[::-1])


TOY_LORA = {"r": 2, "lora_alpha": 2, "lora_dropout": 0.0, "target_modules": ["0", "2"],
            "merge": False, "pretrained_dir": None}  # fmt: skip


def test_lora_trains_only_adapters_without_ema_and_resumes_exactly(tmp_path):
    from opensora_kedro.training.checkpoint import CheckpointManager

    whole = _run(tmp_path, "whole", lora=TOY_LORA)  # PARAMS asks for EMA: off under LoRA
    _run(tmp_path, "parts", lora=TOY_LORA, max_steps=4)
    rest = _run(tmp_path, "parts", lora=TOY_LORA)
    assert [h["loss"] for h in rest["history"]] == [h["loss"] for h in whole["history"][4:]]
    weights = [json.loads((tmp_path / n / "weights.json").read_text()) for n in ("whole", "parts")]
    assert weights[0] == weights[1]
    plain = json.loads((tmp_path / "whole" / "weights.json").read_text())
    bases = {k: v for k, v in plain.items() if "lora_" not in k}
    assert bases and any("lora_B" in k for k in plain)
    # the checkpoint keeps the adapters only (the base comes from the model's source again)
    state = CheckpointManager(tmp_path / "whole" / "checkpoints", 3).load(whole["checkpoint"])
    assert set(state) >= {"model", "optimizer"} and "ema" not in state
    assert state["model"] and all("lora_" in k for k in state["model"])
    _run(tmp_path, "one_step", lora=TOY_LORA, max_steps=1)
    initial = json.loads((tmp_path / "one_step" / "weights.json").read_text())
    assert {k: v for k, v in initial.items() if "lora_" not in k} == bases  # base frozen


BF16_HYBRID = {"plugin": "hybrid", "dtype": "bf16",
               "plugin_config": {"tp_size": 1, "pp_size": 1, "sp_size": 1, "zero_stage": 0}}  # fmt: skip


def _checkpoint(tmp_path, name, part, step=8):
    from safetensors.torch import load_file

    return load_file(
        str(tmp_path / name / "checkpoints" / f"step-{step:08d}" / f"{part}.safetensors")
    )


def test_mixed_precision_checkpoints_and_ema_hold_the_fp32_masters(tmp_path):
    import torch

    _run(tmp_path, "now", ema_decay=0.0, **BF16_HYBRID)  # decay 0: the EMA is the last weights
    model, ema = _checkpoint(tmp_path, "now", "model"), _checkpoint(tmp_path, "now", "ema")
    assert all(tensor.dtype == torch.float32 for tensor in model.values())
    assert model.keys() == ema.keys() and all(torch.equal(model[k], ema[k]) for k in model)
    rounded = {k: v.to(torch.bfloat16).float() for k, v in model.items()}
    assert any(not torch.equal(model[k], rounded[k]) for k in model)  # not the bf16 weights


def test_mixed_precision_resumes_exactly_from_the_masters(tmp_path):
    import torch

    whole = _run(tmp_path, "whole", **BF16_HYBRID)
    _run(tmp_path, "parts", **{**BF16_HYBRID, "max_steps": 4})
    rest = _run(tmp_path, "parts", **BF16_HYBRID)
    assert [h["loss"] for h in rest["history"]] == [h["loss"] for h in whole["history"][4:]]
    for part in ("model", "ema", "optimizer"):
        expected, got = _checkpoint(tmp_path, "whole", part), _checkpoint(tmp_path, "parts", part)
        assert all(torch.equal(expected[k], got[k]) for k in expected), part


def test_log_every_left_unset_draws_about_a_hundred_points():
    from tests.training.toy_job import ToyParams

    def interval(log_every, max_steps):
        return ToyParams(**{**PARAMS, "log_every": log_every, "max_steps": max_steps}).log_interval

    assert interval(None, 2000) == 20
    assert interval(None, 40) == 1
    assert interval(None, None) == 10
    assert interval(7, 2000) == 7
