"""A small run of bench/monitoring.py: its tables come out whole, with the runs it was asked for."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bench import monitoring
from controller.policy_io import default_monitoring_policy

FAMILIES = ("independent", "bursts")


@pytest.fixture
def short_policy(tmp_path: Path) -> Path:
    """The default monitoring policy with a 5-minute reference and calibration."""
    policy = default_monitoring_policy().to_dict()
    policy["reference"].update(learn_s=300, calibrate_s=300, min_requests=200)
    path = tmp_path / "short.yaml"
    path.write_text(yaml.safe_dump(policy))
    return path


def test_a_small_benchmark_run_prints_its_three_tables(
    short_policy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monitoring.main(
        [
            "--days", "0.1",
            "--monitor-days", "0.05",
            "--families", ",".join(FAMILIES),
            "--seeds", "1",
            "--detect-families", "independent",
            "--cost-monitors", "3",
            "--cost-seconds", "2",
            "--truth-samples", "10000",
            "--processes", "1",
            "--policy", str(short_policy),
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    lines = out.splitlines()

    assert lines[0].startswith("Command: `python bench/monitoring.py --days 0.1")
    assert "Crashes" not in out
    rules = [r.name for r in default_monitoring_policy().rules]
    false_alarms = {
        (cells[0].strip("* "), cells[1]): cells
        for line in lines
        if (cells := [c.strip() for c in line.strip("|").split("|")])[0].strip("* ") in rules
        and len(cells) == 9
    }
    for rule in rules:
        for family in (*FAMILIES, "all"):
            monitors, _alarms, days = false_alarms[(rule, family)][2:5]
            assert ("2" if family == "all" else "1") == monitors
            assert 0.0 < float(days) <= 0.1
    detection = {
        cells[0]: cells
        for line in lines
        if (cells := [c.strip() for c in line.strip("|").split("|")])[0] in monitoring.STEPS
    }
    assert set(monitoring.STEPS) == set(detection)
    for cells in detection.values():
        runs, detected, misses = (int(x) for x in cells[3:6])
        assert (1, 1) == (runs, detected + misses)
        assert cells[8].endswith(" s")  # an information limit was computed for each change
    cost = next(line for line in lines if line.startswith("| 3 |"))
    assert 9 == len(cost.strip("|").split("|"))
    assert "Ceiling: one core observes and checks" in out
