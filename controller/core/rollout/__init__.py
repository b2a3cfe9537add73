"""The rollout state machine: events in, commands, decisions and alerts out.

```
apply(state, event, policy, now, event_id=None) -> Result  # any event: ingest, then evaluate
observe(state, predictions, now) -> RolloutState           # statistics only, judge nothing
merge(state, cohorts, now, delta_id=None) -> RolloutState  # pre-folded statistics (the lane)
merge_labels(state, folds, now, delta_id=None) -> RolloutState  # joined labels (the join)
evaluate(state, policy, now) -> Result                     # judge the rules, act on them
tick(state, policy, now) -> Result                         # the timer's evaluate
next_wakeup(state, policy, now) -> float | None            # when a tick could next decide
explain(state, policy, now) -> Assessment                  # why it rolls back, holds, advances
```

`Result` holds the new state and the outputs in the order every shell publishes them
(`schemas.Command`, `schemas.Alert` and `schemas.Decision` payloads stamped with `now`), the
verdicts judged, and a `note` saying why nothing happened when nothing did. All functions are
deterministic functions of their arguments.

The package is laid out by responsibility:

- `inputs`: what each event does before it is judged (predictions, approvals, pause, the
  router's acknowledgement, profiles, labels, metrics), with the explicit `HANDLERS` table;
- `assessment`: judging every rule and reading the verdicts (`judge`, `assess`);
- `evaluation`: acting on the assessment (rollback, deadline, the step's gates);
- `transitions`: the one place where the phase changes and commands are made;
- `alerts`: rule, resource and training alerts under stable dedup keys;
- `wakeup`: the next time a tick could decide anything without new inputs;
- `result`: the `Result` of one call.

**Ownership.** For speed (statistics see every prediction), the functions update the state they
are given in place and return it; they never keep a reference to an older state. A caller that
needs the state from before calls `state.copy()` first. (The worker stores only the latest state;
tests and property checks compare `to_dict()` snapshots.)

**Dedup.** The ids of the last `MAX_RECENT_IDS` control events (anything but predictions) are
kept; re-applying one is a no-op. Prediction batches and statistics deltas are deduplicated by
id over the last `MAX_RECENT_DATA_IDS` only: an older redelivered batch would be counted twice
(the statistics move slightly; no command is ever duplicated, since command, decision and alert
ids derive from the rollout's sequence numbers, see controller.core.ids).
"""

from __future__ import annotations

from typing import Any

from controller.core.access import CONTROL_EVENTS, Identity, deploy_refusal
from controller.core.policy import Policy, PolicyError
from controller.core.rollout import control
from controller.core.rollout.assessment import Assessment, Judged, assess, gates, judge
from controller.core.rollout.evaluation import evaluate_into
from controller.core.rollout.inputs import (
    AFTER_END,
    HANDLERS,
    REQUESTS,
    create,
    merge,
    merge_labels,
    observe,
    on_deployment,
)
from controller.core.rollout.result import Collector, Output, Result
from controller.core.rollout.wakeup import next_wakeup
from controller.core.state import RolloutState, Served
from schemas import DeploymentRequested, Envelope, Payload, PredictionBatch, PredictionServed

__all__ = [
    "HANDLERS",
    "Assessment",
    "Judged",
    "Output",
    "Result",
    "RolloutState",
    "Served",
    "apply",
    "evaluate",
    "explain",
    "merge",
    "merge_labels",
    "next_wakeup",
    "observe",
    "tick",
]


def apply(
    state: RolloutState | None,
    event: Payload | Envelope[Any],
    policy: Policy,
    now: float,
    event_id: str | None = None,
    identity: Identity | None = None,
) -> Result:
    """Apply one event (a payload, or an envelope whose id is then the event id), then evaluate.

    `state` is None until the deployment request arrives: other events for an unknown
    deployment are no-ops (the returned Result's state stays None).

    `identity`: who sent a deployment request or a control event, as the shell verified it
    (None: nothing verified, a worker without an identities file); the core refuses what that
    identity may not do (`controller.core.access`, `controller.core.rollout.control`).
    """
    if isinstance(event, Envelope):
        event_id = event_id or event.id
        payload: Payload = event.data
    else:
        payload = event
    out = Collector()
    if isinstance(payload, PredictionServed | PredictionBatch):
        if state is None:
            out.note(f"no rollout {payload.deployment_id!r} yet: predictions ignored")
            return out.result(None)
        if event_id is not None:
            if state.seen_data(event_id):
                out.note(f"event {event_id} already applied: ignored")
                return out.result(state)
            state.remember_data(event_id)
        items = payload.predictions if isinstance(payload, PredictionBatch) else (payload,)
        if state.phase.is_terminal():
            state.count_ignored("after_end", len(items))
            out.note(f"rollout already {state.phase}: predictions ignored")
            return out.result(state)
        observe(state, items, now)
        return evaluate_into(state, policy, now, out)

    if isinstance(payload, DeploymentRequested) and state is None:
        if identity is not None:
            why = deploy_refusal(payload, identity, policy.access)
            if why:
                out.refuse(why)
                return out.result(None)
        state = create(payload, policy, now, out)
        if event_id is not None:
            state.remember(event_id)
        if state.phase.is_terminal():
            created = out.result(state)
        else:
            created = evaluate_into(state, policy, now, out)
        if identity is not None and identity.verified:  # who requested it, in its decisions
            control.stamp(out, 0, identity)
            return out.result(created.state)
        return created
    if state is None:
        text = (
            f"no rollout {getattr(payload, 'deployment_id', '?')!r}: "
            f"{type(payload).__name__} {'refused' if _requested(payload) else 'ignored'}"
        )
        if _requested(payload):
            out.refuse(text + " (deploy it first, or check the deployment id)")
        else:
            out.note(text)
        return out.result(None)
    if event_id is not None:
        if state.seen(event_id):
            out.note(f"event {event_id} already applied: ignored")
            return out.result(state)
        state.remember(event_id)
    start = len(out.outputs)
    if (
        identity is not None
        and isinstance(payload, CONTROL_EVENTS)
        and not control.admit(state, payload, identity, policy, now, out)
    ):
        return out.result(state)
    result = _apply_to(state, payload, policy, now, out)
    if identity is not None and identity.verified and isinstance(payload, CONTROL_EVENTS):
        control.stamp(out, start, identity)
        return out.result(result.state)
    return result


def _apply_to(
    state: RolloutState, payload: Payload, policy: Policy, now: float, out: Collector
) -> Result:
    """An event of a live or ended rollout, once admitted."""
    if state.phase.is_terminal():
        after_end = AFTER_END.get(type(payload))
        if after_end is not None:
            after_end(state, payload, policy, now, out)
            return out.result(state)
        state.count_ignored("after_end")
        if isinstance(payload, DeploymentRequested):
            on_deployment(state, payload, policy, now, out)
        elif _requested(payload):
            out.refuse(f"rollout already {state.phase}: {type(payload).__name__} refused")
        else:
            out.note(f"rollout already {state.phase}: {type(payload).__name__} ignored")
        return out.result(state)
    handler = HANDLERS.get(type(payload))
    if handler is None:
        out.note(f"{type(payload).__name__} is not an input of a rollout: ignored")
        return out.result(state)
    handler(state, payload, policy, now, out)
    if state.phase.is_terminal():
        return out.result(state)
    return evaluate_into(state, policy, now, out)


def _requested(payload: Payload) -> bool:
    """A request of a person or a deployer (answered when refused), not a report."""
    return isinstance(payload, REQUESTS)


def evaluate(state: RolloutState, policy: Policy, now: float) -> Result:
    """Judge every rule on the statistics so far and act: roll back on an acting FAIL, apply
    the deadline, advance a step whose gates are met, promote after the last."""
    return evaluate_into(state, policy, now, Collector())


def tick(state: RolloutState, policy: Policy, now: float) -> Result:
    """The timer's call: `evaluate` without new data (silence, bake time and deadlines act).
    It can decide something only from `next_wakeup(state, policy, now)` on."""
    return evaluate(state, policy, now)


def explain(state: RolloutState, policy: Policy, now: float) -> Assessment:
    """What the rules say now and what that means: which fail, hold the step or lack data, and
    the step's gates. Judged on a copy: the state is not changed."""
    if not state.phase.is_active() or not state.traffic_started:
        return assess((), gates(state, policy, now))
    copy = state.copy()
    try:
        rules = copy.rules(policy)
    except PolicyError:
        return assess((), gates(copy, policy, now))
    return assess(judge(copy, rules, now), gates(copy, policy, now))
