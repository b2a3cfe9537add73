"""What the rollout package adds around the state machine: the order of its outputs, alert
ids, the one assessment that explains a verdict, and the next wake-up."""

from __future__ import annotations

import schemas as s
from controller.core import rollout as core
from controller.core.ids import alert_id
from controller.core.rollout import explain, next_wakeup
from tests.unit.core.rollout_helpers import Rollout, unit_policy

# ---- the order of outputs -------------------------------------------------------------------


def test_a_rollback_publishes_the_alert_then_the_command_then_the_decision() -> None:
    rollout = Rollout()

    rollout.serve(3, canary=10, canary_errors=5)

    last = rollout.steps[-1]
    assert [s.Alert, s.Command, s.Decision] == [type(o) for o in last.outputs]
    assert ((last.outputs),) == tuple(last.groups())


def test_groups_end_at_each_decision_and_keep_trailing_alerts_apart() -> None:
    rollout = Rollout()
    rollout.serve(12)  # the first step passes: its command and decision

    passed = next(r for r in rollout.steps[1:] if r.decisions)

    assert [[s.Command, s.Decision]] == [[type(o) for o in g] for g in passed.groups()]


# ---- alert ids ------------------------------------------------------------------------------


def test_alert_ids_follow_the_rollouts_alert_sequence() -> None:
    policy = unit_policy(
        rules=[
            {"name": "errors", "detector": "error_rate"},
            {"name": "silence", "detector": "outage", "dry_run": True},
        ]
    )
    rollout = Rollout(policy=policy)
    rollout.serve(3)
    rollout.serve(30, canary=0)  # the dry-run silence rule fires
    rollout.serve(3)  # and resolves

    firing, resolved = rollout.alerts
    assert alert_id("dep-1", 1, "firing", "dep-1/silence") == firing.alert_id
    assert alert_id("dep-1", 2, "resolved", "dep-1/silence") == resolved.alert_id
    assert firing.alert_id != resolved.alert_id
    assert 2 == rollout.state.alert_seq


def test_the_same_inputs_give_the_same_alert_ids() -> None:
    def alerts() -> list[str]:
        rollout = Rollout()
        rollout.serve(3, canary=10, canary_errors=5)
        return [a.alert_id for a in rollout.alerts]

    assert alerts() == alerts()


# ---- one assessment -------------------------------------------------------------------------


def test_explain_says_why_a_step_holds() -> None:
    rollout = Rollout()
    rollout.serve(2)

    assessment = explain(rollout.state, rollout.policy, rollout.now)

    assert not assessment.may_advance()
    assert assessment.gates is not None and not assessment.gates.met()
    assert assessment.explain().startswith("holds: baked 2 s of 10 s, 20 of 50 canary requests")


def test_explain_names_the_failing_rule_and_changes_nothing() -> None:
    rollout = Rollout()
    rollout.serve(2)
    before = rollout.state.to_dict()
    # errors arrive but are not judged yet: explain judges them on a copy
    core.observe(
        rollout.state,
        [core.Served("canary", "v2", False, 100.0, rollout.now, "timeout")] * 40
        + [core.Served("baseline", "v1", True, 100.0, rollout.now)] * 40,
        rollout.now,
    )
    after_observe = rollout.state.to_dict()

    assessment = explain(rollout.state, rollout.policy, rollout.now)

    assert ["errors"] == [j.rule.name for j in assessment.failing]
    assert assessment.explain().startswith("rolls back: errors: canary error rate")
    assert after_observe == rollout.state.to_dict()
    assert before != after_observe


def test_explain_says_a_step_may_advance_when_the_gates_are_met() -> None:
    rollout = Rollout()
    rollout.serve(9)
    rollout.wait(1)
    core.observe(
        rollout.state,
        [core.Served(c, v, True, 100.0, rollout.now) for c, v in (("canary", "v2"),) * 20]
        + [core.Served("baseline", "v1", True, 100.0, rollout.now)],
        rollout.now,
    )

    assessment = explain(rollout.state, rollout.policy, rollout.now)

    assert assessment.may_advance()
    assert assessment.explain().startswith("may advance: baked 10 s of 10 s")


# ---- wake-ups -------------------------------------------------------------------------------


def test_a_step_wakes_at_the_end_of_its_bake_time() -> None:
    rollout = Rollout()
    rollout.serve(2)

    assert rollout.state.step_started_at is not None
    expected = rollout.state.step_started_at + 10.0
    assert expected == next_wakeup(rollout.state, rollout.policy, rollout.now)


def test_a_rollout_waiting_for_a_person_wakes_only_at_its_deadline() -> None:
    rollout = Rollout()
    rollout.send(s.PauseRequested(deployment_id="dep-1", by="alice", reason="freeze"))

    assert rollout.state.created_at + 3600.0 == next_wakeup(
        rollout.state, rollout.policy, rollout.now
    )


def test_a_finished_rollout_never_wakes() -> None:
    rollout = Rollout()
    rollout.serve(3, canary=10, canary_errors=5)

    assert None is next_wakeup(rollout.state, rollout.policy, rollout.now)


def test_a_tick_before_the_wake_up_decides_nothing_and_one_at_it_passes_the_step() -> None:
    rollout = Rollout()
    rollout.serve(1, canary=60, baseline=60)  # enough requests at once: the bake time binds
    wake = next_wakeup(rollout.state, rollout.policy, rollout.now)
    assert rollout.state.step_started_at is not None
    assert rollout.state.step_started_at + 10.0 == wake

    rollout.now = wake - 0.001
    assert rollout.tick().is_noop()
    rollout.now = wake
    held = rollout.tick()  # the inputs cover the step's first second: the bake waits at 6 s
    assert held.is_noop()
    assert (
        "the inputs trail the clock by 9 s"
        in explain(rollout.state, rollout.policy, rollout.now).explain()
    )
    rollout.now = wake - 1.0
    rollout.serve(1, canary=1, baseline=1)  # a report that reaches the bake's end passes it
    assert ("progressing", "progressing") == rollout.phases()[-1]
    assert 1 == rollout.state.step


# ---- drift that both cohorts share ----------------------------------------------------------

SKEW_POLICY = {
    "rules": [
        {
            "name": "skew",
            "detector": "training_serving_skew",
            "params": {"min_samples": 50},
            "requires": "training_profile",
            "inconclusive": "pass",
            "no_data": "pass",
        }
    ]
}


def _skewed_rollout(canary_country: str, baseline_country: str) -> Rollout:
    """Serving traffic whose `country` is all one value (training: DE 60 %, FR 40 %)."""
    profile = s.TrainingProfile(
        features=(
            s.FeatureProfile(name="country", kind="categorical", categories={"DE": 0.6, "FR": 0.4}),
        )
    )
    request = Rollout().state.deployment.model_copy(update={"training_profile": profile})
    rollout = Rollout(request, policy=unit_policy(**SKEW_POLICY))
    for _ in range(40):
        rollout.now += 1.0
        items = [
            core.Served("canary", "v2", True, 100.0, rollout.now, None, None, {"country": c})
            for c in [canary_country] * 5
        ] + [
            core.Served("baseline", "v1", True, 100.0, rollout.now, None, None, {"country": c})
            for c in [baseline_country] * 5
        ]
        core.observe(rollout.state, items, rollout.now)
        rollout.tick()
        if rollout.state.phase.is_terminal():
            break
    return rollout


def test_drift_both_cohorts_share_warns_and_does_not_roll_back() -> None:
    rollout = _skewed_rollout("FR", "FR")

    assert "rollback" not in [action for action, _ in rollout.actions()]
    assert rollout.state.phase.value == "promoted"
    warnings = [a for a in rollout.alerts if a.dedup_key == "dep-1/skew.warning"]
    assert [("firing", "warning")] == [(a.status, a.severity.value) for a in warnings[:1]]
    assert "baseline is just as far off" in warnings[0].summary


def test_drift_of_the_canary_alone_rolls_back() -> None:
    rollout = _skewed_rollout("FR", "DE")

    assert ("rollback", 0.0) == rollout.actions()[-1]
    assert [] == [a for a in rollout.alerts if a.dedup_key.endswith(".warning")]
