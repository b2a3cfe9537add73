"""bench/quality.py runs and prints its figures (a benchmark, not a test of speed)."""

from __future__ import annotations

import pytest

from bench import quality


def test_the_quality_benchmark_prints_its_a_a_and_detection_figures(
    capsys: pytest.CaptureFixture[str],
) -> None:
    quality.main(["--rollouts", "4", "--pairs", "400"])

    out = capsys.readouterr().out
    assert "false rollbacks in 4 rollouts" in out
    assert out.count("| keep ") == 6
    assert "| candidate | 200 pairs | 300 pairs | 450 pairs | 600 pairs |" in out
    assert "Command: `python bench/quality.py --rollouts 4 --pairs 400`" in out
