"""MLflow runs of the project: stored artifact locations follow a moved project, runs a killed
process left RUNNING are closed, names and tags say what a run was (a real SQLite store)."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

from mlflow import MlflowClient

from opensora_kedro.tracking_runs import (
    HOST_TAG,
    PROJECT_TAG,
    close_abandoned_runs,
    rebase_artifacts,
    run_name,
    run_tags,
)

URI = "sqlite:///mlflow.db"


def _client(project: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


def _store_with_a_run(project: Path, monkeypatch) -> str:
    monkeypatch.chdir(project)  # MLflow resolves ./mlruns against the working directory
    client = _client(project)
    experiment = client.create_experiment("e")
    run = client.create_run(experiment)
    (project / "notes.txt").write_text("hello")
    client.log_artifact(run.info.run_id, str(project / "notes.txt"))
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def test_a_moved_project_reads_its_own_artifacts(tmp_path, monkeypatch):
    first = tmp_path / "first"
    first.mkdir()
    run_id = _store_with_a_run(first, monkeypatch)
    moved = tmp_path / "moved"
    shutil.copytree(first, moved)
    assert rebase_artifacts(URI, moved) >= 2  # the experiment and the run
    client = _client(moved)
    uri = client.get_run(run_id).info.artifact_uri
    assert uri.startswith(str(moved.resolve() / "mlruns"))
    shutil.rmtree(first)  # nothing of the old folder is needed any more
    monkeypatch.chdir(moved)
    assert [a.path for a in client.list_artifacts(run_id)] == ["notes.txt"]
    assert rebase_artifacts(URI, moved) == 0  # in place already


def test_locations_elsewhere_on_purpose_are_left_alone(tmp_path, monkeypatch):
    project = tmp_path / "p"
    project.mkdir()
    monkeypatch.chdir(project)
    client = _client(project)
    client.create_experiment("shared", artifact_location=str(tmp_path / "shared" / "mlruns" / "7"))
    assert rebase_artifacts(URI, project) == 0
    assert rebase_artifacts("http://tracking.example:5000", project) == 0


def test_runs_left_running_by_this_project_are_marked_failed(tmp_path, monkeypatch):
    project = tmp_path / "p"
    project.mkdir()
    monkeypatch.chdir(project)
    client = _client(project)
    experiment = client.create_experiment("e")
    mine = client.create_run(experiment, tags={PROJECT_TAG: str(project.resolve()),
                                               HOST_TAG: socket.gethostname()})  # fmt: skip
    other = client.create_run(experiment, tags={PROJECT_TAG: "/elsewhere",
                                                HOST_TAG: socket.gethostname()})  # fmt: skip
    closed = close_abandoned_runs(client, experiment, project)
    assert closed == [mine.info.run_id]
    assert client.get_run(mine.info.run_id).info.status == "FAILED"
    assert client.get_run(other.info.run_id).info.status == "RUNNING"


def test_names_and_tags_say_what_ran(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "a.txt").write_text("a")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "a"], check=True)
    tags = run_tags(tmp_path, "local", ["diffusion_stage1"], object())
    assert tags["env"] == "local" and tags["pipeline"] == "diffusion_stage1"
    assert len(tags["mlflow.source.git.commit"]) == 40 and tags["git.dirty"] == "false"
    assert tags["runner"] == "object" and tags["version.torch"] and tags["version.kedro"]
    runner = "<kedro.runner.sequential_runner.SequentialRunner object at 0x7f3e>"
    assert run_tags(tmp_path, "local", ["x"], runner)["runner"] == "SequentialRunner"
    (tmp_path / "a.txt").write_text("changed")
    assert run_tags(tmp_path, "local", ["x"], None)["git.dirty"] == "true"
    assert run_name(["__default__"], "local", "0123456789abcdef") == "__default__@local-01234567"


def test_no_git_no_git_tags(tmp_path):
    assert "mlflow.source.git.commit" not in run_tags(tmp_path, "base", ["p"], None)


def test_the_ui_link_opens_the_runs_in_the_model_training_view(tmp_path, capsys):
    from opensora_kedro.tracking_runs import print_runs_url, runs_url

    assert runs_url("3", "abc") == (
        "http://127.0.0.1:5000/#/experiments/3/runs/abc?workflowType=machine_learning"
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    print_runs_url(uri)
    assert "make run" in capsys.readouterr().out
    MlflowClient(tracking_uri=uri).create_experiment("opensora_kedro")
    print_runs_url(uri)
    assert "/#/experiments/1/runs?workflowType=machine_learning" in capsys.readouterr().out
