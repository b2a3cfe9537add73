"""The cohorts are compared over the same span of event time (controller.core.rollout.alignment)."""

from __future__ import annotations

from typing import Any

from controller.core.rollout import Served, merge, next_wakeup, observe, tick
from controller.core.rollout.alignment import held_requests
from controller.core.stats.cohort import CohortStats
from tests.unit.core.rollout_helpers import Rollout, unit_policy


def served(
    cohort: str, at: float, n: int = 1, *, ok: bool = True, latency_ms: float = 0.0
) -> list[Served]:
    """n predictions of `cohort` that arrived at `at` and took `latency_ms`."""
    version = "v1" if cohort == "baseline" else "v2"
    error = None if ok else "timeout"
    return [Served(cohort, version, ok, latency_ms, at, error) for _ in range(n)]


def started(**policy: Any) -> Rollout:
    """A rollout whose canary has traffic, both cohorts reported what completed up to
    START + 1.1 (ten requests each at START + 1, 100 ms each), and whose first step's cuts are
    taken (the unit policy's `settle_s` is 0: no cut waits for data after START + 1)."""
    rollout = Rollout(policy=unit_policy(**policy))
    rollout.serve(1)
    return rollout


def requests(rollout: Rollout) -> tuple[int, int]:
    return rollout.state.canary.requests, rollout.state.baseline.requests


def test_data_newer_than_the_other_cohorts_waits_until_that_cohort_reports_as_far() -> None:
    rollout = started()
    at = rollout.now

    observe(rollout.state, served("canary", at + 0.25, 3) + served("canary", at + 0.5, 2), at)
    assert (10, 10) == requests(rollout)
    assert {"canary": 5} == held_requests(rollout.state)

    observe(rollout.state, served("baseline", at + 0.4, 4), at + 0.4)  # past the first only
    assert (13, 14) == requests(rollout)

    observe(rollout.state, served("baseline", at + 1.0, 6), at + 1.0)
    assert (15, 14) == requests(rollout)  # the canary joined; the baseline is ahead now
    assert {"baseline": 6} == held_requests(rollout.state)


def test_data_the_other_cohort_has_passed_joins_at_once() -> None:
    rollout = started()
    at = rollout.now
    observe(rollout.state, served("baseline", at + 1.0, 5), at + 1.0)  # waits for the canary

    observe(rollout.state, served("canary", at + 0.5, 2), at + 1.0)

    assert (12, 10) == requests(rollout)
    assert ["baseline"] == list(rollout.state.held)


def test_a_cohort_silent_for_align_s_is_not_waited_for() -> None:
    rollout = started(evaluation={"align_s": 2.0})
    at = rollout.now
    observe(rollout.state, served("canary", at + 1.0, 3), at + 1.0)
    assert (10, 10) == requests(rollout)

    # the baseline stays silent: canary data 2 s past its newest joins, and takes the held along
    observe(rollout.state, served("canary", at + 3.2, 1), at + 3.2)

    assert (14, 10) == requests(rollout)
    assert {} == rollout.state.held


def test_the_clock_releases_nothing_so_replay_holds_what_the_worker_held() -> None:
    rollout = started(evaluation={"align_s": 2.0})
    at = rollout.now
    observe(rollout.state, served("canary", at + 0.5, 3), at + 0.5)
    policy = rollout.policy

    tick(rollout.state, policy, at + 60.0)

    assert (10, 10) == requests(rollout)
    assert next_wakeup(rollout.state, policy, at + 0.5) != at + 2.5


def test_no_data_waits_for_a_cohort_the_step_sends_no_traffic() -> None:
    rollout = started()
    at = rollout.now
    rollout.state.canary_percent = 100.0  # the last step: the baseline gets nothing

    observe(rollout.state, served("canary", at + 0.5, 3), at + 0.5)

    assert (13, 10) == requests(rollout)
    assert {} == rollout.state.held


def test_align_s_zero_compares_the_data_as_it_arrives() -> None:
    rollout = started(evaluation={"align_s": 0.0})
    at = rollout.now

    observe(rollout.state, served("canary", at + 0.5, 3), at + 0.5)

    assert (13, 10) == requests(rollout)
    assert {} == rollout.state.held


def test_the_lanes_deltas_are_held_and_released_whole() -> None:
    rollout = started()
    at = rollout.now
    canary = CohortStats.of(served("canary", at + 0.25, 2) + served("canary", at + 0.5, 2))
    # a delta keeps its newest arrival and its latencies' range: it completed by 0.5 + 0.3 s
    baseline = CohortStats.of(
        served("baseline", at + 0.3, 4, latency_ms=100.0) + served("baseline", at + 0.5, 4)
    )

    merge(rollout.state, [("canary", "v2", canary)], at + 0.5)
    assert (10, 10) == requests(rollout)
    merge(rollout.state, [("baseline", "v1", baseline)], at + 0.6)

    assert (14, 10) == requests(rollout)  # the baseline's bound, 0.6 s, is past the canary's
    assert 14 == rollout.state.step_samples
    assert {"baseline": 8} == held_requests(rollout.state)


def shared_failures(align_s: float) -> str:
    """Two minutes at a 10 % share, a request every millisecond (one in ten the canary's); a
    dependency both cohorts share fails every request for 0.2 s every 5 s. The canary reports
    every 250 ms, the baseline every second, and the rollout is judged at every report. Returns
    where the rollout ends."""
    rollout = Rollout(policy=unit_policy(evaluation={"align_s": align_s}))
    rollout.serve(1, canary=1, baseline=9)
    start = rollout.now
    batches: dict[str, list[Served]] = {"canary": [], "baseline": []}
    for ms in range(1, 120_001):
        at = start + ms / 1_000
        cohort = "canary" if ms % 10 == 0 else "baseline"
        batches[cohort] += served(cohort, at, ok=ms % 5_000 >= 200)
        for name, every in (("canary", 250), ("baseline", 1_000)):
            if ms % every == 0:
                observe(rollout.state, batches[name], at)
                batches[name] = []
                rollout.now = at
                rollout.tick()
        if rollout.state.phase.is_terminal():
            break
    return rollout.state.phase.value


def test_a_slow_request_waits_for_the_other_cohort_to_report_what_completed_with_it() -> None:
    """A timeout that arrived with fast requests completes a second later: it is compared with
    what the other cohort had completed by then, not when it arrived."""
    rollout = started()
    at = rollout.now
    observe(rollout.state, served("baseline", at + 0.5, 5), at + 0.5)

    observe(rollout.state, served("canary", at + 0.2, ok=False, latency_ms=1_000.0), at + 1.2)

    assert (10, 15) == requests(rollout)  # arrived before the baseline's newest, completed after
    observe(rollout.state, served("baseline", at + 1.3, 5), at + 1.3)
    assert (11, 15) == requests(rollout)  # the timeout joined; the baseline is ahead now


def test_a_shared_failure_reported_by_the_canary_first_does_not_roll_it_back() -> None:
    """Judged as the data arrives, the canary has each spell's failures for up to a second
    before the baseline has its share of them."""
    assert "rolled_back" == shared_failures(align_s=0.0)
    assert shared_failures(align_s=5.0) in ("progressing", "promoted")
