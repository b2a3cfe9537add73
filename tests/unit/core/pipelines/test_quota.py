"""Quota pools: the pipeline eating a shared quota is named (and throttled), a steady pool is
left alone, and one pipeline's usage never resolves an alert about another."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

import schemas as s
from controller.core.pipelines import PipelinesPolicy, PoolState, quota
from controller.core.pipelines.state import Member

T0 = 1_790_000_040.0  # on the minute grid
POLICY = PipelinesPolicy.default()

Levels = Callable[[int, random.Random], dict[str, tuple[float, float | None]]]


def make_pool(**overrides: Any) -> s.QuotaPoolConfigured:
    fields: dict[str, Any] = {
        "pool": "gpu-pool",
        "resource": "gpu",
        "unit": "gpus",
        "limit": 64.0,
        "pipelines": (
            s.PoolMember(pipeline="serving", guaranteed=16.0, weight=2.0),
            s.PoolMember(pipeline="training"),
            s.PoolMember(pipeline="batch"),
        ),
        "throttle": True,
        "by": "alice",
    }
    fields.update(overrides)
    return s.QuotaPoolConfigured(**fields)


def make_usage(
    pipeline: str, used: float, requested: float | None = None, **kw: Any
) -> s.ResourceUsage:
    fields: dict[str, Any] = {
        "deployment_id": pipeline,
        "resource": "gpu",
        "used": used,
        "unit": "gpus",
        "pipeline": pipeline,
        "pool": "gpu-pool",
        "requested": requested,
    }
    fields.update(kw)
    return s.ResourceUsage(**fields)


def steady(minute: int, rng: random.Random) -> dict[str, tuple[float, float | None]]:
    """Three pipelines at 2/3 of the pool, each gauge a whole number of GPUs that jitters."""
    return {
        "serving": (max(14 + round(rng.gauss(0, 1)), 0), None),
        "training": (max(20 + round(rng.gauss(0, 1.5)), 0), None),
        "batch": (max(9 + round(rng.gauss(0, 1)), 0), None),
    }


def simulate(
    levels: Levels,
    minutes: int,
    *,
    seed: int = 1,
    state: PoolState | None = None,
    start: int = 0,
    event: s.QuotaPoolConfigured | None = None,
) -> tuple[PoolState, list[quota.PipelinesOutput]]:
    """Each minute every pipeline reports its gauge (at :30), then the pool is checked on the
    grid; returns the state and every output."""
    rng = random.Random(seed * 1000 + start)
    outputs: list[quota.PipelinesOutput] = []
    if state is None:
        result = quota.configure(None, event or make_pool(), T0)
        state = result.state
        outputs += result.outputs
    assert state is not None
    for minute in range(start, start + minutes):
        for pipeline, (used, requested) in sorted(levels(minute, rng).items()):
            state = quota.observe(
                state, make_usage(pipeline, used, requested), T0 + 60 * minute + 30
            )
        due = quota.next_check(state, POLICY, T0 + 60 * minute + 30)
        assert due == T0 + 60 * (minute + 1)
        result = quota.check(state, POLICY, due)
        outputs += result.outputs
    return state, outputs


def alerts(outputs: list[Any], status: str = "firing") -> list[s.Alert]:
    return [o for o in outputs if isinstance(o, s.Alert) and o.status == status]


def throttles(outputs: list[Any]) -> list[s.PipelineThrottle]:
    return [o for o in outputs if isinstance(o, s.PipelineThrottle)]


# ---- a steady pool --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_a_steady_pool_raises_nothing_in_a_day(seed: int) -> None:
    _, outputs = simulate(steady, 24 * 60, seed=seed)

    assert [] == [a.summary for a in alerts(outputs)]
    assert [] == throttles(outputs)


# ---- the runaway ----------------------------------------------------------------------------


def runaway(minute: int, rng: random.Random) -> dict[str, tuple[float, float | None]]:
    """From minute 120, training takes 5 more GPUs every minute (its jitter is 1.5)."""
    levels = steady(minute, rng)
    if minute >= 120:
        levels["training"] = (min(20 + 5 * (minute - 120), 150), None)
    return levels


BIG_POOL = make_pool(limit=160.0)


def test_a_runaway_pipeline_is_named_within_minutes_and_throttled() -> None:
    state, outputs = simulate(runaway, 150, event=BIG_POOL)

    growth = [a for a in alerts(outputs) if a.kind == "quota.growth"]
    assert ["gpu-pool/training/quota.growth"] == [a.dedup_key for a in growth]
    fired_at = (growth[0].at.timestamp() - T0) / 60
    assert 120 < fired_at <= 135, fired_at
    assert {a.evidence["pipeline"] for a in alerts(outputs)} == {"training"}
    [command] = throttles(outputs)
    assert ("training", "throttle", "gpu-pool") == (command.pipeline, command.action, command.pool)
    assert command.record_key() == "training"
    assert command.limit is not None and command.limit > 0
    assert "grows abnormally" in growth[0].summary
    assert state.throttled == {"training": command.limit}


def test_the_runaway_makes_a_small_pool_critical_and_its_alerts_name_the_runaway() -> None:
    _, outputs = simulate(runaway, 150)

    near = {a.dedup_key for a in alerts(outputs) if a.kind == "quota.near_limit"}
    assert near == {
        "gpu-pool/training/quota.near_limit.warning",
        "gpu-pool/training/quota.near_limit.critical",
    }
    assert {a.evidence["pipeline"] for a in alerts(outputs)} == {"training"}


# ---- the slow leak --------------------------------------------------------------------------


def test_a_slow_leak_is_forecast_before_the_pool_runs_out() -> None:
    pool = make_pool(
        pool="gpu-pool",
        resource="memory",
        unit="GB",
        limit=1000.0,
        pipelines=(s.PoolMember(pipeline="etl"), s.PoolMember(pipeline="serving")),
    )

    def leak(minute: int, rng: random.Random) -> dict[str, tuple[float, float | None]]:
        etl = 300 + rng.gauss(0, 3) + (0.6 * (minute - 180) if minute >= 180 else 0.0)
        return {"etl": (etl, None), "serving": (300 + rng.gauss(0, 3), None)}

    def memory(pipeline: str, used: float, requested: float | None = None) -> s.ResourceUsage:
        return make_usage(pipeline, used, requested, resource="memory", unit="GB")

    rng = random.Random(7)
    state = quota.configure(None, pool, T0).state
    assert state is not None
    outputs: list[Any] = []
    for minute in range(180 + 600):
        for pipeline, (used, _) in leak(minute, rng).items():
            state = quota.observe(state, memory(pipeline, used), T0 + 60 * minute + 30)
        outputs += quota.check(state, POLICY, T0 + 60 * (minute + 1)).outputs

    exhaustion = [a for a in alerts(outputs) if a.kind == "quota.exhaustion"]
    assert ["gpu-pool/etl/quota.exhaustion"] == [a.dedup_key for a in exhaustion]
    fired_minute = (exhaustion[0].at.timestamp() - T0) / 60
    # the pool (600 GB in use, 400 free) runs out about 667 minutes into the leak
    assert 180 < fired_minute < 180 + 667 - 60, fired_minute
    assert 0 < exhaustion[0].evidence["eta_s"] <= POLICY.quota.exhaustion.horizon_s
    assert {a.evidence["pipeline"] for a in alerts(outputs)} == {"etl"}


# ---- fair share -----------------------------------------------------------------------------


def hog(minute: int, rng: random.Random) -> dict[str, tuple[float, float | None]]:
    """Training holds 50 of 64 GPUs; from minute 60 serving asks for 30 and gets 14."""
    serving = (14.0, 30.0) if minute >= 60 else (14.0, 14.0)
    training = (50.0, 50.0) if minute < 120 else (30.0, 50.0)
    return {"serving": serving, "training": training, "batch": (0.0, 0.0)}


def test_a_pipeline_above_its_fair_share_while_another_waits_is_named_after_for_s() -> None:
    _, outputs = simulate(hog, 100)

    assert {a.evidence["pipeline"] for a in alerts(outputs)} == {"training"}
    [fired] = [a for a in alerts(outputs) if a.kind == "quota.fair_share"]
    assert "gpu-pool/training/quota.fair_share" == fired.dedup_key
    # serving: guaranteed 16, then weight 2 of the rest: its 30; training the remaining 34
    assert 34.0 == pytest.approx(fired.evidence["fair_share"])
    assert fired.evidence["waiting"] == ["serving"]
    minute = (fired.at.timestamp() - T0) / 60
    assert (
        60 + POLICY.quota.fair_share.for_s / 60
        <= minute
        <= 60 + POLICY.quota.fair_share.for_s / 60 + 1
    )
    [command] = throttles(outputs)
    assert (command.pipeline, command.limit) == ("training", pytest.approx(34.0))


def test_the_others_usage_never_resolves_the_alert_only_the_named_pipelines_does() -> None:
    state, outputs = simulate(hog, 119)
    assert [] == alerts(outputs, "resolved")  # serving and batch reported every minute

    _, later = simulate(hog, 5, state=state, start=119)

    resolved = alerts(later, "resolved")
    assert "gpu-pool/training/quota.fair_share" in [a.dedup_key for a in resolved]
    assert all(a.dedup_key.startswith("gpu-pool/training/") for a in resolved)
    [release] = throttles(later)
    assert ("training", "release") == (release.pipeline, release.action)


def test_a_pipeline_that_stops_reporting_ages_out_and_its_alerts_resolve() -> None:
    state, outputs = simulate(hog, 80)
    assert alerts(outputs)

    def silent_training(minute: int, rng: random.Random) -> dict[str, tuple[float, float | None]]:
        return {"serving": (14.0, 30.0), "batch": (0.0, 0.0)}

    state, later = simulate(silent_training, 20, state=state, start=80)

    resolved = [a for a in alerts(later, "resolved") if "training" in a.dedup_key]
    assert resolved and all("reported no usage" in a.summary for a in resolved)
    assert "training" not in state.gauges


# ---- the fair division ----------------------------------------------------------------------


def test_fair_shares_give_guarantees_first_then_divide_by_weight() -> None:
    members = {"a": Member(guaranteed=10.0, weight=1.0), "b": Member(weight=3.0)}

    assert {"a": 25.0, "b": 75.0} == quota.fair_shares(100.0, members, {"a": 100.0, "b": 100.0})
    assert {"a": 10.0, "b": 5.0} == quota.fair_shares(100.0, members, {"a": 10.0, "b": 5.0})
    # b asks for little: a gets the rest
    assert {"a": 90.0, "b": 10.0} == quota.fair_shares(100.0, members, {"a": 100.0, "b": 10.0})
    # an unlisted pipeline has weight 1
    assert {"a": 50.0, "c": 50.0} == quota.fair_shares(100.0, members, {"a": 100.0, "c": 100.0})
    # a guarantee is a floor: b's weight would give a 25, it is guaranteed 40
    members["a"] = Member(guaranteed=40.0, weight=1.0)
    assert {"a": 40.0, "b": 60.0} == quota.fair_shares(100.0, members, {"a": 100.0, "b": 100.0})


# ---- plain data, refusals -------------------------------------------------------------------


def test_the_state_round_trips_through_json_and_goes_on_judging_the_same() -> None:
    state, _ = simulate(runaway, 110, event=BIG_POOL)
    copy = PoolState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert copy == state

    _, straight = simulate(runaway, 30, state=state, start=110)
    _, restored = simulate(runaway, 30, state=copy, start=110)

    assert throttles(straight)
    assert [o.model_dump() for o in straight] == [o.model_dump() for o in restored]
    assert len(json.dumps(state.to_dict())) < 64_000


def test_every_decision_carries_a_reason_and_evidence() -> None:
    _, outputs = simulate(runaway, 150, event=BIG_POOL)

    decisions = [o for o in outputs if isinstance(o, s.PipelineDecision)]
    fired = [d for d in decisions if d.action == "alert_fired"]
    assert fired and all(d.reason and d.evidence and d.pool == "gpu-pool" for d in fired)
    assert {"configured", "alert_fired", "throttled"} <= {d.action for d in decisions}


def test_deleting_a_pool_resolves_its_alerts_and_releases_its_throttles() -> None:
    state, _ = simulate(runaway, 150, event=BIG_POOL)

    result = quota.delete(state, s.QuotaPoolDeleted(pool="gpu-pool", by="bob"), T0 + 10_000)

    assert alerts(result.outputs, "resolved")
    assert ["release"] == [t.action for t in throttles(result.outputs)]
    assert result.state is not None and not result.state.configured
    assert quota.next_check(result.state, POLICY, T0) is None


def test_deleting_a_pool_nobody_configured_is_refused() -> None:
    result = quota.delete(None, s.QuotaPoolDeleted(pool="nope", by="bob"), T0)

    assert "pool nope is not configured" == result.refusal


def test_a_pool_whose_guarantees_exceed_its_limit_is_refused_with_one_message() -> None:
    with pytest.raises(ValidationError, match="guaranteed shares add up to 80, over the limit 64"):
        make_pool(
            pipelines=(
                s.PoolMember(pipeline="serving", guaranteed=40.0),
                s.PoolMember(pipeline="training", guaranteed=40.0),
            )
        )


def test_usage_of_another_resource_is_counted_not_pooled() -> None:
    state = quota.configure(None, make_pool(), T0).state

    state = quota.observe(state, make_usage("training", 5.0, resource="cpu"), T0)

    assert (1, {}) == (state.mismatched, state.gauges)


def test_a_usage_event_naming_a_pool_is_keyed_by_the_pool() -> None:
    assert "gpu-pool" == make_usage("training", 5.0).record_key()
    assert "dep-1" == s.ResourceUsage(deployment_id="dep-1", resource="gpu", used=1.0).record_key()


def test_a_pool_configured_for_another_resource_drops_the_gauges_it_had() -> None:
    state = quota.observe(None, make_usage("training", 5.0, resource="cpu"), T0)

    result = quota.configure(state, make_pool(), T0 + 1)

    assert result.state is not None
    assert ("gpu", {}) == (result.state.resource, result.state.gauges)
    assert "now watched" in result.outputs[-1].reason
