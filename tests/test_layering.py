"""The library is importable without Kedro: only the framework modules (pipelines, datasets,
the config loader, CLI, settings, hooks, registry) may import it (issue 16)."""

import subprocess
import sys

FRAMEWORK = ("pipelines", "datasets", "config.loader", "cli", "settings", "hooks",
             "pipeline_registry", "__main__")  # fmt: skip

SCRIPT = f"""
import importlib, pkgutil, sys
sys.modules["kedro"] = None  # any import of kedro fails
import opensora_kedro
framework = tuple("opensora_kedro." + name for name in {FRAMEWORK!r})
failed = []
for module in pkgutil.walk_packages(opensora_kedro.__path__, "opensora_kedro."):
    if module.name.startswith(framework):
        continue
    try:
        importlib.import_module(module.name)
    except ImportError as error:
        failed.append(f"{{module.name}}: {{error}}")
print("\\n".join(failed))
"""


def test_library_modules_import_without_kedro():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "", result.stdout


def test_the_library_packages_import_in_a_process_without_kedro():
    # The issue's own check, on the packages a job's workers import.
    packages = ("training", "sampling", "models", "data", "text", "video", "diffusion",
                "runtime", "evaluation", "captioning", "quality", "config.schemas")  # fmt: skip
    script = "import sys; sys.modules['kedro'] = None; " + "; ".join(
        f"import opensora_kedro.{name}" for name in packages
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
