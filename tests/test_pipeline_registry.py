"""The pipeline registry: the stage pipelines from the stage table, the rest from their
folders, each built only when a command asks for it."""

import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner
from kedro.framework.cli.cli import KedroCLI
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from opensora_kedro.pipeline_registry import (
    DEFAULT_CHAIN,
    STAGE_TAGS,
    TAGS,
    LazyPipelines,
    register_pipelines,
)
from opensora_kedro.pipelines.diffusion_stage import PARENTS, stage_pipeline
from tests.conftest import PROJECT_ROOT

FOLDERS = ("demo_data", "data_processing", "text_embedding", "vae_training", "evaluation",
           "inference")  # fmt: skip


@pytest.fixture
def kedro(monkeypatch):
    """Kedro's own CLI, on this project."""
    monkeypatch.chdir(PROJECT_ROOT)
    bootstrap_project(PROJECT_ROOT)
    cli = KedroCLI(project_path=PROJECT_ROOT)
    return lambda *args: CliRunner().invoke(cli, list(args))


def test_every_folder_and_stage_is_registered():
    assert set(register_pipelines()) == {*FOLDERS, *PARENTS, "__default__"}


@pytest.mark.parametrize("stage", sorted(PARENTS))
def test_every_stage_of_the_table_is_registered_with_its_tags(stage):
    pipeline = register_pipelines()[stage]
    assert {n.name for n in pipeline.nodes} == {n.name for n in stage_pipeline(stage).nodes}
    assert all(set(TAGS.get(stage, STAGE_TAGS)) <= node.tags for node in pipeline.nodes)


@pytest.mark.parametrize("name", FOLDERS)
def test_folder_pipelines_carry_their_tags(name):
    pipeline = register_pipelines()[name]
    assert pipeline.nodes
    assert all(set(TAGS[name]) <= node.tags for node in pipeline.nodes)


def test_default_is_the_chain_one_group_per_pipeline():
    registry = register_pipelines()
    default = registry["__default__"]
    assert len(default.nodes) == sum(len(registry[name].nodes) for name in DEFAULT_CHAIN)
    assert {node.namespace.split(".")[0] for node in default.nodes} == set(DEFAULT_CHAIN)


def test_a_pipeline_is_built_once_and_can_be_replaced_or_removed():
    registry = register_pipelines()
    assert registry["demo_data"] is registry["demo_data"]
    registry["demo_data"] = registry["inference"]
    assert registry["demo_data"] is registry["inference"]
    del registry["diffusion_stage2"]
    assert "diffusion_stage2" not in registry and "diffusion_stage1" in registry


def test_an_unknown_name_is_a_key_error_and_a_failing_build_is_not():
    registry = LazyPipelines({"bad": lambda: {}["missing"]}, more=dict)
    with pytest.raises(KeyError):
        registry["nope"]  # what `kedro run` turns into "Failed to find the pipeline named"
    with pytest.raises(RuntimeError, match="building the pipeline 'bad' failed"):
        registry["bad"]


# As `kedro run --pipeline=demo_data` does: name the pipeline, then read it.
ONE_PIPELINE = f"""
import sys
from pathlib import Path
from kedro.framework.project import pipelines
from kedro.framework.startup import bootstrap_project

bootstrap_project(Path({str(PROJECT_ROOT)!r}))
pipelines.set_requested(["demo_data"])
assert pipelines["demo_data"].nodes
loaded = sorted(m for m in sys.modules if m.startswith("opensora_kedro.pipelines."))
print("\\n".join(loaded))
pipelines.set_requested(["nope"])
try:
    pipelines["nope"]
except KeyError:
    print("KeyError")
"""


def test_one_pipeline_imports_only_its_own_code():
    result = subprocess.run([sys.executable, "-c", ONE_PIPELINE], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    *loaded, error = result.stdout.split()
    assert "opensora_kedro.pipelines.diffusion_stage" not in loaded
    assert {name.split(".")[2] for name in loaded} == {"demo_data"}
    assert error == "KeyError"


def test_registry_list_shows_every_pipeline(kedro):
    result = kedro("registry", "list")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.output) == sorted({*FOLDERS, *PARENTS, "__default__"})


def test_an_unknown_pipeline_gets_kedros_error(monkeypatch):
    bootstrap_project(PROJECT_ROOT)
    # Finding the pipeline comes first; the context (config, catalog, MLflow's store) is
    # not needed for it.
    monkeypatch.setattr(KedroSession, "load_context", lambda self: None)
    unknown = "Failed to find the pipeline named 'diffusion_stage3'"
    with KedroSession.create(project_path=PROJECT_ROOT) as session:
        with pytest.raises(ValueError, match=unknown) as error:
            session.run(pipeline_names=["diffusion_stage3"])
    assert "Did you mean" in str(error.value) and "diffusion_stage2" in str(error.value)


def test_a_stage_resolves_by_name(kedro):
    result = kedro("registry", "describe", "diffusion_stage2")
    assert result.exit_code == 0, result.output
    listed = {line.split(" (")[0] for line in yaml.safe_load(result.output)["Nodes"]}
    assert listed == {node.name for node in stage_pipeline("diffusion_stage2").nodes}
