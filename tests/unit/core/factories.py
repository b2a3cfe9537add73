"""Factories for the core's tests: cohorts and samples built from a few literal numbers."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence

from controller.core.stats import CohortStats
from controller.core.stats.cohort import FeatureValue, PredictionValue


def make_cohort(
    requests: int = 0,
    errors: int = 0,
    *,
    latencies: Sequence[float] = (100.0,),
    predictions: Sequence[PredictionValue | None] | None = None,
    features: Sequence[Mapping[str, FeatureValue]] | None = None,
    start: float = 0.0,
    rate: float = 10.0,
    error_type: str = "timeout",
) -> CohortStats:
    """A cohort of `requests` requests, the first `errors` of them failed, arriving at `rate`
    req/s from `start`; latencies, predictions and features cycle through the given lists."""
    stats = CohortStats()
    for i in range(requests):
        failed = i < errors
        stats.observe(
            ok=not failed,
            latency_ms=latencies[i % len(latencies)],
            event_time=start + i / rate,
            error_type=error_type if failed else None,
            prediction=predictions[i % len(predictions)] if predictions else None,
            features=features[i % len(features)] if features else None,
        )
    return stats


def draw(n: int, seed: int, sample: Callable[[random.Random], float]) -> list[float]:
    """n seeded draws: `draw(300, seed=1, sample=lambda r: r.gauss(0, 1))`."""
    rng = random.Random(seed)
    return [sample(rng) for _ in range(n)]


def lognormal_latencies(
    n: int, seed: int, median_ms: float = 100.0, sigma: float = 0.5
) -> list[float]:
    return draw(n, seed, lambda r: r.lognormvariate(math.log(median_ms), sigma))
