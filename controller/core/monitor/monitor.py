"""A model's monitor: configured, fed, judged on a grid of checks. Pure: time is an argument.

```
configure(state | None, event, now) -> MonitorResult   # monitor.configured (people, rollouts)
delete(state | None, event, now) -> MonitorResult      # monitor.deleted
observe(state | None, model, cohorts, delta_id, now) -> MonitorState   # predictions, folded
check(state, policy, now, heard=None) -> MonitorResult # the grid: judge what came since
next_check(state, policy, now) -> float | None         # when check must run next
```

**Stages.** A configured monitor waits for its version's traffic, learns a reference over
`reference.learn_s` seconds (at least `min_requests` requests), freezes it (rates, quantile bins
of every output field and feature, data-quality shares), measures each key's dispersion over
`reference.calibrate_s` more seconds, then watches: each check feeds every rule key's LLR to its
CUSUM (controller.core.monitor.cusum). A new version learns a new reference, unless pinned.

**Rules** (their parameters: controller.core.monitor.policy):
- error_rate: failed share against the reference's, alternative `ratio` times it.
- latency_shift: share slower than the reference's `quantile` (the tail), alternative `ratio`
  times it; with `body_quantile`, a second key `body` judges the share slower than that (the
  typical request) alike (alternative: `_slower`).
- latency_slo: share slower than `threshold_ms` against `1 - objective`, alternative `ratio`
  times it (no reference needed, only calibration).
- outage: requests served well against the learned rate (recent, and by hour of the day once
  an hour is learned: the lower of the two), alternative `drop_to` of it. Judged only as far as
  the inputs are known to be complete (`heard`): a worker cut off from its inputs sees no outage.
- prediction_drift: every output field against the reference's bins (Lorden and Pollak's
  adaptive alternative: the distribution since the last reset).
- training_serving_skew: every feature against the reference's bins (a change), and against the
  training profile over windows of `window_s` (a level: JS over `tolerance_js`).
- data_quality: per feature, the missing, invalid and out-of-domain shares.

Every output is a `MonitorDecision` (what was judged and why), and for an acting rule an `Alert`
keyed per model, rule and key, with since when (the change-point estimate) and by how much.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from controller.core.monitor.cusum import (
    Cusum,
    adaptive_alternative,
    binomial_llr,
    js_bits,
    multinomial_llr,
    pearson_multinomial,
    pearson_poisson,
    poisson_llr,
    smoothed,
)
from controller.core.monitor.policy import LABEL_DETECTORS, MonitoringPolicy, MonitorRule
from controller.core.monitor.state import (
    HOURS,
    LabelReference,
    LabelReport,
    MonitorState,
    RateModel,
    Reference,
)
from controller.core.stats.cohort import CohortStats
from controller.core.stats.distance import sketch_on_edges
from controller.core.stats.distribution import StatsConfig, ValueDistribution
from controller.core.stats.labelled import LabelFold, LabelledStats
from controller.core.stats.profile import FeatureProfile
from schemas import Alert, MonitorConfigured, MonitorDecision, MonitorDeleted, Severity

MonitorOutput = MonitorDecision | Alert

#: Notices about unmonitored traffic go out at most this often per model.
NOTICE_EVERY_S = 3600.0
#: Prior pseudo-counts per bin of the adaptive alternative (drift keys).
PRIOR_PER_BIN = 10.0
#: An hour of the day counts as learned once it has seen this many seconds of traffic.
HOUR_LEARNED_S = 1800.0
#: The hourly rates' half-life, in seconds of that hour's traffic (about three days).
HOUR_HALF_LIFE_S = 3 * 3600.0
QUALITY_KINDS = ("missing", "invalid", "out_of_domain")
#: The multiple of a reference's expected sampling divergence a drift must exceed.
ESTIMATION_MARGIN = 5.0
#: While watching, a key's dispersion intervals older than this count half (once a day is in).
DISPERSION_HALF_LIFE_S = 86400.0
#: Intervals measured while watching join the dispersion this long after (one to two times it).
DISPERSION_LAG_S = 3600.0


@dataclass
class MonitorResult:
    state: MonitorState | None
    outputs: list[MonitorOutput] = field(default_factory=list)
    #: why a configuration event cannot apply (answered with a dead letter)
    refusal: str | None = None


def _at(now: float) -> datetime:
    return datetime.fromtimestamp(now, UTC)


def _content_id(prefix: str, model: str, *parts: object) -> str:
    """A monitor output's id: a function of what it says (model, kind, time, words).

    Not of a sequence number: a monitor's state is written seldom (a worker that dies loses
    its last seconds of statistics), and a successor that took up an older state would give a
    later, different output the id of one already published. An output published again with
    the same content keeps its id (consumers recognise it)."""
    material = "\x1f".join((prefix, model, *map(str, parts)))
    return f"{prefix}-{hashlib.sha256(material.encode()).hexdigest()[:16]}"


def _decision(
    state: MonitorState,
    action: str,
    reason: str,
    now: float,
    rule: str | None = None,
    evidence: Mapping[str, Any] | None = None,
) -> MonitorDecision:
    at = round(now * 1000)
    return MonitorDecision(
        decision_id=_content_id("mon", state.model, action, rule, at, reason),
        model=state.model,
        version=state.version,
        action=action,
        rule=rule,
        reason=reason[:4096],
        evidence=dict(evidence or {}),
        at=_at(now),
    )


# ---- configuration --------------------------------------------------------------------------


def configure(
    state: MonitorState | None,
    event: MonitorConfigured,
    now: float,
    validate: Any = MonitoringPolicy.from_mapping,
) -> MonitorResult:
    """Apply a monitor.configured event; an invalid inline policy is refused (with why)."""
    if event.policy is not None:
        try:
            validate(event.policy)
        except ValueError as exc:
            return MonitorResult(state, refusal=f"the monitoring policy is invalid: {exc}")
    if state is None:
        state = MonitorState(model=event.model, created_at=now)
    was = (state.configured, state.version)
    state.configured = True
    state.source = event.source
    if event.policy is not None and event.policy != state.policy:
        state.policy = dict(event.policy)
        _restart_watch(state)  # new rules: new keys, re-derived from the reference
        if state.reference is not None and state.reference.learned_at is not None:
            state.reference.calibrated_at = None
            state.reference.frozen = {}
    if event.training_profile is not None:
        state.training_profile = event.training_profile.model_dump(mode="json")
    if event.version is not None:
        state.version = event.version
    if event.reference == "pin":
        state.pinned = True
    elif event.reference == "relearn":
        state.pinned = False
        state.reference = state.label_reference = None
        _restart_watch(state, carry=True)
    version_changed = was[1] is not None and state.version != was[1]
    if version_changed and not state.pinned:
        state.reference = state.label_reference = None
        _restart_watch(state, carry=True)
    what = []
    if not was[0]:
        what.append("now watched")
    if version_changed:
        what.append(f"version {was[1]} -> {state.version}")
    if event.reference != "auto":
        what.append(f"reference {event.reference}")
    if event.policy is not None:
        what.append("policy set")
    summary = ", ".join(what) or "configuration confirmed"
    by = f"{event.by}" + (f" ({event.source})" if event.source != "operator" else "")
    reason = f"model {state.model}: {summary} by {by}" + (
        f": {event.reason}" if event.reason else ""
    )
    decision = _decision(
        state,
        "configured",
        reason,
        now,
        evidence={
            "version": state.version,
            "source": event.source,
            "pinned": state.pinned,
            "stage": state.stage(),
        },
    )
    return MonitorResult(state, [decision])


def delete(state: MonitorState | None, event: MonitorDeleted, now: float) -> MonitorResult:
    if state is None or not state.configured:
        return MonitorResult(state, refusal=f"model {event.model} has no monitor to delete")
    outputs: list[MonitorOutput] = []
    outputs += _resolve_all(state, now, "the monitor was deleted")
    state.configured = False
    state.reference = state.label_reference = None
    state.policy = None
    _restart_watch(state)
    reason = f"model {state.model}: no longer watched, by {event.by}" + (
        f": {event.reason}" if event.reason else ""
    )
    outputs.append(_decision(state, "deleted", reason, now))
    return MonitorResult(state, outputs)


def _restart_watch(state: MonitorState, carry: bool = False) -> None:
    """Start the watch over: a new reference or new rules. With `carry`, the CUSUMs that judge
    the model's traffic rather than its version (the outage rule's) are kept, calibrated, so a
    new version is watched for outages from its first second."""
    state.cusums = {k: c for k, c in state.cusums.items() if carry and c.carry and c.calibrated}
    state.held = {}
    state.calib_open = {}
    state.calib_started = None
    state.released_at = None
    state.skew_firing = {}
    state.skew_window = None
    state.skew_started = None
    state.labels_held = {}
    lref = state.label_reference
    if lref is not None:  # its CUSUMs are gone: re-derived from its pairs, calibrated again
        lref.frozen = {}
        lref.calib_open = {}
        lref.calib_started = lref.released_at = lref.calibrated_at = None


def _resolve_all(state: MonitorState, now: float, why: str) -> list[MonitorOutput]:
    """Resolve every firing alert (the monitor stops watching what they were about)."""
    outputs: list[MonitorOutput] = []
    for key in state.firing():
        outputs.append(
            _alert(state, key, "resolved", Severity.INFO, f"{key}: {why}", {}, now, None)
        )
        outputs.append(_decision(state, "alert_resolved", f"{key}: {why}", now, rule=key))
    return outputs


# ---- traffic --------------------------------------------------------------------------------


def _receive(
    state: MonitorState | None, model: str, delta_id: str | None, now: float
) -> tuple[MonitorState, bool]:
    """The model's monitor (made on its first input), and whether the delta `delta_id` is new
    to it (remembered from now on; a redelivery among the recent ids is not)."""
    if state is None:
        state = MonitorState(model=model, created_at=now)
    if delta_id is not None:
        if state.seen_data(delta_id):
            return state, False
        state.remember_data(delta_id)
    return state, True


def observe(
    state: MonitorState | None,
    model: str,
    cohorts: Iterable[tuple[str, str, CohortStats]],
    delta_id: str | None,
    now: float,
    config: StatsConfig | None = None,
) -> MonitorState:
    """Take pre-folded predictions of a model (any deployment, any cohort): the monitored
    version's are judged at the next check, every version's are counted. A redelivered delta
    (its id among the recent ones) changes nothing."""
    state, fresh = _receive(state, model, delta_id, now)
    if not fresh:
        return state
    for _cohort, version, stats in cohorts:
        n = stats.requests
        if not n:
            continue
        state.count_version(version, n)
        if state.first_seen is None:
            state.first_seen = now
        state.last_seen = now
        if state.configured and state.version is None:
            # the first version heard is watched until a configuration names one
            state.version = version
        if state.configured and version == state.version:
            state.requests += n
            if state.pending is None:
                state.pending = CohortStats(config or stats.config)
            state.pending.merge_from(stats)
        else:
            state.other_requests += n
    return state


# ---- checks ---------------------------------------------------------------------------------


def next_check(state: MonitorState, policy: MonitoringPolicy, now: float) -> float | None:
    """The next check on the grid after `now` (None: an unconfigured monitor with nothing to
    notice)."""
    if not state.configured and state.first_seen is None:
        return None
    step = policy.check_s
    return (math.floor(now / step) + 1) * step


def check(
    state: MonitorState,
    policy: MonitoringPolicy,
    now: float,
    heard: float | None = None,
) -> MonitorResult:
    """Judge what came since the last check. `heard`: how far the inputs are known to be
    complete (None: up to now); the outage rule judges no silence past it."""
    outputs: list[MonitorOutput] = []
    if not state.configured:
        outputs += _notice_unmonitored(state, now)
        state.last_check = now
        state.labels_pending = None
        return MonitorResult(state, outputs)
    window = state.pending
    state.pending = None
    start = state.last_check if state.last_check is not None else now - policy.check_s
    state.last_check = now
    if state.version is None:
        state.labels_pending = None
        return MonitorResult(state, outputs)
    ref = state.reference
    if ref is None or (ref.version != state.version and not state.pinned):
        ref = state.reference = Reference(now, CohortStats(StatsConfig()), version=state.version)
        _restart_watch(state, carry=True)
    outputs += _check_labels(state, policy, start, now, heard)
    settings = policy.reference
    if ref.learned_at is None:
        if window is not None:
            ref.stats.merge_from(window)
        outputs += _learn_rate(state, policy, window, start, now, heard)
        if now - ref.started_at >= settings.learn_s and ref.stats.requests >= settings.min_requests:
            ref.learned_at = now
            ref.frozen = freeze(ref.stats, policy, state.training_profile)
            outputs.append(
                _decision(
                    state,
                    "reference_learned",
                    f"model {state.model} version {state.version}: reference learned from "
                    f"{ref.stats.requests:,} requests over {now - ref.started_at:.0f} s; "
                    f"measuring each rule's dispersion for {settings.calibrate_s:.0f} s",
                    now,
                    evidence=_reference_evidence(ref),
                )
            )
        return MonitorResult(state, outputs)
    if not ref.frozen:  # a policy changed since: re-derive from the stored reference
        ref.frozen = freeze(ref.stats, policy, state.training_profile)
    calibrating = ref.calibrated_at is None
    if calibrating and state.calib_started is None:
        state.calib_started = start
    for rule in policy.rules:
        if rule.detector in LABEL_DETECTORS:
            continue
        data = _rule_window(state, rule, window, now, policy)
        if data is None:
            continue
        for key, family, values in observations(rule, data, ref, state, start, now, heard):
            name = f"{rule.name}/{key}" if key else rule.name
            cusum = state.cusums.get(name)
            if cusum is None:
                cusum = state.cusums[name] = Cusum()
                cusum.carry = rule.detector == "outage"
            if calibrating:
                _accumulate(state.calib_open, name, family, values)
                if not cusum.calibrated:
                    continue
            elif family != "multinomial":
                _accumulate(state.calib_open, name, family, values)  # dispersion, measured on
            outputs += _step(state, policy, rule, name, cusum, family, values, start, now)
        if rule.detector == "training_serving_skew" and not calibrating:
            outputs += _skew_window(state, policy, rule, window, now)
    if not calibrating:
        if state.calib_started is None:
            state.calib_started = start
        if now - state.calib_started >= settings.calibration_bin_s:
            _close_calibration(state, state.calib_open, watching=True)
            state.calib_started = now
        if state.released_at is None:
            state.released_at = now
        elif now - state.released_at >= DISPERSION_LAG_S:
            half_life_bins = DISPERSION_HALF_LIFE_S / settings.calibration_bin_s
            for cusum in state.cusums.values():
                cusum.release(half_life_bins)
            state.released_at = now
    else:
        closed = now - (state.calib_started or now) >= settings.calibration_bin_s
        if closed:
            _close_calibration(state, state.calib_open)
            state.calib_started = now
        if closed and now - (ref.learned_at or now) >= settings.calibrate_s:
            ref.calibrated_at = now
            for cusum in state.cusums.values():
                cusum.finish_calibration()
            state.calib_open = {}
            state.calib_started = None
            phis = {k: round(c.phi, 3) for k, c in sorted(state.cusums.items())}
            outputs.append(
                _decision(
                    state,
                    "reference_learned",
                    f"model {state.model} version {state.version}: watching {len(phis)} "
                    f"statistics of {len(policy.rules) - len(_label_rules(policy))} rules "
                    "(dispersion measured over "
                    f"{now - (ref.learned_at or now):.0f} s)",
                    now,
                    evidence={"dispersion": phis, "stage": "watching"},
                )
            )
    return MonitorResult(state, outputs)


def _rule_window(
    state: MonitorState,
    rule: MonitorRule,
    window: CohortStats | None,
    now: float,
    policy: MonitoringPolicy,
) -> CohortStats | None:
    """The traffic a rule judges at this check: the check's own, or (a rule judged every
    `every_s`) what came since its last judgement; None when it is not due."""
    if rule.every_s <= policy.check_s:
        return window if window is not None else CohortStats(StatsConfig())
    held = state.held.get(rule.name)
    if window is not None:
        if held is None:
            held = state.held[rule.name] = CohortStats(window.config)
        held.merge_from(window)
    steps = round(now / policy.check_s)
    every = round(rule.every_s / policy.check_s)
    if steps % every:
        return None
    state.held.pop(rule.name, None)
    return held if held is not None else CohortStats(StatsConfig())


# ---- the reference --------------------------------------------------------------------------


def freeze(
    stats: CohortStats, policy: MonitoringPolicy, training_profile: Mapping[str, Any] | None
) -> dict[str, Any]:
    """What the rules compare against, derived once from the reference traffic."""
    frozen: dict[str, Any] = {
        "requests": stats.requests,
        "error_rate": stats.error_rate,
        "rules": {},
    }
    profiles = _profiles(training_profile)
    for rule in policy.rules:
        entry: dict[str, Any] = {}
        if rule.detector == "latency_shift":
            entry = _latency_entry(stats, rule)
        elif rule.detector == "latency_slo":
            threshold = float(rule.param("threshold_ms"))
            entry = {"slot": list(stats.latency.key_of(threshold)), "threshold_ms": threshold}
        elif rule.detector == "prediction_drift":
            entry = {
                "bins": {
                    name: _bins(dist, rule)
                    for name, dist in sorted(stats.predictions.items())
                    if dist.count
                }
            }
        elif rule.detector == "training_serving_skew":
            entry = {
                "bins": {name: _bins(dist, rule) for name, dist in sorted(stats.features.items())}
            }
        elif rule.detector == "data_quality":
            quality = {}
            for name in sorted(stats.features.keys() | stats.quality.keys()):
                q = stats.field_quality(name, profiles.get(name))
                total = max(stats.feature_events, 1)
                shares = {
                    "missing": q.missing / total,
                    "invalid": q.invalid / total,
                }
                if name in profiles and profiles[name].has_domain():
                    shares["out_of_domain"] = q.out_of_domain / total
                quality[name] = shares
            entry = {"quality": quality, "events": stats.feature_events}
        frozen["rules"][rule.name] = entry
    return frozen


def _latency_entry(stats: CohortStats, rule: MonitorRule) -> dict[str, Any]:
    """A latency_shift rule's reference: the bucket of its `quantile` and the share above it
    (the tail key), and with `body_quantile` the same of that quantile under `BODY_KEY`."""
    latency = stats.latency
    bucket = latency.quantile_bucket(float(rule.param("quantile")))
    if bucket is None or not latency.count:
        return {}
    entry: dict[str, Any] = {
        "slot": list(bucket.slot),
        "value_ms": bucket.value,
        "p0": latency.count_above(bucket.slot) / latency.count,
        "n": latency.count,
    }
    body_quantile = rule.param("body_quantile")
    body = None if body_quantile is None else latency.quantile_bucket(float(body_quantile))
    if body is not None:
        entry[BODY_KEY] = {
            "quantile": float(body_quantile),
            "slot": list(body.slot),
            "value_ms": body.value,
            "p0": latency.count_above(body.slot) / latency.count,
        }
    return entry


def _bins(dist: ValueDistribution, rule: MonitorRule) -> dict[str, Any]:
    """The reference's bins of a field: quantile edges (numbers) or its top categories, each
    with one more bin for everything else; and their smoothed proportions."""
    if dist.is_numeric():
        bins = int(rule.param("bins"))
        edges: list[float] = []
        for i in range(1, bins):
            q = dist.numbers.quantile(i / bins)
            if q is not None and (not edges or q > edges[-1]):
                edges.append(q)
        counts = _numeric_counts(dist, edges)
        return {"kind": "numbers", "edges": edges, "p0": smoothed(counts), "n": sum(counts)}
    top = sorted(dist.categories.counts.items(), key=lambda kv: (-kv[1], kv[0]))
    labels = [k for k, _ in top[: int(rule.param("max_categories"))]]
    counts = _category_counts(dist, labels)
    return {"kind": "categories", "labels": labels, "p0": smoothed(counts), "n": sum(counts)}


def _numeric_counts(dist: ValueDistribution, edges: list[float]) -> list[float]:
    histogram = sketch_on_edges(dist.numbers, edges)
    return [float(c) for c in histogram.counts] + [float(dist.categories.total)]


def _category_counts(dist: ValueDistribution, labels: list[str]) -> list[float]:
    counts = dist.categories.counts
    inside = [float(counts.get(k, 0)) for k in labels]
    return [*inside, float(dist.count) - math.fsum(inside)]


def _counts_on(bins: Mapping[str, Any], dist: ValueDistribution | None) -> list[float]:
    if dist is None:
        return [0.0] * len(bins["p0"])
    if bins["kind"] == "numbers":
        return _numeric_counts(dist, list(bins["edges"]))
    return _category_counts(dist, list(bins["labels"]))


def _profiles(training_profile: Mapping[str, Any] | None) -> dict[str, FeatureProfile]:
    if not training_profile:
        return {}
    return {f["name"]: FeatureProfile.from_dict(f) for f in training_profile.get("features", ())}


def _reference_evidence(ref: Reference) -> dict[str, Any]:
    stats = ref.stats
    p50 = stats.latency.quantile(0.5)
    p99 = stats.latency.quantile(0.99)
    return {
        "requests": stats.requests,
        "error_rate": round(stats.error_rate, 6),
        "latency_p50_ms": None if p50 is None else round(p50, 3),
        "latency_p99_ms": None if p99 is None else round(p99, 3),
        "outputs": sorted(stats.predictions),
        "features": sorted(stats.features),
        "from": _at(ref.started_at).isoformat(),
    }


# ---- observations ---------------------------------------------------------------------------

#: (key, family, values): binomial [x, n, p0, p1]; poisson [x, expected, drop_to];
#: multinomial [p0..., counts...] (two halves of one list)
Observation = tuple[str, str, list[float]]


def observations(
    rule: MonitorRule,
    w: CohortStats,
    ref: Reference,
    state: MonitorState,
    start: float,
    now: float,
    heard: float | None,
) -> list[Observation]:
    """Each key's data for one check of one rule."""
    entry = ref.frozen["rules"].get(rule.name, {})
    detector = rule.detector
    if detector == "error_rate":
        requests = float(ref.frozen["requests"])
        share = _reference_rate(
            state,
            ref.calibrated_at is not None,
            rule.name,
            float(ref.frozen["error_rate"]) * requests,
            requests,
        )
        p0 = min(max(share, 1e-5), 0.5)
        p1 = min(max(p0 * float(rule.param("ratio")), p0 + float(rule.param("min_rate"))), 0.999)
        return [("", "binomial", [float(w.errors), float(w.requests), p0, p1])]
    if detector == "latency_shift":
        return _latency_shift(rule, w, ref, state, entry, start, now)
    if detector == "latency_slo":
        if not entry:
            return []
        slot = (int(entry["slot"][0]), int(entry["slot"][1]))
        n = w.latency.count
        x = w.latency.count_above(slot) if n else 0
        p0 = 1.0 - float(rule.param("objective"))
        p1 = min(p0 * float(rule.param("ratio")), 0.999)
        return [("", "binomial", [float(x), float(n), p0, p1])]
    if detector == "outage":
        return _outage(rule, w, state, start, now, heard)
    if detector == "prediction_drift":
        return _multinomial(rule, entry, w.predictions)
    if detector == "training_serving_skew":
        return _multinomial(rule, entry, w.features)
    if detector == "data_quality":
        found = []
        profiles = _profiles(state.training_profile)
        ratio, min_rate = float(rule.param("ratio")), float(rule.param("min_rate"))
        events = float(w.feature_events)
        reference_events = float(entry.get("events", ref.frozen["requests"]))
        for name, shares in sorted(entry.get("quality", {}).items()):
            q = w.field_quality(name, profiles.get(name))
            got = {"missing": q.missing, "invalid": q.invalid, "out_of_domain": q.out_of_domain}
            for kind in QUALITY_KINDS:
                if kind not in shares:
                    continue
                share = _reference_rate(
                    state,
                    ref.calibrated_at is not None,
                    f"{rule.name}/{name}:{kind}",
                    float(shares[kind]) * reference_events,
                    reference_events,
                )
                p0 = min(max(share, 1e-4), 0.5)
                p1 = min(max(p0 * ratio, p0 + min_rate), 0.999)
                found.append((f"{name}:{kind}", "binomial", [float(got[kind]), events, p0, p1]))
        return found
    return []


#: The latency_shift key of the share slower than the reference's `body_quantile`.
BODY_KEY = "body"


def _latency_keys(
    rule: MonitorRule, entry: Mapping[str, Any]
) -> list[tuple[str, Mapping[str, Any]]]:
    """A latency_shift rule's keys with their reference buckets: the tail (key "", the rule's
    `quantile`) and, when the policy sets `body_quantile` and the reference has its bucket, the
    body. A reference frozen before the body key existed has none: until the next reference
    (a new version, a relearn, a policy set) the rule judges the tail alone."""
    if not entry:
        return []
    keys: list[tuple[str, Mapping[str, Any]]] = [("", entry)]
    body = entry.get(BODY_KEY)
    if body and rule.param("body_quantile") is not None:
        keys.append((BODY_KEY, body))
    return keys


def _latency_shift(
    rule: MonitorRule,
    w: CohortStats,
    ref: Reference,
    state: MonitorState,
    entry: Mapping[str, Any],
    start: float,
    now: float,
) -> list[Observation]:
    """Each latency key's share slower than its reference bucket, against the reference's
    share (at its upper bound) or, with `history_s`, the share of its recent history."""
    n = w.latency.count
    buckets = w.latency.slot_counts() if n else []  # once for every key
    timed = float(entry.get("n", ref.frozen["requests"]))
    history_s = float(rule.param("history_s") or 0.0)
    ratio = float(rule.param("ratio"))
    found: list[Observation] = []
    for key, spot in _latency_keys(rule, entry):
        name = f"{rule.name}/{key}" if key else rule.name
        slot = (int(spot["slot"][0]), int(spot["slot"][1]))
        x = sum(count for other, count in buckets if other > slot)
        learned = float(spot["p0"])
        if history_s > 0:
            share = _recent_rate(state, name, learned, timed, x, n, now - start, history_s)
        else:
            calibrated = ref.calibrated_at is not None
            share = _reference_rate(state, calibrated, name, learned * timed, timed)
        p0 = min(max(share, 1e-4), 0.99)
        found.append((key, "binomial", [float(x), float(n), p0, _slower(p0, ratio)]))
    return found


def _slower(p0: float, ratio: float) -> float:
    """A latency key's alternative: `ratio` times the share slower than its bucket, or the share
    faster than it divided by `ratio`, whichever is the smaller change. The first for a tail
    (5 % -> 10 % at ratio 2), the second for the body (50 % -> 75 %, where ratio times the share
    would be every request)."""
    return min(p0 * ratio, 1.0 - (1.0 - p0) / ratio)


def _reference_rate(state: MonitorState, calibrated: bool, name: str, x: float, n: float) -> float:
    """A binomial key's reference rate: the reference's share `x / n` while it calibrates, then
    frozen by its CUSUM at an upper confidence bound (cusum.Cusum.freeze_rate)."""
    cusum = state.cusums.get(name)
    if cusum is not None and cusum.p0 is not None:
        return cusum.p0
    if cusum is not None and calibrated:
        return cusum.freeze_rate(x, n)
    return x / n if n > 0 else 0.0


def _recent_rate(
    state: MonitorState,
    name: str,
    learned: float,
    timed: float,
    x: float,
    n: float,
    dt: float,
    history_s: float,
) -> float:
    """A share judged against its own recent history: the estimate before this check (at its
    upper bound), then this check's data weighed in, unless the key is firing (a change is not
    learned as the new normal while it is declared). It starts from the reference's share
    (`learned`, of `timed` requests)."""
    cusum = state.cusums.get(name)
    if cusum is None:
        return learned
    if cusum.recent is None:
        cusum.recent, cusum.recent_n = learned, timed
    share = cusum.recent_rate() if cusum.calibrated else cusum.recent
    if not cusum.firing:
        cusum.learn_recent(float(x), float(n), dt, history_s)
    return learned if share is None else share


def _multinomial(
    rule: MonitorRule, entry: Mapping[str, Any], fields: Mapping[str, ValueDistribution]
) -> list[Observation]:
    """Each field's counts on the reference's bins, with the tolerance (KL, nats per value)
    the field's CUSUM charges each value: the policy's, and at least the divergence the
    reference's own sampling error leaves ((bins - 1) / 2n for n reference values, times
    ESTIMATION_MARGIN), so the CUSUM does not pursue the reference's noise."""
    found = []
    for name, bins in sorted(entry.get("bins", {}).items()):
        counts = _counts_on(bins, fields.get(name))
        p0 = list(bins["p0"])
        noise = ESTIMATION_MARGIN * (len(p0) - 1) / (2.0 * max(float(bins.get("n", 1.0)), 1.0))
        tolerance = max(float(rule.param("tolerance_kl")), noise)
        found.append((name, "multinomial", [tolerance, *p0, *counts]))
    return found


def _outage(
    rule: MonitorRule,
    w: CohortStats,
    state: MonitorState,
    start: float,
    now: float,
    heard: float | None,
) -> list[Observation]:
    served = float(w.requests - w.errors)
    return _against_rate(rule, "", served, state.rate, state, start, now, heard)


def _against_rate(
    rule: MonitorRule,
    key: str,
    count: float,
    rate: RateModel,
    state: MonitorState,
    start: float,
    now: float,
    heard: float | None,
) -> list[Observation]:
    """A Poisson key: `count` since the rate model's last judgement against the rate it
    expects (recent, and by hour of the day), alternative `drop_to` of it; the model learns
    the count except while the key fires."""
    begin = rate.judged_to if rate.judged_to is not None else start
    rate.judged_to = now
    dt = now - begin
    if dt <= 0 or (heard is not None and heard < now):
        return []  # the inputs are behind: this span is judged neither silent nor served
    expected_rate = _expected_rate(rate, now)
    cusum = state.cusums.get(f"{rule.name}/{key}" if key else rule.name)
    # learned except while a drop is declared: learning only at a statistic of 0 would
    # learn from the busy seconds of bursty traffic alone, and expect too much at night
    if cusum is None or not cusum.firing:
        _update_rate(rate, float(rule.param("half_life_s")), count, dt, now)
    if expected_rate is None or expected_rate < float(rule.param("min_expected_per_s")):
        return []
    return [(key, "poisson", [count, expected_rate * dt, float(rule.param("drop_to"))])]


def _expected_rate(rate: RateModel, now: float) -> float | None:
    if rate.recent is None:
        return None
    hour = int((now % 86400) // 3600)
    if rate.hour_s[hour] >= HOUR_LEARNED_S:
        return min(rate.recent, rate.hours[hour])
    return rate.recent


def _update_rate(rate: RateModel, half_life_s: float, served: float, dt: float, now: float) -> None:
    """Learn the rate: exponentially weighted, a plain mean until a half-life is seen (so the
    first seconds do not linger), by hour of the day as well."""
    observed = served / dt
    rate.recent_s += dt
    w = max(1.0 - 2.0 ** (-dt / half_life_s), dt / rate.recent_s)
    rate.recent = observed if rate.recent is None else rate.recent + w * (observed - rate.recent)
    hour = int((now % 86400) // 3600) % HOURS
    rate.hour_s[hour] += dt
    wh = max(1.0 - 2.0 ** (-dt / HOUR_HALF_LIFE_S), dt / rate.hour_s[hour])
    rate.hours[hour] += wh * (observed - rate.hours[hour])


def _learn_rate(
    state: MonitorState,
    policy: MonitoringPolicy,
    window: CohortStats | None,
    start: float,
    now: float,
    heard: float | None,
) -> list[MonitorOutput]:
    """While the reference is learned, the outage rule's rate model learns too, and an outage
    CUSUM carried over from the model's last version (calibrated) judges."""
    outputs: list[MonitorOutput] = []
    for rule in policy.rules:
        if rule.detector == "outage":
            w = window if window is not None else CohortStats(StatsConfig())
            for key, family, values in _outage(rule, w, state, start, now, heard):
                name = f"{rule.name}/{key}" if key else rule.name
                cusum = state.cusums.get(name)
                if cusum is not None and cusum.calibrated:
                    outputs += _step(state, policy, rule, name, cusum, family, values, start, now)
    return outputs


# ---- calibration ----------------------------------------------------------------------------


def _accumulate(
    calib_open: dict[str, list[float]], name: str, family: str, values: list[float]
) -> None:
    """Add a check's data to the key's open calibration interval."""
    acc = calib_open.get(name)
    if family == "multinomial":
        _, p0, counts = _split(values)
        half = len(p0)
        if acc is None or len(acc) != 2 * half:
            acc = calib_open[name] = [*p0, *([0.0] * half)]
        for i, c in enumerate(counts):
            acc[half + i] += c
        return
    if acc is None:
        acc = calib_open[name] = [0.0, 0.0, *values[2:]]
    acc[0] += values[0]
    acc[1] += values[1]
    calib_open[name + "\x1ffamily"] = [1.0 if family == "binomial" else 2.0]


def _close_calibration(
    state: MonitorState, calib_open: dict[str, list[float]], watching: bool = False
) -> None:
    """Close a calibration interval: each key's Pearson chi-square per degree of freedom.
    While watching, a binomial or Poisson key's interval is held back (Cusum.hold: it joins
    the measure an hour or two later, unless the key fires first); a firing key measures
    nothing (a declared change is not noise)."""
    for name, acc in list(calib_open.items()):
        if name.endswith("\x1ffamily"):
            continue
        cusum = state.cusums.get(name)
        if cusum is None or (watching and cusum.firing):
            continue
        family = calib_open.get(name + "\x1ffamily", [3.0])[0]
        if family == 1.0:
            if watching:
                cusum.hold(x=acc[0], n=acc[1])
            else:
                cusum.calibrate_share(acc[0], acc[1])
        elif family == 2.0:
            x, expected = acc[0], acc[1]
            if expected > 0:
                if watching:
                    cusum.hold(pearson_poisson(x, expected))
                else:
                    cusum.calibrate(pearson_poisson(x, expected))
        else:
            half = len(acc) // 2
            if math.fsum(acc[half:]) > 0:
                cusum.calibrate(pearson_multinomial(acc[half:], acc[:half]))
    calib_open.clear()


# ---- judging --------------------------------------------------------------------------------


def _llr(cusum: Cusum, family: str, values: list[float]) -> tuple[float, float, float, list[float]]:
    """(llr, numerator, denominator, counts) of one key's data."""
    if family == "binomial":
        x, n, q0, q1 = values
        if cusum.firing and cusum.frozen:
            q1 = cusum.frozen[0]
        return binomial_llr(x, n, q0, q1), x, n, []
    if family == "poisson":
        x, expected, drop_to = values
        return poisson_llr(x, expected, drop_to), x, expected, []
    tolerance, p0, counts = _split(values)
    half = len(p0)
    n = math.fsum(counts)
    if cusum.firing and cusum.frozen and len(cusum.frozen) == half:
        # back to the reference or not: the frozen change against the reference, no tolerance
        return multinomial_llr(counts, p0, cusum.frozen), 0.0, n, counts
    since = cusum.counts if len(cusum.counts) == half else [0.0] * half
    p1 = adaptive_alternative(since, p0, PRIOR_PER_BIN * half)
    return multinomial_llr(counts, p0, p1) - tolerance * n, 0.0, n, counts


def _split(values: list[float]) -> tuple[float, list[float], list[float]]:
    """A multinomial observation's (tolerance, reference proportions, counts)."""
    half = (len(values) - 1) // 2
    return values[0], values[1 : 1 + half], values[1 + half :]


def _threshold(state: MonitorState, policy: MonitoringPolicy, rule: MonitorRule) -> float:
    """The rule's alarm level h for its keys so far."""
    keys = max(1, sum(1 for k in state.cusums if k == rule.name or k.startswith(rule.name + "/")))
    return policy.threshold(rule, keys)


def _step(
    state: MonitorState,
    policy: MonitoringPolicy,
    rule: MonitorRule,
    name: str,
    cusum: Cusum,
    family: str,
    values: list[float],
    start: float,
    now: float,
) -> list[MonitorOutput]:
    ref = state.reference
    assert ref is not None
    h = _threshold(state, policy, rule)
    llr, num, den, counts = _llr(cusum, family, values)
    if family == "multinomial":
        num = den  # requests of the key; the distribution is in `counts`
    event = cusum.step(
        llr,
        now,
        start=start,
        h=h,
        h_back=policy.resolve_threshold(),
        num=num,
        den=den,
        counts=counts,
        cap=h * rule.every_s / policy.min_evidence(rule),
    )
    if event is None:
        return []
    if event == "fired":
        if family == "multinomial":
            _, p0, _ = _split(values)
            cusum.frozen = adaptive_alternative(cusum.counts, p0, PRIOR_PER_BIN * len(p0))
        elif family == "binomial":
            cusum.frozen = [values[3]]
        summary, evidence = _describe(state, rule, name, cusum, family, values, h)
        return _fire(state, policy, rule, name, summary, evidence, now)
    odds = policy.model.alerts.resolve_odds
    summary = f"{state.model} {name}: back to the reference (evidence {odds:g}:1)"
    out: list[MonitorOutput] = []
    if not rule.dry_run:
        out.append(
            _alert(
                state, name, "resolved", Severity.INFO, summary, {"rule": rule.name}, now, policy
            )
        )
    out.append(
        _decision(
            state, "alert_resolved", summary, now, rule=name, evidence={"dry_run": rule.dry_run}
        )
    )
    return out


def _fire(
    state: MonitorState,
    policy: MonitoringPolicy,
    rule: MonitorRule,
    name: str,
    summary: str,
    evidence: dict[str, Any],
    now: float,
) -> list[MonitorOutput]:
    out: list[MonitorOutput] = []
    evidence = {**evidence, "dry_run": rule.dry_run}
    if not rule.dry_run:
        out.append(
            _alert(state, name, "firing", Severity(rule.severity), summary, evidence, now, policy)
        )
    reason = summary + (" (dry run: no alert)" if rule.dry_run else "")
    out.append(_decision(state, "alert_fired", reason, now, rule=name, evidence=evidence))
    return out


def _describe(
    state: MonitorState,
    rule: MonitorRule,
    name: str,
    cusum: Cusum,
    family: str,
    values: list[float],
    h: float,
) -> tuple[str, dict[str, Any]]:
    since = cusum.since if cusum.since is not None else cusum.fired_at
    since_text = _at(since or 0.0).strftime("%H:%M:%S")
    evidence: dict[str, Any] = {
        "rule": rule.name,
        "detector": rule.detector,
        "key": name,
        "since": _at(since or 0.0).isoformat(),
        "cusum": round(cusum.s, 3),
        "threshold": round(h, 3),
        "dispersion": round(cusum.phi, 3),
        "version": state.version,
    }
    what = f"{state.model}@{state.version} {name}"
    if family == "binomial":
        p0 = values[2]
        rate = cusum.num / cusum.den if cusum.den else 0.0
        evidence.update(observed=round(rate, 6), reference=round(p0, 6), samples=cusum.den)
        if rule.detector in LABEL_DETECTORS:
            return _describe_labelled(state, rule, what, since_text, cusum, p0, rate, evidence)
        if rule.detector == "latency_shift":
            label, quantile, value_ms = _latency_label(state, rule, name)
            evidence.update(quantile=quantile, quantile_ms=value_ms)
        else:
            label = _label(rule, name)
        ratio = rate / p0 if p0 else float("inf")
        return (
            f"{what}: {label} {100 * rate:.2f} % since {since_text} vs {100 * p0:.2f} % "
            f"{'allowed' if rule.detector == 'latency_slo' else 'in the reference (its bound)'} "
            f"({ratio:.1f}x, {int(cusum.den):,} requests)",
            evidence,
        )
    if family == "poisson" and rule.detector == "label_delay":
        pairs, expected = cusum.num, cusum.den
        evidence.update(pairs=pairs, expected=round(expected, 1))
        return (
            f"{what}: {int(pairs):,} labelled predictions arrived since {since_text} where "
            f"{expected:,.0f} were expected ({100 * pairs / max(expected, 1e-9):.1f} %): the "
            "labels stopped",
            evidence,
        )
    if family == "poisson":
        served, expected = cusum.num, cusum.den
        evidence.update(served=served, expected=round(expected, 1))
        return (
            f"{what}: {int(served):,} requests served well since {since_text} where "
            f"{expected:,.0f} were expected ({100 * served / max(expected, 1e-9):.1f} %): "
            "an outage",
            evidence,
        )
    _, reference, _ = _split(values)
    js = js_bits(cusum.counts, reference) if len(cusum.counts) == len(reference) else 0.0
    evidence.update(js_bits=round(js, 4), samples=cusum.den)
    if rule.detector == "label_drift":
        return (
            f"{what}: the labels' distribution drifted from the labelled reference since "
            f"{since_text} (JS {js:.3f} bits over {int(cusum.den):,} labels)",
            evidence,
        )
    field_kind = "output" if rule.detector == "prediction_drift" else "feature"
    return (
        f"{what}: {field_kind} {name.split('/', 1)[-1]} drifted from the reference since "
        f"{since_text} (JS {js:.3f} bits over {int(cusum.den):,} values)",
        evidence,
    )


def _latency_label(
    state: MonitorState, rule: MonitorRule, name: str
) -> tuple[str, float, float | None]:
    """What a latency_shift key counts, in words (which key: the tail or the body, at which
    quantile of the reference and how many ms), the quantile and its value."""
    ref = state.reference
    entry = {} if ref is None else ref.frozen.get("rules", {}).get(rule.name, {})
    if name.endswith("/" + BODY_KEY):
        spot = entry.get(BODY_KEY) or {}
        quantile = float(spot.get("quantile", rule.param("body_quantile") or 0.5))
        part = "the body"
    else:
        spot, quantile, part = entry, float(rule.param("quantile")), "the tail"
    value = spot.get("value_ms")
    value_ms = None if value is None else round(float(value), 3)
    at = "" if value_ms is None else f", {value_ms:.4g} ms"
    return f"share slower than the reference's p{100 * quantile:g} ({part}{at})", quantile, value_ms


def _label(rule: MonitorRule, name: str) -> str:
    """What a binomial key counts, in words."""
    if rule.detector == "error_rate":
        return "error rate"
    if rule.detector == "latency_slo":
        return f"share slower than {float(rule.param('threshold_ms')):g} ms"
    return f"{name.rsplit(':', 1)[-1].replace('_', '-')} share"


def _alert(
    state: MonitorState,
    name: str,
    status: str,
    severity: Severity,
    summary: str,
    evidence: Mapping[str, Any],
    now: float,
    policy: MonitoringPolicy | None,
) -> Alert:
    dedup = f"{state.model}/monitor.{name}"
    rule = name.split("/", 1)[0]
    return Alert(
        alert_id=_content_id("mon-alert", state.model, status, dedup, round(now * 1000), summary),
        status=status,
        severity=severity,
        kind=f"monitor.{rule}",
        deployment_id=state.model,
        subject=f"{state.model}@{state.version}" if state.version else state.model,
        summary=summary[:4096],
        evidence=dict(evidence),
        runbook_url=None if policy is None else policy.runbook(rule, state.model),
        dedup_key=dedup[:256],
        at=_at(now),
    )


# ---- labelled pairs -------------------------------------------------------------------------


def observe_labels(
    state: MonitorState | None,
    model: str,
    folds: Iterable[tuple[str, str, LabelFold]],
    delta_id: str | None,
    now: float,
) -> MonitorState:
    """Take joined (prediction, label) pairs of a model (the label join's, any deployment and
    cohort): the monitored version's are judged at the next check by the label rules and
    summed up in its quality reports, every version's are counted. A redelivered delta (its id
    among the recent ones) changes nothing."""
    state, fresh = _receive(state, model, delta_id, now)
    if not fresh:
        return state
    for _cohort, version, fold in folds:
        stats = fold.stats
        n = stats.pairs
        if not n:
            continue
        if state.configured and version == state.version:
            state.labels += n
            if state.labels_pending is None:
                state.labels_pending = LabelledStats(stats.config, stats.loss_scale)
            state.labels_pending.merge_from(stats)
        else:
            state.other_labels += n
    return state


def _label_rules(policy: MonitoringPolicy) -> list[MonitorRule]:
    return [r for r in policy.rules if r.detector in LABEL_DETECTORS]


def _check_labels(
    state: MonitorState,
    policy: MonitoringPolicy,
    start: float,
    now: float,
    heard: float | None,
) -> list[MonitorOutput]:
    """The label rules' part of a check: the labelled reference learns from the version's
    first pairs, its keys' dispersion is measured, then each check's pairs are judged."""
    window, state.labels_pending = state.labels_pending, None
    lref = state.label_reference
    no_pairs = window is None or not window.pairs
    if no_pairs and state.label_report is None and (lref is None or lref.started_at is None):
        return []  # no labelled prediction of this version yet: nothing to learn or judge
    rules = _label_rules(policy)
    if lref is None or (lref.version != state.version and not state.pinned):
        lref = state.label_reference = LabelReference(state.version)
        names = {r.name for r in rules}
        state.cusums = {k: c for k, c in state.cusums.items() if k.split("/")[0] not in names}
        state.labels_held = {}
    outputs = _report_labels(state, policy, lref, window, now)
    if not rules:
        return outputs
    settings = policy.labels
    if lref.learned_at is None:
        if window is not None and window.pairs:
            if lref.started_at is None:
                lref.started_at = now
            lref.stats.merge_from(window)
        for rule in rules:
            if rule.detector == "label_delay" and lref.started_at is not None:
                _label_stall(rule, window, lref, state, start, now, heard)  # learns the rate
        first = lref.started_at
        if (
            first is not None
            and now - first >= settings.learn_s
            and (lref.stats.pairs >= settings.min_pairs)
        ):
            lref.learned_at = now
            lref.frozen = freeze_labels(lref.stats, rules)
            outputs.append(
                _decision(
                    state,
                    "reference_learned",
                    f"model {state.model} version {state.version}: labelled reference learned "
                    f"from {lref.stats.pairs:,} pairs over {now - first:.0f} s "
                    f"({_metrics_text(lref.frozen['summary'])}); measuring the label rules' "
                    f"dispersion for {settings.calibrate_s:.0f} s",
                    now,
                    evidence={"label_stage": "calibrating", "labels": lref.frozen["summary"]},
                )
            )
        return outputs
    if not lref.frozen:  # a policy changed since: re-derive from the stored pairs
        lref.frozen = freeze_labels(lref.stats, rules)
    calibrating = lref.calibrated_at is None
    if calibrating and lref.calib_started is None:
        lref.calib_started = start
    # the pairs each judging period sees (one copy per period, shared by its rules)
    periods = {
        every: _label_window(state, every, window, now, policy)
        for every in sorted({r.every_s for r in rules})
    }
    for rule in rules:
        data = periods[rule.every_s]
        if data is None:
            continue
        for key, family, values in label_observations(rule, data, lref, state, start, now, heard):
            name = f"{rule.name}/{key}" if key else rule.name
            cusum = state.cusums.get(name)
            if cusum is None:
                cusum = state.cusums[name] = Cusum()
            if calibrating:
                _accumulate(lref.calib_open, name, family, values)
                if not cusum.calibrated:
                    continue
            elif family != "multinomial":
                _accumulate(lref.calib_open, name, family, values)
            outputs += _step(state, policy, rule, name, cusum, family, values, start, now)
    bin_s = settings.calibration_bin_s
    if not calibrating:
        if lref.calib_started is None:
            lref.calib_started = start
        if now - lref.calib_started >= bin_s:
            _close_calibration(state, lref.calib_open, watching=True)
            lref.calib_started = now
        if lref.released_at is None:
            lref.released_at = now
        elif now - lref.released_at >= DISPERSION_LAG_S:
            for name, cusum in state.cusums.items():
                if name.split("/")[0] in {r.name for r in rules}:
                    cusum.release(DISPERSION_HALF_LIFE_S / bin_s)
            lref.released_at = now
        return outputs
    closed = now - (lref.calib_started or now) >= bin_s
    if closed:
        _close_calibration(state, lref.calib_open)
        lref.calib_started = now
    if closed and now - (lref.learned_at or now) >= settings.calibrate_s:
        lref.calibrated_at = now
        names = {r.name for r in rules}
        keys = {k: c for k, c in state.cusums.items() if k.split("/")[0] in names}
        for cusum in keys.values():
            cusum.finish_calibration()
        lref.calib_open = {}
        lref.calib_started = None
        phis = {k: round(c.phi, 3) for k, c in sorted(keys.items())}
        outputs.append(
            _decision(
                state,
                "reference_learned",
                f"model {state.model} version {state.version}: watching {len(phis)} statistics "
                f"of {len(rules)} label rules (dispersion measured over "
                f"{now - (lref.learned_at or now):.0f} s)",
                now,
                evidence={"dispersion": phis, "label_stage": "watching"},
            )
        )
    return outputs


def _label_window(
    state: MonitorState,
    every_s: float,
    window: LabelledStats | None,
    now: float,
    policy: MonitoringPolicy,
) -> LabelledStats | None:
    """The pairs the label rules judged every `every_s` see at this check (as `_rule_window`,
    held per period rather than per rule: the rules of one period judge the same pairs); None
    when they are not due."""
    if every_s <= policy.check_s:
        return window if window is not None else LabelledStats()
    name = f"{every_s:g}"
    held = state.labels_held.get(name)
    if window is not None:
        if held is None:
            held = state.labels_held[name] = LabelledStats(window.config, window.loss_scale)
        held.merge_from(window)
    if round(now / policy.check_s) % round(every_s / policy.check_s):
        return None
    state.labels_held.pop(name, None)
    return held if held is not None else LabelledStats()


def freeze_labels(stats: LabelledStats, rules: Iterable[MonitorRule]) -> dict[str, Any]:
    """What the label rules compare against, derived once from the labelled reference."""
    frozen: dict[str, Any] = {"pairs": stats.pairs, "summary": _metrics(stats), "rules": {}}
    for rule in rules:
        entry: dict[str, Any] = {}
        if rule.detector == "quality_decay" and stats.kind == "regression":
            bucket = stats.errors.quantile_bucket(float(rule.param("quantile")))
            if bucket is not None and stats.errors.count:
                entry = {
                    "mode": "errors",
                    "slot": list(bucket.slot),
                    "value": bucket.value,
                    "p0": stats.errors.count_above(bucket.slot) / stats.errors.count,
                    "n": stats.errors.count,
                }
        elif rule.detector == "quality_decay" and stats.pairs:
            entry = {"mode": "events", "events": stats.loss_events, "pairs": stats.pairs}
        elif rule.detector == "label_drift" and stats.pairs:
            entry = {"bins": _label_bins(stats, rule)}
        elif rule.detector == "label_delay" and stats.delay.count:
            bucket = stats.delay.quantile_bucket(float(rule.param("quantile")))
            if bucket is not None:
                entry = {
                    "slot": list(bucket.slot),
                    "value_s": bucket.value,
                    "p0": stats.delay.count_above(bucket.slot) / stats.delay.count,
                    "n": stats.delay.count,
                }
        frozen["rules"][rule.name] = entry
    return frozen


def _label_bins(stats: LabelledStats, rule: MonitorRule) -> dict[str, Any]:
    """The labelled reference's bins of its labels: classes (the top ones and one bin for the
    rest), a binary classifier's 0 and 1, or quantile edges of a regression's targets."""
    if stats.label_classes:
        top = sorted(stats.label_classes.items(), key=lambda kv: (-kv[1], kv[0]))
        names = [k for k, _ in top[: int(rule.param("max_categories"))]]
        bins: dict[str, Any] = {"kind": "categories", "labels": names}
    elif stats.kind == "binary":
        bins = {"kind": "numbers", "edges": [0.5]}
    else:
        edges: list[float] = []
        n = int(rule.param("bins"))
        for i in range(1, n):
            q = stats.label_values.quantile(i / n)
            if q is not None and (not edges or q > edges[-1]):
                edges.append(q)
        bins = {"kind": "numbers", "edges": edges}
    counts = _label_counts(bins, stats)
    return {**bins, "p0": smoothed(counts), "n": sum(counts)}


def _label_counts(bins: Mapping[str, Any], stats: LabelledStats) -> list[float]:
    if bins["kind"] == "categories":
        inside = [float(stats.label_classes.get(k, 0)) for k in bins["labels"]]
        total = float(sum(stats.label_classes.values()))
        return [*inside, total - math.fsum(inside)]
    histogram = sketch_on_edges(stats.label_values, list(bins["edges"]))
    return [float(c) for c in histogram.counts]


def label_observations(
    rule: MonitorRule,
    w: LabelledStats,
    lref: LabelReference,
    state: MonitorState,
    start: float,
    now: float,
    heard: float | None,
) -> list[Observation]:
    """Each label key's data for one check of one rule."""
    entry = lref.frozen["rules"].get(rule.name, {})
    calibrated = lref.calibrated_at is not None
    if rule.detector == "quality_decay":
        if not entry:
            return []
        if entry.get("mode") == "errors":
            slot = (int(entry["slot"][0]), int(entry["slot"][1]))
            n = w.errors.count
            x = float(w.errors.count_above(slot)) if n else 0.0
            ref_x, ref_n = float(entry["p0"]) * float(entry["n"]), float(entry["n"])
        else:
            x, n = float(w.loss_events), w.pairs
            ref_x, ref_n = float(entry["events"]), float(entry["pairs"])
        share = _reference_rate(state, calibrated, rule.name, ref_x, ref_n)
        if share >= 0.95:
            return []  # (nearly) every pair is a loss event already: nothing to tell apart
        p0 = max(share, 1e-4)
        ratio, min_rate = float(rule.param("ratio")), float(rule.param("min_rate"))
        p1 = min(max(p0 * ratio, p0 + min_rate), 0.999)
        return [("", "binomial", [x, float(n), p0, p1])]
    if rule.detector == "label_drift":
        bins = entry.get("bins")
        if not bins:
            return []
        counts = _label_counts(bins, w)
        reference = [float(x) for x in bins["p0"]]
        noise = (
            ESTIMATION_MARGIN * (len(reference) - 1) / (2.0 * max(float(bins.get("n", 1.0)), 1.0))
        )
        tolerance = max(float(rule.param("tolerance_kl")), noise)
        return [("", "multinomial", [tolerance, *reference, *counts])]
    if rule.detector == "label_delay":
        found: list[Observation] = []
        if entry:
            slot = (int(entry["slot"][0]), int(entry["slot"][1]))
            n = w.delay.count
            x = w.delay.count_above(slot) if n else 0
            timed = float(entry["n"])
            share = _reference_rate(
                state, calibrated, f"{rule.name}/late", float(entry["p0"]) * timed, timed
            )
            p0 = min(max(share, 1e-4), 0.5)
            p1 = min(p0 * float(rule.param("ratio")), 0.999)
            found.append(("late", "binomial", [float(x), float(n), p0, p1]))
        found += _label_stall(rule, w, lref, state, start, now, heard)
        return found
    return []


def _label_stall(
    rule: MonitorRule,
    w: LabelledStats | None,
    lref: LabelReference,
    state: MonitorState,
    start: float,
    now: float,
    heard: float | None,
) -> list[Observation]:
    """The rate of labelled pairs against the learned one (as the outage rule's requests)."""
    pairs = float(w.pairs) if w is not None else 0.0
    return _against_rate(rule, "stalled", pairs, lref.rate, state, start, now, heard)


def _describe_labelled(
    state: MonitorState,
    rule: MonitorRule,
    what: str,
    since_text: str,
    cusum: Cusum,
    p0: float,
    rate: float,
    evidence: dict[str, Any],
) -> tuple[str, dict[str, Any]]:
    ratio = rate / p0 if p0 else float("inf")
    pairs = f"{ratio:.1f}x, {int(cusum.den):,} labelled predictions"
    if rule.detector == "quality_decay":
        lref = state.label_reference
        reference = {} if lref is None else lref.frozen.get("summary", {})
        evidence["reference_metrics"] = reference
        entry = {} if lref is None else lref.frozen.get("rules", {}).get(rule.name, {})
        if entry.get("mode") == "errors":
            q = float(rule.param("quantile"))
            return (
                f"{what}: quality decayed: {100 * rate:.2f} % of absolute errors above the "
                f"labelled reference's p{100 * q:g} ({float(entry['value']):.4g}) since "
                f"{since_text} vs {100 * p0:.2f} % in the reference (its bound) ({pairs}; "
                f"reference {_metrics_text(reference)})",
                evidence,
            )
        return (
            f"{what}: quality decayed: loss events in {100 * rate:.2f} % of labelled "
            f"predictions since {since_text} vs {100 * p0:.2f} % in the labelled reference (its "
            f"bound) ({pairs}; reference {_metrics_text(reference)})",
            evidence,
        )
    q = float(rule.param("quantile"))
    return (
        f"{what}: labels late: {100 * rate:.2f} % arrived later than the reference's "
        f"p{100 * q:g} delay since {since_text} vs {100 * p0:.2f} % in the reference ({pairs})",
        evidence,
    )


#: The metrics a quality report and a labelled reference show, in this order.
_METRICS = (
    "accuracy",
    "auc",
    "log_loss",
    "brier",
    "ece",
    "mae",
    "rmse",
    "bias",
    "mean_loss",
    "delay_p50_s",
    "delay_p95_s",
)


def _metrics(stats: LabelledStats) -> dict[str, Any]:
    """A labelled span's metrics as plain, rounded values (None where not defined)."""
    summary = stats.summary()
    out: dict[str, Any] = {"kind": stats.kind, "pairs": stats.pairs}
    for name in _METRICS:
        value = summary.get(name)
        if isinstance(value, float) and math.isfinite(value):
            out[name] = round(value, 6)
    if stats.mismatched:
        out["mismatched"] = stats.mismatched
    return out


def _metrics_text(metrics: Mapping[str, Any]) -> str:
    parts = []
    for name in _METRICS:
        value = metrics.get(name)
        if value is None:
            continue
        shown = name.removesuffix("_s").replace("_", " ")
        parts.append(
            f"{shown} {value:.0f} s" if name.startswith("delay") else f"{shown} {value:.4g}"
        )
    return ", ".join(parts) or "no metrics"


def _report_labels(
    state: MonitorState,
    policy: MonitoringPolicy,
    lref: LabelReference,
    window: LabelledStats | None,
    now: float,
) -> list[MonitorOutput]:
    """Every `labels.report_s`, a `quality` decision sums up the span's labelled pairs of the
    monitored version (the model's quality over time, beside the labelled reference's)."""
    report = state.label_report
    if report is None:
        report = state.label_report = LabelReport(started_at=now)
    if window is not None and window.pairs:
        report.stats.merge_from(window)
    span = now - report.started_at
    if span < policy.labels.report_s:
        return []
    outputs: list[MonitorOutput] = []
    stats = report.stats
    if stats.pairs:
        metrics = _metrics(stats)
        reference = lref.frozen.get("summary") if lref.frozen else None
        evidence: dict[str, Any] = {
            "span_s": round(span, 3),
            "from": _at(report.started_at).isoformat(),
            "metrics": metrics,
            "reference": reference,
            "label_stage": lref.stage(),
        }
        against = f"; reference: {_metrics_text(reference)}" if reference else ""
        outputs.append(
            _decision(
                state,
                "quality",
                f"model {state.model} version {state.version}: {stats.pairs:,} labelled "
                f"predictions in the last {span:.0f} s: {_metrics_text(metrics)}{against}",
                now,
                evidence=evidence,
            )
        )
        report.last = evidence
    state.label_report = LabelReport(started_at=now, last=report.last)
    return outputs


# ---- training-serving skew: a level over windows --------------------------------------------


def _skew_window(
    state: MonitorState,
    policy: MonitoringPolicy,
    rule: MonitorRule,
    window: CohortStats | None,
    now: float,
) -> list[MonitorOutput]:
    profiles = _profiles(state.training_profile)
    if not profiles:
        return []
    if state.skew_started is None:
        state.skew_started = now
    if window is not None and window.feature_events:
        if state.skew_window is None:
            state.skew_window = CohortStats(window.config)
        state.skew_window.merge_from(window)
    if now - state.skew_started < float(rule.param("window_s")):
        return []
    data, state.skew_window, state.skew_started = state.skew_window, None, now
    if data is None:
        return []
    from controller.core.detectors.training_serving_skew import profile_distance

    out: list[MonitorOutput] = []
    tolerance = float(rule.param("tolerance_js"))
    for name, profile in sorted(profiles.items()):
        dist = data.features.get(name)
        if dist is None or dist.count < int(rule.param("min_samples")):
            continue
        distance = profile_distance(dist, profile)
        if distance is None:
            continue
        key = f"{rule.name}/training:{name}"
        firing = key in state.skew_firing
        if distance > tolerance and not firing:
            state.skew_firing[key] = [now, distance]
            summary = (
                f"{state.model}@{state.version} feature {name}: serving data skewed against "
                f"training: distance {distance:.3f} > {tolerance:g} over the last "
                f"{float(rule.param('window_s')):.0f} s ({dist.count:,} values)"
            )
            evidence = {
                "rule": rule.name,
                "key": key,
                "distance": round(distance, 4),
                "tolerance": tolerance,
                "samples": dist.count,
            }
            out += _fire(state, policy, rule, key, summary, evidence, now)
        elif distance <= tolerance and firing:
            del state.skew_firing[key]
            summary = f"{state.model} {key}: within tolerance again (distance {distance:.3f})"
            if not rule.dry_run:
                out.append(_alert(state, key, "resolved", Severity.INFO, summary, {}, now, policy))
            out.append(_decision(state, "alert_resolved", summary, now, rule=key))
    return out


# ---- unmonitored traffic --------------------------------------------------------------------


def _notice_unmonitored(state: MonitorState, now: float) -> list[MonitorOutput]:
    """Traffic of a model nobody watches is not dropped in silence: a decision says so when
    it is first heard, then at most every NOTICE_EVERY_S."""
    if state.first_seen is None or state.requests + state.other_requests == 0:
        return []
    if state.noticed_at is not None and now - state.noticed_at < NOTICE_EVERY_S:
        return []
    state.noticed_at = now
    total = state.requests + state.other_requests
    versions = ", ".join(f"{v} {n:,}" for v, n in sorted(state.versions.items()))
    reason = (
        f"model {state.model}: {total:,} predictions since "
        f"{_at(state.first_seen).isoformat()} (versions: {versions}) have no monitor and no "
        f"live rollout: `rollout monitor set {state.model}` watches it"
    )
    return [
        _decision(
            state,
            "unmonitored",
            reason,
            now,
            evidence={"predictions": total, "versions": dict(state.versions)},
        )
    ]


__all__ = [
    "MonitorOutput",
    "MonitorResult",
    "check",
    "configure",
    "delete",
    "freeze",
    "freeze_labels",
    "label_observations",
    "next_check",
    "observations",
    "observe",
    "observe_labels",
]
