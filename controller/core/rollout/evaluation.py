"""Evaluation: judge the rules, then act on the assessment.

In this order: an acting rule that FAILs rolls the canary back; else the deadline acts once it
has passed; else a progressing step whose gates are met and that nothing holds passes (to the
next step, an approval gate, or promotion).

- The deadline (plan.deadline_s, else the policy's `deadline.after_s`) counts from the
  deployment request and acts once: rollback (aborted if no traffic was ever sent), pause, or
  promote. A promote deadline never overrides a person: while paused or awaiting approval it
  waits until the rollout progresses again. A rule without data whose `no_data` is `rollback`
  turns any deadline into a rollback.
- Statistics are cumulative for the rollout (the anytime-valid tests need all the data); the
  step gates count the canary requests observed since the step's traffic was set. Rules with
  `window: recent` judge two rotating panes instead (see `state.Panes`).
"""

from __future__ import annotations

from controller.core.phases import Phase
from controller.core.pipelines.capacity import CapacityInputs, ReplicaSize, guard_step
from controller.core.policy import DeadlineAction, Policy, PolicyError
from controller.core.rollout.alerts import dedup_key, raise_alert, router_alert, rule_alerts
from controller.core.rollout.alignment import checkpoint, held_requests
from controller.core.rollout.assessment import INPUTS_BEHIND_S, Assessment, assess, gates, judge
from controller.core.rollout.result import Collector, Result
from controller.core.rollout.transitions import (
    approvers_note,
    end,
    open_gate,
    pause,
    start_step,
    step_label,
    stop,
    transition,
)
from controller.core.state import RolloutState
from schemas import Severity


def evaluate_into(state: RolloutState, policy: Policy, now: float, out: Collector) -> Result:
    if not state.phase.is_active():
        return out.result(state)
    try:
        rules = state.rules(policy)
    except PolicyError as exc:
        # The policy changed under a live rollout and now rejects its guardrails: hold, judge
        # nothing, let a person (or the deadline) decide.
        out.note(f"rules not judged: {exc}")
        deadline(state, policy, now, out, assess(()))
        return out.result(state)
    if state.traffic_started:
        checkpoint(state, now, policy.checkpoint_s, rules)
    judged = judge(state, rules, now) if state.traffic_started else ()
    out.verdicts = tuple(j.verdict for j in judged)
    rule_alerts(state, policy, now, out, judged)
    router_alert(state, policy, now, out)
    assessment = assess(judged, gates(state, policy, now))
    if assessment.failing:
        roll_back(state, now, out, assessment)
        return out.result(state)
    if deadline(state, policy, now, out, assessment):
        return out.result(state)
    if assessment.may_advance():
        advance(state, policy, now, out, assessment)
    return out.result(state)


def roll_back(state: RolloutState, now: float, out: Collector, assessment: Assessment) -> None:
    failing = assessment.failing
    first = failing[0]
    names = ", ".join(j.rule.name for j in failing)
    reason = "; ".join(f"{j.rule.name}: {j.verdict.reason}" for j in failing)
    evidence = {
        **dict(first.verdict.evidence),
        "rule": first.rule.name,
        "detector": first.rule.detector_name,
        "failed_rules": [j.rule.name for j in failing],
        "ignored": dict(state.ignored),
    }
    end(
        state,
        Phase.ROLLED_BACK,
        out,
        now,
        reason=f"canary failed {names} at {step_label(state)}: {reason}",
        evidence=evidence,
        verdicts=assessment.verdicts_evidence(),
    )


def deadline(
    state: RolloutState, policy: Policy, now: float, out: Collector, assessment: Assessment
) -> bool:
    """Apply the deadline once it has passed; True when the rollout ended or paused."""
    deadline_s = state.deadline_s(policy)
    if deadline_s is None or state.deadline_fired or now < state.created_at + deadline_s:
        return False
    action = policy.deadline.action
    verdicts = assessment.verdicts_evidence()
    evidence = {
        "deadline_s": deadline_s,
        "elapsed_s": now - state.created_at,
        "action": action.value,
        "step": state.step,
    }
    where = f"at {step_label(state)}" if state.traffic_started else "before the start"
    if assessment.missing:
        state.deadline_fired = True
        names = ", ".join(j.rule.name for j in assessment.missing)
        stop(
            state,
            out,
            now,
            reason=f"deadline of {deadline_s:g} s passed {where} with no data for {names} "
            "(no_data: rollback)",
            evidence=evidence,
            verdicts=verdicts,
        )
        return True
    if action is DeadlineAction.ROLLBACK:
        state.deadline_fired = True
        stop(
            state,
            out,
            now,
            reason=f"deadline of {deadline_s:g} s passed {where}",
            evidence=evidence,
            verdicts=verdicts,
        )
        return True
    if action is DeadlineAction.PAUSE:
        state.deadline_fired = True
        if state.phase is Phase.PAUSED:
            out.note("deadline passed while paused: stays paused")
            return False
        pause(
            state,
            out,
            now,
            reason=f"deadline of {deadline_s:g} s passed {where}: paused",
            evidence=evidence,
            verdicts=verdicts,
        )
        return True
    # promote: only from progressing; a person's hold (pause, approval gate) wins until it ends
    if state.phase is not Phase.PROGRESSING:
        out.note(f"deadline passed while {state.phase}: promote waits for the hold to end")
        return False
    state.deadline_fired = True
    end(
        state,
        Phase.PROMOTED,
        out,
        now,
        reason=f"deadline of {deadline_s:g} s passed {where}: promoted (deadline action), "
        "no acting rule failing",
        evidence=evidence,
        verdicts=verdicts,
    )
    return True


def capacity_hold(
    state: RolloutState, policy: Policy, now: float, out: Collector, nxt: int
) -> str | None:
    """The plan's capacity guard for the step to `nxt`: why it is held (a firing `capacity`
    alert says what is missing, resolved once the step fits), or None when it may start. A
    pool whose free capacity is not known (no `resource.usage` with a limit yet) does not
    hold it: the decision says the step was not judged."""
    wanted = state.deployment.plan.capacity
    if wanted is None:
        return None
    inputs = CapacityInputs(
        predicted_qps=wanted.predicted_qps,
        replica=ReplicaSize(cpu=wanted.cpu, gpu=wanted.gpu, memory_gb=wanted.memory_gb),
        per_replica_qps=wanted.replica_qps,
        target_utilisation=wanted.utilisation,
    )
    to = state.steps[nxt].canary_percent
    guard = guard_step(inputs, state.canary_percent, to, state.free_capacity)
    key = dedup_key(state, "capacity")
    evidence = {
        **dict(guard.evidence),
        "needed": dict(guard.needed),
        "free": dict(guard.free),
        "missing": dict(guard.missing),
    }
    label = step_label(state, nxt)
    if guard.outcome == "hold":
        if key not in state.firing:
            raise_alert(
                state,
                out,
                now,
                policy,
                status="firing",
                severity=Severity.WARNING,
                kind="capacity",
                key=key,
                rule="capacity",
                summary=f"{label} held: {guard.reason}",
                evidence=evidence,
            )
        out.note(f"{label} held: {guard.reason}")
        return guard.reason
    if key in state.firing:
        raise_alert(
            state,
            out,
            now,
            policy,
            status="resolved",
            severity=Severity.WARNING,
            kind="capacity",
            key=key,
            rule="capacity",
            summary=f"{label} fits now: {guard.reason}",
            evidence=evidence,
        )
    return None


def advance(
    state: RolloutState, policy: Policy, now: float, out: Collector, assessment: Assessment
) -> None:
    """The step passed its gates: start the next step (unless the serving pool cannot carry
    it: `capacity_hold`), wait at its approval gate, or promote."""
    g = assessment.gates
    if g is None:  # may_advance() implies gates; kept explicit for the type checker
        return
    evidence = {
        "baked_s": g.baked_s,
        "min_bake_s": g.min_bake_s,
        "step_samples": g.samples,
        "min_samples": g.min_samples,
        "canary_requests": state.canary.requests,
        "baseline_requests": state.baseline.requests,
        "canary_error_rate": state.canary.error_rate,
        "baseline_error_rate": state.baseline.error_rate,
        "ignored": dict(state.ignored),
        # requests that completed after the other cohort's newest report, not counted yet
        "held_requests": held_requests(state),
    }
    acting = assessment.acting
    passed = f"{len(acting)} acting rules pass" if acting else "no acting rules"
    summary = (
        f"{step_label(state)} passed: baked {g.baked_s:.0f} s >= {g.min_bake_s:g} s, "
        f"{g.samples} canary requests >= {g.min_samples}, {passed}"
    )
    evidence["inputs_behind_s"] = g.behind_s
    if g.behind_s > INPUTS_BEHIND_S:  # a backlog: the bake counted its event time
        summary += f" (inputs {g.behind_s:.0f} s behind the clock: baked by their event time)"
    verdicts = assessment.verdicts_evidence()
    nxt = state.step + 1
    if nxt >= len(state.steps):
        end(
            state,
            Phase.PROMOTED,
            out,
            now,
            reason=f"{summary}; promoted",
            evidence=evidence,
            verdicts=verdicts,
        )
        return
    if capacity_hold(state, policy, now, out, nxt) is not None:
        return  # a gated step too: no approval is asked for a step the pool cannot carry
    if state.deployment.plan.capacity is not None:
        evidence["capacity_free"] = dict(state.free_capacity)
    if state.deployment.gated(nxt):
        state.gate = nxt
        transition(
            state,
            Phase.AWAITING_APPROVAL,
            out,
            now,
            reason=f"{summary}; waiting for approval of {step_label(state, nxt)}"
            f"{approvers_note(state, nxt)}",
            evidence=evidence,
            verdicts=verdicts,
        )
        if nxt in state.approvals:  # approved before it was reached: opens at once
            open_gate(state, out, now)
        return
    start_step(
        state,
        nxt,
        out,
        now,
        reason=f"{summary}; next: {step_label(state, nxt)}",
        evidence=evidence,
        verdicts=verdicts,
    )
