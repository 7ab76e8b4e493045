"""End to end: the real Kedro CLI on a fresh copy of the project (env `local`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from opensora_kedro.runtime.distributed import free_port
from opensora_kedro.text.cache import EmbeddingCache
from opensora_kedro.tracking_runs import HOST_TAG, PROJECT_TAG
from tests.conftest import PROJECT_ROOT

KEDRO = str(Path(sys.executable).parent / "kedro")
IGNORED = shutil.ignore_patterns(
    ".venv", ".git", "mlflow.db", "mlruns", "build", "__pycache__", "*.egg-info"
)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of the project with empty data folders and no tracking store."""
    copy = tmp_path_factory.mktemp("project") / "opensora-kedro"
    shutil.copytree(PROJECT_ROOT, copy, ignore=IGNORED)
    for layer in (copy / "data").iterdir():
        for item in layer.iterdir():
            if item.name != ".gitkeep":
                shutil.rmtree(item) if item.is_dir() else item.unlink()
    return copy


def _kedro(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"}
    result = subprocess.run(
        [KEDRO, *args], cwd=project, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_kedro_run_default_pipeline(project):
    short = ("vae_training.max_steps=6,vae_training.ckpt_every=3,vae_training.log_every=2,"
             "vae_training.samples.every=3,"
             "diffusion_stage1.max_steps=4,diffusion_stage1.log_every=2,"
             "evaluation.prompt_following.num_unseen_prompts=2,"
             "evaluation.prompt_following.num_seen_prompts=2")  # fmt: skip
    _kedro(project, "run", f"--params={short}")

    captions = pd.read_csv(project / "data/01_raw/captions.csv")
    meta = pd.read_parquet(project / "data/02_intermediate/video_meta.parquet")
    rejected = pd.read_parquet(project / "data/03_primary/rejected_videos.parquet")
    assert len(captions) == 184  # conf/local: 180 clips + 4 stills, + 4 uncaptioned multi-shot
    assert len(meta) == 188 and set(meta["text"].dropna()) == set(captions["text"])
    clips = pd.read_parquet(project / "data/02_intermediate/video_clips.parquet")
    assert len(clips) == 184 + 4 * 3  # each multi-shot video cut at its rendered boundaries
    cut = clips[clips["path"].str.startswith("shots:")]
    assert cut.groupby("source")["start_frame"].apply(list).tolist() == [[0, 12, 24]] * 4
    # without the captioner, the shots (no caption of their own) are rejected, with the reason
    assert sorted(rejected["path"]) == sorted(cut["path"])
    assert set(rejected["stage"] + "/" + rejected["reason"]) == {"captioning/no_caption"}
    captioned = meta[meta["text"].notna()]
    assert captioned["num_frames"].min() == 1 and captioned["num_frames"].max() == 17  # local
    assert set(meta["fps"].dropna()) <= {12.0, 24.0}

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert re.fullmatch(r"__default__@local-[0-9a-f]{8}", run.info.run_name)
    tags = run.data.tags
    assert (tags["env"], tags["pipeline"], tags["runner"]) == ("local", "__default__",
                                                               "SequentialRunner")  # fmt: skip
    assert tags["version.torch"] and tags["version.colossalai"] and tags["version.kedro"]
    assert run.info.artifact_uri.startswith(str(project.resolve() / "mlruns"))
    assert run.data.metrics["system/cpu_utilization_percentage"] >= 0  # sampled every 5 s
    assert run.data.params["demo_data.num_clips"] == "180"  # conf/local over conf/base
    assert run.data.params["demo_data.crf"] == "20"  # conf/base, kept by the soft merge
    assert run.data.params["data_processing.motion.variant"] == "integer"
    assert run.data.params["diffusion_stage1.dataset.fps_max"] == "24.0"  # resolved stage params
    assert run.data.metrics["bucket_metrics.clips"] == 184
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"bucket_report.csv", "bucket_report.png", "vae_reconstructions.png"} <= artifacts
    assert run.data.metrics["vae_metrics.psnr"] > 0
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "vae.loss")
    assert [m.step for m in history] == [2, 4, 6]  # logged by the training job, rank 0
    # the VAE's loss parts apart, and a reconstruction error comparable across buckets
    assert {"vae.reconstruction", "vae.kl", "vae.mse_per_element"} <= set(run.data.metrics)
    assert run.data.metrics["diffusion_stage1.tokens_per_s"] > 0
    sampled = mlflow.MlflowClient().list_artifacts(run.info.run_id, "samples/step-00000003")
    assert {"samples/step-00000003/samples.gif", "samples/step-00000003/samples.png"} <= {
        a.path for a in sampled
    }  # reconstructions during VAE training, logged by the job
    assert (project / "data/06_models/vae/model.safetensors").is_file()
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "diffusion_stage1.loss")
    assert [m.step for m in history] == [2, 4]
    assert (project / "data/06_models/diffusion_stage1/model.safetensors").is_file()
    # the evaluation closes the chain: its report, pictures and headline metrics
    assert {"evaluation.md", "prompt_following.png", "prompt_following.gif"} <= artifacts
    assert 0 <= run.data.metrics["evaluation_metrics.eval_colour_accuracy"] <= 1
    assert 0 <= run.data.metrics["evaluation_metrics.eval_unseen_colour_accuracy"] <= 1
    assert run.data.metrics["evaluation_metrics.eval_diffusion_eval_loss"] > 0

    table = pd.read_parquet(project / "data/05_model_input/training_table.parquet")
    assert len(table) == 184 and table["score_vmafmotion"].notna().all()
    assert not any(Path(p).is_absolute() for p in table["path"])  # relative to the raw folder
    assert table["text"].str.contains(r" FPS, \d+ motion score\.$|^.* \d+ motion score\.$").all()
    report = pd.read_csv(project / "data/08_reporting/bucket_report.csv")
    assert report["samples"].sum() == 184

    cache = EmbeddingCache.open(project / "data/04_feature/text_embeddings")
    hashes = list(table["caption_hash"])
    assert cache.lookup(hashes, "t5").shape == (184, 32, 64)  # conf/local: max_length 32, d 64
    assert cache.lookup(hashes, "clip").shape == (184, 64)
    assert cache.null("t5").shape == (32, 64)
    assert run.data.metrics["text_embedding_metrics.t5_misses"] >= 1


@pytest.mark.slow
def test_the_notebook_runs_headless_on_the_run(project):
    import nbclient
    import nbformat

    # Right after test_kedro_run_default_pipeline, on what it left (later tests change it).
    if not (project / "data/08_reporting/prompt_following.png").exists():
        pytest.skip("needs the default run of test_kedro_run_default_pipeline first")
    notebook = nbformat.read(project / "notebooks" / "tour.ipynb", as_version=4)
    folder = {"metadata": {"path": str(project / "notebooks")}}  # run where a user opens it
    nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources=folder
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    pictures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pictures) >= 4  # buckets, clip thumbnails, the VAE round trip, the samples


@pytest.mark.slow
def test_data_processing_on_ray_makes_the_tables_the_local_engine_made(project):
    """The issue's command, on the default run's videos, from empty tables and shots."""
    tables = {
        "data/02_intermediate": ["video_meta", "video_shots", "video_clips"],
        "data/03_primary": ["motion_scores", "quality_scores", "rejected_videos"],
        "data/05_model_input": ["training_table"],
    }  # fmt: skip
    local = {}
    for folder, names in tables.items():
        for name in names:
            path = project / folder / f"{name}.parquet"
            local[name] = pd.read_parquet(path)
            path.unlink()
    shutil.rmtree(project / "data/02_intermediate/shots")
    _kedro(project, "run", "--pipeline=data_processing", "--params=data_processing.engine=ray")
    for folder, names in tables.items():
        for name in names:
            ray = pd.read_parquet(project / folder / f"{name}.parquet")
            # the shots were cut again: same frames, new modification times
            ignored = [c for c in ("file_mtime_ns", "shots") if c in ray.columns]
            pd.testing.assert_frame_equal(
                ray.drop(columns=ignored).sort_values("path", ignore_index=True),
                local[name].drop(columns=ignored).sort_values("path", ignore_index=True),
                obj=name,
            )


@pytest.mark.slow
def test_nested_params_override_keeps_siblings(project):
    # A run a killed process left RUNNING is closed by the next run of the project.
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("opensora_kedro").experiment_id
    tags = {PROJECT_TAG: str(project.resolve()), HOST_TAG: socket.gethostname()}
    killed = client.create_run(experiment, tags=tags).info.run_id
    _kedro(
        project,
        "run",
        "--pipeline=demo_data",
        "--params=demo_data.num_clips=3,demo_data.num_images=0",
    )
    assert client.get_run(killed).info.status == "FAILED"
    captions = pd.read_csv(project / "data/01_raw/captions.csv")
    assert len(captions) == 3
    assert len(list((project / "data/01_raw/videos").glob("demo_*.mp4"))) == 3  # old ones gone


@pytest.mark.slow
def test_viz_build_shows_every_pipeline(project):
    _kedro(project, "viz", "build")
    main = json.loads((project / "build/api/main").read_text())
    pipelines = {pipeline["id"] for pipeline in main["pipelines"]}
    assert {"__default__", "demo_data", "data_processing", "diffusion_stage2_i2v"} <= pipelines
    assert {"raw", "intermediate", "primary", "model_input", "reporting"} <= set(main["layers"])
    kedro_order = ["raw", "intermediate", "primary", "feature", "model_input", "models",
                   "model_output", "reporting"]  # fmt: skip
    for pipeline in pipelines:  # the layers a pipeline draws, in Kedro's order
        drawn = json.loads((project / "build/api/pipelines" / pipeline).read_text())
        used = {node.get("layer") for node in drawn["nodes"]} - {None}
        in_order = [layer for layer in drawn["layers"] if layer in used]
        assert in_order == [layer for layer in kedro_order if layer in used], pipeline
    assert {"data", "training", "evaluation", "inference", "gpu"} <= {t["id"] for t in main["tags"]}


CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; CI installs it where it can


@pytest.mark.slow
def test_viz_opens_every_pipeline_without_page_errors_in_a_browser(project):
    """The served static viz in headless Chromium: every pipeline drawn, every node in view
    clicked, no uncaught page error."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: `apt-get install chromium` runs this test")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    if not (project / "build/api/main").exists():
        _kedro(project, "viz", "build")
    pipelines = sorted(p.name for p in (project / "build/api/pipelines").iterdir())
    server = _serve(project / "build")
    errors: list[str] = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"])  # fmt: skip
            for pipeline in pipelines:
                # A fresh context each time: kedro viz keeps UI state (focus, expanded
                # pipelines) in local storage; one pipeline's clicks must not touch the next.
                context = browser.new_context(viewport={"width": 1600, "height": 1000})
                page = context.new_page()
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.goto(f"http://127.0.0.1:{server.server_address[1]}/?pid={pipeline}")
                page.wait_for_selector(".pipeline-node", timeout=60_000)
                # The nodes drawn now: a click may re-lay the graph out and redraw fewer, so
                # each is asked where it is (None once it is gone), not looked up by position.
                for node in page.locator(".pipeline-node").element_handles():
                    box = node.bounding_box()
                    if box and 0 <= box["x"] < 1550 and 0 <= box["y"] < 950:
                        # A DOM click event: the graph re-lays itself out after a click, so
                        # a pointer click may find the next node moved off screen.
                        node.dispatch_event("click")
                context.close()  # an open page keeps animating: on 2 cores the next one starves
                assert not errors, f"{pipeline}: {errors}"
            browser.close()
    finally:
        server.shutdown()


def _serve(folder: Path):
    """A static file server for ``folder`` on a free localhost port, in a thread."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.slow
def test_invalid_params_fail_before_any_node_runs(project):
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"}
    args = [KEDRO, "run", "--params=demo_data.crf=99,diffusion_stage1.optim.lr=2"]
    result = subprocess.run(args, cwd=project, env=env, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "demo_data.crf = 99" in output and "diffusion_stage1.optim.lr = 2" in output
    assert "Running node" not in output and "Traceback" not in output


def _api(port: int, endpoint: str, body: dict) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/2.0/mlflow/{endpoint}", json.dumps(body).encode(),
        {"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_mlflow_ui_serves_the_runs_without_an_activated_environment(project):
    if not (project / "mlflow.db").exists():  # run alone: make a run to serve
        _kedro(project, "run", "--pipeline=demo_data", "--params=demo_data.num_clips=2")
    port = free_port()
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "PATH": "/usr/bin:/bin"}
    log = (project / "mlflow-ui.log").open("w")
    server = subprocess.Popen([KEDRO, "mlflow", "ui", "--port", str(port)], cwd=project, env=env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        deadline, experiments = time.monotonic() + 120, None
        while experiments is None:
            assert server.poll() is None, (project / "mlflow-ui.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the MLflow UI did not answer within 120 s"
            try:
                experiments = _api(port, "experiments/search", {"max_results": 10})
            except OSError:
                time.sleep(1)
        ids = [e["experiment_id"] for e in experiments["experiments"]]
        runs = _api(port, "runs/search", {"experiment_ids": ids})["runs"]
        names = [run["info"]["run_name"] for run in runs]
        assert any(re.fullmatch(r"\w+@local-[0-9a-f]{8}", name) for name in names), names
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
