"""One run per project: the second run fails at once, naming the holder; no stale lock."""

import signal
import subprocess
import sys

import pytest

from opensora_kedro.runlock import LOCK_FILE, ProjectBusyError, RunLock

HOLD = (
    "import sys, time; from opensora_kedro.runlock import RunLock; "
    "lock = RunLock(sys.argv[1]); lock.acquire('kedro run --pipeline=x'); print('held', flush=True); "
    "time.sleep(120)"
)


def _holder(project) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(project)],
                               stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_run_fails_at_once_naming_the_holder(tmp_path):
    holder = _holder(tmp_path)
    try:
        with pytest.raises(ProjectBusyError) as error:
            RunLock(tmp_path).acquire("kedro run")
        assert error.value.holder["pid"] == holder.pid
        assert f"pid {holder.pid}" in str(error.value) and "kedro run --pipeline=x" in str(
            error.value
        )
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # killed with -9, the holder leaves no stale lock: the next run starts
    lock = RunLock(tmp_path)
    lock.acquire("kedro run")
    assert lock.held and (tmp_path / LOCK_FILE).exists()
    lock.release()


def test_release_lets_the_next_run_in(tmp_path):
    first = RunLock(tmp_path)
    first.acquire("one")
    first.release()
    second = RunLock(tmp_path)
    second.acquire("two")
    assert second.holder()["command"] == "two"
    second.release()
