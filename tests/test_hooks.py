"""Nodes get their parameters as the typed models validated at the start of the run."""

from kedro.pipeline import Node

from opensora_kedro.config.loader import ProjectConfigLoader
from opensora_kedro.config.schemas.diffusion import DiffusionStageParams
from opensora_kedro.data.params import DedupParams
from opensora_kedro.hooks import ProjectHooks
from opensora_kedro.runtime.params import LauncherParams
from tests.config.conftest import LOADER_ARGS
from tests.conftest import PROJECT_ROOT


def _hooks(runtime_params: dict) -> ProjectHooks:
    hooks = ProjectHooks()
    hooks._loader = ProjectConfigLoader(
        conf_source=str(PROJECT_ROOT / "conf"), env="local", runtime_params=runtime_params,
        **LOADER_ARGS,
    )  # fmt: skip
    return hooks


def _node(inputs: list[str]) -> Node:
    return Node(lambda *args: None, inputs, None, name="probe")


def test_a_node_gets_typed_groups_nested_models_and_values():
    hooks = _hooks({"diffusion_stage1": {"optim": {"lr": 0.5}}})
    names = ["params:diffusion_stage1", "params:data_processing.dedup", "params:launcher",
             "params:diffusion_stage1.bucket_config", "params:demo_data.crf", "training_table"]  # fmt: skip
    plain = {name: {"as": "the catalog holds it"} for name in names}
    typed = hooks.before_node_run(_node(names), plain)

    stage = typed["params:diffusion_stage1"]
    assert isinstance(stage, DiffusionStageParams)
    assert stage.optim.lr == 0.5  # --params reach the typed model
    assert isinstance(typed["params:data_processing.dedup"], DedupParams)
    assert isinstance(typed["params:launcher"], LauncherParams)
    assert typed["params:diffusion_stage1.bucket_config"] == stage.bucket_config  # a dict field
    assert isinstance(typed["params:demo_data.crf"], int)
    assert "training_table" not in typed  # data is the catalog's, untouched


def test_a_node_without_parameters_is_left_alone():
    hooks = _hooks({})
    assert hooks.before_node_run(_node(["training_table"]), {"training_table": 1}) is None
