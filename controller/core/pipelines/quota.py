"""Shared quota pools: which pipeline is eating the quota, and when it runs out. Pure.

```
configure(state | None, event: QuotaPoolConfigured, now) -> PipelinesResult[PoolState]
delete(state | None, event: QuotaPoolDeleted, now) -> PipelinesResult[PoolState]
observe(state | None, event: ResourceUsage, now) -> PoolState    # a pipeline's gauge
check(state, policy, now) -> PipelinesResult[PoolState]          # on the grid of sample_s
next_check(state, policy, now) -> float | None
fair_shares(limit, members, demands) -> {pipeline: share}
```

A pool's state is keyed by the pool, and so are the usage events that name it
(`ResourceUsage.pool`). Each pipeline's latest gauge counts (a pipeline silent for `stale_s`
ages out, and its alerts resolve); at each check, every live gauge is sampled. Rules, each alert
keyed by the pool AND the pipeline it names (dedup `<pool>/<pipeline>/quota.<rule>`), so one
pipeline's usage never resolves an alert about another:

- `near_limit.warning`, `near_limit.critical`: the pool's total at `warning` (`critical`) of its
  limit; names the pipeline furthest above its fair share (else the largest user); resolves
  when the total is `hysteresis` below the level.
- `exhaustion`: the pool's usage rate, the Theil-Sen slope of its total over `window_s`, and
  the time to exhaustion `(limit - used) / slope`; fires when the trend is significant
  (Mann-Kendall, one-sided, `trend_alpha`) and the pool runs out within `horizon_s` even at
  the slope's lower confidence bound (Sen's, at `trend_alpha`: noise around a level does not
  make a forecast); names the pipeline whose own usage rises fastest; resolves when the
  forecast at the estimated rate is beyond twice the horizon (or the rate is not positive).
- `fair_share`: a pipeline above its fair share (weighted max-min over the demands, guarantees
  first; `fair_shares`) by more than `tolerance`, for `for_s`, while another pipeline waits
  (it asks for more than it uses, and uses less than its share); throttled to its share.
- `growth`: a pipeline whose usage grows against its own history (the runaway, the slow leak):
  each increment between samples, standardised by the median and MAD of its past increments,
  feeds a bank of CUSUMs of Student t likelihood ratios (one per shift of `shifts`), with the
  stated false alarm rate (policy.py); throttled to the lower of its fair share and its use
  before the change; resolved when its use is back there (within `RESOLVE_SCALES` scales):
  a growth that stops still holds the quota it took.

With the pool's `throttle` and the rule's, a `PipelineThrottle` goes out when a fair-share or
growth alert fires (the use to come down to), and a release when the pipeline has no such
alert left.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from controller.core.pipelines.common import (
    PipelinesOutput,
    PipelinesResult,
    alert,
    clock,
    decision,
    mann_kendall_p,
    median_mad,
    robust_scale,
    t_log_density,
    theil_sen,
    theil_sen_lower,
    throttle,
)
from controller.core.pipelines.policy import PipelinesPolicy
from controller.core.pipelines.state import (
    MAX_POOL_PIPELINES,
    MAX_WINDOW,
    Bank,
    Firing,
    Gauge,
    Member,
    PoolState,
    Series,
)
from schemas import QuotaPoolConfigured, QuotaPoolDeleted, ResourceUsage

PoolResult = PipelinesResult[PoolState]
#: the rules whose alerts throttle the pipeline they name
THROTTLING = ("fair_share", "growth")
EPS = 1e-9
#: a growth alert resolves when the use is back within this many scales of an increment of
#: its level before the change (a growth that stops is not over: the quota is still held)
RESOLVE_SCALES = 3.0


# ---- configuration --------------------------------------------------------------------------


def configure(state: PoolState | None, event: QuotaPoolConfigured, now: float) -> PoolResult:
    """Apply a pool's configuration (the contract validated it: unique pipelines, warning below
    critical, guarantees within the limit). A change of resource starts the pool over."""
    if state is None:
        state = PoolState(pool=event.pool, created_at=now)
    outputs: list[PipelinesOutput] = []
    was = (state.configured, state.resource, state.limit)
    if state.resource and state.resource != event.resource:
        outputs += _resolve_all(state, now, f"the pool now counts {event.resource}")
        state.gauges, state.series, state.totals, state.banks = {}, {}, [], {}
    state.configured = True
    state.resource, state.unit, state.limit = event.resource, event.unit, event.limit
    state.warning, state.critical, state.throttle = event.warning, event.critical, event.throttle
    state.members = {
        m.pipeline: Member(guaranteed=m.guaranteed, weight=m.weight) for m in event.pipelines
    }
    state.unlisted = [p for p in state.unlisted if p not in state.members]
    what = "now watched" if not was[0] else "configuration changed"
    if was[0] and was[2] != event.limit:
        what = f"limit {was[2]:g} -> {event.limit:g} {event.unit}"
    members = ", ".join(
        f"{m.pipeline} (weight {m.weight:g}"
        + (f", guaranteed {m.guaranteed:g}" if m.guaranteed else "")
        + ")"
        for m in event.pipelines
    )
    reason = (
        f"pool {event.pool}: {what} by {event.by}: {event.limit:g} {event.unit} of "
        f"{event.resource} shared by {members or 'the pipelines that report to it'}"
        + (f": {event.reason}" if event.reason else "")
    )
    outputs.append(
        decision(
            "configured",
            reason,
            now,
            pool=state.pool,
            evidence={
                "resource": event.resource,
                "unit": event.unit,
                "limit": event.limit,
                "warning": event.warning,
                "critical": event.critical,
                "throttle": event.throttle,
                "pipelines": sorted(state.members),
            },
        )
    )
    return PipelinesResult(state, outputs)


def delete(state: PoolState | None, event: QuotaPoolDeleted, now: float) -> PoolResult:
    if state is None or not state.configured:
        return PipelinesResult(state, refusal=f"pool {event.pool} is not configured")
    outputs = _resolve_all(state, now, "the pool was deleted")
    state.configured = False
    state.limit = None
    state.members, state.banks, state.over_since = {}, {}, {}
    reason = f"pool {state.pool}: no longer watched, by {event.by}" + (
        f": {event.reason}" if event.reason else ""
    )
    outputs.append(decision("deleted", reason, now, pool=state.pool))
    return PipelinesResult(state, outputs)


# ---- usage ----------------------------------------------------------------------------------


def observe(state: PoolState | None, event: ResourceUsage, now: float) -> PoolState:
    """Take a pipeline's gauge (its latest use, and its demand). Usage of another resource
    than the pool's is counted in `mismatched`, not in the pool."""
    if event.pool is None:
        raise ValueError("a usage event without a pool feeds no pool")
    if state is None:
        state = PoolState(pool=event.pool, created_at=now, resource=event.resource)
    if state.resource and event.resource != state.resource:
        state.mismatched += 1
        return state
    pipeline = event.pipeline if event.pipeline is not None else event.deployment_id
    if pipeline not in state.gauges and len(state.gauges) >= MAX_POOL_PIPELINES:
        stalest = min(state.gauges, key=lambda p: (state.gauges[p].at, p))
        _forget(state, stalest)
    state.gauges[pipeline] = Gauge(used=event.used, at=now, requested=event.requested)
    if pipeline not in state.members and pipeline not in state.unlisted:
        state.unlisted = [*state.unlisted, pipeline][-MAX_POOL_PIPELINES:]
    return state


def _forget(state: PoolState, pipeline: str) -> None:
    state.gauges.pop(pipeline, None)
    state.series.pop(pipeline, None)
    state.banks.pop(f"growth/{pipeline}", None)
    state.over_since.pop(pipeline, None)


# ---- the fair division ----------------------------------------------------------------------


def fair_shares(
    limit: float, members: Mapping[str, Member], demands: Mapping[str, float]
) -> dict[str, float]:
    """Each pipeline's fair share of `limit` given its demand: the limit divided by weight, no
    one getting more than it asks for (weighted max-min fairness, by water-filling), and no
    one less than its guarantee (up to its demand): a pipeline short of its guarantee is
    given it, and the rest divided again among the others. A pipeline the pool does not list
    has weight 1 and no guarantee."""

    def weight(p: str) -> float:
        m = members.get(p)
        return m.weight if m is not None else 1.0

    def floor(p: str) -> float:
        m = members.get(p)
        return min(demands[p], (m.guaranteed or 0.0) if m is not None else 0.0)

    fixed: dict[str, float] = {}
    while True:
        alloc = _water_fill(
            limit - sum(fixed.values()),
            {p: d for p, d in demands.items() if p not in fixed},
            weight,
        )
        short = {p for p, a in alloc.items() if a < floor(p) - EPS}
        if not short:
            return {**fixed, **alloc}
        fixed.update({p: floor(p) for p in short})


def _water_fill(
    limit: float, demands: Mapping[str, float], weight: Callable[[str], float]
) -> dict[str, float]:
    """Weighted max-min division of `limit`: by weight, no one above its demand."""
    alloc = dict.fromkeys(demands, 0.0)
    remaining = max(limit, 0.0)
    active = {p for p, d in demands.items() if d > EPS}
    while remaining > EPS and active:
        total_w = sum(weight(p) for p in active)
        offer = {p: remaining * weight(p) / total_w for p in active}
        sated = {p for p in active if demands[p] - alloc[p] <= offer[p] + EPS}
        if not sated:
            for p in active:
                alloc[p] += offer[p]
            break
        for p in sated:
            remaining -= demands[p] - alloc[p]
            alloc[p] = demands[p]
        active -= sated
    return alloc


def _demand(g: Gauge) -> float:
    return max(g.used, g.requested if g.requested is not None else g.used)


# ---- checks ---------------------------------------------------------------------------------


def next_check(state: PoolState, policy: PipelinesPolicy, now: float) -> float | None:
    """The next check on the grid of `quota.sample_s` after `now` (None: nothing to judge)."""
    if not state.configured:
        return None
    step = policy.quota.sample_s
    return (math.floor(now / step) + 1) * step


def check(state: PoolState, policy: PipelinesPolicy, now: float) -> PoolResult:
    """Sample every live gauge and judge the pool's rules (see the module docstring)."""
    outputs: list[PipelinesOutput] = []
    state.last_check = now
    if not state.configured or state.limit is None:
        return PipelinesResult(state, outputs)
    limit = state.limit
    settings = policy.quota
    for pipeline in sorted(state.gauges):
        if now - state.gauges[pipeline].at > settings.stale_s:
            why = f"{pipeline} reported no usage for {settings.stale_s:.0f} s"
            outputs += _resolve_pipeline(state, policy, pipeline, now, why)
            _forget(state, pipeline)
    demands = {p: _demand(g) for p, g in state.gauges.items()}
    shares = fair_shares(limit, state.members, demands)
    total = state.total()
    window = min(math.ceil(settings.exhaustion.window_s / settings.sample_s) + 1, MAX_WINDOW)
    state.totals = [*state.totals, [now, total]][-window:]
    h = policy.growth_threshold(len(state.gauges)) + math.log(len(settings.growth.shifts))
    for pipeline, gauge in sorted(state.gauges.items()):
        series = state.series.setdefault(pipeline, Series())
        previous = series.samples[-1] if series.samples else None
        series.samples = [*series.samples, [now, gauge.used]][-window:]
        if previous is not None:
            outputs += _growth(
                state,
                policy,
                pipeline,
                series,
                gauge.used - previous[1],
                previous[0],
                now,
                h,
                shares,
            )
    outputs += _near_limit(state, policy, shares, total, now)
    outputs += _exhaustion(state, policy, total, now)
    outputs += _fair_share(state, policy, shares, now)
    return PipelinesResult(state, outputs)


def _offender(state: PoolState, shares: Mapping[str, float]) -> str:
    """The pipeline to act on: furthest above its fair share, else the largest user."""
    over = {p: g.used - shares.get(p, 0.0) for p, g in state.gauges.items()}
    if not over:
        return "-"
    return max(sorted(over), key=lambda p: (over[p] > EPS, over[p], state.gauges[p].used))


def _near_limit(
    state: PoolState,
    policy: PipelinesPolicy,
    shares: Mapping[str, float],
    total: float,
    now: float,
) -> list[PipelinesOutput]:
    assert state.limit is not None
    outputs: list[PipelinesOutput] = []
    share = total / state.limit
    for level, name in ((state.warning, "warning"), (state.critical, "critical")):
        rule = f"near_limit.{name}"
        open_keys = [k for k in state.firing if k.startswith(rule + "/")]
        if share >= level and not open_keys:
            pipeline = _offender(state, shares)
            used = state.gauges[pipeline].used if pipeline in state.gauges else 0.0
            summary = (
                f"pool {state.pool}: {total:g} of {state.limit:g} {state.unit} of "
                f"{state.resource} in use ({100 * share:.1f} % >= {100 * level:g} %); "
                f"{pipeline} uses {used:g}, its fair share {shares.get(pipeline, 0.0):.4g}"
            )
            evidence = _pool_evidence(state, shares) | {"share": round(share, 6), "level": level}
            outputs += _fire(state, policy, rule, pipeline, name, summary, evidence, now)
        elif open_keys and share < level - policy.quota.hysteresis:
            for key in open_keys:
                outputs += _resolve(
                    state,
                    policy,
                    key,
                    now,
                    f"pool {state.pool}: {100 * share:.1f} % in use, below {100 * level:g} %",
                )
    return outputs


def _exhaustion(
    state: PoolState, policy: PipelinesPolicy, total: float, now: float
) -> list[PipelinesOutput]:
    assert state.limit is not None
    rule = policy.quota.exhaustion
    points = [p for p in state.totals if p[0] >= now - rule.window_s]
    open_keys = [k for k in state.firing if k.startswith("exhaustion/")]
    if len(points) < rule.min_points:
        return []
    slope = theil_sen(points) or 0.0
    low = theil_sen_lower(points, rule.trend_alpha) or 0.0
    p_value = mann_kendall_p([p[1] for p in points])
    remaining = max(state.limit - total, 0.0)
    eta = remaining / slope if slope > 0 else math.inf
    latest = remaining / low if low > 0 else math.inf
    if not open_keys and low > 0 and p_value < rule.trend_alpha and latest <= rule.horizon_s:
        rates = {
            p: theil_sen([x for x in s.samples if x[0] >= now - rule.window_s]) or 0.0
            for p, s in state.series.items()
            if p in state.gauges
        }
        pipeline = max(sorted(rates), key=lambda p: rates[p]) if rates else "-"
        summary = (
            f"pool {state.pool}: {state.resource} use rising {slope * 3600:.4g} {state.unit}/h "
            f"(at least {low * 3600:.4g}) over the last {rule.window_s:.0f} s (trend p = "
            f"{p_value:.2g}); "
            + (
                f"{remaining:g} {state.unit} left: exhausted in about {eta / 60:.0f} min "
                f"(at {clock(now + eta)}; by {clock(now + latest)} at the slowest rate); "
                if remaining > 0
                else "the pool is exhausted; "
            )
            + f"fastest riser {pipeline} "
            f"({rates.get(pipeline, 0.0) * 3600:.4g} {state.unit}/h)"
        )
        evidence = {
            "rate_per_h": round(slope * 3600, 6),
            "trend_p": p_value,
            "remaining": remaining,
            "eta_s": round(eta, 1),
            "latest_eta_s": round(latest, 1),
            "rate_low_per_h": round(low * 3600, 6),
            "horizon_s": rule.horizon_s,
            "points": len(points),
            "rates_per_h": {p: round(r * 3600, 6) for p, r in sorted(rates.items())},
        }
        return _fire(state, policy, "exhaustion", pipeline, rule.severity, summary, evidence, now)
    if open_keys and (slope <= 0 or eta > 2 * rule.horizon_s):
        why = (
            f"pool {state.pool}: the forecast is beyond {2 * rule.horizon_s:.0f} s "
            f"(rate {slope * 3600:.4g} {state.unit}/h, {remaining:g} left)"
        )
        return [o for k in open_keys for o in _resolve(state, policy, k, now, why)]
    return []


def _fair_share(
    state: PoolState, policy: PipelinesPolicy, shares: Mapping[str, float], now: float
) -> list[PipelinesOutput]:
    rule = policy.quota.fair_share
    outputs: list[PipelinesOutput] = []
    waiting = {
        p: g
        for p, g in state.gauges.items()
        if g.requested is not None
        and g.requested > g.used + EPS
        and g.used < shares.get(p, 0.0) - EPS
    }
    for pipeline, gauge in sorted(state.gauges.items()):
        share = shares.get(pipeline, 0.0)
        over = gauge.used > share * (1 + rule.tolerance) + EPS
        others = sorted(p for p in waiting if p != pipeline)
        key = f"fair_share/{pipeline}"
        if over and others:
            since = state.over_since.setdefault(pipeline, now)
            if key not in state.firing and now - since >= rule.for_s:
                summary = (
                    f"pool {state.pool}: {pipeline} uses {gauge.used:g} {state.unit} of "
                    f"{state.resource}, above its fair share {share:.4g} since {clock(since)}, "
                    "while "
                    + ", ".join(
                        f"{p} waits ({waiting[p].used:g} of {waiting[p].requested:g} asked)"
                        for p in others
                    )
                )
                evidence = _pool_evidence(state, shares) | {
                    "fair_share": round(share, 6),
                    "used": gauge.used,
                    "waiting": others,
                    "since": since,
                }
                outputs += _fire(
                    state,
                    policy,
                    "fair_share",
                    pipeline,
                    rule.severity,
                    summary,
                    evidence,
                    now,
                    throttle_to=share if rule.throttle else None,
                )
        else:
            state.over_since.pop(pipeline, None)
            if key in state.firing:
                why = (
                    f"pool {state.pool}: {pipeline} uses {gauge.used:g}, within its fair share "
                    f"{share:.4g}"
                    if not over
                    else f"pool {state.pool}: no pipeline waits for {state.resource}"
                )
                outputs += _resolve(state, policy, key, now, why)
    return outputs


def _growth(
    state: PoolState,
    policy: PipelinesPolicy,
    pipeline: str,
    series: Series,
    increment: float,
    start: float,
    now: float,
    h: float,
    shares: Mapping[str, float],
) -> list[PipelinesOutput]:
    """One increment of a pipeline's usage into its growth test (and, `lag` samples late and
    unless the test fired, into its history)."""
    assert state.limit is not None
    rule = policy.quota.growth
    outputs: list[PipelinesOutput] = []
    bank = state.banks.setdefault(f"growth/{pipeline}", Bank())
    key = f"growth/{pipeline}"
    firing = state.firing.get(key)
    if firing is not None and firing.level is not None:
        used = series.samples[-1][1]
        if used <= firing.level:
            state.banks[key] = Bank()
            outputs += _resolve(
                state,
                policy,
                key,
                now,
                f"pool {state.pool}: {pipeline} uses {used:g} {state.unit}, back to its "
                f"level before the growth ({firing.level:.4g})",
            )
        return outputs
    if len(series.history) >= rule.min_history:
        middle, mad = median_mad(series.history)
        scale = max(robust_scale(series.history, middle, mad), rule.min_step_share * state.limit)
        z = (increment - middle) / scale
        base = t_log_density(z, rule.tail_df)
        llrs = [t_log_density(z - d, rule.tail_df) - base for d in rule.shifts]
        step = bank.step(llrs, start, now, h, policy.resolve_threshold())
        if step == "fired":
            series.held = []
            since = bank.fired_since if bank.fired_since is not None else start
            first = next((x for x in series.samples if x[0] >= since), series.samples[0])
            used = series.samples[-1][1]
            share = shares.get(pipeline, 0.0)
            level = first[1] + RESOLVE_SCALES * scale
            summary = (
                f"pool {state.pool}: {pipeline}'s use of {state.resource} grows abnormally: "
                f"{first[1]:g} -> {used:g} {state.unit} since {clock(since)}, against its "
                f"history (median step {middle:+.4g}, scale {scale:.4g} per "
                f"{policy.quota.sample_s:.0f} s); its fair share {share:.4g}"
            )
            evidence = {
                "since": since,
                "from": first[1],
                "used": used,
                "median_step": middle,
                "scale": scale,
                "shift": rule.shifts[bank.fired],
                "cusum": round(bank.s[bank.fired], 3),
                "threshold": round(h, 3),
                "history": len(series.history),
                "fair_share": round(share, 6),
                "resolves_at": round(level, 6),
            }
            outputs += _fire(
                state,
                policy,
                "growth",
                pipeline,
                rule.severity,
                summary,
                evidence,
                now,
                throttle_to=min(share, first[1]) if rule.throttle else None,
            )
            state.firing[key].level = level
    if not bank.firing:
        series.held.append(increment)
        if len(series.held) > rule.lag:
            series.history = [*series.history, *series.held[: len(series.held) - rule.lag]]
            series.held = series.held[len(series.held) - rule.lag :]
            series.history = series.history[-rule.history :]
    return outputs


# ---- alerts, throttles ----------------------------------------------------------------------


def _pool_evidence(state: PoolState, shares: Mapping[str, float]) -> dict[str, Any]:
    return {
        "limit": state.limit,
        "total": state.total(),
        "used": {p: g.used for p, g in sorted(state.gauges.items())},
        "requested": {
            p: g.requested for p, g in sorted(state.gauges.items()) if g.requested is not None
        },
        "fair_shares": {p: round(s, 6) for p, s in sorted(shares.items())},
    }


def _dedup(state: PoolState, rule: str, pipeline: str) -> str:
    return f"{state.pool}/{pipeline}/quota.{rule}"


def _fire(
    state: PoolState,
    policy: PipelinesPolicy,
    rule: str,
    pipeline: str,
    severity: str,
    summary: str,
    evidence: dict[str, Any],
    now: float,
    throttle_to: float | None = None,
) -> list[PipelinesOutput]:
    key = f"{rule}/{pipeline}"
    state.firing[key] = Firing(pipeline=pipeline, since=now, severity=severity, summary=summary)
    evidence = {"rule": rule, "pipeline": pipeline, **evidence}
    outputs: list[PipelinesOutput] = [
        alert(
            key=state.pool,
            dedup=_dedup(state, rule, pipeline),
            kind=f"quota.{rule.split('.')[0]}",
            status="firing",
            severity=severity,
            subject=f"{state.pool}/{pipeline}",
            summary=summary,
            evidence=evidence,
            now=now,
            runbook=policy.runbook(f"quota.{rule}", f"{state.pool}/{pipeline}"),
        ),
        decision(
            "alert_fired",
            summary,
            now,
            pool=state.pool,
            pipeline=pipeline,
            rule=rule,
            evidence=evidence,
        ),
    ]
    if throttle_to is not None and state.throttle and pipeline not in state.throttled:
        limit = round(throttle_to, 6)
        state.throttled[pipeline] = limit
        reason = f"throttle {pipeline} to {limit:g} {state.unit} of {state.resource}: {summary}"
        outputs.append(
            throttle(
                pipeline=pipeline,
                pool=state.pool,
                resource=state.resource,
                unit=state.unit,
                action="throttle",
                limit=limit,
                reason=reason,
                evidence={"rule": rule, "fair_share": limit},
                now=now,
            )
        )
        outputs.append(
            decision(
                "throttled",
                reason,
                now,
                pool=state.pool,
                pipeline=pipeline,
                rule=rule,
                evidence={"limit": limit},
            )
        )
    return outputs


def _resolve(
    state: PoolState, policy: PipelinesPolicy | None, key: str, now: float, why: str
) -> list[PipelinesOutput]:
    firing = state.firing.pop(key, None)
    if firing is None:
        return []
    rule, pipeline = key.split("/", 1)
    if rule == "growth":
        bank = state.banks.get(key)
        if bank is not None and bank.firing:
            state.banks[key] = Bank()
    summary = f"{why} (alert about {pipeline}, firing since {clock(firing.since)})"
    subject = f"{state.pool}/{pipeline}"
    outputs: list[PipelinesOutput] = [
        alert(
            key=state.pool,
            dedup=_dedup(state, rule, pipeline),
            kind=f"quota.{rule.split('.')[0]}",
            status="resolved",
            severity="info",
            subject=f"{state.pool}/{pipeline}",
            summary=summary,
            evidence={"rule": rule, "pipeline": pipeline, "since": firing.since},
            now=now,
            runbook=None if policy is None else policy.runbook(f"quota.{rule}", subject),
        ),
        decision("alert_resolved", summary, now, pool=state.pool, pipeline=pipeline, rule=rule),
    ]
    held = any(f"{r}/{pipeline}" in state.firing for r in THROTTLING)
    if pipeline in state.throttled and not held:
        del state.throttled[pipeline]
        reason = f"release {pipeline}'s throttle on {state.resource}: {why}"
        outputs.append(
            throttle(
                pipeline=pipeline,
                pool=state.pool,
                resource=state.resource,
                unit=state.unit,
                action="release",
                limit=None,
                reason=reason,
                evidence={"rule": rule},
                now=now,
            )
        )
        outputs.append(decision("released", reason, now, pool=state.pool, pipeline=pipeline))
    return outputs


def _resolve_pipeline(
    state: PoolState, policy: PipelinesPolicy | None, pipeline: str, now: float, why: str
) -> list[PipelinesOutput]:
    keys = [k for k in state.firing if k.split("/", 1)[1] == pipeline]
    return [o for k in sorted(keys) for o in _resolve(state, policy, k, now, why)]


def _resolve_all(state: PoolState, now: float, why: str) -> list[PipelinesOutput]:
    return [o for k in sorted(state.firing) for o in _resolve(state, None, k, now, why)]


__all__ = ["PoolResult", "check", "configure", "delete", "fair_shares", "next_check", "observe"]
