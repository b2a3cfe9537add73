"""Inputs: what each event does to a rollout before it is judged.

- The bake clock of a step starts when its `set_traffic` command is issued; a `TrafficApplied`
  for that command moves it to the router's `applied_at` (clamped between the issue time and
  `now`): bake time counts while the traffic is really on the canary.
- Predictions whose version is not the deployment's (candidate for canary and shadow, baseline
  for baseline) are counted in `ignored` and left out. The shadow cohort is kept apart and never
  gates.
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
- Labels are counted, not joined to requests (a join needs the request ids; left out).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from controller.core.access import CONTROL_EVENTS
from controller.core.phases import Phase
from controller.core.policy import Policy, PolicyError, Window
from controller.core.rollout import alignment
from controller.core.rollout.alerts import (
    command_refused,
    on_resource,
    on_training_run,
    refusal_resolved,
    router_acknowledged,
)
from controller.core.rollout.result import Collector
from controller.core.rollout.transitions import (
    approvers_note,
    end,
    open_gate,
    pause,
    resume,
    roll_back_promoted,
    start_step,
    step_label,
    stop,
    transition,
)
from controller.core.state import BASELINE, CANARY, SHADOW, Panes, RolloutState, Served
from controller.core.stats.cohort import CohortStats
from controller.core.stats.labelled import BUCKET_S, LabelFold, LabelledStats
from schemas import (
    AbortRequested,
    ApprovalDenied,
    ApprovalGranted,
    CommandRefused,
    DataProfile,
    DeploymentRequested,
    LabelReported,
    MetricReported,
    PauseRequested,
    Payload,
    Prediction,
    ResourceUsage,
    ResumeRequested,
    RollbackRequested,
    TrafficApplied,
    TrainingProfile,
    TrainingRun,
)

Handler = Callable[[RolloutState, Any, Policy, float, Collector], None]


def expected_version(state: RolloutState, cohort: str) -> str | None:
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
    align_s = state.align_s
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
        done = alignment.done_at(event_time, latency)
        held = alignment.holds(state, cohort, done, align_s)
        target = alignment.hold(state, cohort, done) if held else stats[cohort]
        target.observe(
            ok=ok,
            latency_ms=latency,
            event_time=event_time,
            error_type=error_type,
            prediction=prediction,
            features=features,
        )
        alignment.receive(state, cohort, done)
        if not held and panes is not None and cohort in panes:
            panes[cohort].current.observe(
                ok=ok,
                latency_ms=latency,
                event_time=event_time,
                error_type=error_type,
                prediction=prediction,
                features=features,
            )
    state.step_samples += stats[CANARY].requests - canary_before
    alignment.release(state)
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
        expected = expected_version(state, cohort)
        if expected is None or version != expected:
            state.count_ignored(f"version_mismatch:{cohort}", stats.requests)
            continue
        bounds = alignment.delta_bounds(stats)
        if bounds is not None and alignment.holds(state, cohort, bounds[1], state.align_s):
            alignment.hold(state, cohort, bounds[1]).merge_from(stats)
        else:
            alignment.join(state, cohort, stats)
        if bounds is not None:
            alignment.receive(state, cohort, bounds[0])
    alignment.release(state)
    return state


def merge_labels(
    state: RolloutState,
    folds: Iterable[tuple[str, str, LabelFold]],
    now: float,
    delta_id: str | None = None,
) -> RolloutState:
    """Merge joined (prediction, label) pairs, `(cohort, version, fold)` triples (the label
    join): each cohort's pairs, and each bucket of prediction time into the span of the share
    it was routed at (`share_spans`). A bucket that a share change falls in, or that comes
    before the first span, is left out of the quality test (`labels_unplaced`); its pairs
    still count in the cohort's quality. A `delta_id` seen recently is a redelivery."""
    if delta_id is not None:
        if state.seen_data(delta_id):
            return state
        state.remember_data(delta_id)
    if state.phase.is_terminal():
        for _, _, fold in folds:
            state.count_ignored("labels_after_end", fold.stats.pairs)
        return state
    for cohort, version, fold in folds:
        expected = expected_version(state, cohort)
        if expected is None or version != expected:
            state.count_ignored(f"label_version_mismatch:{cohort}", fold.stats.pairs)
            continue
        mine = state.labelled.get(cohort)
        if mine is None:
            state.labelled[cohort] = LabelledStats.from_dict(fold.stats.to_dict())
        else:
            mine.merge_from(fold.stats)
        state.label_seen[cohort] = max(state.label_seen.get(cohort, now), now)
        if cohort not in (CANARY, BASELINE):
            continue  # a shadow's pairs are its quality, not the test's
        side = 0 if cohort == CANARY else 2
        for start, (pairs, events) in fold.buckets.items():
            span = _span_of(state.share_spans, float(start), float(start + BUCKET_S))
            if span is None:
                state.labels_unplaced += pairs
                continue
            counts = state.label_strata[span]
            counts[side] += events
            counts[side + 1] += pairs
    return state


def _span_of(spans: Sequence[Sequence[float]], start: float, end: float) -> int | None:
    """The span [from, next from) that holds all of [start, end); None when a span begins
    inside it or none has begun by its start."""
    found = None
    for index, (begin, _) in enumerate(spans):
        if begin <= start:
            found = index
        elif begin < end:
            return None
    return found


def create(event: DeploymentRequested, policy: Policy, now: float, out: Collector) -> RolloutState:
    state = RolloutState(
        deployment=event,
        phase=Phase.PENDING,
        created_at=now,
        training_profile=event.training_profile,
        align_s=policy.align_s,
        settle_s=policy.settle_s,
        acks=policy.router.acknowledges,
    )
    try:
        rules = state.rules(policy)
    except PolicyError as exc:
        transition(
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
    if event.has_record():  # the audit trail keeps the deployment record (`rollout status`)
        evidence["record"] = event.record()
    if event.gated(0):
        state.gate = 0
        transition(
            state,
            Phase.AWAITING_APPROVAL,
            out,
            now,
            reason=f"waiting for approval to start {step_label(state, 0)}"
            f"{approvers_note(state, 0)}",
            evidence=evidence,
        )
    else:
        start_step(
            state,
            0,
            out,
            now,
            reason=f"rollout of {event.model} {event.candidate_version} started: "
            f"{step_label(state, 0)}",
            evidence=evidence,
        )
    return state


def on_deployment(
    state: RolloutState, event: DeploymentRequested, policy: Policy, now: float, out: Collector
) -> None:
    out.refuse(
        f"deployment id {state.deployment_id!r} is already a rollout ({state.phase}): a new "
        "rollout needs a new deployment id"
    )


def on_granted(
    state: RolloutState, event: ApprovalGranted, policy: Policy, now: float, out: Collector
) -> None:
    k = event.step
    if k >= len(state.steps):
        out.refuse(f"approval for step {k} refused: the plan has {len(state.steps)} steps")
        return
    if state.traffic_started and k <= state.step:
        out.refuse(
            f"approval for step {k} refused: the rollout is past that gate (at step {state.step})"
        )
        return
    state.approvals[k] = event.by
    if event.reason:
        state.approval_reasons[k] = event.reason
    if state.phase is Phase.AWAITING_APPROVAL and state.gate == k:
        open_gate(state, out, now)
        return
    waiting = "" if state.gate is None else f"; the gate waiting is step {state.gate}"
    out.note(f"approval for step {k} by {event.by} recorded{waiting}")


def on_denied(
    state: RolloutState, event: ApprovalDenied, policy: Policy, now: float, out: Collector
) -> None:
    k = event.step
    if k >= len(state.steps) or (state.traffic_started and k <= state.step):
        out.refuse(f"denial for step {k} refused: no such gate ahead (at step {state.step})")
        return
    detail = f": {event.reason}" if event.reason else ""
    stop(
        state,
        out,
        now,
        reason=f"{step_label(state, k)} denied by {event.by}{detail}",
        evidence={"denied_by": event.by, "denial_reason": event.reason, "denied_step": k},
    )


def on_pause(
    state: RolloutState, event: PauseRequested, policy: Policy, now: float, out: Collector
) -> None:
    if state.phase is Phase.PAUSED:
        out.refuse("pause refused: the rollout is already paused")
        return
    detail = f": {event.reason}" if event.reason else ""
    pause(state, out, now, reason=f"paused by {event.by}{detail}", evidence={"by": event.by})


def on_resume(
    state: RolloutState, event: ResumeRequested, policy: Policy, now: float, out: Collector
) -> None:
    if state.phase is not Phase.PAUSED:
        out.refuse(f"resume refused: the rollout is {state.phase}, not paused")
        return
    detail = f": {event.reason}" if event.reason else ""
    resume(state, out, now, reason=f"resumed by {event.by}{detail}", evidence={"by": event.by})


def manual_end(phase: Phase, verb: str) -> Handler:
    """The handler of a person's request to end the rollout in `phase` ("aborted by bob: ...")."""

    def handler(
        state: RolloutState,
        event: AbortRequested | RollbackRequested,
        policy: Policy,
        now: float,
        out: Collector,
    ) -> None:
        detail = f": {event.reason}" if event.reason else ""
        end(
            state,
            phase,
            out,
            now,
            reason=f"{verb} by {event.by}{detail}",
            evidence={"by": event.by},
        )

    return handler


on_abort = manual_end(Phase.ABORTED, "aborted")
on_rollback = manual_end(Phase.ROLLED_BACK, "rolled back")


def on_rollback_after_end(
    state: RolloutState, event: RollbackRequested, policy: Policy, now: float, out: Collector
) -> None:
    """A rollback of a rollout that has ended: a promoted model goes back to the record's
    rollback version; one rolled back or aborted has nothing left to roll back."""
    if state.phase is not Phase.PROMOTED:
        state.count_ignored("after_end")
        out.refuse(f"rollout already {state.phase}: RollbackRequested refused")
        return
    roll_back_promoted(state, out, now, by=event.by, reason=event.reason)


def on_command_refused(
    state: RolloutState, event: CommandRefused, policy: Policy, now: float, out: Collector
) -> None:
    command_refused(state, policy, now, out, event)


def on_traffic_applied(
    state: RolloutState, event: TrafficApplied, policy: Policy, now: float, out: Collector
) -> None:
    refusal_resolved(state, policy, now, out, event.command_id)
    if event.command_id != state.step_command_id or state.step_started_at is None:
        out.note(f"traffic applied for command {event.command_id}: not the current step's")
        return
    applied = event.applied_at.timestamp()
    state.step_started_at = min(max(state.step_started_at, applied), now)
    if state.share_spans and state.share_spans[-1][1] == state.canary_percent:
        state.share_spans[-1][0] = state.step_started_at  # the share changed when it applied
    first = state.step_command is not None
    state.step_command = None
    state.acked_percent, state.acked_at = state.canary_percent, state.step_started_at
    out.note(f"bake clock of {step_label(state)} starts at {state.step_started_at}")
    if first:
        router_acknowledged(state, policy, now, out, event.command_id)


def on_profile(
    state: RolloutState, event: DataProfile, policy: Policy, now: float, out: Collector
) -> None:
    if event.split != "training":
        out.note(f"{event.split} profile {event.dataset!r} recorded nowhere: ignored")
        return
    previous = state.training_profile
    state.training_profile = TrainingProfile(
        dataset=event.dataset,
        features=event.features,
        prediction=None if previous is None else previous.prediction,
    )
    state.profile_version += 1
    out.note(f"training profile now {event.dataset!r} ({len(event.features)} features)")


def on_label(
    state: RolloutState, event: LabelReported, policy: Policy, now: float, out: Collector
) -> None:
    state.labels += 1


def on_metric(
    state: RolloutState, event: MetricReported, policy: Policy, now: float, out: Collector
) -> None:
    out.note(f"metric {event.name!r} not judged (no metric rules)")


#: The explicit table of inputs: payload type -> handler. Predictions take the fast path.
#: The requests of people and deployers: when one cannot apply, the result says why
#: (`Result.refusal`) and the shell answers it; reports (traffic, data, metrics) are notes.
REQUESTS: tuple[type[Payload], ...] = (DeploymentRequested, *CONTROL_EVENTS)

#: The inputs that still act once a rollout has ended (phase terminal); every other request
#: is refused and every report ignored.
AFTER_END: Mapping[type[Payload], Handler] = {
    RollbackRequested: on_rollback_after_end,
    CommandRefused: on_command_refused,
}

HANDLERS: Mapping[type[Payload], Handler] = {
    DeploymentRequested: on_deployment,
    ApprovalGranted: on_granted,
    ApprovalDenied: on_denied,
    PauseRequested: on_pause,
    ResumeRequested: on_resume,
    AbortRequested: on_abort,
    RollbackRequested: on_rollback,
    TrafficApplied: on_traffic_applied,
    CommandRefused: on_command_refused,
    DataProfile: on_profile,
    LabelReported: on_label,
    MetricReported: on_metric,
    ResourceUsage: on_resource,
    TrainingRun: on_training_run,
}
