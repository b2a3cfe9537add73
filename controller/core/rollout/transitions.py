"""Transitions: the one place where a rollout's phase changes and commands are made.

Every phase change goes through `transition` below (checked against the table in
controller.core.phases), which bumps the rollout's transition sequence number, makes the command
the action calls for, and records the decision. Command and decision ids derive from the
deployment id, that sequence number, the action and the step (controller.core.ids), so the same
inputs give the same ids in the live worker, in a replay and in a test.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from controller.core.ids import command_id, decision_id
from controller.core.phases import Phase
from controller.core.phases import transition as check_transition
from controller.core.rollout.result import Collector, at, clip
from controller.core.state import SLOT_S, RolloutState, routed_at
from controller.errors import InvariantError
from schemas import Command, CommandAction, Decision


def transition(
    state: RolloutState,
    to: Phase,
    out: Collector,
    now: float,
    *,
    reason: str,
    evidence: Mapping[str, Any] | None = None,
    action: CommandAction | None = None,
    verdicts: Sequence[Mapping[str, Any]] = (),
) -> Command | None:
    """Move `state` to phase `to` (checked against the table), with an optional command.

    The command's traffic follows from the action: set_traffic the current step's share,
    pause the current share, promote 100, rollback 0. A command is only issued once traffic has
    gone to the canary, except set_traffic, which is what starts it.
    """
    if not reason:
        raise InvariantError("every decision carries a reason")
    reason = clip(reason)
    from_phase = state.phase
    check_transition(from_phase, to)
    state.seq += 1
    dep = state.deployment
    command: Command | None = None
    if action is not None and (state.traffic_started or action is CommandAction.SET_TRAFFIC):
        after_promotion = from_phase is Phase.PROMOTED and action is CommandAction.ROLLBACK
        if action.is_terminal() and state.terminal_command_id is not None and not after_promotion:
            raise InvariantError(
                f"rollout {dep.deployment_id} already sent its terminal command "
                f"{state.terminal_command_id}: at most one terminal command per rollout (and "
                "one rollback after a promotion)"
            )
        percent = {
            CommandAction.SET_TRAFFIC: state.steps[state.step].canary_percent,
            CommandAction.PAUSE: state.canary_percent,
            CommandAction.PROMOTE: 100.0,
            CommandAction.ROLLBACK: 0.0,
        }[action]
        command = Command(
            command_id=command_id(dep.deployment_id, state.seq, action.value, state.step),
            deployment_id=dep.deployment_id,
            action=action,
            canary_percent=float(percent),
            step=state.step,
            model=dep.model,
            candidate_version=dep.candidate_version,
            baseline_version=dep.baseline_version,
            reason=reason,
            evidence=dict(evidence or {}),
            issued_at=at(now),
            rollback_version=_rollback_version(state, from_phase, action),
        )
        out.add(command)
        state.canary_percent = float(percent)
        if action.is_terminal():
            state.terminal_command_id = command.command_id
        if action is CommandAction.SET_TRAFFIC:
            state.traffic_started = True
    state.phase = to
    out.add(
        Decision(
            decision_id=decision_id(
                dep.deployment_id, state.seq, f"{from_phase.value}>{to.value}", state.step
            ),
            deployment_id=dep.deployment_id,
            from_phase=from_phase.value,
            to_phase=to.value,
            step=state.step,
            canary_percent=state.canary_percent,
            reason=reason,
            evidence=dict(evidence or {}),
            verdicts=tuple(verdicts),
            command_ids=() if command is None else (command.command_id,),
            at=at(now),
        )
    )
    return command


def _rollback_version(state: RolloutState, from_phase: Phase, action: CommandAction) -> str | None:
    """The version a rollback of a promoted model returns all traffic to (the deployment
    record's rollback version, else the baseline); None for every other command: a rollback
    during a rollout returns to the baseline, which routers know without it."""
    if action is not CommandAction.ROLLBACK or from_phase is not Phase.PROMOTED:
        return None
    return state.deployment.rollback_version()


def start_step(
    state: RolloutState,
    index: int,
    out: Collector,
    now: float,
    reason: str,
    evidence: Mapping[str, Any] | None = None,
    verdicts: Sequence[Mapping[str, Any]] = (),
) -> None:
    """Set the traffic of step `index` (phase progressing) and restart the step's gates; a
    step that changes the canary's share cuts the statistics where it does (`alignment`)."""
    share = state.canary_percent if state.traffic_started else 0.0
    state.step = index
    state.gate = None
    command = transition(
        state,
        Phase.PROGRESSING,
        out,
        now,
        reason=reason,
        evidence=evidence,
        action=CommandAction.SET_TRAFFIC,
        verdicts=verdicts,
    )
    if command is None:
        raise InvariantError("a set_traffic transition always makes its command")
    state.step_command_id = command.command_id
    state.step_started_at = now
    state.step_samples = 0
    state.step_command, state.resends = (command if state.acks else None), 0
    if state.canary_percent != share:
        # labels are judged at the share their predictions were routed at: a new span from here
        # (moved to the router's acknowledgement when it comes)
        state.share_spans.append([now, state.canary_percent])
        state.label_strata.append([0, 0, 0, 0])
        state.cut_slot, state.settling = math.ceil(now / SLOT_S - 1e-9), False
        # what completed before the change is reported by the cohorts routed then; one the
        # new step sends nothing (a baseline at 100 %) may report late into the switch, which
        # is not tested, so the cut waits only for the cohorts routed before and after
        state.cut_waits_for = [c for c in routed_at(share) if c in state.routed()]


def end(
    state: RolloutState,
    to: Phase,
    out: Collector,
    now: float,
    *,
    reason: str,
    evidence: Mapping[str, Any] | None = None,
    verdicts: Sequence[Mapping[str, Any]] = (),
) -> None:
    """End the rollout in `to` (rolled_back, aborted or promoted) with its terminal command."""
    action = CommandAction.PROMOTE if to is Phase.PROMOTED else CommandAction.ROLLBACK
    if to is Phase.PROMOTED:
        state.step = len(state.steps) - 1
    state.step_command = None
    transition(
        state, to, out, now, reason=reason, evidence=evidence, action=action, verdicts=verdicts
    )


def stop(
    state: RolloutState,
    out: Collector,
    now: float,
    *,
    reason: str,
    evidence: Mapping[str, Any] | None = None,
    verdicts: Sequence[Mapping[str, Any]] = (),
) -> None:
    """Withdraw the canary: rolled_back once it has had traffic, aborted before that."""
    to = Phase.ROLLED_BACK if state.traffic_started else Phase.ABORTED
    end(state, to, out, now, reason=reason, evidence=evidence, verdicts=verdicts)


def pause(
    state: RolloutState,
    out: Collector,
    now: float,
    *,
    reason: str,
    evidence: Mapping[str, Any],
    verdicts: Sequence[Mapping[str, Any]] = (),
) -> None:
    """Hold traffic where it is (command `pause`); a resume returns to the current phase."""
    state.resume_phase = state.phase
    transition(
        state,
        Phase.PAUSED,
        out,
        now,
        reason=reason,
        evidence=evidence,
        action=CommandAction.PAUSE,
        verdicts=verdicts,
    )


def resume(
    state: RolloutState, out: Collector, now: float, *, reason: str, evidence: Mapping[str, Any]
) -> None:
    """Return from a pause to where the rollout was, re-sending the current traffic."""
    back = state.resume_phase or Phase.PROGRESSING
    state.resume_phase = None
    if back is Phase.AWAITING_APPROVAL:
        gate = state.gate if state.gate is not None else state.step + 1
        if gate in state.approvals:
            by = state.approvals[gate]
            start_step(
                state,
                gate,
                out,
                now,
                reason=f"{reason}; {step_label(state, gate)} was approved by {by}",
                # the gate's approval, as open_gate records it (the audit trail and status)
                evidence={**evidence, **approval_evidence(state, gate)},
            )
            return
        back_to = Phase.AWAITING_APPROVAL
    else:
        back_to = Phase.PROGRESSING
    # the router held traffic on the pause command: tell it the current share again
    transition(
        state,
        back_to,
        out,
        now,
        reason=reason,
        evidence=evidence,
        action=CommandAction.SET_TRAFFIC if state.traffic_started else None,
    )


def open_gate(state: RolloutState, out: Collector, now: float) -> None:
    """Start the step whose approval gate the rollout waits at (`state.gate`, approved).

    Every gate is two decisions, whenever its approval came: `awaiting_approval` when the step
    before passes, then this one, naming the approver. An approval that arrived early (before
    the step before passed) opens the gate at once, so the decisions, their ids and their
    reasons are the same as for one that arrived a moment after: a replay, whose ticks may fall
    on the other side of the approval, records what the worker recorded."""
    gate = state.gate
    if gate is None or gate not in state.approvals:
        raise InvariantError("a gate opens only when the rollout waits at it, approved")
    by, why = state.approvals[gate], state.approval_reasons.get(gate, "")
    start_step(
        state,
        gate,
        out,
        now,
        reason=f"{step_label(state, gate)} approved by {by}" + (f": {why}" if why else ""),
        evidence=approval_evidence(state, gate),
    )


def approval_evidence(state: RolloutState, gate: int) -> dict[str, Any]:
    """Who approved the gate before step `gate`, and the key that signed it when the worker
    verified it (absent when nothing was verified: the evidence of before)."""
    found: dict[str, Any] = {
        "approved_by": state.approvals[gate],
        "approval_reason": state.approval_reasons.get(gate, ""),
    }
    key = state.approval_keys.get(gate)
    if key is not None:
        found["approval_verified"] = True
        found["approval_key"] = key
    return found


def roll_back_promoted(
    state: RolloutState,
    out: Collector,
    now: float,
    *,
    by: str,
    reason: str,
) -> None:
    """Roll a promoted model back out of production, to the deployment record's rollback
    version (default: the baseline): the rollout's second and last terminal command."""
    if state.phase is not Phase.PROMOTED:
        raise InvariantError(
            f"only a promoted rollout is rolled back after promotion, not {state.phase}"
        )
    dep = state.deployment
    target = dep.rollback_version()
    procedure = dep.rollback
    detail = f": {reason}" if reason else ""
    transition(
        state,
        Phase.ROLLED_BACK,
        out,
        now,
        reason=f"rolled back after promotion to {target} by {by}{detail}",
        evidence={
            "by": by,
            "rollback_version": target,
            "from_version": dep.candidate_version,
            "promote_command_id": state.terminal_command_id,
            "procedure": "" if procedure is None else procedure.procedure,
            "runbook_url": None if procedure is None else procedure.runbook_url,
        },
        action=CommandAction.ROLLBACK,
    )


def step_label(state: RolloutState, index: int | None = None) -> str:
    i = state.step if index is None else index
    return f"step {i} ({state.steps[i].canary_percent:g}%)"


def approvers_note(state: RolloutState, index: int) -> str:
    """` from a or b` when the deployment record names who must approve the gate before step
    `index`; empty otherwise."""
    approvers = state.deployment.approvers(index)
    return f" from {' or '.join(approvers)}" if approvers else ""
