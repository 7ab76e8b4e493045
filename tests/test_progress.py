"""Progress off a terminal: log lines now and then, never a redrawn bar."""

import logging

from opensora_kedro.progress import LoggedProgress, progress


def test_off_a_terminal_progress_is_logged_at_intervals_and_at_the_end(caplog, monkeypatch):
    clock = iter(float(t) for t in range(0, 1000, 10))  # 10 s per tick of monotonic()
    monkeypatch.setattr("opensora_kedro.progress.time.monotonic", lambda: next(clock))
    with caplog.at_level(logging.INFO, logger="opensora_kedro.progress"):
        bar = LoggedProgress(total=10, desc="work", unit="item", interval=30.0, mininterval=0)
        with bar:
            for _ in range(10):
                bar.update(1)
    lines = [r.getMessage() for r in caplog.records]
    assert 2 <= len(lines) < 10  # some, not one per update
    assert lines[-1].startswith("work: 10/10 (100%)")
    assert all("\r" not in line and "█" not in line for line in lines)


def test_pytest_output_is_not_a_terminal_so_progress_logs():
    with progress(total=1, desc="x") as bar:
        assert isinstance(bar, LoggedProgress)
        bar.update(1)
