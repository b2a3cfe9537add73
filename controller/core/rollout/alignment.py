"""Alignment: the cohorts are compared over the same span of event time.

Services report predictions in batches, and the cohorts seldom batch alike: a canary that
reports every 250 ms and a baseline that reports every second. Judged as they arrive, the canary
is always up to a second ahead of the baseline. On independent traffic that is harmless, but
anything that hits both cohorts at once (a failing dependency, a burst of slow requests, an
outage both share) reaches the canary's counts up to a second before the baseline's, and an
anytime-valid test that is checked at every record sees the canary with errors the baseline
does not have yet. Checked again and again through a long rollout, those moments add up to
false rollbacks (a third of healthy canaries at a 5 % share with errors in runs, before this).

Time here is when a request *completed* (its event time, when it arrived, plus its latency):
a service reports a prediction once it is served, so a batch holds what completed before it
was sent, and a slow request (a timeout) arrives in a later batch than a fast one that came in
with it. Each cohort's watermark (`state.received`) is the latest completion it has reported. A
cohort's predictions that completed after the other cohort's watermark are held back, and join
the statistics once the other cohort has reported that far: both cohorts are then judged on the
same span, up to the edges of one batch. Held data waits at most `align_s` seconds of the
cohort's own data: when the other cohort has reported nothing for that long (an outage, a
stalled reporter), the held data joins anyway, once the cohort's own newer data is `align_s`
past it; and no data waits for a cohort the current step sends no traffic to. Nothing here
reads the clock: the live worker (whose `now` is when it processed an input) and a replay of
its inputs (whose `now` is the input's time) hold and release the same data at the same
inputs. Held data is kept in slots of `SLOT_S` seconds, merged (statistics are mergeable)
with their latest completion (`state.held_done`), and a slot joins when the other cohort has
reached that, so a slow cohort costs at most `align_s / SLOT_S` slots per cohort.

The worker's lane folds many predictions into one delta before the core sees them, and a delta
keeps only its newest arrival and its latencies' range: its newest completion is then bounded,
above by the newest arrival plus the largest latency (when to release it) and below by the
newest arrival plus the smallest (how far its cohort has reported). Both bounds err on the side
of waiting: a delta may wait a little longer than a prediction would, never less.

Only the baseline and the canary are aligned (the shadow cohort never gates). Predictions of a
cohort older than the other's newest join at once, whatever is held; the order in which data
joins never changes the statistics, only when they count.

Cuts. The share tests judge each interval between checkpoints against its own share of
requests, which is only exact when the router sent every request of the interval at one share.
A step changes the share, so the rollout cuts its statistics twice by completion time: at the
change (the slot in which the step's command was issued: requests that completed before it were
routed at the old share) and once the routers have switched and the requests they routed at
the old share have completed (the step's start, moved to the router's `applied_at` when it
acknowledges, plus `evaluation.settle_s`). While a cut is pending, data of either cohort that
completed at or after it waits, and the cut's checkpoint is taken once both cohorts have
reported past it (or one is `align_s` past it), with exactly the data before it; then the data
that waited joins. The interval between the two cuts, a mix of both shares, is not tested
(controller.core.stats.checkpoint). What this assumes: a router that applies a command within
`settle_s` of the acknowledged `applied_at` (or of the command, without acknowledgements), and
requests that complete within `settle_s` of being routed; a request routed at the old share
and completing later counts at the new one.
"""

from __future__ import annotations

import math

from controller.core.policy import RuleSet
from controller.core.state import BASELINE, CANARY, SLOT_S, RolloutState
from controller.core.stats.checkpoint import Checkpoint
from controller.core.stats.cohort import CohortStats

__all__ = ["SLOT_S"]

_OTHER = {BASELINE: CANARY, CANARY: BASELINE}


def done_at(event_time: float, latency_ms: float) -> float:
    """When a request that arrived at `event_time` completed (`event_time` for a latency that
    is not a duration)."""
    if 0.0 <= latency_ms < math.inf:
        return event_time + latency_ms / 1000.0
    return event_time


def holds(state: RolloutState, cohort: str, done: float, align_s: float) -> bool:
    """Whether data of `cohort` that completed at `done` waits: for the pending cut, when it
    completed at or after it; for the other cohort, when it is newer than the other cohort's
    watermark, by less than `align_s`, and the current step sends the other cohort traffic (no
    data waits for a cohort that gets none)."""
    other = _OTHER.get(cohort)
    if other is None:
        return False
    cut = state.pending_cut()
    if cut is not None and math.floor(done / SLOT_S) >= cut:
        return True
    if align_s <= 0.0 or other not in state.routed():
        return False
    reached = state.received.get(other)
    return reached is not None and reached < done < reached + align_s


def hold(state: RolloutState, cohort: str, done: float) -> CohortStats:
    """The held statistics of `cohort`'s slot for completion time `done` (created empty)."""
    slots = state.held.setdefault(cohort, {})
    slot = math.floor(done / SLOT_S)
    latest = state.held_done.setdefault(cohort, {})
    latest[slot] = max(done, latest.get(slot, done))
    stats = slots.get(slot)
    if stats is None:
        stats = slots[slot] = CohortStats(state.stats[cohort].config)
    return stats


def receive(state: RolloutState, cohort: str, done: float) -> None:
    """Note that `cohort` has reported what completed up to `done`."""
    if cohort in _OTHER:
        reached = state.received.get(cohort)
        if reached is None or done > reached:
            state.received[cohort] = done


def delta_bounds(stats: CohortStats) -> tuple[float, float] | None:
    """A delta's newest completion, bounded below and above (module docstring); None for a
    delta without requests."""
    last = stats.last_event_time
    if last is None:
        return None
    low, high = stats.latency.min, stats.latency.max
    return (
        last if low is None else done_at(last, low),
        last if high is None else done_at(last, high),
    )


def releasable(state: RolloutState, align_s: float) -> list[tuple[str, CohortStats]]:
    """Remove and return the held slots that may join the statistics now, oldest first: those
    the other cohort has reached, those `align_s` old by the cohort's own newest data, and all
    of a cohort whose counterpart the current step sends no traffic; none at or after the
    pending cut."""
    out: list[tuple[str, CohortStats, int]] = []
    cut = state.pending_cut()
    for cohort, slots in state.held.items():
        reached = state.received.get(_OTHER[cohort])
        cutoff = state.received.get(cohort, -math.inf) - align_s
        waiting = _OTHER[cohort] in state.routed()
        latest = state.held_done[cohort]
        for slot in sorted(slots):
            if cut is not None and slot >= cut:
                break
            done = latest[slot]
            if not waiting or done <= cutoff or (reached is not None and done <= reached):
                out.append((cohort, slots.pop(slot), slot))
                del latest[slot]
    state.held = {c: s for c, s in state.held.items() if s}
    state.held_done = {c: s for c, s in state.held_done.items() if s}
    out.sort(key=lambda item: (item[2], item[0]))
    return [(cohort, stats) for cohort, stats, _ in out]


def held_requests(state: RolloutState) -> dict[str, int]:
    """The requests held back, by cohort (evidence for `explain`)."""
    return {c: sum(s.requests for s in slots.values()) for c, slots in state.held.items()}


def release(state: RolloutState) -> None:
    """Let the held data that may join the statistics now join them."""
    if not state.held:
        return
    for cohort, stats in releasable(state, state.align_s):
        join(state, cohort, stats)


def join(state: RolloutState, cohort: str, stats: CohortStats) -> None:
    """Add `stats` to `cohort`'s statistics (and its recent pane, and the step's samples)."""
    state.stats[cohort].merge_from(stats)  # in place: a copy per delta cost more than the merge
    if state.panes is not None and cohort in state.panes:
        state.panes[cohort].current.merge_from(stats)
    if cohort == CANARY:
        state.step_samples += stats.requests


def checkpoint(
    state: RolloutState, now: float, every_s: float, rules: RuleSet | None = None
) -> list[Checkpoint]:
    """Take the checkpoints due (`RolloutState.take_checkpoint`): each cut the cohorts have
    reported past, releasing the data that waited for it before the next, then the clock's."""
    taken: list[Checkpoint] = []
    while True:
        cut = state.pending_cut()
        point = state.take_checkpoint(now, every_s, rules)
        if point is None:
            return taken
        taken.append(point)
        if cut is None:
            return taken
        release(state)
