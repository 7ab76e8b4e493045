import pytest

from opensora_kedro.config.hardware import Hardware
from opensora_kedro.config.loader import ProjectConfigLoader
from tests.conftest import PROJECT_ROOT

CPU = Hardware(gpu_count=0, gpu_memory_gib=0.0, bf16=False)
LOADER_ARGS = {"base_env": "base", "default_run_env": "local"}


def project_layers(env: str, params: dict | None = None):
    loader = ProjectConfigLoader(
        conf_source=str(PROJECT_ROOT / "conf"), env=env, runtime_params=params or {}, **LOADER_ARGS
    )
    return loader.parameter_layers()


@pytest.fixture(scope="session")
def base_layers():
    return project_layers("base")


@pytest.fixture(scope="session")
def local_layers():
    return project_layers("local")
