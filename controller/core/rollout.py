"""The rollout state machine: events in, commands, decisions and alerts out.

```
apply(state, event, policy, now, event_id=None) -> Step    # any event: ingest, then evaluate
observe(state, predictions, now) -> RolloutState           # fast path: statistics only
merge(state, cohorts, now, delta_id=None) -> RolloutState  # pre-folded statistics (the lane)
evaluate(state, policy, now) -> Step                       # judge the rules, act on verdicts
tick(state, policy, now) -> Step                           # the timer's evaluate
```

`Step` holds the new state and the outputs: `schemas.Command`, `schemas.Decision` and
`schemas.Alert` payloads stamped with `now`, the verdicts judged, and a `note` saying why nothing
happened when nothing did. All functions are deterministic functions of their arguments.

**Ownership.** For speed (statistics see every prediction), the functions update the state they
are given in place and return it; they never keep a reference to an older state. A caller that
needs the state from before calls `state.copy()` first. (The worker stores only the latest state;
tests and property checks compare `to_dict()` snapshots.)

**Semantics** (each documented where it is decided):

- The bake clock of a step starts when its `set_traffic` command is issued; a `TrafficApplied`
  for that command moves it to the router's `applied_at` (clamped between the issue time and
  `now`): bake time counts while the traffic is really on the canary.
- Statistics are cumulative for the rollout (the anytime-valid tests need all the data); the
  step gates count the canary requests observed since the step's traffic was set. Rules with
  `window: recent` judge two rotating panes instead (see `Panes`). The shadow cohort is kept
  apart and never gates.
- Predictions whose version is not the deployment's (candidate for canary and shadow, baseline
  for baseline) are counted in `ignored` and left out.
- Approvals: `ApprovalGranted(step=k)` opens the gate before step k (0 is the start); an
  approval for a later step is remembered and opens that gate when it is reached; one for a step
  already passed, or out of range, is a no-op. `ApprovalDenied(step=k)` for the gate waiting or
  a later one ends the rollout: `aborted` while the canary has never had traffic, `rolled_back`
  (with a rollback command) once it has.
- Commands go to the router only once the rollout has sent traffic to the canary: an abort (or
  a pause, or a deadline) before the start changes the phase without a command.
- Pause holds traffic (command `pause`) and stops the steps advancing; acting rules still roll
  back a failing canary while paused. Resume returns to where the rollout was (re-sending the
  current `set_traffic`) and does not restart the bake clock.
- The deadline (plan.deadline_s, else the policy's `deadline.after_s`) counts from the
  deployment request and acts once: rollback (aborted if no traffic was ever sent), pause, or
  promote. A promote deadline never overrides a person: while paused or awaiting approval it
  waits until the rollout progresses again. A rule without data whose `no_data` is `rollback`
  turns any deadline into a rollback.
- Dedup: the ids of the last `MAX_RECENT_IDS` control events (anything but predictions) are
  kept; re-applying one is a no-op. Prediction batches and statistics deltas are deduplicated by
  id over the last `MAX_RECENT_DATA_IDS` only: an older redelivered batch would be counted twice
  (the statistics move slightly; no command is ever duplicated, since command and decision ids
  derive from the rollout's transition sequence number, see controller.core.ids).
- Labels are counted, not joined to requests (a join needs the request ids; left out).
- Alerts: a rule that FAILs fires once (critical when acting, warning in dry run) under the
  dedup key `{deployment_id}/{rule}` and resolves when it stops failing. ResourceUsage at or
  above the policy's warning (critical) share of its limit fires under
  `{deployment_id}/resource.{resource}`, re-fires only on escalation to critical, and resolves
  below the warning share; a failed TrainingRun fires a warning under
  `{deployment_id}/training.{pipeline}`, resolved by that pipeline's next success. Alerts still
  firing when the rollout ends stay firing (the rollout is no longer evaluated; alert managers
  expire them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from controller.core.detectors import EvaluationContext
from controller.core.ids import command_id, decision_id
from controller.core.phases import Phase, transition
from controller.core.policy import DeadlineAction, Policy, PolicyError, Rule, RuleSet, Window
from controller.core.state import (
    BASELINE,
    CANARY,
    MAX_KEY,
    SHADOW,
    CachedVerdict,
    Panes,
    RolloutState,
    Served,
)
from controller.core.stats.cohort import CohortStats
from controller.core.verdict import Outcome, Verdict
from schemas import (
    AbortRequested,
    Alert,
    ApprovalDenied,
    ApprovalGranted,
    Command,
    CommandAction,
    DataProfile,
    Decision,
    DeploymentRequested,
    Envelope,
    LabelReported,
    MetricReported,
    PauseRequested,
    Payload,
    Prediction,
    PredictionBatch,
    PredictionServed,
    ResourceUsage,
    ResumeRequested,
    RollbackRequested,
    TrafficApplied,
    TrainingProfile,
    TrainingRun,
)
from schemas.events import Severity

__all__ = [
    "HANDLERS",
    "RolloutState",
    "Served",
    "Step",
    "apply",
    "evaluate",
    "merge",
    "observe",
    "tick",
]

#: Reasons and summaries are bounded on the wire.
MAX_TEXT = 4096


@dataclass(frozen=True)
class Step:
    """What one call decided: the new state and the outputs to publish, in this order:
    commands first (what the router must do), then alerts, then decisions (the audit trail)."""

    state: RolloutState | None
    commands: tuple[Command, ...] = ()
    decisions: tuple[Decision, ...] = ()
    alerts: tuple[Alert, ...] = ()
    verdicts: tuple[Verdict, ...] = ()
    #: Why the call changed nothing, or what it left out (empty when it simply acted).
    note: str = ""

    @property
    def outputs(self) -> tuple[Command | Alert | Decision, ...]:
        return (*self.commands, *self.alerts, *self.decisions)

    def is_noop(self) -> bool:
        return not (self.commands or self.decisions or self.alerts)


class _Out:
    """Outputs being collected during one call."""

    def __init__(self) -> None:
        self.commands: list[Command] = []
        self.decisions: list[Decision] = []
        self.alerts: list[Alert] = []
        self.verdicts: tuple[Verdict, ...] = ()
        self.notes: list[str] = []

    def step(self, state: RolloutState | None) -> Step:
        return Step(
            state,
            tuple(self.commands),
            tuple(self.decisions),
            tuple(self.alerts),
            self.verdicts,
            "; ".join(self.notes),
        )


def _at(now: float) -> datetime:
    return datetime.fromtimestamp(now, UTC)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


# ---------------------------------------------------------------------------------------------
# Transitions: the one place where the phase changes and commands are made
# ---------------------------------------------------------------------------------------------


def _transition(
    state: RolloutState,
    to: Phase,
    out: _Out,
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
    assert reason, "every decision carries a reason"
    reason = _clip(reason)
    from_phase = state.phase
    transition(from_phase, to)
    state.seq += 1
    dep = state.deployment
    command: Command | None = None
    if action is not None and (state.traffic_started or action is CommandAction.SET_TRAFFIC):
        if action.is_terminal():
            assert state.terminal_command_id is None, "at most one terminal command per rollout"
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
            issued_at=_at(now),
        )
        out.commands.append(command)
        state.canary_percent = float(percent)
        if action.is_terminal():
            state.terminal_command_id = command.command_id
        if action is CommandAction.SET_TRAFFIC:
            state.traffic_started = True
    state.phase = to
    out.decisions.append(
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
            at=_at(now),
        )
    )
    return command


def _start_step(
    state: RolloutState,
    index: int,
    out: _Out,
    now: float,
    reason: str,
    evidence: Mapping[str, Any] | None = None,
    verdicts: Sequence[Mapping[str, Any]] = (),
) -> None:
    """Set the traffic of step `index` (phase progressing) and restart the step's gates."""
    state.step = index
    state.gate = None
    command = _transition(
        state,
        Phase.PROGRESSING,
        out,
        now,
        reason=reason,
        evidence=evidence,
        action=CommandAction.SET_TRAFFIC,
        verdicts=verdicts,
    )
    assert command is not None
    state.step_command_id = command.command_id
    state.step_started_at = now
    state.step_samples = 0


def _end(
    state: RolloutState,
    to: Phase,
    out: _Out,
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
    _transition(
        state, to, out, now, reason=reason, evidence=evidence, action=action, verdicts=verdicts
    )


def _stop(
    state: RolloutState,
    out: _Out,
    now: float,
    *,
    reason: str,
    evidence: Mapping[str, Any] | None = None,
    verdicts: Sequence[Mapping[str, Any]] = (),
) -> None:
    """Withdraw the canary: rolled_back once it has had traffic, aborted before that."""
    to = Phase.ROLLED_BACK if state.traffic_started else Phase.ABORTED
    _end(state, to, out, now, reason=reason, evidence=evidence, verdicts=verdicts)


def _step_label(state: RolloutState, index: int | None = None) -> str:
    i = state.step if index is None else index
    return f"step {i} ({state.steps[i].canary_percent:g}%)"


# ---------------------------------------------------------------------------------------------
# Inputs: statistics
# ---------------------------------------------------------------------------------------------


def _expected_version(state: RolloutState, cohort: str) -> str | None:
    dep = state.deployment
    if cohort == BASELINE:
        return dep.baseline_version
    if cohort in (CANARY, SHADOW):
        return dep.candidate_version
    return None


def observe(
    state: RolloutState,
    predictions: Iterable[Prediction | Served | tuple[Any, ...]],
    now: float,
) -> RolloutState:
    """The fast path: fold predictions into the statistics; judge nothing (call `evaluate`).

    Items are `schemas.Prediction` (or PredictionServed) models or `Served` tuples. Predictions
    after the rollout ended, or of another version than the deployment's, are counted in
    `state.ignored` and left out.
    """
    if state.phase.is_terminal():
        n = sum(1 for _ in predictions)
        state.count_ignored("after_end", n)
        return state
    stats = state.stats
    panes = state.panes
    if panes is not None:
        for p in panes.values():
            p.rotate(now)
    canary_before = stats[CANARY].requests
    candidate = state.deployment.candidate_version
    baseline_version = state.deployment.baseline_version
    for item in predictions:
        if isinstance(item, Prediction):
            cohort = item.cohort.value
            version = item.version
            ok, latency, event_time = item.ok, item.latency_ms, item.event_time.timestamp()
            error_type, prediction, features = item.error_type, item.prediction, item.features
        else:
            cohort, version, ok, latency, event_time, *rest = item
            rest += [None] * (3 - len(rest))
            error_type, prediction, features = rest
        expected = (
            baseline_version
            if cohort == BASELINE
            else candidate
            if cohort in (CANARY, SHADOW)
            else None
        )
        if expected is None or version != expected:
            state.count_ignored(f"version_mismatch:{cohort}")
            continue
        target = stats[cohort]
        target.observe(
            ok=ok,
            latency_ms=latency,
            event_time=event_time,
            error_type=error_type,
            prediction=prediction,
            features=features,
        )
        if panes is not None and cohort in panes:
            panes[cohort].current.observe(
                ok=ok,
                latency_ms=latency,
                event_time=event_time,
                error_type=error_type,
                prediction=prediction,
                features=features,
            )
    state.step_samples += stats[CANARY].requests - canary_before
    return state


def merge(
    state: RolloutState,
    cohorts: Iterable[tuple[str, str, CohortStats]],
    now: float,
    delta_id: str | None = None,
) -> RolloutState:
    """Merge pre-folded statistics, `(cohort, version, stats)` triples (the worker's lane).

    A `delta_id` seen among the last MAX_RECENT_DATA_IDS is a redelivery: nothing changes.
    """
    if delta_id is not None:
        if state.seen_data(delta_id):
            return state
        state.remember_data(delta_id)
    if state.phase.is_terminal():
        for _, _, stats in cohorts:
            state.count_ignored("after_end", stats.requests)
        return state
    if state.panes is not None:
        for p in state.panes.values():
            p.rotate(now)
    for cohort, version, stats in cohorts:
        expected = _expected_version(state, cohort)
        if expected is None or version != expected:
            state.count_ignored(f"version_mismatch:{cohort}", stats.requests)
            continue
        state.stats[cohort].merge_from(stats)  # in place: a copy per delta cost more than the merge
        if state.panes is not None and cohort in state.panes:
            state.panes[cohort].current.merge_from(stats)
        if cohort == CANARY:
            state.step_samples += stats.requests
    return state


# ---------------------------------------------------------------------------------------------
# Inputs: events
# ---------------------------------------------------------------------------------------------

Handler = Callable[[RolloutState, Any, Policy, float, _Out], None]


def apply(
    state: RolloutState | None,
    event: Payload | Envelope[Any],
    policy: Policy,
    now: float,
    event_id: str | None = None,
) -> Step:
    """Apply one event (a payload, or an envelope whose id is then the event id), then evaluate.

    `state` is None until the deployment request arrives: other events for an unknown
    deployment are no-ops (the returned Step's state stays None).
    """
    if isinstance(event, Envelope):
        event_id = event_id or event.id
        payload: Payload = event.data
    else:
        payload = event
    out = _Out()
    if isinstance(payload, PredictionServed | PredictionBatch):
        if state is None:
            out.notes.append(f"no rollout {payload.deployment_id!r} yet: predictions ignored")
            return out.step(None)
        if event_id is not None:
            if state.seen_data(event_id):
                out.notes.append(f"event {event_id} already applied: ignored")
                return out.step(state)
            state.remember_data(event_id)
        items = payload.predictions if isinstance(payload, PredictionBatch) else (payload,)
        if state.phase.is_terminal():
            state.count_ignored("after_end", len(items))
            out.notes.append(f"rollout already {state.phase}: predictions ignored")
            return out.step(state)
        observe(state, items, now)
        return _evaluate_into(state, policy, now, out)

    if isinstance(payload, DeploymentRequested) and state is None:
        state = _create(payload, policy, now, out)
        if event_id is not None:
            state.remember(event_id)
        if state.phase.is_terminal():
            return out.step(state)
        return _evaluate_into(state, policy, now, out)
    if state is None:
        out.notes.append(
            f"no rollout {getattr(payload, 'deployment_id', '?')!r} yet: "
            f"{type(payload).__name__} ignored"
        )
        return out.step(None)
    if event_id is not None:
        if state.seen(event_id):
            out.notes.append(f"event {event_id} already applied: ignored")
            return out.step(state)
        state.remember(event_id)
    if state.phase.is_terminal():
        state.count_ignored("after_end")
        out.notes.append(f"rollout already {state.phase}: {type(payload).__name__} ignored")
        return out.step(state)
    handler = HANDLERS.get(type(payload))
    if handler is None:
        out.notes.append(f"{type(payload).__name__} is not an input of a rollout: ignored")
        return out.step(state)
    handler(state, payload, policy, now, out)
    if state.phase.is_terminal():
        return out.step(state)
    return _evaluate_into(state, policy, now, out)


def _create(event: DeploymentRequested, policy: Policy, now: float, out: _Out) -> RolloutState:
    state = RolloutState(
        deployment=event,
        phase=Phase.PENDING,
        created_at=now,
        training_profile=event.training_profile,
    )
    try:
        rules = state.rules(policy)
    except PolicyError as exc:
        _transition(
            state,
            Phase.ABORTED,
            out,
            now,
            reason=f"deployment rejected by policy {policy.name!r}: {exc}",
            evidence={"policy": policy.name, "problems": list(exc.problems)},
        )
        return state
    if rules.has_window(Window.RECENT):
        state.panes = {c: Panes.empty(policy.recent_s, now) for c in (BASELINE, CANARY)}
    plan = event.plan
    evidence = {
        "policy": policy.name,
        "steps": [s.canary_percent for s in plan.steps],
        "rules": [r.describe() for r in rules.rules],
        "alpha_total": rules.alpha_total,
        "alpha_shared_by": list(rules.alpha_shared_by),
        "recent_windows": rules.recent_windows,
        "deadline_s": state.deadline_s(policy),
    }
    if plan.approval_to_start or plan.steps[0].requires_approval:
        state.gate = 0
        _transition(
            state,
            Phase.AWAITING_APPROVAL,
            out,
            now,
            reason=f"waiting for approval to start {_step_label(state, 0)}",
            evidence=evidence,
        )
    else:
        _start_step(
            state,
            0,
            out,
            now,
            reason=f"rollout of {event.model} {event.candidate_version} started: "
            f"{_step_label(state, 0)}",
            evidence=evidence,
        )
    return state


def _on_deployment(
    state: RolloutState, event: DeploymentRequested, policy: Policy, now: float, out: _Out
) -> None:
    out.notes.append(
        f"rollout {state.deployment_id} already exists ({state.phase}): deployment request ignored"
    )


def _on_granted(
    state: RolloutState, event: ApprovalGranted, policy: Policy, now: float, out: _Out
) -> None:
    k = event.step
    if k >= len(state.steps):
        out.notes.append(f"approval for step {k} ignored: the plan has {len(state.steps)} steps")
        return
    if state.traffic_started and k <= state.step:
        out.notes.append(f"approval for step {k} ignored: the rollout is past that gate")
        return
    state.approvals[k] = event.by
    if state.phase is Phase.AWAITING_APPROVAL and state.gate == k:
        _start_step(
            state,
            k,
            out,
            now,
            reason=f"{_step_label(state, k)} approved by {event.by}"
            + (f": {event.reason}" if event.reason else ""),
            evidence={"approved_by": event.by, "approval_reason": event.reason},
        )
        return
    waiting = "" if state.gate is None else f"; the gate waiting is step {state.gate}"
    out.notes.append(f"approval for step {k} by {event.by} recorded{waiting}")


def _on_denied(
    state: RolloutState, event: ApprovalDenied, policy: Policy, now: float, out: _Out
) -> None:
    k = event.step
    if k >= len(state.steps) or (state.traffic_started and k <= state.step):
        out.notes.append(f"denial for step {k} ignored: no such gate ahead")
        return
    detail = f": {event.reason}" if event.reason else ""
    _stop(
        state,
        out,
        now,
        reason=f"{_step_label(state, k)} denied by {event.by}{detail}",
        evidence={"denied_by": event.by, "denial_reason": event.reason, "denied_step": k},
    )


def _on_pause(
    state: RolloutState, event: PauseRequested, policy: Policy, now: float, out: _Out
) -> None:
    if state.phase is Phase.PAUSED:
        out.notes.append("already paused")
        return
    state.resume_phase = state.phase
    detail = f": {event.reason}" if event.reason else ""
    _transition(
        state,
        Phase.PAUSED,
        out,
        now,
        reason=f"paused by {event.by}{detail}",
        evidence={"by": event.by},
        action=CommandAction.PAUSE,
    )


def _on_resume(
    state: RolloutState, event: ResumeRequested, policy: Policy, now: float, out: _Out
) -> None:
    if state.phase is not Phase.PAUSED:
        out.notes.append(f"resume ignored: the rollout is {state.phase}, not paused")
        return
    detail = f": {event.reason}" if event.reason else ""
    _resume(state, out, now, reason=f"resumed by {event.by}{detail}", evidence={"by": event.by})


def _resume(
    state: RolloutState, out: _Out, now: float, *, reason: str, evidence: Mapping[str, Any]
) -> None:
    back = state.resume_phase or Phase.PROGRESSING
    state.resume_phase = None
    if back is Phase.AWAITING_APPROVAL:
        gate = state.gate if state.gate is not None else state.step + 1
        if gate in state.approvals:
            _start_step(
                state,
                gate,
                out,
                now,
                reason=f"{reason}; {_step_label(state, gate)} was approved by "
                f"{state.approvals[gate]}",
                evidence=evidence,
            )
            return
        back_to = Phase.AWAITING_APPROVAL
    else:
        back_to = Phase.PROGRESSING
    # the router held traffic on the pause command: tell it the current share again
    _transition(
        state,
        back_to,
        out,
        now,
        reason=reason,
        evidence=evidence,
        action=CommandAction.SET_TRAFFIC if state.traffic_started else None,
    )


def _manual_end(phase: Phase, verb: str) -> Handler:
    """The handler of a person's request to end the rollout in `phase` ("aborted by bob: ...")."""

    def handler(
        state: RolloutState,
        event: AbortRequested | RollbackRequested,
        policy: Policy,
        now: float,
        out: _Out,
    ) -> None:
        detail = f": {event.reason}" if event.reason else ""
        _end(
            state,
            phase,
            out,
            now,
            reason=f"{verb} by {event.by}{detail}",
            evidence={"by": event.by},
        )

    return handler


_on_abort = _manual_end(Phase.ABORTED, "aborted")
_on_rollback = _manual_end(Phase.ROLLED_BACK, "rolled back")


def _on_traffic_applied(
    state: RolloutState, event: TrafficApplied, policy: Policy, now: float, out: _Out
) -> None:
    if event.command_id != state.step_command_id or state.step_started_at is None:
        out.notes.append(f"traffic applied for command {event.command_id}: not the current step's")
        return
    applied = event.applied_at.timestamp()
    state.step_started_at = min(max(state.step_started_at, applied), now)
    out.notes.append(f"bake clock of {_step_label(state)} starts at {state.step_started_at}")


def _on_profile(
    state: RolloutState, event: DataProfile, policy: Policy, now: float, out: _Out
) -> None:
    if event.split != "training":
        out.notes.append(f"{event.split} profile {event.dataset!r} recorded nowhere: ignored")
        return
    previous = state.training_profile
    state.training_profile = TrainingProfile(
        dataset=event.dataset,
        features=event.features,
        prediction=None if previous is None else previous.prediction,
    )
    state.profile_version += 1
    out.notes.append(f"training profile now {event.dataset!r} ({len(event.features)} features)")


def _on_label(
    state: RolloutState, event: LabelReported, policy: Policy, now: float, out: _Out
) -> None:
    state.labels += 1


def _on_metric(
    state: RolloutState, event: MetricReported, policy: Policy, now: float, out: _Out
) -> None:
    out.notes.append(f"metric {event.name!r} not judged (no metric rules)")


def _on_resource(
    state: RolloutState, event: ResourceUsage, policy: Policy, now: float, out: _Out
) -> None:
    if event.limit is None:
        out.notes.append(f"resource {event.resource!r} has no limit: nothing to judge")
        return
    settings = policy.alerts
    share = event.used / event.limit
    key = _dedup_key(state, f"resource.{event.resource}")
    severity = (
        Severity.CRITICAL
        if share >= settings.resource_critical
        else Severity.WARNING
        if share >= settings.resource_warning
        else None
    )
    evidence = {
        "resource": event.resource,
        "used": event.used,
        "limit": event.limit,
        "unit": event.unit,
        "share": share,
        "pipeline": event.pipeline,
    }
    usage = (
        f"{event.resource} at {share:.0%} of its limit "
        f"({event.used:g}/{event.limit:g} {event.unit})"
    )
    current = state.firing.get(key)
    if severity is None:
        if current is not None:
            _alert(
                state,
                out,
                now,
                policy,
                status="resolved",
                severity=Severity(current),
                kind="resource",
                key=key,
                rule=event.resource,
                summary=f"{usage}: back below {settings.resource_warning:.0%}",
                evidence=evidence,
            )
        return
    if current is None or (current == Severity.WARNING and severity is Severity.CRITICAL):
        limit = (
            settings.resource_critical
            if severity is Severity.CRITICAL
            else settings.resource_warning
        )
        _alert(
            state,
            out,
            now,
            policy,
            status="firing",
            severity=severity,
            kind="resource",
            key=key,
            rule=event.resource,
            summary=f"{usage} >= {limit:.0%}",
            evidence=evidence,
        )


def _on_training_run(
    state: RolloutState, event: TrainingRun, policy: Policy, now: float, out: _Out
) -> None:
    if not policy.alerts.training_run_failed:
        return
    key = _dedup_key(state, f"training.{event.pipeline}")
    evidence = {
        "pipeline": event.pipeline,
        "run_id": event.run_id,
        "status": event.status,
        "duration_s": event.duration_s,
        "error": event.error,
    }
    if event.status == "failed" and key not in state.firing:
        _alert(
            state,
            out,
            now,
            policy,
            status="firing",
            severity=Severity.WARNING,
            kind="training_run",
            key=key,
            rule=event.pipeline,
            summary=f"training run {event.run_id} of {event.pipeline} failed: {event.error}",
            evidence=evidence,
        )
    elif event.status == "succeeded" and key in state.firing:
        _alert(
            state,
            out,
            now,
            policy,
            status="resolved",
            severity=Severity.WARNING,
            kind="training_run",
            key=key,
            rule=event.pipeline,
            summary=f"training run {event.run_id} of {event.pipeline} succeeded",
            evidence=evidence,
        )


#: The explicit table of inputs: payload type -> handler. Predictions take the fast path.
HANDLERS: Mapping[type[Payload], Handler] = {
    DeploymentRequested: _on_deployment,
    ApprovalGranted: _on_granted,
    ApprovalDenied: _on_denied,
    PauseRequested: _on_pause,
    ResumeRequested: _on_resume,
    AbortRequested: _on_abort,
    RollbackRequested: _on_rollback,
    TrafficApplied: _on_traffic_applied,
    DataProfile: _on_profile,
    LabelReported: _on_label,
    MetricReported: _on_metric,
    ResourceUsage: _on_resource,
    TrainingRun: _on_training_run,
}


# ---------------------------------------------------------------------------------------------
# Alerts
# ---------------------------------------------------------------------------------------------


def _dedup_key(state: RolloutState, name: str) -> str:
    key = "_".join(f"{state.deployment_id}/{name}".split())  # an Ident: no blanks
    if len(key) > MAX_KEY:  # keep it an Ident: a long key keeps its start and a digest
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        key = f"{key[: MAX_KEY - 18]}~{digest}"
    return key


def _alert(
    state: RolloutState,
    out: _Out,
    now: float,
    policy: Policy,
    *,
    status: str,
    severity: Severity,
    kind: str,
    key: str,
    rule: str,
    summary: str,
    evidence: Mapping[str, Any],
) -> None:
    dep = state.deployment
    if status == "firing":
        state.firing[key] = severity.value
    else:
        state.firing.pop(key, None)
    out.alerts.append(
        Alert(
            status="firing" if status == "firing" else "resolved",
            severity=severity,
            kind=kind,
            deployment_id=dep.deployment_id,
            subject=f"{dep.model} {dep.candidate_version}",
            summary=_clip(summary),
            evidence=dict(evidence),
            runbook_url=policy.runbook_url(
                deployment_id=dep.deployment_id,
                rule=rule,
                detector=kind,
                kind=kind,
                model=dep.model,
            ),
            dedup_key=key,
            at=_at(now),
        )
    )


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


def evaluate(state: RolloutState, policy: Policy, now: float) -> Step:
    """Judge every rule on the statistics so far and act: roll back on an acting FAIL, apply
    the deadline, advance a step whose gates are met, promote after the last."""
    return _evaluate_into(state, policy, now, _Out())


def tick(state: RolloutState, policy: Policy, now: float) -> Step:
    """The timer's call: `evaluate` without new data (silence, bake time and deadlines act)."""
    return evaluate(state, policy, now)


@dataclass(frozen=True)
class _Judged:
    rule: Rule
    verdict: Verdict
    acting: bool

    def as_evidence(self) -> dict[str, Any]:
        return {
            "rule": self.rule.name,
            "detector": self.rule.detector_name,
            "acting": self.acting,
            "outcome": self.verdict.outcome.value,
            "reason": self.verdict.reason,
            "evidence": dict(self.verdict.evidence),
        }


def _judge(state: RolloutState, rules: RuleSet, now: float) -> list[_Judged]:
    features, prediction = state.profiles()
    context = EvaluationContext(
        now=now,
        step_started_at=state.step_started_at,
        traffic_share=state.canary_percent / 100.0,
        training_profile=features,
        prediction_profile=prediction,
        checkpoints=state.checkpoints,
    )
    has_profile = state.has_training_profile()
    canary_requests = state.canary.requests
    recent: tuple[CohortStats, CohortStats] | None = None
    judged = []
    for rule in rules.rules:
        cached = state.rule_cache.get(rule.name) if rule.every_n > 1 else None
        if (
            cached is not None
            and cached.profile_version == state.profile_version
            and 0 <= canary_requests - cached.at_requests < rule.every_n
        ):
            verdict = cached.verdict
        else:
            if rule.window is Window.RECENT and state.panes is not None:
                if recent is None:
                    for p in state.panes.values():
                        p.rotate(now)
                    recent = (state.panes[BASELINE].view(), state.panes[CANARY].view())
                baseline, canary = recent
                # the checkpoints count the whole rollout, not the panes
                rule_context = replace(context, checkpoints=())
            else:
                baseline, canary = state.baseline, state.canary
                rule_context = context
            verdict = rule.detector.evaluate(baseline, canary, rule_context).renamed(rule.name)
            if rule.every_n > 1:
                state.rule_cache[rule.name] = CachedVerdict(
                    canary_requests, state.profile_version, verdict
                )
        judged.append(_Judged(rule, verdict, rule.is_acting(has_profile)))
    return judged


def _evaluate_into(state: RolloutState, policy: Policy, now: float, out: _Out) -> Step:
    if not state.phase.is_active():
        return out.step(state)
    try:
        rules = state.rules(policy)
    except PolicyError as exc:
        # The policy changed under a live rollout and now rejects its guardrails: hold, judge
        # nothing, let a person (or the deadline) decide.
        out.notes.append(f"rules not judged: {exc}")
        judged: list[_Judged] = []
        _deadline(state, policy, now, out, judged)
        return out.step(state)
    if state.traffic_started:
        state.take_checkpoint(now, policy.checkpoint_s, rules)
    judged = _judge(state, rules, now) if state.traffic_started else []
    out.verdicts = tuple(j.verdict for j in judged)
    _rule_alerts(state, policy, now, out, judged)
    failing = [j for j in judged if j.acting and j.verdict.outcome is Outcome.FAIL]
    if failing:
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
        _end(
            state,
            Phase.ROLLED_BACK,
            out,
            now,
            reason=f"canary failed {names} at {_step_label(state)}: {reason}",
            evidence=evidence,
            verdicts=[j.as_evidence() for j in judged],
        )
        return out.step(state)
    if _deadline(state, policy, now, out, judged):
        return out.step(state)
    if state.phase is Phase.PROGRESSING:
        _gates(state, policy, now, out, judged)
    return out.step(state)


def _rule_alerts(
    state: RolloutState, policy: Policy, now: float, out: _Out, judged: Sequence[_Judged]
) -> None:
    for j in judged:
        failed = j.verdict.outcome is Outcome.FAIL
        if not failed and not state.firing:
            continue  # the common case: nothing fails, nothing to resolve
        key = _dedup_key(state, j.rule.name)
        firing = state.firing.get(key)
        severity = Severity.CRITICAL if j.acting else Severity.WARNING
        mode = "" if j.acting else " (dry run)"
        evidence = {**dict(j.verdict.evidence), "rule": j.rule.name, "acting": j.acting}
        if failed and firing is None:
            _alert(
                state,
                out,
                now,
                policy,
                status="firing",
                severity=severity,
                kind=j.rule.detector_name,
                key=key,
                rule=j.rule.name,
                summary=f"{j.rule.name}{mode}: {j.verdict.reason}",
                evidence=evidence,
            )
        elif not failed and firing is not None:
            _alert(
                state,
                out,
                now,
                policy,
                status="resolved",
                severity=Severity(firing),
                kind=j.rule.detector_name,
                key=key,
                rule=j.rule.name,
                summary=f"{j.rule.name} no longer failing: {j.verdict.reason}",
                evidence=evidence,
            )


def _deadline(
    state: RolloutState, policy: Policy, now: float, out: _Out, judged: Sequence[_Judged]
) -> bool:
    """Apply the deadline once it has passed; True when the rollout ended."""
    deadline_s = state.deadline_s(policy)
    if deadline_s is None or state.deadline_fired or now < state.created_at + deadline_s:
        return False
    action = policy.deadline.action
    missing = [
        j
        for j in judged
        if j.acting
        and j.verdict.outcome is Outcome.NO_DATA
        and j.rule.no_data.rolls_back_at_deadline()
    ]
    verdicts = [j.as_evidence() for j in judged]
    evidence = {
        "deadline_s": deadline_s,
        "elapsed_s": now - state.created_at,
        "action": action.value,
        "step": state.step,
    }
    where = f"at {_step_label(state)}" if state.traffic_started else "before the start"
    if missing:
        state.deadline_fired = True
        names = ", ".join(j.rule.name for j in missing)
        _stop(
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
        _stop(
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
            out.notes.append("deadline passed while paused: stays paused")
            return False
        state.resume_phase = state.phase
        _transition(
            state,
            Phase.PAUSED,
            out,
            now,
            reason=f"deadline of {deadline_s:g} s passed {where}: paused",
            evidence=evidence,
            action=CommandAction.PAUSE,
            verdicts=verdicts,
        )
        return True
    # promote: only from progressing; a person's hold (pause, approval gate) wins until it ends
    if state.phase is not Phase.PROGRESSING:
        out.notes.append(f"deadline passed while {state.phase}: promote waits for the hold to end")
        return False
    state.deadline_fired = True
    _end(
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


def _gate_values(state: RolloutState, policy: Policy) -> tuple[float, int]:
    step = state.steps[state.step]
    given = step.model_fields_set
    bake = step.min_bake_s if "min_bake_s" in given else policy.steps.min_bake_s
    samples = step.min_samples if "min_samples" in given else policy.steps.min_samples
    return bake, samples


def _gates(
    state: RolloutState, policy: Policy, now: float, out: _Out, judged: Sequence[_Judged]
) -> None:
    min_bake, min_samples = _gate_values(state, policy)
    started = state.step_started_at if state.step_started_at is not None else now
    baked = now - started
    if baked < min_bake or state.step_samples < min_samples:
        return
    holding = [
        j
        for j in judged
        if j.acting
        and j.verdict.outcome is not Outcome.PASS
        and j.rule.holds_step(j.verdict.outcome.value)
    ]
    if holding:
        return
    evidence = {
        "baked_s": baked,
        "min_bake_s": min_bake,
        "step_samples": state.step_samples,
        "min_samples": min_samples,
        "canary_requests": state.canary.requests,
        "baseline_requests": state.baseline.requests,
        "canary_error_rate": state.canary.error_rate,
        "baseline_error_rate": state.baseline.error_rate,
        "ignored": dict(state.ignored),
    }
    acting = [j for j in judged if j.acting]
    passed = f"{len(acting)} acting rules pass" if acting else "no acting rules"
    summary = (
        f"{_step_label(state)} passed: baked {baked:.0f} s >= {min_bake:g} s, "
        f"{state.step_samples} canary requests >= {min_samples}, {passed}"
    )
    verdicts = [j.as_evidence() for j in judged]
    nxt = state.step + 1
    if nxt >= len(state.steps):
        _end(
            state,
            Phase.PROMOTED,
            out,
            now,
            reason=f"{summary}; promoted",
            evidence=evidence,
            verdicts=verdicts,
        )
        return
    if state.steps[nxt].requires_approval and nxt not in state.approvals:
        state.gate = nxt
        _transition(
            state,
            Phase.AWAITING_APPROVAL,
            out,
            now,
            reason=f"{summary}; waiting for approval of {_step_label(state, nxt)}",
            evidence=evidence,
            verdicts=verdicts,
        )
        return
    approved = (
        f" (approved by {state.approvals[nxt]})" if state.steps[nxt].requires_approval else ""
    )
    _start_step(
        state,
        nxt,
        out,
        now,
        reason=f"{summary}; next: {_step_label(state, nxt)}{approved}",
        evidence=evidence,
        verdicts=verdicts,
    )
