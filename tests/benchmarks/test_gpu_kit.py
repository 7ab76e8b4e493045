"""The GPU check kit's CPU-testable parts: the wheelhouse plan, its parts, the runner."""

import importlib.util
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.conftest import PROJECT_ROOT

KIT = PROJECT_ROOT / "benchmarks" / "gpu"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, KIT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


builder = load("build_wheelhouse")
runner = load("run_checks")


@pytest.fixture(scope="module")
def plan():
    roots = builder.project_requirements(PROJECT_ROOT / "pyproject.toml")
    return {i.name: i for i in builder.plan(roots, builder.read_present(builder.DEFAULT_PRESENT))}


def test_dry_run_lists_the_plan_without_network(tmp_path, caplog, monkeypatch):
    # No download may start: a dry run works offline.
    monkeypatch.setattr(builder, "_pip", lambda args: pytest.fail(f"pip called: {args}"))
    plan_file = tmp_path / "plan.json"
    with caplog.at_level("INFO", logger="build_wheelhouse"):
        assert builder.main(["--dry-run", "--json", str(plan_file), "--dest", str(tmp_path)]) == 0
    items = {i["name"]: i for i in json.loads(plan_file.read_text())}
    assert items["colossalai"]["version"] == "0.5.0" and items["colossalai"]["action"] == "fetch"
    assert "would fetch" in caplog.text and not any(tmp_path.glob("*.whl"))


def test_plan_keeps_torch_and_the_uis_out(plan):
    assert plan["torch"].action == "torch"
    assert plan["kedro-viz"].action == "left out" and plan["mlflow"].action == "left out"
    fetched = {n for n, i in plan.items() if i.action == "fetch"}
    # nothing that only torch, kedro-viz or the MLflow server needs is fetched
    assert not fetched & {"triton", "sympy", "networkx", "fastapi-cli", "flask", "gunicorn",
                          "strawberry-graphql", "docker"}  # fmt: skip
    assert {"kedro", "kedro-datasets", "kedro-mlflow", "mlflow-skinny", "sqlalchemy", "alembic",
            "av", "bitsandbytes", "peft", "fabric"} <= fetched  # fmt: skip


def test_pins_travel_unless_the_gpu_image_has_the_same_version(plan):
    # transformers==4.51.3 (colossalai's pin) against the image's 5.17: it travels, and so do
    # the tokenizers and hub versions it needs.
    assert plan["transformers"].action == "fetch" and plan["transformers"].version == "4.51.3"
    assert plan["tokenizers"].action == "fetch" and plan["huggingface-hub"].action == "fetch"
    # The image's numpy, pandas and pyarrow (unpinned here) are used as they are.
    assert {plan[n].action for n in ("numpy", "pandas", "pyarrow")} == {"present"}


def test_present_versions_are_checked_against_every_requirement():
    accepts = builder._accepts
    assert accepts([Requirement("numpy>=1.26")], "2.5.2")
    assert not accepts([Requirement("numpy>=1.26"), Requirement("numpy<2")], "2.5.2")
    assert accepts([Requirement("click")], None)  # unknown version, not pinned: trusted
    assert not accepts([Requirement("peft==0.13.2")], None)  # pinned, version unknown


def test_parts_fit_the_budget_largest_first():
    mb = 10**6
    sizes = {"av.whl": 36 * mb, "transformers.whl": 10 * mb, "bnb.whl": 7 * mb,
             "small.whl": 1 * mb, "tiny.whl": mb // 2, "mid.whl": 20 * mb}  # fmt: skip
    parts = builder.split_parts(sizes, 60 * mb)
    assert sorted(n for part in parts for n in part) == sorted(sizes)
    assert all(sum(sizes[n] for n in part) <= 60 * mb for part in parts)
    assert len(parts) == 2 and parts[0][0] == "av.whl"
    with pytest.raises(ValueError, match="larger than a part"):
        builder.split_parts({"huge.whl": 61 * mb}, 60 * mb)


def test_trimmed_wheel_drops_other_cuda_kernels_and_their_record_lines(tmp_path):
    wheel = tmp_path / "bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl"
    names = [
        "bitsandbytes/__init__.py",
        "bitsandbytes/libbitsandbytes_cpu.so",
        "bitsandbytes/libbitsandbytes_cuda130.so",
        "bitsandbytes/libbitsandbytes_cuda128.so",
        "bitsandbytes/libbitsandbytes_cuda132.so",
        "bitsandbytes/libbitsandbytes_rocm64.so",
    ]
    with zipfile.ZipFile(wheel, "w") as archive:
        for name in names:
            archive.writestr(name, b"x" * 100)
        record = "".join(f"{n},sha256=abc,100\n" for n in names)
        archive.writestr("bitsandbytes-0.50.2.dist-info/RECORD", record)
    builder.trim_wheel(wheel, builder.TRIM["bitsandbytes"])
    with zipfile.ZipFile(wheel) as archive:
        kept = set(archive.namelist())
        record = archive.read("bitsandbytes-0.50.2.dist-info/RECORD").decode()
    assert kept == {"bitsandbytes/__init__.py", "bitsandbytes/libbitsandbytes_cpu.so",
                    "bitsandbytes/libbitsandbytes_cuda130.so",
                    "bitsandbytes-0.50.2.dist-info/RECORD"}  # fmt: skip
    assert "cuda128" not in record and "rocm" not in record and "cuda130" in record


def test_runner_kills_the_whole_group_at_its_limit(tmp_path):
    # A child that outlives its parent's kill would keep the GPU busy: the group goes.
    marker = tmp_path / "survivor"
    script = f"(sleep 3; touch {marker}) & sleep 30"
    started = time.monotonic()
    outcome = runner.run_limited(["bash", "-c", script], 1, tmp_path / "log.txt", dict(os.environ))
    assert outcome.timed_out and outcome.rc is None
    assert time.monotonic() - started < 10
    time.sleep(3.5)
    assert not marker.exists()


def test_runner_records_a_check_and_assembles_the_summary(tmp_path):
    ok = runner.run_limited([sys.executable, "-c", "print('fine')"], 30, tmp_path / "a.log")
    failing = runner.run_limited(
        [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], 30, tmp_path / "b.log"
    )
    result = tmp_path / "b.result.json"
    result.write_text(json.dumps({"ok": False, "why": "target missed"}))
    records = [
        runner.record("a_training", 170, ok, tmp_path / "missing.json"),
        runner.record("b_loop_mfu", 190, failing, result),
    ]
    assert records[0]["ok"] and records[0]["details"] is None and records[0]["tail"] == []
    assert not records[1]["ok"] and records[1]["rc"] == 3 and "boom" in records[1]["tail"]
    assert records[1]["details"]["why"] == "target missed"
    summary = runner.summarize(records, 12.34, {"nvidia_smi": ["H200"]})
    assert summary["ok"] is False and summary["failed"] == ["b_loop_mfu"]
    assert summary["passed"] == ["a_training"] and summary["total_s"] == 12.3
    assert json.loads(json.dumps(summary)) == summary
    # a check that exits 0 but reports ok: false has failed
    assert not runner.record("c", 1, ok, result)["ok"]


def test_runner_selects_checks_and_plans_an_offline_install(tmp_path):
    assert [c.name for c in runner.select("a,d_batch_probe")] == ["a_training", "d_batch_probe"]
    assert len(runner.select(None)) == 4
    with pytest.raises(SystemExit):
        runner.select("e")
    (tmp_path / "part1").mkdir()
    (tmp_path / "part2").mkdir()
    (tmp_path / "part1" / "av-18.1.0-cp311-abi3-manylinux_2_28_x86_64.whl").write_bytes(b"")
    (tmp_path / "part2" / "kedro-1.7.0-py3-none-any.whl").write_bytes(b"")
    (tmp_path / "part2" / "colossalai-0.5.0.tar.gz").write_bytes(b"")
    commands = runner.install_commands(tmp_path / "venv", tmp_path)
    install, sdists = commands
    assert {"--no-index", "--no-deps"} <= set(install)
    assert len([a for a in install if a.endswith(".whl")]) == 2
    assert sdists[-1].endswith("colossalai-0.5.0.tar.gz") and "--no-deps" in sdists


def test_the_venv_sees_this_pythons_torch_and_runs_workers_with_itself(tmp_path):
    # The project's own .venv is a venv, as the GPU image's Python is: --system-site-packages
    # alone would hide its torch.
    venv = tmp_path / "venv"
    command = runner.venv_command(venv)
    subprocess.run([*command[:-1], "--without-pip", command[-1]], check=True)
    runner.link_parent_site(venv)
    torchrun = runner.add_torchrun(venv)
    probe = "import sys, torch.distributed.run; print(sys.prefix, torch.__file__)"
    prefix, torch_file = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    assert prefix == str(venv) and Path(torch_file).is_relative_to(Path(sys.prefix))
    assert torchrun.read_text().startswith(f"#!{venv}/bin/python\n")  # workers use the venv
    assert "from torch.distributed.run import main" in torchrun.read_text()
    assert os.access(torchrun, os.X_OK)


def test_every_check_script_compiles():
    for script in KIT.glob("*.py"):
        compile(script.read_text(), str(script), "exec")
    assert Path(KIT / "run_checks.py").read_text().startswith('"""The GPU check kit')
