"""Progress without a terminal: log lines every 10 % (or minute) with rate and ETA; a bar otherwise."""

from __future__ import annotations

import logging

from geneattn import settings
from geneattn._progress import LogProgress, progress


def test_log_lines_every_tenth(caplog, monkeypatch):
    monkeypatch.setattr(settings, "progress", False)
    with caplog.at_level(logging.INFO, logger="geneattn"), progress(200, desc="train", unit="step") as bar:
        assert isinstance(bar, LogProgress)
        for _ in range(200):
            bar.update()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("train:")]
    assert len(lines) == 10  # 20, 40, ..., 200
    assert lines[-1].startswith("train: 200/200 step (100%)") and "ETA 0s" in lines[-1]
    assert "step/s" in lines[0] and "ETA" in lines[0]


def test_log_line_after_a_minute_even_without_progress(caplog, monkeypatch):
    clock = iter([0.0, 0.0, 61.0, 62.0])
    monkeypatch.setattr("geneattn._progress.time.monotonic", lambda: next(clock))
    bar = LogProgress(1000, desc="attention", unit="cell")
    with caplog.at_level(logging.INFO, logger="geneattn"):
        bar.update()  # t = 0: nothing yet
        bar.update()  # t = 61 s: a line although only 0.2 % is done
    assert [r.getMessage()[:21] for r in caplog.records] == ["attention: 2/1000 cel"]


def test_terminal_and_silent(monkeypatch):
    monkeypatch.setattr(settings, "progress", True)
    assert not isinstance(progress(5, desc="x"), LogProgress)
    monkeypatch.setattr(settings, "progress", False)
    silent = progress(5, desc="x", enabled=False)
    assert not isinstance(silent, LogProgress) and silent.disable
