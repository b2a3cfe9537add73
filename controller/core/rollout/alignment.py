"""Alignment: the cohorts are compared over the same span of event time.

Services report predictions in batches, and the cohorts seldom batch alike: a canary that
reports every 250 ms and a baseline that reports every second. Judged as they arrive, the canary
is always up to a second ahead of the baseline. On independent traffic that is harmless, but
anything that hits both cohorts at once (a failing dependency, a burst of slow requests, an
outage both share) reaches the canary's counts up to a second before the baseline's, and an
anytime-valid test that is checked at every record sees the canary with errors the baseline
does not have yet. Checked again and again through a long rollout, those moments add up to
false rollbacks (a third of healthy canaries at a 5 % share with errors in runs, before this).

So a cohort's predictions that are newer (in event time) than the other cohort's newest are
held back, and join the statistics once the other cohort has reported that far: both cohorts
are then judged on the same span, up to the edges of one batch. Held data waits at most
`align_s` seconds of event time: when the other cohort has reported nothing for that long (no
traffic routed to it, an outage, a stalled reporter), the held data joins anyway, when the
cohort's own newer data or the clock (`now`, on a tick too) is `align_s` past it. Held data is
kept in slots of `SLOT_S` seconds of event time, merged (statistics are mergeable), so a slow
cohort costs at most `align_s / SLOT_S` slots per cohort.

Only the baseline and the canary are aligned (the shadow cohort never gates). Predictions of a
cohort older than the other's newest join at once, whatever is held; the order in which data
joins never changes the statistics, only when they count.
"""

from __future__ import annotations

import math

from controller.core.state import BASELINE, CANARY, RolloutState
from controller.core.stats.cohort import CohortStats

#: The grain, in seconds of event time, at which held data is kept and released.
SLOT_S = 0.25

_OTHER = {BASELINE: CANARY, CANARY: BASELINE}


def holds(state: RolloutState, cohort: str, event_time: float, align_s: float) -> bool:
    """Whether data of `cohort` at `event_time` waits for the other cohort: it is newer than
    the other cohort's newest, by less than `align_s`."""
    other = _OTHER.get(cohort)
    if other is None or align_s <= 0.0:
        return False
    reached = state.received.get(other)
    return reached is not None and reached < event_time < reached + align_s


def hold(state: RolloutState, cohort: str, event_time: float) -> CohortStats:
    """The held statistics of `cohort`'s slot for `event_time` (created empty)."""
    slots = state.held.setdefault(cohort, {})
    slot = math.floor(event_time / SLOT_S)
    stats = slots.get(slot)
    if stats is None:
        stats = slots[slot] = CohortStats(state.stats[cohort].config)
    return stats


def receive(state: RolloutState, cohort: str, event_time: float) -> None:
    """Note that `cohort` has reported up to `event_time`."""
    if cohort in _OTHER:
        reached = state.received.get(cohort)
        if reached is None or event_time > reached:
            state.received[cohort] = event_time


def releasable(state: RolloutState, now: float, align_s: float) -> list[tuple[str, CohortStats]]:
    """Remove and return the held slots that may join the statistics now, oldest first: those
    the other cohort has reached, and those `align_s` old by the cohort's own newest data or by
    `now`."""
    out: list[tuple[str, CohortStats, int]] = []
    for cohort, slots in state.held.items():
        reached = state.received.get(_OTHER[cohort])
        own = state.received.get(cohort, -math.inf)
        cutoff = max(own, now) - align_s
        for slot in sorted(slots):
            last = slots[slot].last_event_time
            if last is None or last <= cutoff or (reached is not None and last <= reached):
                out.append((cohort, slots.pop(slot), slot))
    state.held = {c: s for c, s in state.held.items() if s}
    out.sort(key=lambda item: (item[2], item[0]))
    return [(cohort, stats) for cohort, stats, _ in out]


def next_release(state: RolloutState, align_s: float) -> float | None:
    """The clock time at which the oldest held slot joins with no new data; None when nothing
    is held."""
    times = [
        stats.last_event_time + align_s
        for slots in state.held.values()
        for stats in slots.values()
        if stats.last_event_time is not None
    ]
    return min(times) if times else None


def held_requests(state: RolloutState) -> dict[str, int]:
    """The requests held back, by cohort (evidence for `explain`)."""
    return {c: sum(s.requests for s in slots.values()) for c, slots in state.held.items()}
