"""When a rollout next needs its timer: the earliest time a tick could decide anything.

Between inputs, a rollout's evaluation depends on the clock only through:

- the deadline (`created_at + deadline_s`, until it fired);
- the current step's bake time (`step_started_at + min_bake_s`, while progressing), or, while
  the router's acknowledgement of the step is awaited, the router alert's time
  (`step_started_at + router.ack_timeout_s`); bake that waits for lagging inputs passes at an
  input, which is evaluated when it arrives;
- the change-point checkpoints (a new one in each slot of `checkpoint_s` seconds, once the
  canary has requests);
- the recent-window panes (they rotate every `recent_s` seconds);
- the detectors judged from the clock (`outage`'s silence), each saying when its verdict could
  next change with no new data (`Detector.wake_at`).

`next_wakeup` is the earliest of these after `now`; a tick before it finds what the last
evaluation found and decides nothing, so the timer judges only the rollouts that are due. One
evaluation makes at most one transition, so after a call that made one (`transitioned`), the
next tick may make another (a step with no gates passes at the next tick): the wake-up is `now`,
due at the next tick.
Every input (an event, a statistics delta) is evaluated when it arrives, and the wake-up is
computed again after it. A property test holds the worker's and replay's due-only ticking to a
tick of every rollout at every interval: the same outputs, byte for byte.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from controller.core.phases import Phase
from controller.core.policy import Policy, PolicyError, Rule
from controller.core.rollout.alerts import resend_at
from controller.core.rollout.assessment import cohorts, context, gate_values
from controller.core.state import RolloutState


def next_wakeup(
    state: RolloutState, policy: Policy, now: float, *, transitioned: bool = False
) -> float | None:
    """The earliest time after `now` at which a tick could decide something without new
    inputs (`now` itself after a call that `transitioned`: the next tick); None when only an
    input can (a finished rollout, a hold waiting for a person)."""
    if not state.phase.is_active():
        return None
    if transitioned:
        return now
    times: list[float] = []
    deadline_s = state.deadline_s(policy)
    if deadline_s is not None and not state.deadline_fired:
        times.append(state.created_at + deadline_s)
    if state.traffic_started:
        try:
            rules = state.rules(policy)
        except PolicyError:
            rules = None
        if state.phase is Phase.PROGRESSING and state.step_started_at is not None:
            if state.awaiting_ack():  # the next resend (and the router alert) while late
                resend = resend_at(state, policy)
                if resend is not None:
                    times.append(resend)
            else:
                min_bake, _ = gate_values(state, policy)
                times.append(state.step_started_at + min_bake)
        every = policy.checkpoint_s
        if every > 0 and state.canary.requests > 0:
            slot = state.checkpoint_slot
            if slot is None:
                slot = math.floor(now / every)
            times.append((slot + 1) * every)
        if state.panes is not None:
            times.extend(p.start + p.width_s for p in state.panes.values())
        if rules is not None:
            times.extend(_detector_wakeups(state, rules.rules, now))
    future = [t for t in times if t > now]
    return min(future) if future else None


def _detector_wakeups(state: RolloutState, rules: Sequence[Rule], now: float) -> list[float]:
    clock_rules = [r for r in rules if r.detector.judged_from_clock]
    if not clock_rules:
        return []
    base = context(state, now)
    times = []
    for rule in clock_rules:
        baseline, canary = cohorts(state, rule, now)
        t = rule.detector.wake_at(baseline, canary, base)
        if t is not None:
            times.append(t)
    return times
