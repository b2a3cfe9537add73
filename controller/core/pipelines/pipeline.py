"""A pipeline's runs, datasets and usage while it trains: judged against its own history. Pure.

```
observe_run(state | None, event: TrainingRun, policy, now) -> PipelinesResult[PipelineState]
observe_profile(state | None, event: DataProfile, policy, now) -> PipelinesResult[PipelineState]
observe_usage(state | None, event: ResourceUsage, now) -> PipelineState
check(state, policy, now) -> PipelinesResult[PipelineState]      # the idle-quota rule
next_check(state, policy, now) -> float | None
compare_profiles(reference, profile, settings, alpha) -> list[ColumnFinding]
```

A pipeline's state is keyed by the pipeline (`TrainingRun.pipeline`, `DataProfile.pipeline`,
`ResourceUsage.pipeline`; the deployment id when a profile names no pipeline). Runs and profiles
are rare, so each is judged when it arrives. Alerts: kind `pipeline.<rule>`, record key the
pipeline, dedup `<pipeline>/pipeline.<rule>[/<split>/<dataset>]`.

**Training.**
- `training.duration`: a successful run's log-duration, standardised by the median and MAD
  of the pipeline's last `history` successful runs (at least `min_scale`), feeds a bank of
  CUSUMs of Student t likelihood ratios, one per `ratios` (a run r times as long); stated
  false alarm rate: one per `per_rule_runs` runs (policy.py). Not a fixed multiple: a pipeline
  whose runs jitter by 30 % needs a larger ratio, or more runs, than one that jitters by 5 %.
  Runs judged while it fires do not join the history; it resolves when the runs favour the
  history `resolve_odds` to 1.
- `training.failure_streak`: `streak` failures in a row (critical); resolved by a success.
- `training.failure_rate`: each run failed or not, a binomial CUSUM against the history's
  failure rate (exponentially weighted over `half_life_runs`, held at an upper bound two
  standard errors up), alternative `ratio` times it and at least `min_rate` above. Outcomes
  join the history `lag` runs late, and not while it fires.
- Quota during training: the pipeline's usage gauges integrated over each live run (resource
  seconds, and the mean use) are in the run's decision; `training.idle_quota`: a pipeline that
  has run and holds quota with no run live for `idle.for_s`.

**Data** (`DataProfile`). Each column (every feature, and the label) of a profile is compared
with its reference: a training set against the last accepted training set (drift), a
validation, test or serving set against the latest training set (skew). Numeric columns on the
reference's bins (the profile's distribution spread uniformly within its own bins when its
edges differ; its tails over one neighbouring bin width): JS divergence; categorical columns:
the largest share difference. A column differs when the distance exceeds the tolerance AND
Pearson's chi-square of the two count vectors (`controller.core.stats.chi_square_homogeneity`)
has p below `data_alpha / columns`. Missing and invalid (corrupt) shares: `ratio` times the
reference's, `min_rate` above it, and a one-sided two-proportion z-test at the same level.
A training set without findings becomes the accepted reference; one with findings does not
(the reference stays). A profile of a split without findings resolves the open alerts of that
split and check.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from controller.core.monitor.cusum import binomial_llr
from controller.core.pipelines.common import (
    PipelinesOutput,
    PipelinesResult,
    alert,
    clock,
    decision,
    ident,
    median_mad,
    robust_scale,
    t_log_density,
)
from controller.core.pipelines.policy import DataSettings, PipelinesPolicy
from controller.core.pipelines.state import (
    MAX_FIRING,
    Bank,
    Firing,
    Gauge,
    LiveRun,
    PipelineState,
    ProfileRef,
)
from controller.core.stats.distance import chi_square_homogeneity, js_divergence, l_infinity
from schemas import DataProfile, ResourceUsage, TrainingRun

PipelineResult = PipelinesResult[PipelineState]
#: the failure rate's reference is held this many standard errors above its estimate
RATE_Z = 2.0
NUMERIC = frozenset({"continuous", "integer", "binary", "numeric"})
LABEL = "label"


# ---- training runs --------------------------------------------------------------------------


def observe_run(
    state: PipelineState | None, event: TrainingRun, policy: PipelinesPolicy, now: float
) -> PipelineResult:
    """A run started, succeeded or failed (a finished run seen before changes nothing)."""
    name = ident(event.pipeline)
    if state is None:
        state = PipelineState(pipeline=name, created_at=now)
    state.has_runs = True
    if event.run_id in state.recent_runs:
        return PipelinesResult(state)
    if event.status == "started":
        _integrate(state, now)
        state.live[event.run_id] = LiveRun(started_at=now)
        excess = max(len(state.live) - policy.training.max_live_runs, 0)
        for run_id in sorted(state.live, key=lambda r: (state.live[r].started_at, r))[:excess]:
            del state.live[run_id]
        state.idle_since = None
        return PipelinesResult(state)
    _integrate(state, now)
    run = state.live.pop(event.run_id, None)
    state.remember_run(event.run_id)
    duration = event.duration_s
    if duration is None and run is not None:
        duration = now - run.started_at
    outputs: list[PipelinesOutput] = []
    outputs += _failures(state, policy, event, now)
    judged: dict[str, Any] = {}
    if event.status == "succeeded" and duration is not None:
        found, judged = _duration(state, policy, event.run_id, duration, now)
        outputs += found
    usage = {} if run is None else {k: round(v, 3) for k, v in sorted(run.used_s.items())}
    mean_use = {k: round(v / duration, 6) for k, v in usage.items()} if usage and duration else {}
    took = f" in {duration:,.0f} s" if duration is not None else ""
    use = (
        "; used "
        + ", ".join(f"{k} {v:,.4g} (mean {mean_use.get(k, 0):.4g})" for k, v in usage.items())
        if usage
        else ""
    )
    reason = f"pipeline {state.pipeline}: run {event.run_id} {event.status}{took}{use}" + (
        f": {event.error}" if event.error else ""
    )
    evidence = {
        "run_id": event.run_id,
        "status": event.status,
        "duration_s": duration,
        "used_s": usage,
        "mean_use": mean_use,
        "streak": state.streak,
        "runs": state.runs,
        "failures": state.failures,
        **judged,
    }
    outputs.append(decision("run_judged", reason, now, pipeline=state.pipeline, evidence=evidence))
    if state.usage and not state.live:
        state.idle_since = now
    return PipelinesResult(state, outputs)


def _duration(
    state: PipelineState, policy: PipelinesPolicy, run_id: str, duration: float, now: float
) -> tuple[list[PipelinesOutput], dict[str, Any]]:
    rule = policy.training.duration
    x = math.log(max(duration, 1e-3))
    bank = state.banks.setdefault("training.duration", Bank())
    outputs: list[PipelinesOutput] = []
    judged: dict[str, Any] = {}
    if len(state.durations) >= rule.min_history:
        middle, mad = median_mad(state.durations)
        scale = max(robust_scale(state.durations, middle, mad), rule.min_scale)
        z = (x - middle) / scale
        base = t_log_density(z, rule.tail_df)
        llrs = [t_log_density(z - math.log(r) / scale, rule.tail_df) - base for r in rule.ratios]
        h = policy.run_threshold() + math.log(len(rule.ratios))
        step = bank.step(llrs, now, now, h, policy.resolve_threshold())
        typical = math.exp(middle)
        judged = {
            "median_s": round(typical, 3),
            "ratio": round(duration / typical, 4),
            "z": round(z, 3),
            "scale": round(scale, 4),
            "cusum": round(max(bank.s), 3) if bank.s else 0.0,
            "threshold": round(h, 3),
        }
        if step == "fired":
            summary = (
                f"pipeline {state.pipeline}: run {run_id} took {duration:,.0f} s, "
                f"{duration / typical:.2f}x the median {typical:,.0f} s of its last "
                f"{len(state.durations)} runs (log-duration {z:.1f} robust sd above; "
                f"jitter {100 * scale:.0f} %)"
            )
            outputs += _fire(
                state, policy, "training.duration", rule.severity, summary, judged, now
            )
        elif step == "resolved":
            outputs += _resolve(
                state,
                policy,
                "training.duration",
                now,
                f"pipeline {state.pipeline}: run durations back to their history",
            )
    if not bank.firing:
        state.durations = [*state.durations, x][-rule.history :]
    return outputs, judged


def _failures(
    state: PipelineState, policy: PipelinesPolicy, event: TrainingRun, now: float
) -> list[PipelinesOutput]:
    rule = policy.training.failures
    failed = event.status == "failed"
    outputs: list[PipelinesOutput] = []
    state.runs += 1
    state.failures += int(failed)
    state.streak = state.streak + 1 if failed else 0
    streak_key = "training.failure_streak"
    if failed and state.streak >= rule.streak and streak_key not in state.firing:
        summary = (
            f"pipeline {state.pipeline}: {state.streak} training runs failed in a row "
            f"(the last, {event.run_id}: {event.error})"
        )
        outputs += _fire(
            state, policy, streak_key, "critical", summary, {"streak": state.streak}, now
        )
    elif not failed and streak_key in state.firing:
        outputs += _resolve(
            state,
            policy,
            streak_key,
            now,
            f"pipeline {state.pipeline}: run {event.run_id} succeeded",
        )
    bank = state.banks.setdefault("training.failure_rate", Bank())
    if state.runs_w >= rule.min_history:
        rate = state.failures_w / state.runs_w
        spread = max(rate, 1.0 / state.runs_w) * (1.0 - rate)
        p0 = min(max(rate + RATE_Z * math.sqrt(spread / state.runs_w), 1e-4), 0.5)
        p1 = min(max(p0 * rule.ratio, p0 + rule.min_rate), 0.999)
        llr = binomial_llr(float(failed), 1.0, p0, p1)
        step = bank.step([llr], now, now, policy.run_threshold(), policy.resolve_threshold())
        if step == "fired":
            summary = (
                f"pipeline {state.pipeline}: training runs fail more often than they did: "
                f"the failure rate's history is {100 * rate:.1f} % (bound {100 * p0:.1f} %), "
                f"the last run {event.run_id} failed: {event.error}"
            )
            evidence = {
                "history_rate": round(rate, 6),
                "reference": round(p0, 6),
                "alternative": round(p1, 6),
                "cusum": round(bank.s[0], 3),
                "streak": state.streak,
            }
            outputs += _fire(
                state, policy, "training.failure_rate", rule.severity, summary, evidence, now
            )
        elif step == "resolved":
            outputs += _resolve(
                state,
                policy,
                "training.failure_rate",
                now,
                f"pipeline {state.pipeline}: failures back to their history's rate",
            )
    if bank.firing:
        state.held = []  # the change may have begun in them: not the history
        return outputs
    state.held.append(float(failed))
    keep = 2.0 ** (-1.0 / rule.half_life_runs)
    while len(state.held) > rule.lag:
        outcome = state.held.pop(0)
        state.failures_w = state.failures_w * keep + outcome
        state.runs_w = state.runs_w * keep + 1.0
    return outputs


# ---- usage while training -------------------------------------------------------------------


def observe_usage(state: PipelineState | None, event: ResourceUsage, now: float) -> PipelineState:
    """The pipeline's gauge of one resource: integrated into its live runs."""
    name = ident(event.pipeline if event.pipeline is not None else event.deployment_id)
    if state is None:
        state = PipelineState(pipeline=name, created_at=now)
    _integrate(state, now)
    state.usage[event.resource] = Gauge(used=event.used, at=now, requested=event.requested)
    holds = any(g.used > 0 for g in state.usage.values())
    if state.live or not holds:
        state.idle_since = None
    elif state.idle_since is None and state.has_runs:
        state.idle_since = now
    return state


def _integrate(state: PipelineState, now: float) -> None:
    """Add each gauge times the time since it was reported to every live run (left sums), and
    move the gauges' time to now."""
    for resource, gauge in state.usage.items():
        dt = now - gauge.at
        if dt <= 0:
            continue
        for run in state.live.values():
            since = max(gauge.at, run.started_at)
            if now > since:
                run.used_s[resource] = run.used_s.get(resource, 0.0) + gauge.used * (now - since)
        gauge.at = now


def next_check(state: PipelineState, policy: PipelinesPolicy, now: float) -> float | None:
    """When the idle-quota rule is due (None: nothing to judge by the clock)."""
    key = "training.idle_quota"
    if key in state.firing:
        step = policy.quota.sample_s
        return (math.floor(now / step) + 1) * step
    if state.idle_since is None:
        return None
    return max(state.idle_since + policy.training.idle.for_s, now)


def check(state: PipelineState, policy: PipelinesPolicy, now: float) -> PipelineResult:
    """The idle-quota rule: a pipeline that has run holds quota with no run live."""
    state.last_check = now
    rule = policy.training.idle
    key = "training.idle_quota"
    outputs: list[PipelinesOutput] = []
    held = {r: g.used for r, g in sorted(state.usage.items()) if g.used > 0}
    idle = state.idle_since is not None and not state.live and bool(held)
    if idle and key not in state.firing and now - (state.idle_since or now) >= rule.for_s:
        summary = (
            f"pipeline {state.pipeline} holds "
            + ", ".join(f"{v:g} {r}" for r, v in held.items())
            + f" with no training run live since {clock(state.idle_since or now)}"
        )
        outputs += _fire(state, policy, key, rule.severity, summary, {"held": held}, now)
    elif not idle and key in state.firing:
        why = "a run is live" if state.live else "it holds no quota"
        outputs += _resolve(state, policy, key, now, f"pipeline {state.pipeline}: {why}")
    return PipelinesResult(state, outputs)


# ---- datasets -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnFinding:
    """One column of a profile that differs from its reference, and how."""

    column: str
    check: str  # "distribution", "missing", "invalid", "kind", "absent"
    reason: str
    evidence: Mapping[str, Any]


def observe_profile(
    state: PipelineState | None, event: DataProfile, policy: PipelinesPolicy, now: float
) -> PipelineResult:
    """Judge a dataset profile against its reference (see the module docstring)."""
    name = ident(event.pipeline if event.pipeline is not None else event.deployment_id)
    if state is None:
        state = PipelineState(pipeline=name, created_at=now)
    settings = policy.data
    profile = ProfileRef(
        dataset=event.dataset,
        split=event.split,
        row_count=event.row_count,
        at=now,
        features={f.name: f.model_dump(mode="json") for f in event.features},
        label=None if event.label is None else event.label.model_dump(mode="json"),
    )
    what = f"pipeline {state.pipeline}: {event.split} set {event.dataset}"
    if event.row_count < settings.min_rows:
        reason = f"{what}: {event.row_count} rows, fewer than {settings.min_rows}: not judged"
        return PipelinesResult(
            state,
            [
                decision(
                    "profile_judged",
                    reason,
                    now,
                    pipeline=state.pipeline,
                    evidence={"dataset": event.dataset, "split": event.split},
                )
            ],
        )
    if event.split == "training":
        reference, check = state.accepted, "drift"
        against = "the last accepted training set"
    else:
        reference = state.latest_training or state.accepted
        check, against = "skew", "the training set"
    outputs: list[PipelinesOutput] = []
    if reference is None:
        if event.split == "training":
            state.accepted = state.latest_training = profile
        reason = f"{what}: no reference to compare with yet" + (
            " (accepted as the reference)" if event.split == "training" else ""
        )
        outputs.append(
            decision(
                "profile_judged",
                reason,
                now,
                pipeline=state.pipeline,
                evidence={"dataset": event.dataset, "split": event.split},
            )
        )
        return PipelinesResult(state, outputs)
    findings = compare_profiles(reference, profile, settings, policy.data_alpha)
    distribution = [f for f in findings if f.check in ("distribution", "kind", "absent")]
    quality = [f for f in findings if f.check in ("missing", "invalid")]
    against = f"{against} {reference.dataset}"
    for kind, found in ((check, distribution), ("quality", quality)):
        rule = f"data.{kind}"
        key = f"{rule}/{event.split}/{event.dataset}"
        if found:
            if key not in state.firing:
                listed = "; ".join(f.reason for f in found[:8])
                more = f" (and {len(found) - 8} more)" if len(found) > 8 else ""
                summary = f"{what} differs from {against}: {listed}{more}"
                evidence = {
                    "dataset": event.dataset,
                    "split": event.split,
                    "reference": reference.dataset,
                    "columns": {f.column + ":" + f.check: dict(f.evidence) for f in found},
                }
                outputs += _fire(state, policy, key, settings.severity, summary, evidence, now)
        else:
            for open_key in sorted(
                k for k in state.firing if k.startswith(f"{rule}/{event.split}/")
            ):
                outputs += _resolve(
                    state,
                    policy,
                    open_key,
                    now,
                    f"{what} matches {against}",
                )
    accepted = event.split == "training" and not findings
    if event.split == "training":
        state.latest_training = profile
        if accepted:
            state.accepted = profile
    reason = (
        f"{what} against {against}: "
        + (
            f"{len(findings)} finding(s): " + "; ".join(f.reason for f in findings[:8])
            if findings
            else f"no column differs ({_columns(profile)} compared)"
        )
        + (" (accepted as the reference)" if accepted else "")
    )
    outputs.append(
        decision(
            "profile_judged",
            reason,
            now,
            pipeline=state.pipeline,
            rule=f"data.{check}",
            evidence={
                "dataset": event.dataset,
                "split": event.split,
                "reference": reference.dataset,
                "accepted": accepted,
                "findings": [f"{f.column}:{f.check}" for f in findings],
            },
        )
    )
    return PipelinesResult(state, outputs)


def _columns(profile: ProfileRef) -> int:
    return len(profile.features) + (profile.label is not None)


def compare_profiles(
    reference: ProfileRef, profile: ProfileRef, settings: DataSettings, alpha: float
) -> list[ColumnFinding]:
    """Every column of `profile` that differs from `reference` (the label, then the
    features)."""
    columns: list[tuple[str, Mapping[str, Any], Mapping[str, Any] | None]] = []
    if reference.label is not None:
        columns.append((LABEL, reference.label, profile.label))
    columns += [(n, f, profile.features.get(n)) for n, f in sorted(reference.features.items())]
    level = alpha / max(len(columns), 1)
    found: list[ColumnFinding] = []
    for name, ref, new in columns:
        if new is None:
            found.append(ColumnFinding(name, "absent", f"{name}: absent", {}))
            continue
        if (ref["kind"] in NUMERIC) != (new["kind"] in NUMERIC):
            found.append(
                ColumnFinding(
                    name,
                    "kind",
                    f"{name}: {new['kind']}, was {ref['kind']}",
                    {"kind": new["kind"], "reference_kind": ref["kind"]},
                )
            )
            continue
        n_ref = _count(ref, reference.row_count)
        n_new = _count(new, profile.row_count)
        finding = _distribution(name, ref, new, n_ref, n_new, settings, level)
        if finding is not None:
            found.append(finding)
        for check in ("missing", "invalid"):
            finding = _share(
                name,
                check,
                float(ref.get(f"{check}_rate", 0.0)),
                float(new.get(f"{check}_rate", 0.0)),
                reference.row_count,
                profile.row_count,
                settings,
                level / 2,
            )
            if finding is not None:
                found.append(finding)
    return found


def _count(column: Mapping[str, Any], rows: int) -> float:
    count = column.get("count")
    if count is not None:
        return float(count)
    return rows * (
        1.0 - float(column.get("missing_rate", 0.0)) - float(column.get("invalid_rate", 0.0))
    )


def _distribution(
    name: str,
    ref: Mapping[str, Any],
    new: Mapping[str, Any],
    n_ref: float,
    n_new: float,
    settings: DataSettings,
    level: float,
) -> ColumnFinding | None:
    if n_ref <= 0 or n_new <= 0:
        return None
    if ref["kind"] in NUMERIC:
        p = [float(x) for x in ref["proportions"]]
        q = on_edges(new, [float(e) for e in ref["bin_edges"]])
        distance, measure, tolerance = js_divergence(p, q), "JS", settings.tolerance_js
    else:
        labels = sorted(set(ref["categories"]) | set(new["categories"]))
        p = [float(ref["categories"].get(k, 0.0)) for k in labels]
        q = [float(new["categories"].get(k, 0.0)) for k in labels]
        distance, measure, tolerance = l_infinity(p, q), "L-inf", settings.tolerance_linf
    test = chi_square_homogeneity([round(x * n_ref) for x in p], [round(x * n_new) for x in q])
    if distance <= tolerance or test.p_value >= level:
        return None
    role = "the label" if name == LABEL else name
    return ColumnFinding(
        name,
        "distribution",
        f"{role}: {measure} {distance:.3f} > {tolerance:g} (chi-square p {test.p_value:.2g}, "
        f"{n_new:,.0f} vs {n_ref:,.0f} values)",
        {
            "measure": measure,
            "distance": round(distance, 6),
            "tolerance": tolerance,
            "p_value": test.p_value,
            "level": level,
            "values": n_new,
            "reference_values": n_ref,
        },
    )


def _share(
    name: str,
    check: str,
    ref: float,
    new: float,
    n_ref: int,
    n_new: int,
    settings: DataSettings,
    level: float,
) -> ColumnFinding | None:
    if new < ref * settings.ratio or new < ref + settings.min_rate or n_ref <= 0 or n_new <= 0:
        return None
    pooled = (ref * n_ref + new * n_new) / (n_ref + n_new)
    spread = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / n_ref + 1 / n_new))
    z = (new - ref) / spread
    p_value = 0.5 * math.erfc(z / math.sqrt(2.0))
    if p_value >= level:
        return None
    word = "missing" if check == "missing" else "invalid (corrupt)"
    return ColumnFinding(
        name,
        check,
        f"{name}: {100 * new:.1f} % {word} vs {100 * ref:.1f} % (p {p_value:.2g})",
        {"share": new, "reference_share": ref, "p_value": p_value, "level": level},
    )


def on_edges(column: Mapping[str, Any], edges: Sequence[float]) -> list[float]:
    """A numeric profile's proportions on other `edges` (its own when they are the same): its
    distribution spread uniformly within each of its bins, each tail over one neighbouring bin
    width (an assumption: a profile does not say where its tail values lie)."""
    own = [float(e) for e in column["bin_edges"]]
    props = [float(x) for x in column["proportions"]]
    if len(own) == len(edges) and all(abs(a - b) <= 1e-12 for a, b in zip(own, edges, strict=True)):
        return props
    cdf = [_cdf(own, props, e) for e in edges]
    out = [cdf[0]]
    out += [max(b - a, 0.0) for a, b in itertools.pairwise(cdf)]
    out.append(max(1.0 - cdf[-1], 0.0))
    return out


def _cdf(edges: Sequence[float], props: Sequence[float], x: float) -> float:
    """The share of values below x, under the uniform-within-bins assumption."""
    width_low = edges[1] - edges[0] if len(edges) > 1 else max(abs(edges[0]), 1.0)
    width_high = edges[-1] - edges[-2] if len(edges) > 1 else max(abs(edges[-1]), 1.0)
    if x < edges[0]:
        return props[0] * min(max((x - (edges[0] - width_low)) / width_low, 0.0), 1.0)
    total = props[0]
    for i in range(1, len(edges)):
        if x < edges[i]:
            return total + props[i] * (x - edges[i - 1]) / (edges[i] - edges[i - 1])
        total += props[i]
    return total + props[-1] * min((x - edges[-1]) / width_high, 1.0)


# ---- alerts ---------------------------------------------------------------------------------


def _fire(
    state: PipelineState,
    policy: PipelinesPolicy,
    key: str,
    severity: str,
    summary: str,
    evidence: Mapping[str, Any],
    now: float,
) -> list[PipelinesOutput]:
    if len(state.firing) >= MAX_FIRING:
        oldest = min(state.firing, key=lambda k: (state.firing[k].since, k))
        del state.firing[oldest]
    state.firing[key] = Firing(
        pipeline=state.pipeline, since=now, severity=severity, summary=summary
    )
    rule = key.split("/", 1)[0]
    evidence = {"rule": rule, "key": key, **evidence}
    return [
        alert(
            key=state.pipeline,
            dedup=f"{state.pipeline}/pipeline.{key}",
            kind=f"pipeline.{rule}",
            status="firing",
            severity=severity,
            subject=state.pipeline,
            summary=summary,
            evidence=evidence,
            now=now,
            runbook=policy.runbook(f"pipeline.{rule}", state.pipeline),
        ),
        decision("alert_fired", summary, now, pipeline=state.pipeline, rule=key, evidence=evidence),
    ]


def _resolve(
    state: PipelineState, policy: PipelinesPolicy, key: str, now: float, why: str
) -> list[PipelinesOutput]:
    firing = state.firing.pop(key, None)
    if firing is None:
        return []
    rule = key.split("/", 1)[0]
    summary = f"{why} (firing since {clock(firing.since)})"
    return [
        alert(
            key=state.pipeline,
            dedup=f"{state.pipeline}/pipeline.{key}",
            kind=f"pipeline.{rule}",
            status="resolved",
            severity="info",
            subject=state.pipeline,
            summary=summary,
            evidence={"rule": rule, "key": key, "since": firing.since},
            now=now,
            runbook=policy.runbook(f"pipeline.{rule}", state.pipeline),
        ),
        decision("alert_resolved", summary, now, pipeline=state.pipeline, rule=key),
    ]


__all__ = [
    "ColumnFinding",
    "PipelineResult",
    "check",
    "compare_profiles",
    "next_check",
    "observe_profile",
    "observe_run",
    "observe_usage",
    "on_edges",
]
