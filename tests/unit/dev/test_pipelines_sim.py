"""The pipelines simulator's scenarios, replayed through the core: each change raises the alert
built for it, after its onset and naming the right pipeline; the healthy log raises none."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

import schemas as s
from controller.cli import cli
from controller.dev.pipelines_sim import ONSET_H, SCENARIOS, generate
from controller.policy_io import default_policy
from controller.replay.replay import replay

EXPECTED = {
    "healthy": None,
    "runaway": "gpu-pool/batch/quota.growth",
    "slow_leak": "gpu-pool/batch/quota.exhaustion",
    "slow_training": "training/pipeline.training.duration",
    "foreign_test_set": "data/pipeline.data.skew/test/",
}


def replayed(name: str) -> tuple[float, list[s.Envelope[Any]]]:
    """The log's first time, and what replaying it publishes."""
    events = list(generate(name, seed=1))
    out: list[s.Envelope[Any]] = []
    replay([e.to_json() for e in events], default_policy(), emit=out.append)
    return events[0].time.timestamp(), out


@pytest.mark.parametrize("name", SCENARIOS)
def test_each_scenario_raises_its_alert_after_its_onset_and_healthy_none(name: str) -> None:
    start, out = replayed(name)
    firing = [
        (e.data.dedup_key, e.time.timestamp() - start)
        for e in out
        if isinstance(e.data, s.Alert) and e.data.status == "firing"
    ]
    expected = EXPECTED[name]
    if expected is None:
        assert [] == firing
        return
    found = [(k, t) for k, t in firing if k.startswith(expected)]
    assert found, firing
    assert found[0][1] >= ONSET_H * 3600  # nothing before the change
    assert all(t >= ONSET_H * 3600 for _, t in firing)


def test_the_log_is_a_function_of_the_seed() -> None:
    first = [e.to_json() for e in generate("runaway", seed=3, hours=1)]
    again = [e.to_json() for e in generate("runaway", seed=3, hours=1)]
    other = [e.to_json() for e in generate("runaway", seed=4, hours=1)]
    assert first == again != other


def test_rollout_simulate_pipelines_writes_the_log_and_says_what_it_raises() -> None:
    result = CliRunner().invoke(cli, ["simulate", "--pipelines", "runaway", "--out", "-"])
    assert 0 == result.exit_code, result.output
    assert "throttle batch" in result.stderr and "gpu-pool/batch/quota.growth" in result.stderr
    unknown = CliRunner().invoke(cli, ["simulate", "--pipelines", "nope"])
    assert 2 == unknown.exit_code
    assert "unknown pipelines scenario 'nope'; known: healthy" in unknown.output
    assert "Traceback" not in unknown.output
