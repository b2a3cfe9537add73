"""bench/monitor_agent.py runs (a few models, a few seconds) and prints its figures."""

from __future__ import annotations

import pytest

from bench.monitor_agent import main


def test_the_monitor_capacity_benchmark_prints_its_table(
    capsys: pytest.CaptureFixture[str],
) -> None:
    main(["--models", "5", "--seconds", "2", "--learn-s", "2", "--calibrate-s", "2"])

    out = capsys.readouterr().out
    assert "5 models at 20 requests a second, monitors watching while timed" in out
    assert "| decode the monitor delta and merge it |" in out
    assert "One core at one check a second holds about" in out
    assert "Stored state: median" in out
