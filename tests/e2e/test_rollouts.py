"""Whole rollouts on the real broker: a worker process, a router applying its commands to a
simulated fleet, and the decisions, commands and alerts it publishes."""

from __future__ import annotations

import pytest

from schemas import (
    AbortRequested,
    ApprovalGranted,
    CommandAction,
    RollbackProcedure,
    RollbackRequested,
    Severity,
)
from tests.e2e.harness import (
    Rollouts,
    actions,
    deployment_request,
    plan,
    step,
    terminal_command_ids,
    transitions,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_a_healthy_canary_is_promoted_through_every_step(world: Rollouts) -> None:
    world.start_worker()
    fleet = world.deploy(deployment_request("fraud-v2"), rate=500)

    promoted = world.wait_terminal("fraud-v2")

    assert "promoted" == promoted.to_phase
    assert [
        ("pending", "progressing", 0, 10.0),
        ("progressing", "progressing", 1, 50.0),
        ("progressing", "progressing", 2, 100.0),
        ("progressing", "promoted", 2, 100.0),
    ] == transitions(world.observer.decisions("fraud-v2"))
    commands = world.observer.commands("fraud-v2")
    assert [
        ("set_traffic", 10.0),
        ("set_traffic", 50.0),
        ("set_traffic", 100.0),
        ("promote", 100.0),
    ] == actions(commands)
    assert 1 == sum(c.action is CommandAction.PROMOTE for c in commands)
    assert promoted.command_ids == tuple(terminal_command_ids(commands))
    assert "passed" in promoted.reason and "promoted" in promoted.reason
    assert [] == [a for a in world.observer.alerts("fraud-v2") if a.status == "firing"]
    assert [] == world.observer.undecodable()  # everything published is a valid contract
    # the router applied every command, so the fleet ends on the candidate alone
    world.wait_for(lambda: fleet.canary_percent == 100.0, what="the router to apply the promote")


def test_a_latency_regression_is_rolled_back_with_the_evidence(world: Rollouts) -> None:
    world.start_worker()
    fleet = world.deploy(
        deployment_request("ranker-v7", model="ranker", baseline="v6", candidate="v7"),
        rate=400,
        canary_latency_factor=2.5,
    )

    ended = world.wait_terminal("ranker-v7")

    assert ("rolled_back", 0) == (ended.to_phase, ended.step)
    commands = world.observer.commands("ranker-v7")
    rollbacks = [c for c in commands if c.action is CommandAction.ROLLBACK]
    assert 1 == len(rollbacks)
    rollback = rollbacks[0]
    assert (0.0, (rollback.command_id,)) == (rollback.canary_percent, ended.command_ids)
    assert "latency" in rollback.reason
    assert ("latency", "latency") == (rollback.evidence["rule"], rollback.evidence["detector"])
    assert ["latency"] == rollback.evidence["failed_rules"]
    assert not any(c.action is CommandAction.PROMOTE for c in commands)
    firing = world.firing_alerts("ranker-v7")
    assert [("latency", Severity.CRITICAL, "ranker-v7/latency")] == [
        (a.kind, a.severity, a.dedup_key) for a in firing
    ]
    assert "canary" in firing[0].summary
    world.wait_for(lambda: fleet.canary_percent == 0.0, what="the router to apply the rollback")


def test_a_silent_canary_is_rolled_back_by_the_outage_rule(world: Rollouts) -> None:
    """The candidate gets its share of requests and reports nothing at all; only the baseline's
    predictions arrive, so the silence must be judged from the clock, not from canary events."""
    world.start_worker()
    fleet = world.deploy(
        deployment_request("search-v3", model="search", baseline="v2", candidate="v3"),
        rate=400,
        canary_silent=True,
    )

    ended = world.wait_terminal("search-v3", timeout=45)

    assert ("rolled_back", 0) == (ended.to_phase, ended.step)
    assert "outage" in ended.reason and "no canary predictions" in ended.reason
    assert ("outage", ["outage"]) == (ended.evidence["rule"], ended.evidence["failed_rules"])
    # the policy's outage rule: a long enough gap while enough canary requests were expected
    assert ended.evidence["silence_s"] >= ended.evidence["min_gap_s"]
    assert ended.evidence["expected_requests"] >= ended.evidence["needed_expected_requests"]
    rollbacks = [c for c in world.observer.commands("search-v3") if c.action.is_terminal()]
    assert [("rollback", 0.0)] == [(c.action.value, c.canary_percent) for c in rollbacks]
    firing = world.firing_alerts("search-v3")
    assert [("outage", Severity.CRITICAL)] == [(a.kind, a.severity) for a in firing]
    # the canary was sent traffic and never answered; the baseline kept reporting throughout
    assert fleet.served["canary"] > 100
    assert 0 == fleet.reported["canary"]
    assert fleet.reported["baseline"] > 1000


def test_an_approval_gate_holds_the_rollout_until_approved(world: Rollouts) -> None:
    world.start_worker()
    gated = plan(step(10), step(50, approval=True), step(100))
    fleet = world.deploy(deployment_request("churn-v4", gated, model="churn"), rate=600)
    observer = world.observer

    world.wait_for(
        lambda: observer.phase("churn-v4") == "awaiting_approval",
        what="churn-v4 to wait at the gate of step 1",
    )
    waiting = observer.decisions("churn-v4")[-1]
    assert (0, 10.0) == (waiting.step, waiting.canary_percent)
    assert "waiting for approval of step 1 (50%)" in waiting.reason

    def published() -> tuple[int, int]:
        return len(observer.decisions("churn-v4")), len(observer.commands("churn-v4"))

    # traffic keeps flowing and the timer keeps judging, yet nothing passes the gate
    at_the_gate, reported = published(), fleet.reported["canary"]
    world.holds(lambda: at_the_gate == published(), for_s=3.0, what="the gate")
    assert fleet.reported["canary"] > reported
    assert 10.0 == fleet.canary_percent

    world.send(ApprovalGranted(deployment_id="churn-v4", step=1, by="alice", reason="LGTM"))

    ended = world.wait_terminal("churn-v4")
    assert "promoted" == ended.to_phase
    assert [
        ("pending", "progressing", 0, 10.0),
        ("progressing", "awaiting_approval", 0, 10.0),
        ("awaiting_approval", "progressing", 1, 50.0),
        ("progressing", "progressing", 2, 100.0),
        ("progressing", "promoted", 2, 100.0),
    ] == transitions(observer.decisions("churn-v4"))
    opened = [d for d in observer.decisions("churn-v4") if d.from_phase == "awaiting_approval"]
    assert "step 1 (50%) approved by alice: LGTM" == opened[0].reason
    assert [("set_traffic", 10.0), ("set_traffic", 50.0), ("set_traffic", 100.0)] == actions(
        observer.commands("churn-v4")
    )[:3]


def test_a_manual_abort_ends_the_rollout_and_takes_traffic_back(world: Rollouts) -> None:
    world.start_worker()
    slow = plan(step(10, bake_s=600), step(100))
    fleet = world.deploy(deployment_request("eta-v9", slow, model="eta"), rate=200)
    world.wait_for(lambda: fleet.canary_percent == 10.0, what="the router to send 10% to eta-v9")

    world.send(AbortRequested(deployment_id="eta-v9", by="sre-on-call", reason="pager storm"))

    ended = world.wait_terminal("eta-v9")
    assert ("progressing", "aborted", 0) == (ended.from_phase, ended.to_phase, ended.step)
    assert "aborted by sre-on-call: pager storm" == ended.reason
    commands = world.observer.commands("eta-v9")
    assert [("set_traffic", 10.0), ("rollback", 0.0)] == actions(commands)
    assert ended.command_ids == tuple(terminal_command_ids(commands))
    world.wait_for(lambda: fleet.canary_percent == 0.0, what="the router to apply the rollback")


def test_a_promoted_model_is_rolled_back_to_its_records_rollback_version(world: Rollouts) -> None:
    """`rollout rollback` after the promotion: the worker answers with the rollback to the
    deployment record's version, once; a second rollback is refused."""
    world.start_worker()
    request = deployment_request("rank-v3", model="rank", baseline="v2", candidate="v3")
    request = request.model_copy(update={"rollback": RollbackProcedure(version="v1")})
    world.deploy(request, rate=500)
    world.wait_terminal("rank-v3")

    world.send(RollbackRequested(deployment_id="rank-v3", by="sre", reason="pager"))
    world.wait_for(
        lambda: world.observer.phase("rank-v3") == "rolled_back",
        what="rank-v3 to be rolled back after its promotion",
    )

    last = world.observer.decisions("rank-v3")[-1]
    assert ("promoted", "rolled_back") == (last.from_phase, last.to_phase)
    assert "rolled back after promotion to v1 by sre: pager" == last.reason
    world.wait_for(
        lambda: set(last.command_ids) <= {c.command_id for c in world.observer.commands("rank-v3")},
        what="the rollback command",
    )
    rollback = [c for c in world.observer.commands("rank-v3") if c.command_id in last.command_ids]
    assert [("rollback", "v1")] == [(c.action.value, c.rollback_version) for c in rollback]
