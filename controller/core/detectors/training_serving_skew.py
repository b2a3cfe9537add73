"""Training-serving skew: does the traffic the canary serves look like its training data?

For each feature with a profile in `context.training_profile` (and the prediction, with
`context.prediction_profile`), the canary's serving distribution is compared with the profile
once it has `min_samples` values:

- numeric kinds (continuous, integer, binary; "numeric" is read as continuous): the serving
  values are counted on the profile's own bins (below the first edge, `[e[i-1], e[i])`, at or
  above the last) and the Jensen-Shannon divergence (bits) is compared with `js_threshold`
  (0.1). The counts are exact while the cohort has at most `StatsConfig.max_exact_values` (256)
  distinct values of the feature (`ExactCounts`: a binary, an integer or a half-step feature,
  values on an edge); past that, the sketch is re-binned onto the edges (`sketch_on_edges`),
  which the profile's edges allow for a continuous feature (at least 2.5 sketch buckets apart,
  `schemas.events.resolvable_gap`). A feature whose values are too many to count exactly and
  whose edges are too close for the sketch (a first-version "numeric" or an integer profile)
  is not judged, and the reason says so; a binary feature with that many distinct values is not
  binary and fails. A binary feature served as booleans counts false as 0 and true as 1.
- categorical: the L-infinity distance between category shares (categories missing on one side
  count as 0) is compared with `linf_threshold` (0.3).

`threshold.<feature>` parameters override the threshold of one feature. The profile is a fixed
reference, so noise comes from the canary alone: binned JS is about chi2(bins - 1) / (8 n ln 2),
~0.005 at n = 300 with 10 bins, far below the defaults.

Both cohorts drifting alike. The baseline's distance to the same profile is computed too (once
it has `min_samples` values), and the canary's distance to the baseline on the same bins. A
feature over its threshold whose baseline is just as far off is shared drift, not the canary's
doing: when the canary's distance is at most the baseline's plus `alike_margin` (0.25) times the
threshold, and the canary is within the threshold of the baseline itself (the two moved the
same way). Shared drift alone is INCONCLUSIVE, never FAIL: the reason names both distances (the
rule's `inconclusive` setting decides whether it holds the step; by default it waits for a
person or the deadline). A feature the canary alone has moved fails as before.

A feature whose serving values are of the other kind (strings for a numeric profile) fails,
unless the baseline serves them too (shared).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

from controller.core.detectors.base import (
    EvaluationContext,
    JudgedFromData,
    Params,
    ParamsBase,
    check_positive,
    parse_params,
)
from controller.core.stats.cohort import PREDICTION, CohortStats
from controller.core.stats.distance import js_divergence, l_infinity, sketch_on_edges
from controller.core.stats.distribution import ValueDistribution
from controller.core.stats.profile import FeatureKind, FeatureProfile
from controller.core.verdict import EvidenceValue, Outcome, Verdict
from controller.errors import InvariantError
from schemas.events import resolvable_gap

NAME = "training_serving_skew"
MAX_LISTED = 5
EXACT, SKETCH = "exact", "sketch"


@dataclass(frozen=True)
class TrainingServingSkewParams(ParamsBase):
    PREFIXED: ClassVar[Mapping[str, str]] = {"thresholds": "threshold."}

    js_threshold: float = 0.1
    linf_threshold: float = 0.3
    min_samples: int = 300
    #: shared drift: the canary at most this share of the threshold further than the baseline
    alike_margin: float = 0.25
    thresholds: Mapping[str, float] = field(default_factory=dict, hash=False)

    def check(self) -> list[str]:
        return check_positive(
            js_threshold=self.js_threshold,
            linf_threshold=self.linf_threshold,
            min_samples=self.min_samples,
            alike_margin=self.alike_margin,
            **{f"threshold.{k}": v for k, v in self.thresholds.items()},
        )


class Binned(NamedTuple):
    """A cohort's values of one feature on the profile's bins (or category shares)."""

    weights: list[float]
    source: str  # EXACT or SKETCH for numbers, EXACT for categories


class Unjudgeable(NamedTuple):
    """Why a cohort's values cannot be put on the profile's bins."""

    why: str
    wrong: bool = False  # a failure in itself (a binary feature with many distinct values)


def _flags(distribution: ValueDistribution) -> tuple[int, int]:
    """Booleans served for a binary feature: (false, true) counts."""
    counts = distribution.categories.counts
    return counts.get("false", 0), counts.get("true", 0)


def matching_count(distribution: ValueDistribution, profile: FeatureProfile) -> int:
    """The values of the profile's kind (numbers, and booleans for a binary feature)."""
    if not profile.is_numeric:
        return distribution.categories.total
    if profile.kind is FeatureKind.BINARY:
        return distribution.numbers.count + sum(_flags(distribution))
    return distribution.numbers.count


def binned(distribution: ValueDistribution, profile: FeatureProfile) -> Binned | Unjudgeable:
    """The distribution on the profile's bins: exact counts while there are few distinct
    values, else the sketch where the edges allow it (see the module docstring)."""
    edges = profile.bin_edges
    if not profile.is_numeric:
        labels = sorted(set(distribution.categories.counts) | set(profile.categories))
        if distribution.categories.overflowed:
            return Unjudgeable("more categories than counted")
        return Binned([float(distribution.categories.counts.get(k, 0)) for k in labels], EXACT)
    exact = distribution.exact
    if not exact.overflowed:
        counts = exact.on_edges(edges)
        if profile.kind is FeatureKind.BINARY:
            false, true = _flags(distribution)
            counts[0 if edges == (1.0,) else 1] += false
            counts[-1] += true
        return Binned([float(c) for c in counts], EXACT)
    cap = exact.max_values
    if profile.kind is FeatureKind.BINARY:
        return Unjudgeable(f"serves more than {cap} distinct numbers for a binary feature", True)
    if profile.kind is FeatureKind.CONTINUOUS or all(
        resolvable_gap(a, b) for a, b in itertools.pairwise(edges)
    ):
        histogram = sketch_on_edges(distribution.numbers, edges)
        return Binned([float(c) for c in histogram.counts], SKETCH)
    return Unjudgeable(
        f"more than {cap} distinct values to count exactly and bin_edges closer than the "
        "sketch resolves"
    )


def profile_distance(distribution: ValueDistribution, profile: FeatureProfile) -> float | None:
    """Distance of a serving distribution to a profile: JS for numbers, L-inf for categories.

    None when the distribution has no values of the profile's kind, or cannot be binned."""
    if matching_count(distribution, profile) == 0:
        return None
    found = binned(distribution, profile)
    if isinstance(found, Unjudgeable):
        return None
    if profile.is_numeric:
        return js_divergence(found.weights, profile.proportions)
    return _category_distance(distribution, profile.categories)


def _category_distance(distribution: ValueDistribution, reference: Mapping[str, float]) -> float:
    shares = distribution.categories.proportions()
    labels = sorted(set(shares) | set(reference))
    return l_infinity([shares.get(k, 0.0) for k in labels], [reference.get(k, 0.0) for k in labels])


def _cohort_distance(
    canary: ValueDistribution, baseline: ValueDistribution, profile: FeatureProfile
) -> float | None:
    """The canary's distance to the baseline on the profile's bins (None: not both binnable)."""
    if not profile.is_numeric:
        if canary.categories.overflowed or baseline.categories.overflowed:
            return None
        return _category_distance(canary, baseline.categories.proportions())
    mine, theirs = binned(canary, profile), binned(baseline, profile)
    if isinstance(mine, Unjudgeable) or isinstance(theirs, Unjudgeable):
        return None
    return js_divergence(mine.weights, theirs.weights)


@dataclass(frozen=True)
class FeatureSkew:
    """The distance of one feature's serving distribution to its profile."""

    feature: str
    measure: str  # "JS" or "L-inf"
    distance: float | None  # None: not enough data, the wrong kind of values, or unjudgeable
    threshold: float
    samples: int
    wrong_kind: bool = False
    baseline_distance: float | None = None
    #: the canary's distance to the baseline on the same bins
    versus_baseline: float | None = None
    #: the baseline's values are of the wrong kind too
    baseline_wrong_kind: bool = False
    #: how the canary's values were binned: "exact" or "sketch"
    source: str | None = None
    #: why the canary's values could not be binned, when they could not
    unjudgeable: str | None = None
    alike_margin: float = 0.25

    @property
    def exceeded(self) -> bool:
        return self.wrong_kind or (self.distance is not None and self.distance >= self.threshold)

    @property
    def shared(self) -> bool:
        """Over its threshold, with the baseline just as far off (see the module docstring)."""
        if not self.exceeded:
            return False
        if self.wrong_kind:
            return self.baseline_wrong_kind
        if self.distance is None or self.baseline_distance is None:
            return False
        if self.versus_baseline is None or self.versus_baseline >= self.threshold:
            return False
        return self.distance <= self.baseline_distance + self.alike_margin * self.threshold

    def describe(self) -> str:
        if self.wrong_kind:
            if self.unjudgeable:
                return f"{self.feature} {self.unjudgeable}"
            return f"{self.feature} serves values of the wrong kind for its profile"
        if self.distance is None:  # only the judged and the exceeded are described
            raise InvariantError(f"{self.feature} was not judged: it has no distance to describe")
        sign = ">=" if self.exceeded else "<"
        return f"{self.feature} {self.measure} {self.distance:.3f} {sign} {self.threshold:g}"

    def describe_shared(self) -> str:
        """Both distances, for a feature that drifted alike in both cohorts."""
        if self.wrong_kind:
            return f"{self.feature} (values of the wrong kind in both cohorts)"
        return (
            f"{self.describe()}, baseline {self.measure} {self.baseline_distance or 0.0:.3f} "
            f"(canary vs baseline {self.versus_baseline or 0.0:.3f})"
        )


def feature_skew(
    name: str,
    canary: ValueDistribution | None,
    baseline: ValueDistribution | None,
    profile: FeatureProfile,
    params: TrainingServingSkewParams,
) -> FeatureSkew:
    default = params.js_threshold if profile.is_numeric else params.linf_threshold
    threshold = params.thresholds.get(name, default)
    measure = "JS" if profile.is_numeric else "L-inf"
    margin = params.alike_margin
    if canary is None:
        return FeatureSkew(name, measure, None, threshold, 0, alike_margin=margin)
    matching = matching_count(canary, profile)
    baseline_matching = 0 if baseline is None else matching_count(baseline, profile)
    baseline_wrong = (
        baseline is not None
        and baseline_matching < params.min_samples
        and baseline.count - baseline_matching >= params.min_samples
    )
    if matching < params.min_samples:
        wrong_kind = canary.count - matching >= params.min_samples
        return FeatureSkew(
            name,
            measure,
            None,
            threshold,
            matching,
            wrong_kind=wrong_kind,
            baseline_wrong_kind=baseline_wrong,
            alike_margin=margin,
        )
    found = binned(canary, profile)
    if isinstance(found, Unjudgeable):
        return FeatureSkew(
            name,
            measure,
            None,
            threshold,
            matching,
            wrong_kind=found.wrong,
            baseline_wrong_kind=found.wrong
            and baseline is not None
            and isinstance(binned(baseline, profile), Unjudgeable),
            unjudgeable=found.why,
            alike_margin=margin,
        )
    baseline_distance = versus = None
    if baseline is not None and baseline_matching >= params.min_samples:
        baseline_distance = profile_distance(baseline, profile)
        versus = _cohort_distance(canary, baseline, profile)
    return FeatureSkew(
        name,
        measure,
        profile_distance(canary, profile),
        threshold,
        matching,
        baseline_distance=baseline_distance,
        versus_baseline=versus,
        source=found.source if profile.is_numeric else None,
        alike_margin=margin,
    )


def _listed(items: list[str]) -> str:
    more = f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return ", ".join(items[:MAX_LISTED]) + more


def judge_training_serving_skew(
    baseline: CohortStats,
    canary: CohortStats,
    context: EvaluationContext,
    params: TrainingServingSkewParams,
) -> Verdict:
    jobs: list[tuple[str, ValueDistribution | None, ValueDistribution | None, FeatureProfile]]
    jobs = [
        (name, canary.features.get(name), baseline.features.get(name), profile)
        for name, profile in sorted(context.training_profile.items())
    ]
    if context.prediction_profile is not None:
        jobs.append(
            (
                PREDICTION,
                canary.predictions.get(PREDICTION),
                baseline.predictions.get(PREDICTION),
                context.prediction_profile,
            )
        )
    evidence: dict[str, EvidenceValue] = {"min_samples": params.min_samples}
    if not jobs:
        return Verdict.no_data(NAME, "no training profile to compare with", evidence)
    skews = [feature_skew(n, c, b, p, params) for n, c, b, p in jobs]
    for skew in skews:
        key = f"{skew.feature}.{skew.measure.lower()}"
        evidence[f"{skew.feature}.samples"] = skew.samples
        if skew.distance is not None:
            evidence[key] = skew.distance
        if skew.source is not None:
            evidence[f"{skew.feature}.binned"] = skew.source
        if skew.baseline_distance is not None:
            evidence[f"{skew.feature}.baseline_{skew.measure.lower()}"] = skew.baseline_distance
        if skew.versus_baseline is not None:
            evidence[f"{skew.feature}.canary_vs_baseline_{skew.measure.lower()}"] = (
                skew.versus_baseline
            )
        if skew.unjudgeable is not None:
            evidence[f"{skew.feature}.not_judged"] = skew.unjudgeable
    by_excess = sorted(
        (s for s in skews if s.exceeded),
        key=lambda s: (not s.wrong_kind, -((s.distance or 0.0) / s.threshold)),
    )
    failed = [s for s in by_excess if not s.shared]
    shared = [s for s in by_excess if s.shared]
    judged = [s for s in skews if s.distance is not None]
    alike = ""
    if shared:
        evidence["shared_drift"] = ", ".join(s.feature for s in shared)
        both = _listed([s.describe_shared() for s in shared])
        alike = (
            f"drifted alike in both cohorts (the baseline is just as far off) in "
            f"{len(shared)} of {len(skews)} fields: {both}"
        )
    if failed:
        listed = _listed([s.describe() for s in failed])
        reason = f"training-serving skew in {len(failed)} of {len(skews)} fields: {listed}"
        if alike:
            reason += f"; also {alike}"
        return Verdict(NAME, Outcome.FAIL, reason, evidence)
    if shared:
        reason = (
            f"serving traffic {alike}; not the canary's doing, but both are far from the "
            "training data"
        )
        evidence["warning"] = reason  # a warning alert, whatever the step does
        return Verdict(NAME, Outcome.INCONCLUSIVE, reason, evidence)
    waiting = [s.feature for s in skews if s.distance is None and s.unjudgeable is None]
    unjudged = [f"{s.feature} ({s.unjudgeable})" for s in skews if s.unjudgeable is not None]
    note = ""
    if waiting:
        note += f"; not judged (fewer than {params.min_samples} canary values): {_listed(waiting)}"
    if unjudged:
        note += f"; not judged: {_listed(unjudged)}"
    if not judged:
        reason = f"no field has {params.min_samples} canary values yet"
        if unjudged and not waiting:
            reason = f"no field could be judged: {_listed(unjudged)}"
        return Verdict.no_data(NAME, reason, evidence)
    worst = max(judged, key=lambda s: (s.distance or 0.0) / s.threshold)
    reason = f"{len(judged)} fields within their thresholds (closest: {worst.describe()}){note}"
    return Verdict.passed(NAME, reason, evidence)


@dataclass(frozen=True)
class TrainingServingSkew(JudgedFromData):
    """The `training_serving_skew` detector (see the module docstring)."""

    params: TrainingServingSkewParams = TrainingServingSkewParams()
    name: ClassVar[str] = NAME

    @classmethod
    def from_params(cls, params: Params | None = None) -> TrainingServingSkew:
        return cls(parse_params(TrainingServingSkewParams, NAME, params))

    def spends_alpha(self) -> bool:
        """No: distances to a fixed profile against thresholds far beyond sampling noise."""
        return False

    def evaluate(
        self, baseline: CohortStats, canary: CohortStats, context: EvaluationContext
    ) -> Verdict:
        return judge_training_serving_skew(baseline, canary, context, self.params)
