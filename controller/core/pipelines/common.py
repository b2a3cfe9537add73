"""What the pipelines core's parts share: results, outputs with content ids, robust statistics.

Pure arithmetic on plain values and builders of wire objects; no clock (time is an argument).
"""

from __future__ import annotations

import hashlib
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from schemas import Alert, PipelineDecision, PipelineThrottle, Severity

PipelinesOutput = Alert | PipelineDecision | PipelineThrottle
S = TypeVar("S")

#: MAD of the standard normal: a MAD divided by it estimates a standard deviation
MAD_NORMAL = 0.6744897501960817
#: a standard normal's standard deviation over its mean absolute deviation, sqrt(pi / 2)
MEAN_AD_NORMAL = 1.2533141373155001


@dataclass
class PipelinesResult(Generic[S]):
    """A state after an input or a check, what to publish, and why an input was refused."""

    state: S | None
    outputs: list[PipelinesOutput] = field(default_factory=list)
    #: why a configuration event cannot apply (answered with a dead letter)
    refusal: str | None = None


def at(now: float) -> datetime:
    return datetime.fromtimestamp(now, UTC)


def clock(now: float) -> str:
    return at(now).strftime("%H:%M:%S")


def content_id(prefix: str, *parts: object) -> str:
    """An output's id: a function of what it says (as the monitors': a state written seldom
    must not give a later, different output an id already published)."""
    material = "\x1f".join((prefix, *map(str, parts)))
    return f"{prefix}-{hashlib.sha256(material.encode()).hexdigest()[:16]}"


def ident(name: str) -> str:
    """A name as an identifier (no blanks at either end)."""
    return name.strip() or "-"


def decision(
    action: str,
    reason: str,
    now: float,
    *,
    pool: str | None = None,
    pipeline: str | None = None,
    rule: str | None = None,
    evidence: Mapping[str, Any] | None = None,
) -> PipelineDecision:
    return PipelineDecision(
        decision_id=content_id("pip", pool, pipeline, action, rule, round(now * 1000), reason),
        pool=pool,
        pipeline=None if pipeline is None else ident(pipeline),
        action=action,
        rule=rule,
        reason=reason[:4096],
        evidence=dict(evidence or {}),
        at=at(now),
    )


def alert(
    *,
    key: str,
    dedup: str,
    kind: str,
    status: str,
    severity: str,
    subject: str,
    summary: str,
    evidence: Mapping[str, Any],
    now: float,
    runbook: str | None,
) -> Alert:
    """An alert keyed by `key` (its record key: the pool or the pipeline) and deduplicated by
    `dedup` (which names the pipeline it is about)."""
    return Alert(
        alert_id=content_id("pip-alert", dedup, status, round(now * 1000), summary),
        status=status,
        severity=Severity(severity),
        kind=kind,
        deployment_id=ident(key),
        subject=subject[:256],
        summary=summary[:4096],
        evidence=dict(evidence),
        runbook_url=runbook,
        dedup_key=ident(dedup[:256]),
        at=at(now),
    )


def throttle(
    *,
    pipeline: str,
    pool: str,
    resource: str,
    unit: str,
    action: str,
    limit: float | None,
    reason: str,
    evidence: Mapping[str, Any],
    now: float,
) -> PipelineThrottle:
    return PipelineThrottle(
        command_id=content_id("thr", pool, pipeline, action, round(now * 1000), reason),
        pipeline=ident(pipeline),
        pool=pool,
        resource=resource,
        action=action,
        limit=limit,
        unit=unit,
        reason=reason[:4096],
        evidence=dict(evidence),
        issued_at=at(now),
    )


# ---- robust statistics ----------------------------------------------------------------------


def median_mad(values: Sequence[float]) -> tuple[float, float]:
    """The median and the median absolute deviation (0 for fewer than two values)."""
    if not values:
        return 0.0, 0.0
    middle = statistics.median(values)
    if len(values) < 2:
        return middle, 0.0
    return middle, statistics.median(abs(v - middle) for v in values)


def robust_scale(values: Sequence[float], middle: float, mad: float) -> float:
    """A standard deviation estimated robustly: the MAD's, or, when more than half the values
    are equal (a gauge of whole GPUs that mostly stays put: MAD 0), the mean absolute
    deviation's, whichever is larger (both consistent for a normal)."""
    if not values:
        return 0.0
    mean_ad = math.fsum(abs(v - middle) for v in values) / len(values)
    return max(mad / MAD_NORMAL, mean_ad * MEAN_AD_NORMAL)


def t_log_density(z: float, df: float) -> float:
    """log of Student's t density at z, up to its constant (which cancels in a ratio)."""
    return -(df + 1.0) / 2.0 * math.log1p(z * z / df)


def t_mixture_llr(z: float, shifts: Sequence[float], df: float) -> float:
    """LLR of a standardised value `z` under an equal mixture of t(df) shifted up by each of
    `shifts`, against t(df) centred at 0. A mixture of likelihood ratios is a likelihood
    ratio (of the mixture density), so a CUSUM of it keeps Lorden's bound; each term is
    bounded in z, so one outlier of a heavy tail adds bounded evidence."""
    base = t_log_density(z, df)
    terms = [t_log_density(z - d, df) - base for d in shifts]
    top = max(terms)
    return top + math.log(math.fsum(math.exp(t - top) for t in terms) / len(terms))


def theil_sen(points: Sequence[Sequence[float]]) -> float | None:
    """The median of the pairwise slopes of (t, y) points (None: fewer than two times)."""
    slopes = [
        (b[1] - a[1]) / (b[0] - a[0])
        for i, a in enumerate(points)
        for b in points[i + 1 :]
        if b[0] != a[0]
    ]
    return statistics.median(slopes) if slopes else None


def theil_sen_lower(points: Sequence[Sequence[float]], alpha: float) -> float | None:
    """A one-sided lower confidence bound at level `alpha` of the Theil-Sen slope (Sen, 1968:
    the pairwise slope of rank (N - C) / 2, C = z(1 - alpha) times the standard deviation of
    Mann and Kendall's S); None with fewer than three points."""
    slopes = sorted(
        (b[1] - a[1]) / (b[0] - a[0])
        for i, a in enumerate(points)
        for b in points[i + 1 :]
        if b[0] != a[0]
    )
    n = len(points)
    if n < 3 or not slopes:
        return None
    c = statistics.NormalDist().inv_cdf(1.0 - alpha) * math.sqrt(n * (n - 1) * (2 * n + 5) / 18.0)
    rank = math.floor((len(slopes) - c) / 2.0)
    return slopes[rank] if rank >= 0 else slopes[0]


def mann_kendall_p(values: Sequence[float]) -> float:
    """One-sided p-value of Mann and Kendall's test for an upward trend (normal approximation
    with continuity correction; ties count 0)."""
    n = len(values)
    if n < 3:
        return 1.0
    s = sum((b > a) - (b < a) for i, a in enumerate(values) for b in values[i + 1 :])
    var = n * (n - 1) * (2 * n + 5) / 18.0
    z = (s - 1) / math.sqrt(var) if s > 0 else 0.0
    return 0.5 * math.erfc(z / math.sqrt(2.0))


__all__ = [
    "MAD_NORMAL",
    "PipelinesOutput",
    "PipelinesResult",
    "alert",
    "at",
    "clock",
    "content_id",
    "decision",
    "ident",
    "mann_kendall_p",
    "median_mad",
    "robust_scale",
    "t_log_density",
    "t_mixture_llr",
    "theil_sen",
    "theil_sen_lower",
    "throttle",
]
