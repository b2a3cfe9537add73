"""Serving capacity from a predicted QPS, and whether a traffic step fits the serving pool. Pure.

```
estimate(CapacityInputs) -> CapacityEstimate     # replicas, CPU, GPU, memory, and assumptions
guard_step(inputs, from_percent, to_percent, free) -> StepGuard   # fits, hold or no_data
observations_from_metrics(events, qps_name, latency_name) -> [ThroughputObservation]
```

The per-replica throughput is, in this order: given; measured (the 90th percentile of the
per-replica rates observed with the latency within the SLO, from metric events); or from
Little's law (concurrency per replica over the latency). Replicas are sized at
`target_utilisation` of that throughput:

- the baseline carries the whole predicted QPS for the whole rollout (a rollback must be
  instant: the baseline is not shrunk while the canary grows);
- the canary carries the plan's largest canary share of it (at least one replica);
- each running experiment carries its share (at least one replica each).

Every estimate lists these assumptions in words, with the numbers it used.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from schemas import MetricReported

RESOURCES = ("cpu", "gpu", "memory_gb")


@dataclass(frozen=True)
class ReplicaSize:
    """What one serving replica requests."""

    cpu: float = 0.0
    gpu: float = 0.0
    memory_gb: float = 0.0

    def of(self, resource: str) -> float:
        return float(getattr(self, resource))


@dataclass(frozen=True)
class ThroughputObservation:
    """One replica's measured rate (requests per second) and its latency at that rate."""

    qps: float
    latency_ms: float


@dataclass(frozen=True)
class CapacityInputs:
    predicted_qps: float
    replica: ReplicaSize
    per_replica_qps: float | None = None
    observations: Sequence[ThroughputObservation] = ()
    latency_slo_ms: float | None = None
    #: Little's law, when neither a throughput nor observations are given
    concurrency: float | None = None
    latency_ms: float | None = None
    target_utilisation: float = 0.7
    #: the plan's largest canary share (0 to 1) and the running experiments' shares
    canary_share: float = 0.0
    experiment_shares: Sequence[float] = ()
    min_replicas: int = 1

    def problems(self) -> list[str]:
        found = []
        if not self.predicted_qps >= 0:
            found.append(f"predicted_qps must be at least 0, got {self.predicted_qps}")
        if not 0 < self.target_utilisation <= 1:
            found.append(f"target_utilisation must be in (0, 1], got {self.target_utilisation}")
        shares = [self.canary_share, *self.experiment_shares]
        if any(not 0 <= s <= 1 for s in shares):
            found.append(f"shares must be in [0, 1], got {shares}")
        if self.per_replica_qps is not None and not self.per_replica_qps > 0:
            found.append(f"per_replica_qps must be above 0, got {self.per_replica_qps}")
        if self.min_replicas < 0:
            found.append(f"min_replicas must be at least 0, got {self.min_replicas}")
        return found


@dataclass(frozen=True)
class CapacityEstimate:
    outcome: Literal["ok", "no_data", "invalid"]
    reason: str
    replicas: int = 0
    resources: Mapping[str, float] = field(default_factory=dict)
    per_replica_qps: float | None = None
    breakdown: Mapping[str, int] = field(default_factory=dict)
    assumptions: Sequence[str] = ()
    evidence: Mapping[str, Any] = field(default_factory=dict)


def observations_from_metrics(
    events: Sequence[MetricReported],
    qps_name: str = "replica_qps",
    latency_name: str = "latency_p99_ms",
) -> list[ThroughputObservation]:
    """Pair each per-replica rate with the latency reported for the same deployment, cohort
    and attributes (in the order they were reported)."""
    rates: dict[tuple[Any, ...], list[float]] = {}
    latencies: dict[tuple[Any, ...], list[float]] = {}
    for event in events:
        key = (event.deployment_id, event.cohort, tuple(sorted(event.attributes.items())))
        if event.name == qps_name:
            rates.setdefault(key, []).append(event.value)
        elif event.name == latency_name:
            latencies.setdefault(key, []).append(event.value)
    found = []
    for key in sorted(rates, key=str):
        for qps, latency in zip(rates[key], latencies.get(key, []), strict=False):
            found.append(ThroughputObservation(qps=qps, latency_ms=latency))
    return found


def _throughput(inputs: CapacityInputs) -> tuple[float | None, str]:
    if inputs.per_replica_qps is not None:
        return inputs.per_replica_qps, f"{inputs.per_replica_qps:g} req/s per replica, as given"
    if inputs.observations:
        slo = inputs.latency_slo_ms
        within = sorted(o.qps for o in inputs.observations if slo is None or o.latency_ms <= slo)
        if within:
            value = within[min(len(within) - 1, math.ceil(0.9 * len(within)) - 1)]
            where = f"within the {slo:g} ms SLO" if slo is not None else "(no latency SLO given)"
            return value, (
                f"{value:g} req/s per replica, measured: the 90th percentile of "
                f"{len(within)} of {len(inputs.observations)} observed rates {where}; if the "
                "replicas never ran near saturation this underestimates them (more replicas)"
            )
        return None, f"none of {len(inputs.observations)} observations met the {slo:g} ms SLO"
    if inputs.concurrency and inputs.latency_ms:
        value = inputs.concurrency * 1000.0 / inputs.latency_ms
        return value, (
            f"{value:g} req/s per replica by Little's law: {inputs.concurrency:g} requests in "
            f"flight at {inputs.latency_ms:g} ms each (the latency holds at full concurrency)"
        )
    return None, "no throughput: give one, observations, or a concurrency and a latency"


def _replicas(qps: float, throughput: float, utilisation: float, least: int) -> int:
    return max(math.ceil(qps / (throughput * utilisation) - 1e-9), least)


def estimate(inputs: CapacityInputs) -> CapacityEstimate:
    """Replicas and resources for `inputs.predicted_qps` (see the module docstring)."""
    problems = inputs.problems()
    if problems:
        return CapacityEstimate("invalid", "; ".join(problems))
    throughput, how = _throughput(inputs)
    if throughput is None:
        return CapacityEstimate("no_data", f"no estimate: {how}", assumptions=(how,))
    q, u = inputs.predicted_qps, inputs.target_utilisation
    breakdown = {"baseline": _replicas(q, throughput, u, inputs.min_replicas)}
    if inputs.canary_share > 0:
        breakdown["canary"] = _replicas(inputs.canary_share * q, throughput, u, 1)
    for i, share in enumerate(inputs.experiment_shares):
        if share > 0:
            breakdown[f"experiment {i + 1}"] = _replicas(share * q, throughput, u, 1)
    replicas = sum(breakdown.values())
    resources = {r: round(replicas * inputs.replica.of(r), 6) for r in RESOURCES}
    assumptions = [
        how,
        f"replicas run at {100 * u:g} % of that throughput (the rest absorbs bursts and a lost "
        "replica)",
        f"the baseline carries all {q:g} req/s for the whole rollout (a rollback is instant): "
        f"{breakdown['baseline']} replicas",
    ]
    if "canary" in breakdown:
        assumptions.append(
            f"the canary carries the plan's largest share, {100 * inputs.canary_share:g} % "
            f"({inputs.canary_share * q:g} req/s): {breakdown['canary']} replicas"
        )
    if inputs.experiment_shares:
        assumptions.append(
            "each running experiment carries its share on replicas of its own: "
            + ", ".join(f"{100 * s:g} %" for s in inputs.experiment_shares)
        )
    assumptions.append(
        f"each replica requests {inputs.replica.cpu:g} CPU, {inputs.replica.gpu:g} GPU, "
        f"{inputs.replica.memory_gb:g} GB; the predicted QPS is the peak to carry"
    )
    reason = (
        f"{replicas} replicas ({', '.join(f'{k} {v}' for k, v in breakdown.items())}) for "
        f"{q:g} req/s at {throughput:g} req/s per replica: "
        + ", ".join(f"{resources[r]:g} {r}" for r in RESOURCES)
    )
    return CapacityEstimate(
        "ok",
        reason,
        replicas=replicas,
        resources=resources,
        per_replica_qps=throughput,
        breakdown=breakdown,
        assumptions=tuple(assumptions),
        evidence={
            "predicted_qps": q,
            "per_replica_qps": throughput,
            "target_utilisation": u,
            "canary_share": inputs.canary_share,
            "experiment_shares": list(inputs.experiment_shares),
        },
    )


@dataclass(frozen=True)
class StepGuard:
    """Whether a traffic step can be carried: `fits`, `hold` (with what is missing) or
    `no_data`."""

    outcome: Literal["fits", "hold", "no_data"]
    reason: str
    needed: Mapping[str, float] = field(default_factory=dict)
    free: Mapping[str, float] = field(default_factory=dict)
    missing: Mapping[str, float] = field(default_factory=dict)
    evidence: Mapping[str, Any] = field(default_factory=dict)


def guard_step(
    inputs: CapacityInputs,
    from_percent: float,
    to_percent: float,
    free: Mapping[str, float],
) -> StepGuard:
    """Whether moving the canary from `from_percent` to `to_percent` of the predicted traffic
    fits in the serving pool's `free` capacity (resource -> free amount: cpu, gpu,
    memory_gb). The baseline keeps its size (a rollback stays instant): the step needs the
    canary's extra replicas."""
    throughput, how = _throughput(inputs)
    if throughput is None or inputs.problems():
        why = how if throughput is None else "; ".join(inputs.problems())
        return StepGuard("no_data", f"the step to {to_percent:g} % is not judged: {why}")
    q, u = inputs.predicted_qps, inputs.target_utilisation

    def canary(percent: float) -> int:
        return _replicas(percent / 100.0 * q, throughput, u, 1) if percent > 0 else 0

    extra = max(canary(to_percent) - canary(from_percent), 0)
    needed = {r: extra * inputs.replica.of(r) for r in RESOURCES if inputs.replica.of(r) > 0}
    evidence = {
        "from_percent": from_percent,
        "to_percent": to_percent,
        "extra_replicas": extra,
        "per_replica_qps": throughput,
    }
    unknown = sorted(r for r in needed if needed[r] > 0 and r not in free)
    if unknown:
        return StepGuard(
            "no_data",
            f"the step to {to_percent:g} % needs {extra} more canary replicas, and the free "
            f"{', '.join(unknown)} of the serving pool is not known",
            needed=needed,
            free=dict(free),
            evidence=evidence,
        )
    missing = {r: round(needed[r] - free[r], 6) for r in needed if needed[r] > free[r] + 1e-9}
    if missing:
        return StepGuard(
            "hold",
            f"the step to {to_percent:g} % needs {extra} more canary replicas: "
            + ", ".join(f"{needed[r]:g} {r} where {free[r]:g} are free" for r in missing)
            + "; missing "
            + ", ".join(f"{v:g} {r}" for r, v in missing.items()),
            needed=needed,
            free=dict(free),
            missing=missing,
            evidence=evidence,
        )
    return StepGuard(
        "fits",
        f"the step to {to_percent:g} % needs {extra} more canary replicas ("
        + (", ".join(f"{v:g} {r}" for r, v in needed.items()) or "nothing")
        + "), within the free capacity",
        needed=needed,
        free=dict(free),
        evidence=evidence,
    )


__all__ = [
    "CapacityEstimate",
    "CapacityInputs",
    "ReplicaSize",
    "StepGuard",
    "ThroughputObservation",
    "estimate",
    "guard_step",
    "observations_from_metrics",
]
