"""The rollout state machine, driven by literal predictions and events with a test-held clock."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime

import pytest

import schemas as s
from controller.core.phases import Phase
from controller.core.policy import Policy
from controller.core.rollout import Served, apply, evaluate, explain, merge, observe
from controller.core.rollout.alignment import held_requests
from controller.core.state import MAX_CHECKPOINTS, Panes, RolloutState
from controller.core.stats.cohort import CohortStats
from tests.factories import make_event
from tests.unit.core.rollout_helpers import START, Rollout, deployment, three_steps, unit_policy

# ---- a healthy rollout ----------------------------------------------------------------------


def test_a_healthy_rollout_goes_through_every_step_and_promotes() -> None:
    rollout = Rollout()

    rollout.serve_until("promoted")

    assert [
        ("set_traffic", 10.0),
        ("set_traffic", 50.0),
        ("set_traffic", 100.0),
        ("promote", 100.0),
    ] == rollout.actions()
    assert [
        ("pending", "progressing"),
        ("progressing", "progressing"),
        ("progressing", "progressing"),
        ("progressing", "promoted"),
    ] == rollout.phases()
    assert [] == rollout.alerts


def test_a_step_advances_only_after_its_bake_time_and_sample_minimum() -> None:
    rollout = Rollout()

    rollout.serve(9, canary=10)  # 90 requests, but only 9 s of the 10 s bake
    assert 1 == len(rollout.commands)

    rollout.serve(1, canary=10)
    assert ("set_traffic", 50.0) == rollout.actions()[-1]


def test_too_few_canary_requests_keep_the_step_baking() -> None:
    rollout = Rollout()

    rollout.serve(30, canary=1)  # 30 s baked, 30 of the 50 requests

    assert [("set_traffic", 10.0)] == rollout.actions()
    assert 30 == rollout.state.step_samples


def test_every_command_and_decision_carries_its_reason_and_the_time() -> None:
    rollout = Rollout()
    rollout.serve_until("promoted")

    for command in rollout.commands:
        assert command.reason
        assert command.issued_at.tzinfo is not None
    promote = rollout.commands[-1]
    assert "promoted" in promote.reason
    assert datetime.fromtimestamp(rollout.now, UTC) == promote.issued_at
    advance = rollout.decisions[1]
    assert "step 0 (10%) passed" in advance.reason
    assert advance.verdicts and "errors" == advance.verdicts[0]["rule"]
    assert advance.command_ids == (rollout.commands[1].command_id,)


def test_the_plan_gates_win_over_the_policy_defaults_and_fill_in_where_unset() -> None:
    steps = (
        s.TrafficStep(canary_percent=10),  # gates unset: the policy's 20 s / 50 requests
        s.TrafficStep(canary_percent=100, min_bake_s=0, min_samples=0),
    )
    policy = unit_policy(steps={"min_samples": 50, "min_bake_s": 20})
    rollout = Rollout(deployment(steps=steps), policy)

    rollout.serve(19, canary=10)
    assert 1 == len(rollout.commands)

    rollout.serve(1, canary=10)
    assert ("set_traffic", 100.0) == rollout.actions()[1]


# ---- a failing canary -----------------------------------------------------------------------


def test_a_failing_acting_rule_rolls_back_at_once_with_the_verdicts_evidence() -> None:
    rollout = Rollout()

    rollout.serve(3, canary=10, canary_errors=5)

    assert ("rollback", 0.0) == rollout.actions()[-1]
    assert Phase.ROLLED_BACK is rollout.state.phase
    rollback = rollout.commands[-1]
    assert "canary failed errors" in rollback.reason
    assert "canary error rate" in rollback.reason
    assert "errors" == rollback.evidence["rule"]
    assert rollback.evidence["canary_errors"] > 0
    decision = rollout.decisions[-1]
    assert ("progressing", "rolled_back") == (decision.from_phase, decision.to_phase)
    assert (rollback.command_id,) == decision.command_ids
    assert rollback.reason == decision.reason


def test_a_rollback_fires_one_critical_alert_with_the_runbook() -> None:
    rollout = Rollout()

    rollout.serve(3, canary=10, canary_errors=5)

    [alert] = rollout.alerts
    assert ("firing", "critical") == (alert.status, alert.severity.value)
    assert "dep-1/errors" == alert.dedup_key
    assert "https://runbooks.example/error_rate" == alert.runbook_url
    assert alert.summary.startswith("errors: canary error rate")


def test_a_dry_run_rule_warns_but_never_acts_and_resolves_when_it_passes_again() -> None:
    policy = unit_policy(
        rules=[
            {"name": "errors", "detector": "error_rate"},
            {"name": "silence", "detector": "outage", "dry_run": True},
        ]
    )
    rollout = Rollout(policy=policy)
    rollout.serve(3)

    rollout.serve(30, canary=0)  # the canary goes silent

    assert [("set_traffic", 10.0)] == rollout.actions()
    [firing] = rollout.alerts
    assert ("firing", "warning", "dep-1/silence") == (
        firing.status,
        firing.severity.value,
        firing.dedup_key,
    )
    assert firing.summary.startswith("silence (dry run): no canary predictions for")

    rollout.serve(1)  # it answers again
    assert ["firing", "resolved"] == [a.status for a in rollout.alerts]


def test_inconclusive_and_no_data_keep_the_step_baking() -> None:
    policy = unit_policy(
        rules=[{"name": "errors", "detector": "error_rate", "params": {"min_samples": 1000}}]
    )
    rollout = Rollout(policy=policy)

    rollout.serve(60, canary=10)

    assert [("set_traffic", 10.0)] == rollout.actions()
    assert "no_data" == rollout.steps[-1].verdicts[0].outcome.value


def test_no_data_may_be_told_to_pass() -> None:
    policy = unit_policy(
        no_data="pass",
        rules=[{"name": "errors", "detector": "error_rate", "params": {"min_samples": 1000}}],
    )
    rollout = Rollout(policy=policy)

    rollout.serve(10, canary=10)

    assert ("set_traffic", 50.0) == rollout.actions()[-1]


# ---- approvals ------------------------------------------------------------------------------


def test_an_approval_gate_holds_the_start_until_approved() -> None:
    rollout = Rollout(deployment(approval_to_start=True))

    assert Phase.AWAITING_APPROVAL is rollout.state.phase
    assert [] == rollout.commands
    rollout.wait(600)
    rollout.tick()
    assert [] == rollout.commands

    rollout.send(s.ApprovalGranted(deployment_id="dep-1", step=0, by="bob", reason="go"))

    assert [("set_traffic", 10.0)] == rollout.actions()
    assert "step 0 (10%) approved by bob: go" == rollout.commands[0].reason


def test_an_approval_for_another_step_does_not_open_the_gate() -> None:
    rollout = Rollout(deployment(approval_to_start=True))

    step = rollout.send(s.ApprovalGranted(deployment_id="dep-1", step=1, by="bob"))

    assert step.is_noop()
    assert Phase.AWAITING_APPROVAL is rollout.state.phase
    assert "the gate waiting is step 0" in step.note


def test_a_step_that_requires_approval_waits_with_traffic_held() -> None:
    plan = three_steps()
    steps = list(plan.steps)
    steps[1] = steps[1].model_copy(update={"requires_approval": True})
    rollout = Rollout(deployment(steps=tuple(steps)))

    rollout.serve_until("awaiting_approval")
    rollout.serve(30)

    assert [("set_traffic", 10.0)] == rollout.actions()
    assert "waiting for approval of step 1 (50%)" in rollout.decisions[-1].reason

    rollout.send(s.ApprovalGranted(deployment_id="dep-1", step=1, by="carol"))
    assert ("set_traffic", 50.0) == rollout.actions()[-1]


def test_an_approval_given_while_paused_at_a_gate_is_recorded_when_it_opens_the_gate() -> None:
    plan = three_steps()
    steps = list(plan.steps)
    steps[1] = steps[1].model_copy(update={"requires_approval": True})
    rollout = Rollout(deployment(steps=tuple(steps)))
    rollout.serve_until("awaiting_approval")

    rollout.send(s.PauseRequested(deployment_id="dep-1", by="sre", reason="freeze"))
    rollout.send(s.ApprovalGranted(deployment_id="dep-1", step=1, by="carol", reason="LGTM"))
    rollout.send(s.ResumeRequested(deployment_id="dep-1", by="sre"))

    assert ("set_traffic", 50.0) == rollout.actions()[-1]
    opened = rollout.decisions[-1]
    assert "resumed by sre; step 1 (50%) was approved by carol" == opened.reason
    assert ("carol", "LGTM") == (opened.evidence["approved_by"], opened.evidence["approval_reason"])


def test_an_approval_given_ahead_of_time_opens_its_gate_when_reached() -> None:
    plan = three_steps()
    steps = list(plan.steps)
    steps[1] = steps[1].model_copy(update={"requires_approval": True})
    rollout = Rollout(deployment(steps=tuple(steps)))

    rollout.send(s.ApprovalGranted(deployment_id="dep-1", step=1, by="carol"))
    rollout.serve(10)

    assert ("set_traffic", 50.0) == rollout.actions()[-1]
    assert "approved by carol" in rollout.commands[-1].reason


def test_an_approval_records_the_same_decisions_whether_it_came_before_or_after_the_gate() -> None:
    """A replay's ticks may fall on the other side of an approval than the worker's did: the
    gate is recorded (`awaiting_approval`, then approved by whom and why) either way."""
    plan = three_steps()
    steps = list(plan.steps)
    steps[1] = steps[1].model_copy(update={"requires_approval": True})
    grant = s.ApprovalGranted(deployment_id="dep-1", step=1, by="carol", reason="LGTM")
    early, late = Rollout(deployment(steps=tuple(steps))), Rollout(deployment(steps=tuple(steps)))

    early.send(grant)
    for _ in range(600):
        if len(early.decisions) >= 3:
            break
        early.serve()
    late.serve_until("awaiting_approval")
    late.send(grant)

    def gate(r: Rollout) -> list[tuple[str, str, str, int, str]]:
        return [(d.decision_id, d.from_phase, d.to_phase, d.step, d.reason) for d in r.decisions]

    assert gate(late) == gate(early)[: len(gate(late))]
    assert 3 == len(gate(late))
    assert ("awaiting_approval", "progressing", 1, "step 1 (50%) approved by carol: LGTM") == (
        gate(late)[-1][1:]
    )
    assert [c.command_id for c in late.commands] == [c.command_id for c in early.commands][:2]


def test_a_denial_before_any_traffic_aborts_without_a_command() -> None:
    rollout = Rollout(deployment(approval_to_start=True))

    rollout.send(s.ApprovalDenied(deployment_id="dep-1", step=0, by="bob", reason="not today"))

    assert Phase.ABORTED is rollout.state.phase
    assert [] == rollout.commands
    assert "step 0 (10%) denied by bob: not today" == rollout.decisions[-1].reason


def test_a_denial_once_the_canary_has_traffic_rolls_it_back() -> None:
    rollout = Rollout()
    rollout.serve(2)

    rollout.send(s.ApprovalDenied(deployment_id="dep-1", step=1, by="bob"))

    assert Phase.ROLLED_BACK is rollout.state.phase
    assert ("rollback", 0.0) == rollout.actions()[-1]


# ---- people: pause, resume, abort, rollback -------------------------------------------------


def test_a_pause_holds_traffic_and_the_step_until_resumed() -> None:
    rollout = Rollout()
    rollout.serve(2)

    rollout.send(s.PauseRequested(deployment_id="dep-1", by="sre", reason="freeze"))
    rollout.serve(30)

    assert [("set_traffic", 10.0), ("pause", 10.0)] == rollout.actions()
    assert Phase.PAUSED is rollout.state.phase
    assert "paused by sre: freeze" == rollout.commands[-1].reason

    rollout.send(s.ResumeRequested(deployment_id="dep-1", by="sre"))

    # the router is told the current share again; the bake time kept counting while paused,
    # so the step's gates are met at once
    assert [("set_traffic", 10.0), ("set_traffic", 50.0)] == rollout.actions()[-2:]
    assert "resumed by sre" == rollout.commands[-2].reason
    assert rollout.commands[-1].reason.startswith("step 0 (10%) passed")


def test_a_failing_canary_is_rolled_back_even_while_paused() -> None:
    rollout = Rollout()
    rollout.send(s.PauseRequested(deployment_id="dep-1", by="sre"))

    rollout.serve(3, canary_errors=5)

    assert Phase.ROLLED_BACK is rollout.state.phase
    assert ("paused", "rolled_back") == rollout.phases()[-1]


def test_an_abort_withdraws_the_canary_and_ends_aborted() -> None:
    rollout = Rollout()
    rollout.serve(2)

    rollout.send(s.AbortRequested(deployment_id="dep-1", by="sre", reason="wrong build"))

    assert ("rollback", 0.0) == rollout.actions()[-1]
    assert Phase.ABORTED is rollout.state.phase
    assert "aborted by sre: wrong build" == rollout.commands[-1].reason


def test_a_requested_rollback_ends_rolled_back() -> None:
    rollout = Rollout()
    rollout.serve(2)

    rollout.send(s.RollbackRequested(deployment_id="dep-1", by="sre", reason="pager"))

    assert ("rollback", 0.0) == rollout.actions()[-1]
    assert Phase.ROLLED_BACK is rollout.state.phase


# ---- the deadline ---------------------------------------------------------------------------


def test_the_deadline_rolls_back_by_default() -> None:
    policy = unit_policy(
        rules=[{"name": "errors", "detector": "error_rate", "params": {"min_samples": 10**6}}]
    )
    rollout = Rollout(deployment(deadline_s=120.0), policy)

    rollout.serve(119)
    assert Phase.PROGRESSING is rollout.state.phase

    rollout.serve(1)
    assert ("rollback", 0.0) == rollout.actions()[-1]
    assert "deadline of 120 s passed at step 0 (10%)" == rollout.commands[-1].reason


def test_the_policy_deadline_applies_when_the_plan_sets_none() -> None:
    policy = unit_policy(deadline={"after_s": 30, "action": "rollback"})
    rollout = Rollout(deployment(deadline_s=None, approval_to_start=True), policy)

    rollout.wait(30)
    rollout.tick()

    assert Phase.ABORTED is rollout.state.phase  # no traffic was ever sent: nothing to roll back
    assert [] == rollout.commands


def test_a_promote_deadline_promotes_a_canary_that_is_not_failing() -> None:
    policy = unit_policy(
        deadline={"action": "promote"},
        rules=[{"name": "errors", "detector": "error_rate", "params": {"min_samples": 10**6}}],
    )
    rollout = Rollout(deployment(deadline_s=60.0), policy)

    rollout.serve(60)

    assert ("promote", 100.0) == rollout.actions()[-1]
    assert Phase.PROMOTED is rollout.state.phase


def test_a_promote_deadline_waits_for_a_pause_to_end() -> None:
    policy = unit_policy(
        deadline={"action": "promote"},
        rules=[{"name": "errors", "detector": "error_rate", "params": {"min_samples": 10**6}}],
    )
    rollout = Rollout(deployment(deadline_s=60.0), policy)
    rollout.send(s.PauseRequested(deployment_id="dep-1", by="sre"))

    rollout.serve(120)
    assert "paused" == rollout.state.phase.value

    rollout.send(s.ResumeRequested(deployment_id="dep-1", by="sre"))
    assert "promoted" == rollout.state.phase.value


def test_a_pause_deadline_pauses_once() -> None:
    policy = unit_policy(
        deadline={"action": "pause"},
        rules=[{"name": "errors", "detector": "error_rate", "params": {"min_samples": 10**6}}],
    )
    rollout = Rollout(deployment(deadline_s=60.0), policy)

    rollout.serve(60)
    assert ("pause", 10.0) == rollout.actions()[-1]

    rollout.send(s.ResumeRequested(deployment_id="dep-1", by="sre"))
    rollout.serve(60)
    assert Phase.PROGRESSING is rollout.state.phase


def test_a_rule_without_data_rolls_back_at_the_deadline_when_told_to() -> None:
    policy = unit_policy(
        deadline={"action": "promote"},
        rules=[
            {
                "name": "errors",
                "detector": "error_rate",
                "params": {"min_samples": 10**6},
                "no_data": "rollback",
            }
        ],
    )
    rollout = Rollout(deployment(deadline_s=60.0), policy)

    rollout.serve(60)

    assert ("rollback", 0.0) == rollout.actions()[-1]
    assert "no data for errors" in rollout.commands[-1].reason


# ---- the end is the end ---------------------------------------------------------------------


def test_a_terminal_phase_never_changes_and_never_issues_another_command() -> None:
    """But a person's rollback of the promoted model (tests/unit/core/test_deployment_record)."""
    rollout = Rollout()
    rollout.serve_until("promoted")
    commands = len(rollout.commands)

    for payload in (
        s.AbortRequested(deployment_id="dep-1", by="sre"),
        s.PauseRequested(deployment_id="dep-1", by="sre"),
        s.ApprovalDenied(deployment_id="dep-1", step=0, by="bob"),
        deployment(),
    ):
        step = rollout.send(payload)
        assert step.is_noop()
        assert "promoted" in step.refusal
        assert step.refusal in step.note
    rollout.serve(10, canary_errors=10)

    assert Phase.PROMOTED is rollout.state.phase
    assert commands == len(rollout.commands)
    assert rollout.state.ignored["after_end"] > 0


@pytest.mark.parametrize(
    ("payload", "refused"),
    [
        (s.ApprovalGranted(deployment_id="dep-9", step=0, by="bob"), "no rollout 'dep-9'"),
        (s.PauseRequested(deployment_id="dep-9", by="sre"), "deploy it first"),
        (deployment(), "is already a rollout (progressing): a new rollout needs a new deployment"),
        (s.ApprovalGranted(deployment_id="dep-1", step=0, by="bob"), "past that gate (at step 0)"),
        (s.ApprovalGranted(deployment_id="dep-1", step=7, by="bob"), "the plan has 3 steps"),
        (s.ApprovalDenied(deployment_id="dep-1", step=0, by="bob"), "no such gate ahead"),
        (s.ResumeRequested(deployment_id="dep-1", by="sre"), "progressing, not paused"),
    ],
)
def test_a_request_that_cannot_apply_is_refused_with_the_reason(
    payload: s.Payload, refused: str
) -> None:
    rollout = Rollout()
    rollout.serve(2)
    before = rollout.state.to_dict()

    result = apply(
        rollout.state if payload.record_key() == "dep-1" else None,
        make_event(payload),
        rollout.policy,
        rollout.now,
    )

    assert refused in result.refusal
    assert result.is_noop()
    if result.state is not None:
        assert before == result.state.to_dict() | {"recent_ids": before["recent_ids"]}


def test_reports_and_redeliveries_are_not_refusals() -> None:
    rollout = Rollout()
    rollout.serve(2)
    pause = make_event(s.PauseRequested(deployment_id="dep-1", by="sre"))
    assert "" == apply(rollout.state, pause, rollout.policy, rollout.now).refusal

    again = apply(rollout.state, pause, rollout.policy, rollout.now)  # the same event id
    label = s.LabelReported(
        deployment_id="dep-9",
        request_id="r-1",
        label=1.0,
        event_time=datetime.fromtimestamp(START, UTC),
    )
    unknown = apply(None, label, rollout.policy, rollout.now)

    assert ("", "") == (again.refusal, unknown.refusal)
    assert "already applied" in again.note
    assert "no rollout 'dep-9'" in unknown.note


def test_the_same_event_applied_twice_issues_no_second_command() -> None:
    rollout = Rollout()
    rollout.serve(2)
    pause = s.PauseRequested(deployment_id="dep-1", by="sre")
    resume = s.ResumeRequested(deployment_id="dep-1", by="sre")

    rollout.send(pause, event_id="evt-7")
    rollout.send(resume, event_id="evt-8")
    again = rollout.send(pause, event_id="evt-7")

    assert again.is_noop()
    assert "already applied" in again.note
    assert Phase.PROGRESSING is rollout.state.phase


def test_an_envelope_brings_its_own_event_id() -> None:
    policy = unit_policy()
    first = apply(None, make_event(deployment(), id="evt-1"), policy, START)
    assert first.state is not None

    again = apply(first.state, make_event(deployment(), id="evt-1"), policy, START + 1)

    assert again.is_noop()
    assert "evt-1 already applied" in again.note


def test_events_for_a_rollout_never_requested_change_nothing() -> None:
    step = apply(None, s.PauseRequested(deployment_id="dep-9", by="sre"), unit_policy(), START)

    assert step.state is None
    assert step.is_noop()
    assert "no rollout 'dep-9'" in step.note


def test_a_deployment_with_a_bad_guardrail_is_rejected_with_the_known_detectors() -> None:
    request = deployment(guardrails=(s.GuardrailRule(name="x", detector="vibes"),))

    step = apply(None, request, unit_policy(), START)

    assert step.state is not None
    assert Phase.ABORTED is step.state.phase
    assert [] == list(step.commands)
    assert "unknown detector 'vibes'" in step.decisions[0].reason
    assert "error_rate" in step.decisions[0].reason


# ---- inputs ---------------------------------------------------------------------------------


def counted(state: RolloutState, cohort: str) -> tuple[int, int]:
    """Requests and errors of `cohort`, with those still waiting (for the other cohort, or for
    the first step's cut: here the canary's other version means it never reports)."""
    held = state.held.get(cohort, {}).values()
    stats = state.stats[cohort]
    return (
        stats.requests + sum(h.requests for h in held),
        stats.errors + sum(h.errors for h in held),
    )


def test_predictions_of_another_version_are_counted_and_left_out() -> None:
    rollout = Rollout()

    rollout.serve(1, canary=5, baseline=5, canary_version="v3")

    assert (0, 0) == counted(rollout.state, "canary")
    assert (5, 0) == counted(rollout.state, "baseline")
    assert {"version_mismatch:canary": 5} == rollout.state.ignored


def test_shadow_predictions_are_kept_apart_and_never_gate() -> None:
    rollout = Rollout()

    observe(rollout.state, [Served("shadow", "v2", True, 10.0, START)] * 100, START)

    assert 100 == rollout.state.shadow.requests
    assert 0 == rollout.state.step_samples


def test_prediction_models_take_the_same_path_as_plain_tuples() -> None:
    rollout = Rollout()
    item = s.Prediction(
        version="v2",
        cohort="canary",
        request_id="r-1",
        event_time=datetime.fromtimestamp(START, UTC),
        latency_ms=80.0,
        ok=False,
        error_type="timeout",
    )
    base = item.model_copy(
        update={"version": "v1", "cohort": s.Cohort.BASELINE, "request_id": "r-2"}
    )

    rollout.send(s.PredictionBatch(deployment_id="dep-1", model="fraud", predictions=(item,)))

    assert (1, 1) == counted(rollout.state, "canary")
    # the first step's cut waits for the baseline
    assert {"canary": 1} == held_requests(rollout.state)
    rollout.send(s.PredictionBatch(deployment_id="dep-1", model="fraud", predictions=(base,)))
    assert (1, 1) == (rollout.state.canary.requests, rollout.state.canary.errors)
    assert 1 == rollout.state.step_samples


def test_merged_statistics_count_like_observed_ones_and_a_redelivery_counts_once() -> None:
    rollout = Rollout()
    delta = CohortStats()
    for _ in range(7):
        delta.observe(ok=True, latency_ms=50.0, event_time=START)

    merge(rollout.state, [("canary", "v2", delta), ("baseline", "v0", delta)], START, "d-1")
    merge(rollout.state, [("canary", "v2", delta)], START, "d-1")

    assert (7, 0) == counted(rollout.state, "canary")
    merge(rollout.state, [("baseline", "v1", delta)], START, "d-2")
    evaluate(rollout.state, rollout.policy, START)  # the first step's cut: the canary joins
    assert 7 == rollout.state.canary.requests
    assert 7 == rollout.state.step_samples
    assert {"version_mismatch:baseline": 7} == rollout.state.ignored


def test_traffic_applied_for_the_current_step_moves_the_bake_clock() -> None:
    rollout = Rollout()
    first = rollout.commands[0]
    applied = datetime.fromtimestamp(START + 5, UTC)
    rollout.wait(6)

    rollout.send(
        s.TrafficApplied(
            deployment_id="dep-1",
            command_id=first.command_id,
            canary_percent=10.0,
            applied_by="router",
            applied_at=applied,
        )
    )

    assert START + 5 == rollout.state.step_started_at
    rollout.serve(8)  # 14 s since the command, only 9 s since the router applied it
    assert 1 == len(rollout.commands)
    rollout.serve(1)
    assert 2 == len(rollout.commands)


OUTAGE_RULES = [
    {"name": "errors", "detector": "error_rate", "params": {"min_samples": 20}},
    {"name": "outage", "detector": "outage", "params": {"min_gap_s": 5}},
]


def late_router(policy: Policy) -> Rollout:
    """The first step's set_traffic reaches a router that applies it 85 s late (after a broker
    outage): the baseline serves all traffic meanwhile; then the router acknowledges and the
    canary gets its 10 %."""
    rollout = Rollout(deployment(), policy, router_acks=False)
    for _ in range(85):
        if not rollout.state.phase.is_active():
            return rollout
        rollout.serve(1, canary=0, baseline=90)
    rollout.acknowledge(rollout.commands[0], applied_at=rollout.now)
    rollout.serve(15, canary=10, baseline=90)
    return rollout


def test_a_router_that_applies_late_is_alerted_on_and_the_canary_judged_from_its_ack() -> None:
    rollout = late_router(unit_policy(rules=OUTAGE_RULES))

    first, again, second = rollout.commands  # the first step's command, sent again at 30 s
    assert first == again
    assert (s.CommandAction.SET_TRAFFIC, 50.0) == (second.action, second.canary_percent)
    assert 1 == rollout.state.step
    alerts = [(a.kind, a.status, round(a.at.timestamp() - START)) for a in rollout.alerts]
    assert [("router", "firing", 30), ("router", "resolved", 85)] == alerts
    assert "has not acknowledged set_traffic" in rollout.alerts[0].summary
    # the bake counted from the acknowledgement: 10 s after it, not 95 s after the command
    passed = next(d for d in rollout.decisions if d.step == 1)
    assert START + 85 + 10 <= passed.at.timestamp() <= START + 85 + 12


def test_a_router_that_does_not_acknowledge_is_judged_from_the_command() -> None:
    """`router.acknowledges: false`: the silence counts from the command, so the same late
    router is a canary outage (what the acknowledgement exists to tell apart)."""
    policy = unit_policy(rules=OUTAGE_RULES, router={"acknowledges": False})

    rollout = late_router(policy)

    assert Phase.ROLLED_BACK is rollout.state.phase
    assert "outage" in rollout.decisions[-1].reason
    assert [] == [a for a in rollout.alerts if a.kind == "router"]


def test_an_unacknowledged_command_is_sent_again_as_it_was_with_a_growing_wait() -> None:
    """A lost command or acknowledgement is recovered: the router acknowledges a command id
    it sees again. The very same command, so no id ever names two contents."""
    rollout = Rollout(router_acks=False)
    rollout.serve(29, canary=10, baseline=90)
    assert 1 == len(rollout.commands)

    rollout.serve(1, canary=10, baseline=90)  # 30 s: sent again, and the router alert
    assert 2 == len(rollout.commands)
    rollout.serve(59, canary=10, baseline=90)  # 90 s: again (twice as long after)
    assert 2 == len(rollout.commands)
    rollout.serve(1, canary=10, baseline=90)
    first = rollout.commands[0]
    assert [first, first, first] == rollout.commands
    assert ["firing"] == [a.status for a in rollout.alerts]

    rollout.acknowledge(first)
    rollout.serve(40, canary=10, baseline=90)
    assert first not in rollout.commands[3:]  # acknowledged: not again, the step passed
    assert 1 == rollout.state.step


def test_a_step_holds_while_its_acknowledgement_is_awaited() -> None:
    rollout = Rollout(router_acks=False)
    rollout.serve(120, canary=10, baseline=90)  # traffic flows, the router never says so

    assert 1 == len({c.command_id for c in rollout.commands})  # sent at 0, 30 and 90 s
    assert 3 == len(rollout.commands)
    assessment = explain(rollout.state, rollout.policy, rollout.now)
    assert not assessment.may_advance()
    assert "the router has not acknowledged set_traffic" in assessment.explain()
    assert ["firing"] == [a.status for a in rollout.alerts if a.kind == "router"]

    rollout.acknowledge(rollout.commands[0])
    rollout.serve(10, canary=10, baseline=90)
    assert 2 == len({c.command_id for c in rollout.commands})
    assert ["firing", "resolved"] == [a.status for a in rollout.alerts if a.kind == "router"]


def test_the_bake_waits_while_the_inputs_stop_and_counts_the_backlog_when_they_come() -> None:
    """A worker cut off from the broker: its clock runs on, no input arrives. The bake runs
    5 s past what the inputs cover, the silence of both cohorts is no canary outage, and the
    backlog, once it arrives, counts at its event times."""
    rollout = Rollout(policy=unit_policy(rules=OUTAGE_RULES))
    rollout.serve(3, canary=10, baseline=90)
    cut_off = rollout.now
    for _ in range(60):
        rollout.wait(1)
        rollout.tick()

    assert Phase.PROGRESSING is rollout.state.phase
    assert 1 == len(rollout.commands)
    assert (
        "the inputs trail the clock by 60 s"
        in explain(rollout.state, rollout.policy, rollout.now).explain()
    )

    now = rollout.now
    # the backlog's first second (the step's fourth): the bake runs 5 s past the inputs
    items = [Served("canary", "v2", True, 100.0, cut_off + 1)] * 10
    items += [Served("baseline", "v1", True, 100.0, cut_off + 1)] * 90
    observe(rollout.state, items, now)
    rollout.tick()
    assert 1 == len(rollout.commands)
    why = explain(rollout.state, rollout.policy, rollout.now).explain()
    assert "baked 9 s of 10 s" in why
    assert "outage" not in why  # neither cohort was heard: no silence grew
    rollout.serve(1, canary=10, baseline=90)  # the inputs have caught up
    assert 2 == len(rollout.commands)


def test_a_training_profile_from_a_data_profile_replaces_the_requests_one() -> None:
    rollout = Rollout()
    profile = s.FeatureProfile(
        name="amount", kind="numeric", bin_edges=(10.0,), proportions=(0.5, 0.5)
    )

    rollout.send(
        s.DataProfile(
            deployment_id="dep-1",
            dataset="train-2",
            split="training",
            row_count=10,
            features=(profile,),
        )
    )

    assert rollout.state.training_profile is not None
    assert "train-2" == rollout.state.training_profile.dataset
    assert 1 == rollout.state.profile_version
    assert rollout.state.has_training_profile()


def test_resource_usage_warns_escalates_and_resolves() -> None:
    rollout = Rollout()

    def usage(used: float) -> None:
        rollout.send(
            s.ResourceUsage(deployment_id="dep-1", resource="gpu_hours", used=used, limit=100)
        )

    usage(50)
    usage(91)
    usage(95)
    usage(100)
    usage(40)

    assert [("firing", "warning"), ("firing", "critical"), ("resolved", "critical")] == [
        (a.status, a.severity.value) for a in rollout.alerts
    ]
    assert {"dep-1/resource.gpu_hours"} == {a.dedup_key for a in rollout.alerts}
    assert [("set_traffic", 10.0)] == rollout.actions()  # alerts only, never a rollback


def test_a_failed_training_run_warns_until_the_pipeline_succeeds() -> None:
    rollout = Rollout()

    def run(status: str, error: str | None = None) -> None:
        rollout.send(
            s.TrainingRun(
                deployment_id="dep-1", pipeline="nightly", run_id="r", status=status, error=error
            )
        )

    run("failed", "OOM")
    run("failed", "OOM again")
    run("succeeded")

    assert [("firing", "warning"), ("resolved", "warning")] == [
        (a.status, a.severity.value) for a in rollout.alerts
    ]
    assert "failed: OOM" in rollout.alerts[0].summary


def test_labels_are_counted() -> None:
    rollout = Rollout()

    rollout.send(
        s.LabelReported(
            deployment_id="dep-1",
            request_id="r-1",
            label=1.0,
            event_time=datetime.fromtimestamp(START, UTC),
        )
    )

    assert 1 == rollout.state.labels


# ---- plain data -----------------------------------------------------------------------------


def test_the_state_round_trips_through_plain_json() -> None:
    rollout = Rollout()
    rollout.serve(12, canary_errors=0)
    rollout.send(s.ResourceUsage(deployment_id="dep-1", resource="gpu", used=95, limit=100))

    text = json.dumps(rollout.state.to_dict())
    restored = RolloutState.from_dict(json.loads(text))

    assert rollout.state == restored


def test_a_restored_state_decides_exactly_like_the_original() -> None:
    rollout = Rollout()
    rollout.serve(5)
    copy = rollout.state.copy()

    original = evaluate(rollout.state, rollout.policy, rollout.now + 20)
    restored = evaluate(copy, rollout.policy, rollout.now + 20)

    assert original.commands == restored.commands
    assert original.decisions == restored.decisions
    assert rollout.state == copy


@pytest.mark.parametrize("phase", [p for p in Phase if p.is_terminal()])
def test_a_terminal_state_is_not_live(phase: Phase) -> None:
    rollout = Rollout()
    rollout.state.phase = phase

    assert not rollout.state.is_live()
    assert evaluate(rollout.state, rollout.policy, rollout.now + 10**6).is_noop()


# ---- the recent window ----------------------------------------------------------------------


def test_recent_panes_rotate_on_the_clock_and_forget_what_is_two_panes_old() -> None:
    panes = Panes.empty(10.0, now=100.0)
    for now in (101.0, 105.0):
        panes.rotate(now)
        panes.current.observe(ok=True, latency_ms=1.0, event_time=now)

    panes.rotate(112.0)  # the next pane: what came before is the previous pane
    panes.current.observe(ok=False, latency_ms=1.0, event_time=112.0)
    assert (3, 1) == (panes.view().requests, panes.view().errors)

    panes.rotate(121.0)  # one more: the first pane is gone
    assert (1, 1) == (panes.view().requests, panes.view().errors)

    panes.rotate(150.0)  # a long silence: both panes are empty
    assert 0 == panes.view().requests
    assert 150.0 == panes.start


def test_a_rule_on_the_recent_window_judges_only_the_last_panes() -> None:
    policy = unit_policy(
        evaluation={"recent_s": 10},
        rules=[
            {
                "name": "errors_now",
                "detector": "error_rate",
                "window": "recent",
                "dry_run": True,
                "params": {"min_samples": 20},
            }
        ],
    )
    long_bake = (s.TrafficStep(canary_percent=10, min_bake_s=1000, min_samples=50),)
    rollout = Rollout(deployment(steps=long_bake), policy)

    rollout.serve(40, canary=10, baseline=10)

    [verdict] = rollout.steps[-1].verdicts
    assert verdict.evidence["canary_requests"] < 200  # 10 to 20 s of traffic, not 40
    assert rollout.state.panes is not None
    assert 400 == rollout.state.canary.requests


def test_predictions_left_out_are_reported_in_the_decisions_evidence() -> None:
    rollout = Rollout()

    rollout.serve(1, canary=3, canary_version="v3")
    rollout.serve_until("promoted")

    assert {"version_mismatch:canary": 3} == rollout.decisions[1].evidence["ignored"]


def test_only_the_last_1024_control_event_ids_are_remembered() -> None:
    rollout = Rollout()
    for i in range(1030):
        rollout.send(s.MetricReported(deployment_id="dep-1", name="m", value=1.0), f"m-{i}")

    assert 1024 == len(rollout.state.recent_ids)
    assert not rollout.state.seen("m-0")
    assert rollout.state.seen("m-1029")
    assert rollout.state.seen("m-6")
    assert not rollout.state.copy().seen("m-5")


# ---------------------------------------------------------------------------------------------
# Checkpoints: where the change-point tests restart
# ---------------------------------------------------------------------------------------------


def one_long_step() -> s.DeploymentRequested:
    return deployment(steps=(s.TrafficStep(canary_percent=20, min_bake_s=3_600, min_samples=50),))


def serve_second(
    rollout: Rollout, second: int, *, canary_fails: bool, baseline_fails: bool
) -> None:
    """20 canary and 80 baseline requests in one second, at most one error each, then judge."""
    rollout.now += 1.0
    canary = [
        Served("canary", "v2", i > 0 or not canary_fails, 100.0, rollout.now) for i in range(20)
    ]
    baseline = [
        Served("baseline", "v1", i > 0 or not baseline_fails, 100.0, rollout.now) for i in range(80)
    ]
    observe(rollout.state, canary + baseline, rollout.now)
    rollout.tick()


def rollback_after_late_burst(restarts: bool, onset_s: int = 900) -> int | None:
    """Healthy for `onset_s` seconds (canary errors 1 s in 7, baseline 1 s in 2: 0.7 % and
    0.6 %), then the canary fails 7 s in 10 (3.5 %); seconds from the onset to the rollback."""
    policy = unit_policy(
        rules=[
            {
                "name": "errors",
                "detector": "error_rate",
                "params": {"min_samples": 20, "restarts": restarts},
            }
        ]
    )
    rollout = Rollout(one_long_step(), policy)
    for second in range(onset_s + 600):
        late = second >= onset_s
        canary_fails = second % 10 < 7 if late else second % 7 == 0
        serve_second(rollout, second, canary_fails=canary_fails, baseline_fails=second % 2 == 0)
        if rollout.state.phase is Phase.ROLLED_BACK:
            assert late, f"rolled back a healthy canary at {second} s"
            return second - onset_s
    return None


def test_a_step_is_cut_where_its_traffic_changes_then_checkpoints_come_every_ten_seconds() -> None:
    rollout = Rollout(one_long_step())
    rollout.tick()  # traffic set, nothing reported yet
    assert [] == rollout.state.checkpoints

    serve_second(rollout, 0, canary_fails=False, baseline_fails=False)
    # the baseline reported past the step's command: the change's cut, then (settle_s 0, no
    # acknowledgement) the settle cut at the same time
    change, settled = rollout.state.checkpoints
    assert [(1, START, True, False), (2, START, True, True)] == [
        (c.index, c.at, c.cut, c.tested) for c in (change, settled)
    ]
    for second in range(1, 35):
        serve_second(rollout, second, canary_fails=False, baseline_fails=False)

    checkpoints = rollout.state.checkpoints[2:]
    assert [3, 4, 5] == [c.index for c in checkpoints]
    assert [10.0, 10.0] == [b.at - a.at for a, b in itertools.pairwise(checkpoints)]
    assert all(c.errors.baseline_trials == 4 * c.errors.canary_trials > 0 for c in checkpoints)
    assert not any(c.cut for c in checkpoints)
    assert [10 * 20, 10 * 20] == [
        b.errors.canary_trials - a.errors.canary_trials for a, b in itertools.pairwise(checkpoints)
    ]
    restored = RolloutState.from_dict(json.loads(json.dumps(rollout.state.to_dict())))
    assert rollout.state == restored


def test_the_share_tests_leave_out_the_switch_and_count_each_side_at_its_own_share() -> None:
    """A dependency both cohorts share fails just after a step from 10 % to 50 %: judged with
    the 10 % before it, the canary's half of those errors would be far above its share. The
    cuts leave out the switch (until the router's applied_at plus settle_s) and judge each
    side at its own share (checkpoints every 30 s: the 10 % step is in the interval)."""
    policy = unit_policy(evaluation={"settle_s": 2.0, "checkpoint_s": 30.0})
    rollout = Rollout(deployment(), policy, router_acks=False)  # the test acknowledges
    rollout.acknowledge(rollout.commands[0])
    rollout.serve_until("progressing")
    while rollout.state.step == 0:
        rollout.serve(1, canary=10, baseline=90)
    second = rollout.commands[-1]
    assert (s.CommandAction.SET_TRAFFIC, 50.0) == (second.action, second.canary_percent)
    issued, before = rollout.now, len(rollout.state.checkpoints)
    applied = issued + 1.0

    def second_of(start: float, canary: int, baseline: int, failing: int) -> None:
        items = [
            Served(cohort, version, i >= failing, 100.0, start)
            for cohort, version, n in (("canary", "v2", canary), ("baseline", "v1", baseline))
            for i in range(n)
        ]
        observe(rollout.state, items, start + 0.1)
        evaluate(rollout.state, rollout.policy, start + 0.1)

    second_of(issued + 0.5, 10, 90, 0)  # the router still sends 10 %
    rollout.now = applied + 0.05
    rollout.send(
        s.TrafficApplied(
            deployment_id="dep-1",
            command_id=second.command_id,
            canary_percent=50.0,
            applied_by="router-1",
            applied_at=datetime.fromtimestamp(applied, UTC),
        )
    )
    second_of(applied + 0.5, 50, 50, 25)  # 50 %, and half of all requests fail
    second_of(applied + 1.5, 50, 50, 25)
    for k in range(4):  # healthy, after the settle cut
        second_of(applied + 2.5 + k, 50, 50, 0)

    assert "progressing" == rollout.state.phase.value, rollout.steps[-1].note
    change, settled = rollout.state.checkpoints[before : before + 2]
    assert (True, False) == (change.cut, change.tested)
    assert (True, True) == (settled.cut, settled.tested)
    assert issued <= change.at <= issued + 0.1
    assert settled.at == pytest.approx(applied + 2.0, abs=1e-6)
    assert 50 == settled.errors.canary_events - change.errors.canary_events


def test_only_the_newest_checkpoints_and_the_cuts_are_kept_and_their_indices_go_on() -> None:
    rollout = Rollout(one_long_step())
    for second in range(10 * (MAX_CHECKPOINTS + 5)):
        serve_second(rollout, second, canary_fails=False, baseline_fails=False)

    indices = [c.index for c in rollout.state.checkpoints]
    assert MAX_CHECKPOINTS == len(indices)
    assert [1, 2] == indices[:2]  # the step's cuts
    assert list(range(indices[-1] - MAX_CHECKPOINTS + 3, indices[-1] + 1)) == indices[2:]
    assert indices[-1] > MAX_CHECKPOINTS


def test_a_late_error_burst_is_rolled_back_quickly_despite_the_healthy_history() -> None:
    restarted = rollback_after_late_burst(restarts=True)
    cumulative = rollback_after_late_burst(restarts=False)

    assert restarted is not None and 0 <= restarted <= 60
    assert cumulative is None or cumulative > 2 * restarted


def test_checkpoints_fix_slow_thresholds_for_the_latency_rules_on_the_whole_rollout() -> None:
    policy = unit_policy(
        rules=[
            {"name": "errors", "detector": "error_rate"},
            {"name": "slow", "detector": "latency", "params": {"quantiles": [0.5, 0.9]}},
            {
                "name": "slow_recent",
                "detector": "latency",
                "params": {"quantiles": [0.75]},
                "window": "recent",
            },
            {"name": "slow_fixed", "detector": "latency", "params": {"restarts": False}},
        ]
    )
    rollout = Rollout(one_long_step(), policy)
    for second in range(25):
        serve_second(rollout, second, canary_fails=False, baseline_fails=False)

    # the cuts where the traffic starts count nothing before it (the baseline has no latencies
    # yet); the next checkpoint, at once, fixes the thresholds
    assert [[], [], [0.5, 0.9], [0.5, 0.9], [0.5, 0.9]] == [
        [s.quantile for s in c.slow] for c in rollout.state.checkpoints
    ]


# ---- the plan's capacity guard --------------------------------------------------------------


def test_a_step_the_serving_pool_cannot_carry_holds_with_an_alert_until_it_fits() -> None:
    """1,000 queries a second at 50 per replica (70 % planned): 10 % of it needs 3 canary
    replicas, 50 % needs 15, so the step to 50 % wants 12 more of 1 GPU each."""
    capacity = s.ServingCapacity(predicted_qps=1000.0, replica_qps=50.0, gpu=1.0)
    rollout = Rollout(deployment(capacity=capacity))

    def free_gpus(free: float) -> None:
        rollout.send(
            s.ResourceUsage(deployment_id="dep-1", resource="gpu", used=64 - free, limit=64)
        )

    free_gpus(5.0)
    rollout.serve(30)  # the first step's gates are long met

    assert [("set_traffic", 10.0)] == rollout.actions()
    (held,) = [a for a in rollout.alerts if a.kind == "capacity"]
    assert ("firing", "dep-1/capacity") == (held.status, held.dedup_key)
    assert "step 1 (50%) held: the step to 50 % needs 12 more canary replicas" in held.summary
    assert held.evidence["missing"] == {"gpu": 7.0}

    free_gpus(20.0)
    rollout.serve_until("promoted")

    assert [("set_traffic", 10.0), ("set_traffic", 50.0)] == rollout.actions()[:2]
    statuses = [(a.status, a.dedup_key) for a in rollout.alerts if a.kind == "capacity"]
    assert [("firing", "dep-1/capacity"), ("resolved", "dep-1/capacity")] == statuses[:2]
    started = next(d for d in rollout.decisions if d.canary_percent == 50.0)
    assert started.evidence["capacity_free"] == {"gpu": 20.0}


def test_a_plan_without_capacity_or_a_pool_of_unknown_size_is_not_held() -> None:
    capacity = s.ServingCapacity(predicted_qps=1000.0, replica_qps=50.0, gpu=1.0)
    for request in (deployment(), deployment(capacity=capacity)):
        rollout = Rollout(request)
        rollout.serve_until("promoted")
        assert [] == [a for a in rollout.alerts if a.kind == "capacity"]


def test_no_approval_is_asked_for_a_step_the_serving_pool_cannot_carry() -> None:
    capacity = s.ServingCapacity(predicted_qps=1000.0, replica_qps=50.0, gpu=1.0)
    steps = (
        s.TrafficStep(canary_percent=10, min_bake_s=10, min_samples=50),
        s.TrafficStep(canary_percent=50, min_bake_s=10, min_samples=50, requires_approval=True),
        s.TrafficStep(canary_percent=100, min_bake_s=0, min_samples=0),
    )
    rollout = Rollout(deployment(capacity=capacity, steps=steps))
    rollout.send(s.ResourceUsage(deployment_id="dep-1", resource="gpu", used=60, limit=64))
    rollout.serve(30)

    assert "progressing" == rollout.state.phase.value  # not awaiting approval
    assert ["firing"] == [a.status for a in rollout.alerts if a.kind == "capacity"]

    rollout.send(s.ResourceUsage(deployment_id="dep-1", resource="gpu", used=40, limit=64))
    rollout.serve(5)

    assert "awaiting_approval" == rollout.state.phase.value
    assert ["firing", "resolved"] == [a.status for a in rollout.alerts if a.kind == "capacity"]
