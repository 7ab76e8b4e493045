"""A table of invalid configurations: each fails resolution, naming the key path and its file."""

import pytest

from opensora_kedro.config.errors import ConfigError
from opensora_kedro.config.resolve import resolve_parameters
from tests.config.conftest import CPU

ORIGIN = "conf/local/parameters_bad.yml"
S1 = "diffusion_stage1"

# A VAE type other than conf/local's: its config fields go with it.
DC_AE = {"type": "tiny_dc_ae", "config": {"_delete_": True}}
CAUSAL = {"type": "tiny_vae", "config": {"_delete_": True}}

CASES = [
    # wrong types
    ({S1: {"optim": {"lr": "fast"}}}, "diffusion_stage1.optim.lr", "valid number"),
    ({S1: {"epochs": 2.5}}, "diffusion_stage1.epochs", "valid integer"),
    ({S1: {"grad_checkpoint": "sometimes"}}, "diffusion_stage1.grad_checkpoint", "valid boolean"),
    ({S1: {"model": {"axes_dim": [16, 56]}}}, "diffusion_stage1.model.axes_dim", "too few items"),
    ({"demo_data": {"sizes": "big"}}, "demo_data.sizes", "valid list"),
    ({"launcher": {"nproc_per_node": "eight"}}, "launcher.nproc_per_node", "valid integer"),
    ({S1: {"dataset": "clips.csv"}}, "diffusion_stage1.dataset", "valid dictionary"),
    # out-of-range values
    ({S1: {"optim": {"lr": 0}}}, "diffusion_stage1.optim.lr", "greater than 0"),
    ({S1: {"optim": {"lr": 2.0}}}, "diffusion_stage1.optim.lr", "less than or equal to 1"),
    ({S1: {"ema_decay": 1.5}}, "diffusion_stage1.ema_decay", "less than 1"),
    ({S1: {"accumulation_steps": 0}}, "diffusion_stage1.accumulation_steps", "greater than 0"),
    ({S1: {"use_cosine_scheduler": True, "max_steps": None}},
     "diffusion_stage1.use_cosine_scheduler", "set max_steps"),  # fmt: skip
    ({S1: {"dropout_ratio": {"t5": 1.2}}}, "diffusion_stage1.dropout_ratio.t5", "less than or equal to 1"),
    ({S1: {"dtype": "fp8"}}, "diffusion_stage1.dtype", "'bf16', 'fp16' or 'fp32'"),
    ({S1: {"plugin": "gemini"}}, "diffusion_stage1.plugin", "'ddp', 'zero2' or 'hybrid'"),
    ({"demo_data": {"crf": 60}}, "demo_data.crf", "less than or equal to 51"),
    ({S1: {"probe": {"memory_fraction": 1.2}}}, "diffusion_stage1.probe.memory_fraction", "less than or equal to 1"),
    ({S1: {"probe": {"max_batch": 0}}}, "diffusion_stage1.probe.max_batch", "greater than 0"),
    ({"demo_data": {"sizes": [[97, 64]]}}, "demo_data.sizes.0", "even width and height"),
    ({"inference_256px": {"batch_size": 0}}, "inference_256px.batch_size", "greater than 0"),
    ({"inference_256px": {"sampling_option": {"num_frames": 32, "is_causal_vae": True}}},
     "inference_256px.sampling_option.num_frames", "4k+1"),  # fmt: skip
    ({"inference_256px": {"sampling_option": {"aspect_ratio": "wide"}}},
     "inference_256px.sampling_option.aspect_ratio", "invalid aspect ratio"),  # fmt: skip
    ({"inference_256px": {"cond_type": "i2v_middle"}}, "inference_256px.cond_type", "v2v_tail_half"),
    # unknown keys, with a suggestion
    ({S1: {"optim": {"learning_rate": 1e-4}}}, "diffusion_stage1.optim.learning_rate", "did you mean 'lr'"),
    ({S1: {"ckpt_evry": 10}}, "diffusion_stage1.ckpt_evry", "did you mean 'ckpt_every'"),
    ({S1: {"model": {"hidden": 64}}}, "diffusion_stage1.model.hidden", "unknown key"),
    ({"diffusion_stgae1": {"seed": 1}}, "diffusion_stgae1", "did you mean 'diffusion_stage1'"),
    ({"demo_dta": {"seed": 1}}, "demo_dta", "did you mean 'demo_data'"),
    # broken inheritance
    ({S1: {"extends": "diffusion_imgae"}}, "diffusion_stage1.extends", "does not exist"),
    ({"diffusion_image": {"extends": "diffusion_stage1_i2v"}}, "extends", "inheritance cycle"),
    ({"diffusion_image": {"extends": "diffusion_image"}}, "diffusion_image.extends", "cycle"),
    ({S1: {"extends": ["diffusion_image"]}}, "diffusion_stage1.extends", "must be the name"),
    # inconsistent model dims
    ({S1: {"model": {"hidden_size": 96}}}, "diffusion_stage1.model.hidden_size", "num_heads * sum(axes_dim)"),
    ({S1: {"model": {"num_heads": 3}}}, "diffusion_stage1.model.hidden_size", "num_heads * sum(axes_dim)"),
    # parallel sizes
    ({S1: {"plugin_config": {"sp_size": 2, "enable_sequence_parallelism": True}}},
     "diffusion_stage1.plugin", "needs plugin 'hybrid'"),  # fmt: skip
    ({"diffusion_stage2": {"plugin": "hybrid", "plugin_config": {"sp_size": 2, "enable_sequence_parallelism": True}}},
     "diffusion_stage2.plugin_config.sp_size", "exceeds the 1 device"),  # fmt: skip
    ({"diffusion_stage2": {"plugin": "hybrid", "plugin_config": {"tp_size": 1}}, "launcher": {"nproc_per_node": 8},
      S1: {"plugin": "hybrid", "plugin_config": {"tp_size": 3}}},
     "diffusion_stage1.plugin_config.tp_size", "must divide"),  # fmt: skip
    ({S1: {"plugin": "hybrid", "plugin_config": {"sp_size": 1}}, "diffusion_stage2": {"plugin_config": {"sp_size": 1}},
      "launcher": {"nproc_per_node": 2}, "diffusion_stage1_i2v": {"plugin_config": {"sp_size": 2}}},
     "diffusion_stage1_i2v.plugin_config.enable_sequence_parallelism", "sp_size > 1"),  # fmt: skip
    ({"diffusion_stage2": {"plugin": "hybrid", "plugin_config": {"sp_size": 4, "sequence_parallelism_mode": "ring_attn",
                                                                  "enable_sequence_parallelism": True}},
      "launcher": {"nproc_per_node": 4}},
     "diffusion_stage2.plugin_config.sp_size", "ring_attn splits heads"),  # fmt: skip
    ({S1: {"plugin": "hybrid", "plugin_config": {"tp_size": 2}}, "launcher": {"type": "colossalai", "nproc_per_node": 2}},
     "diffusion_stage1.plugin_config.tp_size", "tensor parallelism is not built"),  # fmt: skip
    ({"vae_training": {"plugin": "hybrid", "plugin_config": {"pp_size": 2}},
      "launcher": {"type": "colossalai", "nproc_per_node": 2}},
     "vae_training.plugin_config.pp_size", "pipeline parallelism is not built"),  # fmt: skip
    # bad bucket_config shapes
    ({S1: {"bucket_config": {"_delete_": True, "96pix": {1: [1.0, 4]}}}},
     "diffusion_stage1.bucket_config.96pix", "invalid resolution name"),  # fmt: skip
    ({S1: {"bucket_config": {"_delete_": True, "96px": {1: [1.5, 4]}}}},
     "diffusion_stage1.bucket_config.96px.1", "less than or equal to 1"),  # fmt: skip
    ({S1: {"bucket_config": {"_delete_": True, "96px": {9: [1.0, 0]}}}},
     "diffusion_stage1.bucket_config.96px.9", "greater than 0"),  # fmt: skip
    ({S1: {"bucket_config": {"_delete_": True, "96px": {"nine": [1.0, 2]}}}},
     "diffusion_stage1.bucket_config.96px", "valid integer"),  # fmt: skip
    ({S1: {"bucket_config": {"_delete_": True, "96px": {9: 1.0}}}},
     "diffusion_stage1.bucket_config.96px.9", "valid"),  # fmt: skip
    ({S1: {"bucket_config": {"_delete_": True, "96px": {8: [1.0, 2]}}, "is_causal_vae": True}},
     "diffusion_stage1.bucket_config.96px.8", "4k+1"),  # fmt: skip
    ({S1: {"bucket_config": {"_delete_": True, "96px": {9: [[0.5, 1.2], 2]}}}},
     "diffusion_stage1.bucket_config.96px.9", "less than or equal to 1"),  # fmt: skip
    ({"vae_training": {"bucket_config": {"_delete_": True, "96px": {9: [1.0, 1]}}, "model": DC_AE,
                       "mixed_image_ratio": 0.0}},
     "vae_training.bucket_config.96px.9", "a multiple of 4 frames"),  # fmt: skip
    ({"vae_training": {"bucket_config": {"_delete_": True, "96px": {8: [1.0, 1]}}, "model": CAUSAL}},
     "vae_training.bucket_config.96px.8", "tiny_vae encodes 4k+1 frames"),  # fmt: skip
    ({"vae_training": {"mixed_image_ratio": 0.2, "model": DC_AE}},
     "vae_training.mixed_image_ratio", "image steps need single frames"),  # fmt: skip
    ({"vae_training": {"model": {"config": {"latent_channel": 4}}}},
     "vae_training.model.config", "unknown config field"),  # fmt: skip
    # conditioning weights
    ({S1: {"condition_config": {"t2v": 0, "i2v_head": 0}}}, "diffusion_stage1.condition_config", "sum to > 0"),
    ({S1: {"condition_config": {"t2v": -1}}}, "diffusion_stage1.condition_config.t2v", "greater than or equal to 0"),
    ({S1: {"condition_config": {"i2v_middle": 1}}}, "diffusion_stage1.condition_config", "i2v_head"),
    # rules of nested schemas are applied wherever the schema is used (issue 15)
    ({"data_processing": {"filter": {"min_frames": 50, "max_frames": 10}}},
     "data_processing.filter.min_frames", "must not exceed max_frames"),  # fmt: skip
    ({"data_processing": {"filter": {"min_motion": 5.0, "max_motion": 1.0}}},
     "data_processing.filter.min_motion", "must not exceed max_motion"),  # fmt: skip
    ({"data_processing": {"quality": {"enabled": False}, "filter": {"min_match": 20}}},
     "data_processing.filter.min_match", "needs quality.enabled"),  # fmt: skip
    ({"data_processing": {"quality": {"aesthetic_head": None}, "filter": {"min_aesthetic": 4.5}}},
     "data_processing.filter.min_aesthetic", "needs quality.aesthetic_head"),  # fmt: skip
    ({"data_processing": {"shots": {"min_seconds": 20.0}}},
     "data_processing.shots.min_seconds", "must not exceed max_seconds"),  # fmt: skip
    ({"data_processing": {"engine": "spark"}}, "data_processing.engine", "'local' or 'ray'"),
    ({"text_embedding": {"tiny": {"hidden_size": 64, "num_heads": 3}}},
     "text_embedding.tiny.num_heads", "must divide hidden_size"),  # fmt: skip
    ({"inference_t2i2v_256px": {"img_flux": {"hidden_size": 100}}},
     "inference_t2i2v_256px.img_flux.hidden_size", "num_heads * sum(axes_dim)"),  # fmt: skip
    # launcher ranges and cross-field rules
    ({"launcher": {"master_port": 70000}}, "launcher.master_port", "less than or equal to 65535"),
    ({"launcher": {"master_port": 0}}, "launcher.master_port", "greater than or equal to 1"),
    ({"launcher": {"nproc_per_node": 0}}, "launcher.nproc_per_node", "greater than 0"),
    ({"launcher": {"nnodes": 0}}, "launcher.nnodes", "greater than 0"),
    ({"launcher": {"type": "colossalai", "nnodes": 2, "node_rank": 2, "master_addr": "10.0.0.1"}},
     "launcher.node_rank", "must be below nnodes"),  # fmt: skip
    ({"launcher": {"type": "colossalai", "node_rank": 1}}, "launcher.node_rank", "must be below nnodes"),
    ({"launcher": {"nproc_per_node": 2}}, "launcher.type", "inprocess runs one process"),
    ({"launcher": {"type": "colossalai", "nnodes": 2}}, "launcher.master_addr", "every node must reach"),
    ({"launcher": {"master_addr": ""}}, "launcher.master_addr", "at least 1 character"),
    ({"launcher": {"rdzv_timeout_s": 0}}, "launcher.rdzv_timeout_s", "greater than 0"),
    ({"launcher": {"backend": "mpi"}}, "launcher.backend", "'auto', 'nccl' or 'gloo'"),
    # ColossalAI's effective defaults: no mode with sp on runs all_to_all, which splits heads
    ({"diffusion_stage2": {"plugin": "hybrid", "plugin_config": {"sp_size": 4, "sequence_parallelism_mode": None,
                                                                  "enable_sequence_parallelism": True}},
      "launcher": {"type": "colossalai", "nproc_per_node": 4}, S1: {"model": {"num_heads": 2, "hidden_size": 64,
                                                                                   "axes_dim": [8, 12, 12]}}},
     "diffusion_stage2.plugin_config.sp_size", "all_to_all (ColossalAI's default) splits heads"),  # fmt: skip
    ({"diffusion_stage2": {"plugin": "hybrid", "plugin_config": {"sp_size": 2, "sequence_parallelism_mode": "split_gather",
                                                                  "enable_sequence_parallelism": True}},
      "launcher": {"type": "colossalai", "nproc_per_node": 2}},
     "diffusion_stage2.plugin_config.sequence_parallelism_mode", "needs tp_size > 1"),  # fmt: skip
    ({"diffusion_stage2": {"plugin": "hybrid", "plugin_config": {"sp_size": 1, "sequence_parallelism_mode": "all_to_all",
                                                                  "enable_sequence_parallelism": False}}},
     "diffusion_stage2.plugin_config.sequence_parallelism_mode", "ignored while enable_sequence_parallelism"),  # fmt: skip
    # _delete_ is a strict boolean
    ({S1: {"bucket_config": {"_delete_": "false", "96px": {1: [1.0, 4]}}}},
     "diffusion_stage1.bucket_config._delete_", "must be true or false"),  # fmt: skip
    ({S1: {"bucket_config": {"_delete_": 1, "96px": {1: [1.0, 4]}}}},
     "diffusion_stage1.bucket_config._delete_", "must be true or false"),  # fmt: skip
    # precise keys for whole-dict rules (so the file or --params that set it is named)
    ({"vae_training": {"model": {"config": {"latent_channel": 4}}}},
     "vae_training.model.config.latent_channel", "did you mean 'latent_channels'"),  # fmt: skip
    # inheritance cycles name each link with its own value
    ({S1: {"extends": "diffusion_stage2"}, "diffusion_stage2": {"extends": S1}},
     "diffusion_stage1.extends = 'diffusion_stage2'", "inheritance cycle"),  # fmt: skip
    ({S1: {"extends": "diffusion_stage2"}, "diffusion_stage2": {"extends": S1}},
     "diffusion_stage2.extends = 'diffusion_stage1'", "inheritance cycle"),  # fmt: skip
    ({S1: {"extends": "diffusion_stage2"}, "diffusion_stage2": {"extends": S1}},
     "diffusion_stage2_i2v.extends = 'diffusion_stage2'", "leads into"),  # fmt: skip
    # removed keys that no code read
    ({S1: {"update_warmup_steps": False}}, "diffusion_stage1.update_warmup_steps", "unknown key"),
    ({"diffusion_stage2_i2v": {"grad_ckpt_buffer_size": 10}}, "diffusion_stage2_i2v.grad_ckpt_buffer_size", "unknown key"),
    # inference
    ({"inference": {"start_index": 5, "end_index": 2, "prompt_csv": "p.csv", "prompt": None}},
     "inference.start_index", "must be below end_index"),  # fmt: skip
    ({"inference": {"prompt_csv": "prompts.csv"}}, "inference.prompt_csv", "are both set"),
    ({"evaluation": {"prompt_following": {"sampling": {"num_steps": 0}}}},
     "evaluation.prompt_following.sampling.num_steps", "greater than 0"),
    ({"evaluation": {"prompt_following": {"sampling": {"flow_shift": 3}}}},
     "evaluation.prompt_following.sampling.flow_shift", "not a sampling_option key"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("override", "key", "rule"), CASES, ids=[c[1] + ":" + c[2][:20] for c in CASES]
)
def test_invalid_config_names_key_rule_and_file(local_layers, override, key, rule):
    with pytest.raises(ConfigError) as error:
        resolve_parameters([*local_layers, (ORIGIN, override)], CPU, env="local")
    message = str(error.value)
    line = next((line for line in message.splitlines() if key in line and rule in line), None)
    assert line is not None, message
    if "inherit" not in line:
        assert "[conf/" in line or "[--params]" in line, line


def test_every_error_is_reported_at_once(local_layers):
    override = {S1: {"optim": {"lr": 5.0}, "epochs": 0, "seed": "x"}, "demo_data": {"crf": -1}}
    with pytest.raises(ConfigError) as error:
        resolve_parameters([*local_layers, (ORIGIN, override)], CPU)
    assert len(error.value.issues) == 4
    assert all(issue.source == ORIGIN for issue in error.value.issues)


def test_the_table_is_large_enough():
    assert len(CASES) >= 30
