"""Resolution of the shipped configs: Open-Sora's values after inheritance, envs and --params."""

import pytest

from opensora_kedro.config.errors import ConfigError
from opensora_kedro.config.hardware import Hardware
from opensora_kedro.config.resolve import resolve_parameters
from tests.config.conftest import CPU, project_layers
from tests.training.test_loop import PARAMS
from tests.training.toy_job import ToyParams


def _frames(start, stop, entry):
    return {t: entry for t in range(start, stop + 1, 4)}


@pytest.fixture(scope="module")
def base(base_layers):
    return resolve_parameters(base_layers, CPU).params


def test_stage1_equals_open_sora(base):
    stage = base["diffusion_stage1"]
    assert stage["bucket_config"] == {
        "256px": {1: (1.0, 45), **_frames(5, 33, (1.0, 12)), **_frames(37, 65, (1.0, 6)),
                  **_frames(69, 97, (1.0, 4)), **_frames(101, 129, (1.0, 3))},
        "768px": {1: (0.5, 13)},
        "1024px": {1: (0.5, 7)},
    }  # fmt: skip
    assert stage["optim"]["lr"] == 5e-5 and stage["optim"]["eps"] == 1e-15
    assert stage["grad_ckpt_settings"] == (8, 100)
    assert (stage["plugin"], stage["plugin_config"]["reduce_bucket_size_in_m"]) == ("zero2", 128)
    assert (stage["ckpt_every"], stage["keep_n_latest"]) == (2000, 20)
    assert stage["model"]["hidden_size"] == 3072
    assert stage["condition_config"] is None


def test_stage2_equals_open_sora(base):
    stage = base["diffusion_stage2"]
    assert stage["bucket_config"]["256px"] == {
        1: (1.0, 130), **_frames(5, 33, (1.0, 14)), **_frames(37, 65, (1.0, 10)),
        **_frames(73, 97, (1.0, 7)), **_frames(101, 129, (1.0, 6)),
    }  # fmt: skip
    assert 69 not in stage["bucket_config"]["256px"]
    assert stage["bucket_config"]["768px"] == {
        1: (1.0, 38), **_frames(5, 33, (1.0, 6)), **_frames(37, 65, (1.0, 4)),
        **_frames(69, 97, (1.0, 3)), **_frames(101, 129, (1.0, 2)),
    }  # fmt: skip
    assert set(stage["bucket_config"]) == {"256px", "768px"}  # _delete_ dropped 1024px
    config = stage["plugin_config"]
    assert stage["plugin"] == "hybrid" and stage["grad_ckpt_settings"] == (100, 100)
    assert (config["sp_size"], config["tp_size"], config["pp_size"], config["zero_stage"]) == (
        4,
        1,
        1,
        2,
    )
    assert config["sequence_parallelism_mode"] == "ring_attn" and config["static_graph"]
    assert config["reduce_bucket_size_in_m"] == 128  # merged from image
    assert stage["optim"]["lr"] == 5e-5 and (stage["ckpt_every"], stage["keep_n_latest"]) == (
        200,
        20,
    )


def test_i2v_stages_equal_open_sora(base):
    conditions = {"t2v": 1, "i2v_head": 5, "i2v_loop": 1, "i2v_tail": 1}
    stage1, stage2 = base["diffusion_stage1_i2v"], base["diffusion_stage2_i2v"]
    assert stage1["model"]["cond_embed"] and stage2["model"]["cond_embed"]
    assert stage1["condition_config"] == conditions == stage2["condition_config"]
    assert stage1["optim"]["lr"] == 1e-5
    assert stage2["optim"]["lr"] == 5e-5  # inherited from stage2
    assert stage1["bucket_config"] == base["diffusion_stage1"]["bucket_config"]
    assert stage2["bucket_config"]["256px"][1] == (1.0, 195)
    assert stage2["bucket_config"]["768px"] == {
        1: (0.5, 38), **_frames(5, 33, (0.5, 10)), **_frames(37, 65, (0.5, 5)),
        **_frames(69, 97, (0.5, 3)), **_frames(101, 129, (0.5, 2)),
    }  # fmt: skip
    assert stage2["plugin_config"]["sp_size"] == 4


def test_inference_presets(base):
    assert base["inference_768px"]["sampling_option"]["resolution"] == "768px"
    assert base["inference_768px"]["sampling_option"]["num_frames"] == 129  # from 256px
    assert base["inference_768px"]["plugin_config"]["sp_size"] == 8
    assert base["inference_t2i2v_256px"]["use_t2i2v"] and base["inference_t2i2v_256px"]["img_flux"]
    assert base["inference"]["sampling_option"] == base["inference_256px"]["sampling_option"]
    assert base["vae_training"]["optim"]["betas"] == (0.9, 0.98)


def test_a_command_line_motion_score_may_be_a_number():
    # `--params inference.motion_score=0` arrives as an int; Open-Sora takes either
    params = resolve_parameters(project_layers("local", {"inference": {"motion_score": 0}}), CPU)
    assert params.params["inference"]["motion_score"] == 0


def test_sources_name_the_file_and_inheritance(local_layers):
    resolved = resolve_parameters(local_layers, CPU)
    sources = resolved.sources
    assert (
        sources[("diffusion_stage1", "optim", "lr")] == "conf/local/parameters_diffusion_stage1.yml"
    )
    assert sources[("diffusion_stage2_i2v", "optim", "eps")] == (
        "conf/base/parameters_diffusion_image.yml (inherited from diffusion_image)"
    )


def test_parent_override_reaches_children_that_do_not_set_the_key():
    params = {"diffusion_image": {"grad_clip": 0.7, "optim": {"lr": 0.5}}}
    resolved = resolve_parameters(project_layers("local", params), CPU).params
    assert all(resolved[f"diffusion_{s}"]["grad_clip"] == 0.7 for s in ("stage1", "stage2_i2v"))
    assert resolved["diffusion_image"]["optim"]["lr"] == 0.5
    assert resolved["diffusion_stage1"]["optim"]["lr"] == 1e-3  # the child sets its own


@pytest.mark.parametrize("env", ["base", "local", "cluster"])
def test_nested_override_keeps_siblings_in_every_env(env):
    params = {"diffusion_stage1": {"optim": {"lr": 1e-4}}}
    resolved = resolve_parameters(project_layers(env, params), CPU).params
    plain = resolve_parameters(project_layers(env), CPU).params
    assert resolved["diffusion_stage1"]["optim"]["lr"] == 1e-4
    assert resolved["diffusion_stage1"]["optim"]["eps"] == plain["diffusion_stage1"]["optim"]["eps"]
    assert (
        resolved["diffusion_stage1"]["bucket_config"] == plain["diffusion_stage1"]["bucket_config"]
    )
    assert (
        resolved["diffusion_stage1_i2v"]["optim"]["lr"]
        == plain["diffusion_stage1_i2v"]["optim"]["lr"]
    )


def test_override_type_error_names_the_key_and_params():
    with pytest.raises(ConfigError) as error:
        resolve_parameters(
            project_layers("local", {"diffusion_stage1": {"optim": {"lr": "fast"}}}), CPU
        )
    assert "diffusion_stage1.optim.lr = 'fast'" in str(error.value)
    assert "[--params]" in str(error.value)


def test_auto_values_follow_the_hardware(local_layers):
    cpu = resolve_parameters(local_layers, CPU).params["diffusion_stage1"]
    assert (cpu["dtype"], cpu["grad_checkpoint"], cpu["batch_size_scale"]) == ("fp32", False, 1.0)
    h100 = Hardware(gpu_count=8, gpu_memory_gib=80.0, bf16=True)
    gpu = resolve_parameters(local_layers, h100).params["diffusion_stage1"]
    assert (gpu["dtype"], gpu["grad_checkpoint"], gpu["batch_size_scale"]) == ("bf16", True, 0.571)


def test_a_group_level_delete_in_an_env_replaces_the_inherited_group():
    layers = [
        ("base.yml", {"a": {"x": {"k": 1}, "z": 1}, "b": {"extends": "a", "y": 2}}),
        ("local.yml", {"b": {"_delete_": True, "extends": "a", "w": 3}}),
    ]
    from opensora_kedro.config.inheritance import resolve_inheritance
    from opensora_kedro.config.resolve import _merge_layers

    merged, sources, raw, _ = _merge_layers(layers)
    resolved, issues, _ = resolve_inheritance(merged, raw, sources)
    assert not issues
    assert resolved["b"] == {"x": {"k": 1}, "z": 1, "w": 3, "extends": "a"}  # b's own y is gone


def test_a_params_key_inside_a_dict_from_a_file_is_attributed_to_params():
    params = {"vae_training": {"model": {"config": {"latent_channel": 4}}}}
    with pytest.raises(ConfigError) as error:
        resolve_parameters(project_layers("local", params), CPU)
    (issue,) = error.value.issues
    assert issue.key == "vae_training.model.config.latent_channel" and issue.source == "--params"


def test_a_params_value_replaces_its_alternative_from_a_file():
    # conf/local sets inference.prompt; the README's --params prompt_csv must win, not vanish
    layers = project_layers("local", {"inference": {"prompt_csv": "prompts.csv"}})
    resolved = resolve_parameters(layers, CPU)
    assert resolved.params["inference"]["prompt_csv"] == "prompts.csv"
    assert resolved.params["inference"]["prompt"] is None
    assert resolved.sources[("inference", "prompt")].startswith("--params (cleared by")
    again = resolve_parameters(project_layers("local", {"inference": {"prompt": "a cat"}}), CPU)
    assert again.params["inference"]["prompt"] == "a cat"


def test_alternatives_both_given_with_params_are_an_error():
    params = {"inference": {"prompt": "a cat", "prompt_csv": "prompts.csv"}}
    with pytest.raises(ConfigError, match="are both set: set only one"):
        resolve_parameters(project_layers("local", params), CPU)


def test_a_params_value_the_code_would_ignore_is_an_error():
    params = {"vae_training": {"model": {"from_pretrained": "weights.safetensors"}}}
    with pytest.raises(ConfigError) as error:
        resolve_parameters(project_layers("local", params), CPU)
    (issue,) = error.value.issues
    assert issue.key == "vae_training.model.from_pretrained" and issue.source == "--params"
    assert "has no effect: from_scratch is true" in issue.rule
    # the same value stated with from_scratch off is taken
    params["vae_training"]["model"]["from_scratch"] = False
    resolved = resolve_parameters(project_layers("local", params), CPU).params
    assert resolved["vae_training"]["model"]["from_pretrained"] == "weights.safetensors"


def test_a_string_delete_marker_does_not_delete():
    layers = [
        ("base.yml", {"diffusion_image": {"x": 1}}),
        ("local.yml", {"diffusion_image": {"_delete_": "false", "y": 2}}),
    ]
    from opensora_kedro.config.resolve import _merge_layers

    merged, _, _, issues = _merge_layers(layers)
    assert merged["diffusion_image"] == {"x": 1, "y": 2}
    assert [(i.key, i.value) for i in issues] == [("diffusion_image._delete_", "false")]


def test_resume_can_be_switched_off_for_a_diffusion_stage(tmp_path):
    from opensora_kedro.runtime.launcher import make_job_spec, read_spec
    from opensora_kedro.training import diffusion_job

    params = {"diffusion_stage1": {"resume": False}}
    resolved = resolve_parameters(project_layers("local", params), CPU).models
    assert resolved["diffusion_stage1"].resume is False
    assert resolved["diffusion_stage2"].resume is True  # a sibling keeps the default
    spec = make_job_spec(diffusion_job.run, resolved["diffusion_stage1"], str(tmp_path), {})
    # What the training loop reads to start afresh, as the workers read it.
    assert read_spec(spec.model_dump_json()).params.resume is False


def test_auto_values_are_summed_up_and_marked_for_the_workers(local_layers, caplog):
    with caplog.at_level("INFO", logger="opensora_kedro.config.hardware"):
        params = resolve_parameters(local_layers, CPU)
    lines = [r.getMessage() for r in caplog.records if r.name == "opensora_kedro.config.hardware"]
    assert len(lines) == 1 and lines[0].startswith("auto on cpu: dtype='fp32' (")
    stage = params.models["diffusion_stage1"]
    assert stage.dtype == "fp32"
    assert stage.auto_on_workers == ["dtype", "grad_checkpoint", "batch_size_scale"]
    assert params.models["inference"].auto_on_workers == ["dtype"]
    assert params.params["diffusion_stage1"]["auto_on_workers"] == stage.auto_on_workers
    assert "auto_on_workers" not in params.params["text_embedding"]  # runs in the Kedro process


def test_workers_resolve_auto_for_the_hardware_they_share(caplog):
    from opensora_kedro.config.hardware import agree, resolve_on_workers

    big, small = Hardware(8, 140.0, True), Hardware(8, 70.0, True)
    shared = agree([big, small])
    assert shared == Hardware(8, 70.0, True)
    group = ToyParams(
        **PARAMS, grad_checkpoint=False, auto_on_workers=["dtype", "batch_size_scale"]
    )
    with caplog.at_level("INFO", logger="opensora_kedro.config.hardware"):
        resolved = resolve_on_workers(group, shared)
    assert (resolved.dtype, resolved.batch_size_scale) == ("bf16", 0.5)
    assert resolved.grad_checkpoint is False  # not auto: kept as configured
    assert "not the launching machine's 'fp32'" in caplog.text
