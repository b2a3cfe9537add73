"""A model's monitor: configured, fed one second at a time, judged on the grid of checks."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

import schemas as s
from controller.core import monitor
from controller.core.monitor import MonitoringPolicy, MonitorState
from controller.core.monitor.cusum import Cusum, binomial_llr
from controller.core.monitor.monitor import observations
from controller.core.monitor.state import Reference
from controller.core.policy import PolicyError
from controller.core.stats.cohort import CohortStats
from controller.policy_io import default_monitoring_policy

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a multiple of every check grid

#: the default policy with a short reference (60 s learned, 60 s calibrated in 10 s intervals)
FAST = {
    **default_monitoring_policy().to_dict(),
    "reference": {"learn_s": 60, "calibrate_s": 60, "min_requests": 500, "calibration_bin_s": 10},
}


@dataclass
class Row:
    ok: bool
    latency_ms: float
    event_time: float
    error_type: str | None
    prediction: Any
    features: dict[str, Any] | None


@dataclass
class Traffic:
    """One version's requests, second by second: the knobs a test turns."""

    rate: float = 50.0
    error_rate: float = 0.01
    latency_ms: float = 50.0
    #: a slow mode of its own: this share of requests about `slow_ms` (heavy-tailed traffic)
    slow_share: float = 0.0
    slow_ms: float = 400.0
    missing: float = 0.0
    score_shift: float = 0.0
    version: str = "v1"
    seed: int = 1

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def second(self, t: float) -> CohortStats:
        rng = self.rng
        n = sum(1 for _ in range(int(2 * self.rate)) if rng.random() < 0.5)
        rows = []
        for i in range(n):
            ok = rng.random() >= self.error_rate
            age = None if rng.random() < self.missing else float(rng.randint(18, 80))
            latency = rng.lognormvariate(math.log(self.latency_ms), 0.3)
            if self.slow_share and rng.random() < self.slow_share:
                latency = rng.lognormvariate(math.log(self.slow_ms), 0.6)
            rows.append(
                Row(
                    ok,
                    latency,
                    t + i / max(n, 1),
                    None if ok else "internal",
                    min(1.0, rng.betavariate(2, 5) + self.score_shift),
                    {"age": age, "country": rng.choice(["us", "de", "fr"])},
                )
            )
        stats = CohortStats()
        stats.observe_many(rows)
        return stats


def configured(policy: dict[str, Any] | None = None, **kw: Any) -> MonitorState:
    event = s.MonitorConfigured(model="fraud", version="v1", by="alice", policy=policy, **kw)
    result = monitor.configure(None, event, T0)
    assert result.state is not None and result.refusal is None
    return result.state


def run(
    state: MonitorState,
    policy: MonitoringPolicy,
    traffic: Traffic | None,
    start: float,
    seconds: int,
    heard: Iterable[float | None] | None = None,
) -> list[Any]:
    """Feed `seconds` of traffic (None: silence) and check after each; every output."""
    outputs: list[Any] = []
    heard_at = iter(heard) if heard is not None else None
    for i in range(seconds):
        t = start + i
        if traffic is not None:
            version = traffic.version
            monitor.observe(state, "fraud", [("baseline", version, traffic.second(t))], None, t)
        result = monitor.check(state, policy, t + 1, next(heard_at) if heard_at else None)
        outputs += result.outputs
    return outputs


def fired(outputs: list[Any]) -> list[s.MonitorDecision]:
    return [o for o in outputs if isinstance(o, s.MonitorDecision) and o.action == "alert_fired"]


def watching(traffic: Traffic | None = None) -> tuple[MonitorState, MonitoringPolicy, float]:
    """A monitor past its reference and calibration, and the time it got there."""
    policy = MonitoringPolicy.from_mapping(FAST)
    state = configured(FAST)
    outputs = run(state, policy, traffic or Traffic(), T0, 130)
    assert "watching" == state.stage()
    assert [] == fired(outputs)
    return state, policy, T0 + 130


def test_a_configured_monitor_learns_its_reference_then_calibrates_then_watches() -> None:
    policy = MonitoringPolicy.from_mapping(FAST)
    state = configured(FAST)
    assert "learning" != state.stage()  # no check yet: it waits for the first

    outputs = run(state, policy, Traffic(), T0, 130)

    stages = [o.reason for o in outputs if o.action == "reference_learned"]
    assert 2 == len(stages)
    assert "reference learned from" in stages[0]
    assert "watching 14 statistics of 8 rules" in stages[1]  # the latency rules: tail, body
    assert "watching" == state.stage()
    # dispersion is measured, never sharper than independence
    assert all(c.phi >= 1.0 for c in state.cusums.values())


def test_a_tripled_error_rate_fires_once_says_since_when_and_by_how_much_then_resolves() -> None:
    traffic = Traffic(error_rate=0.01)
    state, policy, t = watching(traffic)
    calm = run(state, policy, traffic, t, 120)
    traffic.error_rate = 0.03
    change = t + 120
    during = run(state, policy, traffic, change, 120)
    traffic.error_rate = 0.01
    after = run(state, policy, traffic, change + 120, 600)

    assert [] == fired(calm)
    (alarm,) = fired(during)
    assert "errors" == alarm.rule
    # 50 requests a second: about a minute, not many (a two-minute reference knows its rate to
    # about a quarter, and the monitor holds it at its upper bound)
    assert alarm.at.timestamp() - change < 90
    since = alarm.evidence["since"]
    estimate = s.MonitorDecision.model_validate({**alarm.model_dump(), "at": since}).at
    assert abs(estimate.timestamp() - change) <= 30  # the change-point estimate
    assert 0.02 < alarm.evidence["observed"] < 0.045
    alerts = [o for o in during if isinstance(o, s.Alert)]
    assert [("firing", "fraud/monitor.errors", "critical")] == [
        (a.status, a.dedup_key, a.severity.value) for a in alerts
    ]
    resolved = [o for o in after if isinstance(o, s.Alert)]
    assert ["resolved"] == [a.status for a in resolved]
    assert [] == state.firing()


@pytest.mark.parametrize(
    ("knob", "value", "rule"),
    [
        ("latency_ms", 75.0, "latency"),
        ("missing", 0.1, "data_quality/age:missing"),
        ("score_shift", 0.25, "prediction_drift/prediction"),
    ],
)
def test_each_kind_of_change_fires_its_own_rule(knob: str, value: float, rule: str) -> None:
    traffic = Traffic()
    state, policy, t = watching(traffic)
    setattr(traffic, knob, value)

    outputs = run(state, policy, traffic, t, 120)

    assert rule in [d.rule for d in fired(outputs)]


def test_silence_is_an_outage_but_not_while_the_inputs_are_behind() -> None:
    traffic = Traffic(rate=20.0)
    state, policy, t = watching(traffic)

    behind = run(state, policy, None, t, 60, heard=[t - 5.0] * 60)  # the lane is stuck
    silent = run(state, policy, None, t + 60, 90)

    assert [] == fired(behind)
    (alarm,) = fired(silent)
    assert "outage" == alarm.rule
    # 20 requests a second: the evidence is there in a second or two, and the policy's outage
    # rule wants 60 s of it
    assert 60 <= alarm.at.timestamp() - (t + 60) <= 65
    assert "served well" in alarm.reason and "an outage" in alarm.reason


def test_steady_traffic_raises_nothing_for_an_hour() -> None:
    traffic = Traffic(rate=20.0, seed=7)
    state, policy, t = watching(traffic)

    outputs = run(state, policy, traffic, t, 3600)

    assert [] == fired(outputs)


def test_a_redelivered_delta_changes_nothing() -> None:
    state = configured()
    stats = Traffic().second(T0)
    monitor.observe(state, "fraud", [("baseline", "v1", stats)], "d-1", T0)
    once = state.to_dict()

    monitor.observe(state, "fraud", [("baseline", "v1", stats)], "d-1", T0 + 0.5)

    assert once == state.to_dict()


def test_a_model_nobody_watches_is_counted_and_said_once_an_hour() -> None:
    state = monitor.observe(None, "orphan", [("baseline", "v9", Traffic().second(T0))], None, T0)
    policy = default_monitoring_policy()

    first = monitor.check(state, policy, T0 + 1).outputs
    again = monitor.check(state, policy, T0 + 2).outputs
    later = monitor.check(state, policy, T0 + 3602).outputs

    assert ["unmonitored"] == [o.action for o in first]
    assert "rollout monitor set orphan" in first[0].reason
    assert [] == again
    assert ["unmonitored"] == [o.action for o in later]
    assert state.versions["v9"] > 0 and "unmonitored" == state.stage()


def test_a_new_version_learns_a_new_reference_unless_the_reference_is_pinned() -> None:
    state, policy, t = watching()
    promote = s.MonitorConfigured(model="fraud", version="v2", by="ctl", source="rollout:dep-9")

    monitor.configure(state, promote, t)
    run(state, policy, Traffic(version="v2"), t, 2)
    assert ("v2", "learning") == (state.version, state.stage())

    pinned, policy, t = watching()
    monitor.configure(pinned, promote.model_copy(update={"reference": "pin"}), t)
    run(pinned, policy, Traffic(version="v2"), t, 2)
    assert ("v2", "watching") == (pinned.version, pinned.stage())


def test_only_the_monitored_version_is_judged_other_versions_are_counted() -> None:
    production = Traffic()
    state, policy, t = watching(production)
    canary = Traffic(version="v2", error_rate=0.5, seed=2)
    before = state.other_requests

    outputs = []
    for i in range(60):
        both = [
            ("baseline", "v1", production.second(t + i)),
            ("canary", "v2", canary.second(t + i)),
        ]
        monitor.observe(state, "fraud", both, None, t + i)
        outputs += monitor.check(state, policy, t + i + 1).outputs

    assert [] == fired(outputs)  # the failing canary is the rollout's business
    assert state.other_requests > before


def test_state_round_trips_through_plain_json() -> None:
    state, policy, t = watching()
    run(state, policy, Traffic(error_rate=0.2), t, 20)

    again = MonitorState.from_dict(orjson.loads(orjson.dumps(state.to_dict())))

    assert state == again


def test_an_invalid_inline_policy_is_refused_with_what_to_change() -> None:
    event = s.MonitorConfigured(
        model="fraud", by="alice", policy={"rules": [{"name": "x", "detector": "tea_leaves"}]}
    )

    result = monitor.configure(None, event, T0)

    assert result.refusal is not None and "unknown detector 'tea_leaves'" in result.refusal


def test_deleting_resolves_what_fires_and_stops_the_watch() -> None:
    state, policy, t = watching()
    run(state, policy, Traffic(error_rate=0.2), t, 30)
    assert state.firing()

    result = monitor.delete(state, s.MonitorDeleted(model="fraud", by="bob"), t + 30)

    assert ["resolved"] == [o.status for o in result.outputs if isinstance(o, s.Alert)]
    assert "unmonitored" == state.stage()
    refused = monitor.delete(state, s.MonitorDeleted(model="fraud", by="bob"), t + 31)
    assert refused.refusal == "model fraud has no monitor to delete"


def test_policy_problems_are_all_named() -> None:
    with pytest.raises(PolicyError) as caught:
        MonitoringPolicy.from_mapping(
            {
                "rules": [
                    {"name": "a", "detector": "error_rate", "params": {"ratio": 0.5}},
                    {"name": "a", "detector": "latency_slo"},
                    {"name": "c", "detector": "outage", "every_s": 1.5},
                ]
            }
        )
    text = str(caught.value)
    assert "ratio=0.5 is out of range" in text
    assert "the name is used twice" in text
    assert "latency_slo needs params.threshold_ms" in text
    assert "every_s must be a multiple of check_s" in text


def test_the_alarm_level_states_the_false_alarm_rate() -> None:
    policy = default_monitoring_policy()
    errors = policy.rules[0]
    # at most one false alarm per rule per 30 days of checks every second: e^h >= 2.59 M
    assert math.isclose(math.exp(policy.threshold(errors, 1)), 30 * 86400)
    # a rule of 10 keys splits the rate between them
    assert math.isclose(math.exp(policy.threshold(errors, 10)), 10 * 30 * 86400)


def test_a_cusum_under_the_reference_rarely_reaches_a_low_level() -> None:
    """Lorden's bound, checked by simulation: with h = ln(200) a CUSUM of LLRs of data that
    follow the reference runs at least 200 checks on average before a false alarm."""
    rng = random.Random(3)
    runs = []
    for _ in range(200):
        cusum, n = Cusum(), 0
        while n < 20_000:
            n += 1
            x = sum(1 for _ in range(20) if rng.random() < 0.05)
            if cusum.step(binomial_llr(x, 20, 0.05, 0.10), n, start=n, h=math.log(200), h_back=5):
                break
        runs.append(n)
    assert sum(runs) / len(runs) >= 200


def test_a_burst_of_failures_shorter_than_the_minimum_evidence_does_not_alarm_alone() -> None:
    traffic = Traffic(rate=20.0, seed=5)
    state, policy, t = watching(traffic)
    traffic.error_rate = 1.0

    burst = run(state, policy, traffic, t, 6)  # everything fails for 6 s, then it is over
    traffic.error_rate = 0.01
    after = run(state, policy, traffic, t + 6, 120)
    traffic.error_rate = 1.0
    lasting = run(state, policy, traffic, t + 126, 30)

    assert [] == fired(burst + after)
    assert "errors" in [d.rule for d in fired(lasting)]


def test_a_share_s_dispersion_is_measured_around_its_own_mean_not_the_allowance() -> None:
    """An SLO allows 1 % slow requests; the model has 0.1 %. Binomial intervals around 0.1 %
    are not over-dispersed, whatever the allowance."""
    rng = random.Random(4)
    cusum = Cusum()
    for _ in range(60):
        n = 1200
        cusum.calibrate_share(sum(1 for _ in range(n) if rng.random() < 0.001), n)

    cusum.finish_calibration()

    assert cusum.phi < 1.6


def test_an_estimated_reference_rate_is_frozen_at_its_upper_bound_inflated_by_dispersion() -> None:
    """Errors in runs: 60 intervals of 1,200 requests where whole runs of 20 fail. The share
    learned is uncertain by far more than a binomial's: the bound widens with phi."""
    rng = random.Random(8)
    runs_of_twenty = Cusum()
    independent = Cusum()
    for _ in range(60):
        runs = sum(1 for _ in range(12) if rng.random() < 0.05)  # 0.6 runs of 20 per interval
        runs_of_twenty.calibrate_share(20.0 * runs, 1200)
        independent.calibrate_share(sum(1 for _ in range(1200) if rng.random() < 0.01), 1200)
    runs_of_twenty.finish_calibration()
    independent.finish_calibration()

    clustered = runs_of_twenty.freeze_rate(720.0, 72_000)  # and 1 % in the reference hour
    plain = independent.freeze_rate(720.0, 72_000)

    assert runs_of_twenty.phi > 10 > independent.phi
    pooled = (720 + runs_of_twenty.calib_x) / (72_000 + runs_of_twenty.calib_n)
    assert math.isclose(
        clustered - pooled,
        2.0 * math.sqrt(runs_of_twenty.phi * pooled * (1 - pooled) / 144_000),
    )
    assert clustered - pooled > 3 * (plain - 0.01) > 0
    assert Cusum.from_dict(orjson.loads(orjson.dumps(runs_of_twenty.to_dict()))).p0 == clustered


def test_a_monitor_judges_errors_against_the_bound_of_its_reference_rate() -> None:
    state, policy, t = watching(Traffic(error_rate=0.01))
    run(state, policy, Traffic(error_rate=0.01), t, 2)

    errors = state.cusums["errors"]
    learned = state.reference.frozen["error_rate"] if state.reference else 0.0

    assert errors.p0 is not None and errors.p0 > learned
    assert errors.p0 == pytest.approx(
        (learned * state.reference.frozen["requests"] + errors.calib_x)
        / (state.reference.frozen["requests"] + errors.calib_n),
        rel=0.5,
    )


def test_a_rule_may_want_more_evidence_than_the_policy() -> None:
    policy = MonitoringPolicy.from_mapping(
        {"rules": [{"name": "o", "detector": "outage", "min_evidence_s": 120}]}
    )
    assert 120 == policy.min_evidence(policy.rules[0])
    assert 15 == policy.min_evidence_s
    with pytest.raises(PolicyError, match="min_evidence_s"):
        MonitoringPolicy.from_mapping(
            {"rules": [{"name": "o", "detector": "outage", "min_evidence_s": 0}]}
        )


def test_a_new_version_is_watched_for_outages_from_its_first_second() -> None:
    """The traffic is the model's, not the version's: the outage CUSUM, calibrated on the old
    version, judges the new one while its reference is learned. A monitor that never
    calibrated judges no outage while it learns."""
    traffic = Traffic(rate=20.0)
    state, policy, t = watching(traffic)
    promote = s.MonitorConfigured(model="fraud", version="v2", by="ctl", source="rollout:dep-9")
    monitor.configure(state, promote, t)
    run(state, policy, Traffic(rate=20.0, version="v2"), t, 10)
    assert "learning" == state.stage()

    silent = run(state, policy, None, t + 10, 90)

    (alarm,) = fired(silent)
    assert ("outage", "v2") == (alarm.rule, alarm.version)
    assert ["outage"] == list(state.cusums)  # the version's own rules start over

    fresh = configured(FAST)
    run(fresh, policy, Traffic(rate=20.0), T0, 30)
    assert [] == fired(run(fresh, policy, None, T0 + 30, 90))
    assert fresh.stage() in ("learning", "calibrating")


def test_latency_is_judged_against_its_recent_history_as_well_as_the_reference() -> None:
    """A slow creep moves the latency far from the reference (the reference rule fires) and is
    learned as the recent normal (the recent rule stays quiet); a sudden slow-down from there
    fires the recent rule."""
    fast_history = {
        **FAST,
        "rules": [
            {**r, "params": {**r["params"], "history_s": 120}}
            if r["name"] == "latency_recent"
            else r
            for r in FAST["rules"]
        ],
    }
    traffic = Traffic(rate=50.0, latency_ms=50.0, seed=11)
    policy = MonitoringPolicy.from_mapping(fast_history)
    state = configured(fast_history)
    run(state, policy, traffic, T0, 130)
    t = T0 + 130

    creep = []
    for minute in range(20):
        traffic.latency_ms = 50.0 + 0.75 * (minute + 1)  # 50 ms to 65 ms over 20 minutes
        creep += run(state, policy, traffic, t + 60 * minute, 60)
    t += 1200
    traffic.latency_ms = 100.0
    step = run(state, policy, traffic, t, 120)

    assert "latency" in [d.rule for d in fired(creep)]
    assert "latency_recent" not in [d.rule for d in fired(creep)]
    (alarm,) = [d for d in fired(step) if d.rule == "latency_recent"]
    assert 60 <= alarm.at.timestamp() - t < 90  # the rule wants a minute of evidence


def test_dispersion_keeps_being_measured_while_watching_but_a_change_is_not_taken_for_noise() -> (
    None
):
    """A calibration hour without runs measured phi about 1; the runs that come later raise it
    once their intervals are released (an hour or two on). Intervals held when the key fires
    are discarded: the change may have begun in them."""
    rng = random.Random(9)
    quiet = Cusum()
    for _ in range(60):
        quiet.calibrate_share(sum(1 for _ in range(1200) if rng.random() < 0.01), 1200)
    quiet.finish_calibration()
    changed = Cusum.from_dict(quiet.to_dict())
    assert quiet.phi < 2

    for _ in range(2):  # two hours of intervals with runs of 20 errors, then their releases
        for _ in range(60):
            quiet.hold(x=20.0 * sum(1 for _ in range(12) if rng.random() < 0.05), n=1200)
        quiet.release(half_life_bins=1440)
    assert quiet.phi > 5

    for _ in range(60):  # three times the errors: held, then the key fires
        changed.hold(x=float(sum(1 for _ in range(1200) if rng.random() < 0.03)), n=1200)
    assert "fired" == changed.step(50.0, 1.0, start=0.0, h=14.8, h_back=4.6)
    changed.release(half_life_bins=1440)
    changed.release(half_life_bins=1440)
    assert changed.phi < 2


# ---- the latency rules' body key ------------------------------------------------------------


def latency_policy(**params: Any) -> MonitoringPolicy:
    rule = {"name": "latency", "detector": "latency_shift", "params": params}
    return MonitoringPolicy.from_mapping({"rules": [rule]})


def literal_latencies(values: Iterable[float]) -> CohortStats:
    stats = CohortStats()
    stats.observe_many([Row(True, float(ms), T0, None, None, None) for ms in values])
    return stats


def test_a_latency_rule_judges_the_share_above_its_p95_and_above_its_median() -> None:
    """Literal latencies of 1 to 100 ms: the tail key counts what is slower than the
    reference's p95 (5 %, alternative twice that), the body key what is slower than its median
    (50 %, alternative: the faster half halved, 75 %); a policy without `body_quantile` judges
    the tail alone, as before the body key."""
    reference = literal_latencies(range(1, 101))
    window = literal_latencies([10.0] * 5 + [70.0] * 4 + [99.0])
    judged = {}
    for name, policy in (
        ("both", latency_policy(body_quantile=0.5)),
        ("tail", latency_policy()),
    ):
        ref = Reference(T0, reference, learned_at=T0, version="v1")
        ref.frozen = monitor.freeze(reference, policy, None)
        state = configured()
        judged[name] = observations(policy.rules[0], window, ref, state, T0, T0 + 1, None)

    assert [
        ("", "binomial", [1.0, 10.0, pytest.approx(0.05), pytest.approx(0.10)]),
        ("body", "binomial", [5.0, 10.0, pytest.approx(0.5), pytest.approx(0.75)]),
    ] == judged["both"]
    assert [judged["both"][0]] == judged["tail"]


def test_a_slower_body_under_an_unchanged_tail_fires_the_body_key_and_says_by_how_much() -> None:
    """Heavy-tailed traffic: 8 % of requests in a slow mode about 400 ms, so the reference's
    p95 lies in it. The typical request gets 50 % slower and the slow mode stays where it was:
    the share above the p95 does not move, the share above the median does."""
    traffic = Traffic(rate=50.0, latency_ms=45.0, slow_share=0.08, slow_ms=400.0, seed=12)
    state, policy, t = watching(traffic)
    calm = run(state, policy, traffic, t, 120)
    traffic.latency_ms = 67.5
    slower = run(state, policy, traffic, t + 120, 180)

    assert [] == fired(calm)
    alarms = {d.rule: d for d in fired(slower)}
    assert "latency" not in alarms  # the tail key: the share above the p95 has not moved
    alarm = alarms["latency/body"]
    # the rule wants a minute of evidence, and the shift gives it at once
    assert 60 <= alarm.at.timestamp() - (t + 120) < 90
    assert "latency/body: share slower than the reference's p50 (the body, " in alarm.reason
    assert 0.5 == alarm.evidence["quantile"]
    assert 40 < alarm.evidence["quantile_ms"] < 55
    assert alarm.evidence["observed"] > 0.8 and alarm.evidence["reference"] < 0.56
    # the rule's false alarm rate is split between its two keys
    assert alarm.evidence["threshold"] == pytest.approx(math.log(2 * 30 * 86400), abs=1e-3)
    alerts = [o for o in slower if isinstance(o, s.Alert) and o.status == "firing"]
    assert "fraud/monitor.latency/body" in [a.dedup_key for a in alerts]


def test_heavy_tailed_traffic_that_does_not_change_raises_nothing() -> None:
    traffic = Traffic(rate=20.0, latency_ms=45.0, slow_share=0.08, slow_ms=400.0, seed=13)
    state, policy, t = watching(traffic)

    outputs = run(state, policy, traffic, t, 3600)

    assert [] == fired(outputs)
    assert {"latency/body", "latency_recent/body"} <= set(state.cusums)
    assert all(state.cusums[k].calibrated for k in ("latency/body", "latency_recent/body"))


def test_a_monitor_stored_before_the_body_key_judges_the_tail_until_its_next_reference() -> None:
    """A state stored before the body key: its frozen reference has no body bucket and it has
    no body CUSUM. It goes on checking (the tail alone, at the alarm level of one key), and a
    new reference brings the body key."""
    traffic = Traffic(rate=50.0)
    state, policy, t = watching(traffic)
    stored = state.to_dict()
    for rule in ("latency", "latency_recent"):
        del stored["reference"]["frozen"]["rules"][rule]["body"]
        del stored["cusums"][f"{rule}/body"]
    old = MonitorState.from_dict(orjson.loads(orjson.dumps(stored)))

    traffic.latency_ms = 150.0  # three times slower: the tail key fires, alone
    outputs = run(old, policy, traffic, t, 120)

    alarms = {d.rule: d for d in fired(outputs)}
    assert "latency" in alarms and "latency/body" not in alarms
    assert alarms["latency"].evidence["threshold"] == pytest.approx(math.log(30 * 86400), abs=1e-3)
    assert "latency/body" not in old.cusums
    relearn = s.MonitorConfigured(model="fraud", version="v1", by="bob", reference="relearn")
    monitor.configure(old, relearn, t + 120)
    run(old, policy, Traffic(rate=50.0), t + 120, 130)
    assert "watching" == old.stage()
    assert {"latency/body", "latency_recent/body"} <= set(old.cusums)


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"body_quantile": 0.95}, "body_quantile=0.95 must be below quantile=0.95"),
        ({"quantile": 0.4, "body_quantile": 0.5}, "body_quantile=0.5 must be below quantile=0.4"),
        ({"body_quantile": 0.0}, "body_quantile=0.0 is out of range"),
        ({"body_quantile": 1.5}, "body_quantile=1.5 is out of range"),
        ({"body_quantile": "median"}, "body_quantile"),
    ],
)
def test_a_body_quantile_lies_between_0_and_the_rule_s_quantile(
    params: dict[str, Any], problem: str
) -> None:
    with pytest.raises(PolicyError) as caught:
        latency_policy(**params)

    assert problem in str(caught.value)
    assert "rule 'latency'" in str(caught.value) or "rules.0" in str(caught.value)


def test_a_body_quantile_is_a_latency_shift_parameter_and_may_be_left_out() -> None:
    assert latency_policy(body_quantile=None).rules[0].param("body_quantile") is None
    assert latency_policy().rules[0].param("body_quantile") is None
    with pytest.raises(PolicyError, match="unknown parameter 'body_quantile' of error_rate"):
        MonitoringPolicy.from_mapping(
            {"rules": [{"name": "e", "detector": "error_rate", "params": {"body_quantile": 0.5}}]}
        )
