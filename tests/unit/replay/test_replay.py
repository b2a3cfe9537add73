"""Replaying a recorded log: the same decisions, byte for byte, from the same log."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

import schemas as s
from controller.core.policy import Policy
from controller.dev.simulate import PLANS, ClosedLoop, FleetConfig
from controller.policy_io import default_policy
from controller.replay.replay import Rejected, ReplayResult, Runner, replay, summary_table

#: A healthy rollout promotes within a simulated minute.
QUICK_PLAN = PLANS["quick"]
#: Canary records batched every 250 ms keep the tests fast (the core judges every record).
FAST = FleetConfig(rate=40.0, fault_onset_s=10.0, canary_batch_s=0.25)


@functools.cache
def policy() -> Policy:
    return default_policy()


@functools.cache
def simulated(scenario: str, seed: int) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    """A closed-loop log and what the controller published in the loop, as JSON lines."""
    loop = ClosedLoop(scenario, Runner(policy()), seed=seed, config=FAST, rollout_plan=QUICK_PLAN)
    log = tuple(event.to_json() for event in loop)
    return log, tuple(o.to_json() for o in loop.published)


def run(lines: list[bytes] | tuple[bytes, ...]) -> tuple[list[bytes], list[Rejected], ReplayResult]:
    outputs: list[bytes] = []
    rejected: list[Rejected] = []
    result = replay(
        lines, policy(), emit=lambda e: outputs.append(e.to_json()), reject=rejected.append
    )
    return outputs, rejected, result


def decisions(outputs: list[bytes]) -> list[dict[str, Any]]:
    docs = [orjson.loads(line) for line in outputs]
    return [d["data"] for d in docs if d["type"] == s.Decision.EVENT_TYPE]


def test_replaying_a_log_twice_gives_the_same_bytes() -> None:
    log, _ = simulated("latency_p99_x2", 1)

    first, _, _ = run(log)
    second, _, _ = run(log)

    assert first
    assert first == second


def test_a_replay_publishes_what_the_controller_published_in_the_loop() -> None:
    log, published = simulated("error_burst_x5", 2)

    replayed, _, _ = run(log)

    assert list(published) == replayed


def test_a_healthy_log_is_promoted_by_the_default_policy() -> None:
    log, _ = simulated("healthy", 3)

    outputs, rejected, result = run(log)

    assert [] == rejected
    assert "promoted" == decisions(outputs)[-1]["to_phase"]
    (deployment,) = result.deployments
    assert ("promoted", 2, 2) == (deployment.phase, deployment.steps_passed, deployment.steps)


def test_an_error_burst_log_is_rolled_back_by_the_default_policy() -> None:
    log, _ = simulated("error_burst_x5", 2)

    outputs, _, result = run(log)

    last = decisions(outputs)[-1]
    assert "rolled_back" == last["to_phase"]
    assert "error_rate" in last["reason"]
    commands = [orjson.loads(o)["data"] for o in outputs if b'"dev.rollout.command.v1"' in o]
    assert ["set_traffic", "rollback"] == [c["action"] for c in commands]
    assert "rolled_back" == result.deployments[0].phase


def test_an_outage_is_found_by_the_ticks_while_no_canary_event_arrives() -> None:
    log, _ = simulated("total_outage", 4)

    with_ticks, _, _ = run(log)
    last = decisions(with_ticks)[-1]

    assert "rolled_back" == last["to_phase"]
    assert "outage" in last["reason"]


def test_bad_lines_are_reported_counted_and_skipped() -> None:
    log, _ = simulated("healthy", 3)
    good, _, _ = run(log)
    broken = [log[0], b"not json\n", b'{"type": "dev.rollout.nope.v1"}\n', *log[1:]]
    broken.insert(5, b"   \n")  # blank lines are not records

    outputs, rejected, result = run(broken)

    assert good == outputs
    assert [2, 3] == [r.line for r in rejected]
    assert 2 == result.rejected
    doc = orjson.loads(rejected[1].to_json())
    assert "rejected" == doc["kind"]
    assert "unknown event type 'dev.rollout.nope.v1'" == doc["reason"]
    assert "2 rejected" in summary_table(result)


def test_ticks_on_the_event_time_grid_act_between_events() -> None:
    """The deadline passes 30 s after the request; the next event comes 60 s after it."""
    t0 = datetime(2026, 1, 1, 12, 0, 0, 500_000, tzinfo=UTC)
    request = s.DeploymentRequested(
        deployment_id="dep-1",
        model="fraud",
        candidate_version="v2",
        baseline_version="v1",
        plan=QUICK_PLAN.model_copy(update={"deadline_s": 30.0}),
    )
    later = s.ApprovalGranted(deployment_id="dep-1", step=1, by="bob")
    log = [
        s.make_event(request, source="test", time=t0, id="e1").to_json(),
        s.make_event(later, source="test", time=t0 + timedelta(seconds=60), id="e2").to_json(),
    ]

    def rollback_time(tick_s: float) -> str:
        outputs: list[bytes] = []
        replay(log, policy(), tick_s=tick_s, emit=lambda e: outputs.append(e.to_json()))
        (last,) = [d for d in decisions(outputs) if d["to_phase"] == "rolled_back"]
        return str(last["at"])

    assert "2026-01-01T12:00:31Z" == rollback_time(1.0)  # the first tick past the deadline
    assert "2026-01-01T12:01:00.500000Z" == rollback_time(0.0)  # no ticks: the next event


def test_the_summary_names_each_deployment_with_its_final_phase() -> None:
    log, _ = simulated("error_burst_x5", 2)

    _, _, result = run(log)
    table = summary_table(result)

    assert "| sim-error-burst-x5-2 | rolled_back | 0/2 |" in table
    assert "canary failed error_rate" in table
