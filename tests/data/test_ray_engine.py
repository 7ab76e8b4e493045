"""The per-clip engine on a local Ray instance: the same results as local threads, a lost
worker's clips run again (none lost, none twice), model stages on actors."""

import os
import signal
from functools import partial

import pytest

from opensora_kedro.data.engine import EngineSettings, PerClip, run_stage
from opensora_kedro.data.params import RayParams

ray = pytest.importorskip("ray")

RAY = EngineSettings(ray=RayParams(workers=2))


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    yield
    ray.shutdown()


def _work(row: dict, marker: str = "") -> dict:
    if marker and row["path"] == "c13" and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)  # the worker dies mid-batch, as on a lost machine
    if row["path"] == "bad":
        raise ValueError("cannot read")
    return {"path": row["path"], "double": row["n"] * 2, "half": row["n"] / 2, "pid": os.getpid()}


ROWS = [{"path": f"c{i}", "n": i} for i in range(30)] + [{"path": "bad", "n": 0}]


def _without_pid(results):
    return [{k: v for k, v in r.items() if k != "pid"} for r in results]


def test_ray_gives_the_local_engines_results_in_the_same_order():
    local = run_stage(PerClip(_work), ROWS, EngineSettings(workers=2), "t")
    remote = run_stage(PerClip(_work), ROWS, RAY, "t")
    assert _without_pid(remote) == _without_pid(local)
    assert remote[-1]["reason"] == "stage_failed"
    assert len({r["pid"] for r in remote if "pid" in r} - {os.getpid()}) >= 1  # ran in workers


def test_a_killed_worker_loses_and_duplicates_no_clip(tmp_path):
    marker = tmp_path / "killed"
    results = run_stage(PerClip(partial(_work, marker=str(marker))), ROWS, RAY, "t")
    assert marker.exists()  # a worker really died
    assert [r["path"] for r in results] == [r["path"] for r in ROWS]
    assert [r["double"] for r in results[:-1]] == [2 * i for i in range(30)]


class _Model:
    """A stage that loads something once per worker and batches its clips."""

    uses_model, batch_size = True, 4

    def __init__(self) -> None:
        self.loaded_in: int | None = None

    def __call__(self, rows: list[dict]) -> list[dict]:
        if self.loaded_in is None:
            self.loaded_in = os.getpid()
        return [{"path": r["path"], "batch": len(rows), "loaded_in": self.loaded_in} for r in rows]


def test_a_model_stage_runs_on_actors_that_keep_their_model():
    results = run_stage(_Model(), ROWS[:10], RAY, "t")
    assert [r["path"] for r in results] == [r["path"] for r in ROWS[:10]]
    assert {r["batch"] for r in results} <= {1, 2, 3, 4} and max(r["batch"] for r in results) > 1
    assert len({r["loaded_in"] for r in results}) <= 2  # once per actor, not per batch
