"""The per-clip engine on local threads: order, recorded failures, journals that resume."""

from functools import partial

import pytest

from opensora_kedro.data.engine import EngineSettings, Journal, PerClip, file_key, run_stage


def _double(row: dict, calls: list | None = None) -> dict:
    if calls is not None:
        calls.append(row["path"])
    if row["path"] == "bad":
        raise ValueError("cannot read")
    return {"path": row["path"], "double": row["n"] * 2}


ROWS = [{"path": f"c{i}", "n": i} for i in range(12)]


def test_results_come_back_in_input_order_whatever_the_workers():
    for workers in (1, 3):
        results = run_stage(PerClip(_double), ROWS, EngineSettings(workers=workers), "t")
        assert [r["double"] for r in results] == [2 * i for i in range(12)]


def test_a_clip_that_raises_is_recorded_and_its_batch_neighbours_still_run():
    rows = [*ROWS[:3], {"path": "bad", "n": 0}, *ROWS[3:5]]
    stage = PerClip(_double, batch_size=4)
    results = run_stage(stage, rows, EngineSettings(workers=2), "t")
    assert [r["path"] for r in results] == [r["path"] for r in rows]
    assert results[3] == {
        "path": "bad",
        "reason": "stage_failed",
        "detail": "ValueError: cannot read",
    }
    assert [r["double"] for r in results if "double" in r] == [0, 2, 4, 6, 8]


class _Crash(BaseException):
    """What an interrupted run looks like to the engine: not an exception it records."""


def _crash_at(row: dict, at: str, calls: list) -> dict:
    if row["path"] == at:
        raise _Crash
    calls.append(row["path"])
    return {"path": row["path"], "double": row["n"] * 2}


def test_a_run_that_stops_half_way_resumes_with_the_clips_it_finished(tmp_path):
    journal = Journal(tmp_path / "motion.jsonl", fingerprint="variant=integer")
    calls: list = []
    with pytest.raises(_Crash):
        run_stage(PerClip(partial(_crash_at, at="c7", calls=calls)), ROWS, EngineSettings(workers=1),
                  "t", journal)  # fmt: skip
    finished = set(journal.load())
    key = {f"c{i}": file_key({"path": f"c{i}"}) for i in range(12)}
    assert {key[f"c{i}"] for i in range(7)} <= finished and key["c7"] not in finished

    calls.clear()
    results = run_stage(PerClip(partial(_double, calls=calls)), ROWS, EngineSettings(workers=1),
                        "t", journal)  # fmt: skip
    assert {key[c] for c in calls} == set(key.values()) - finished  # only the rest
    assert [r["double"] for r in results] == [2 * i for i in range(12)]
    assert not journal.path.exists()  # the stage returned everything: nothing left to resume


def test_a_journal_of_other_parameters_or_a_changed_file_is_not_reused(tmp_path):
    path = tmp_path / "j.jsonl"
    row = {"path": "a.mp4", "file_size": 10, "file_mtime_ns": 1, "n": 1}
    Journal(path, "frames=4").append([file_key(row)], [{"path": "a.mp4", "double": 99}])
    with open(path, "a") as handle:
        handle.write('{"fingerprint": "frames=4", "key": "torn')  # the line a crash cut short
    assert Journal(path, "frames=3").load() == {}
    changed = {**row, "file_mtime_ns": 2}
    results = run_stage(
        PerClip(_double), [changed], EngineSettings(), "t", Journal(path, "frames=4")
    )
    assert results == [{"path": "a.mp4", "double": 2}]
    assert Journal(path, "frames=4").load() == {}  # removed at the end
