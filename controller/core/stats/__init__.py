"""Mergeable statistics of a rollout's cohorts, and the tests and distances computed on them.

Every statistic is a plain value: mutable `add` / `observe` on the hot path, pure `merged`
(neither input changes), `to_dict` / `from_dict` with JSON-able values, and `==`.
"""

from controller.core.stats.categorical import CategoricalCounts
from controller.core.stats.cohort import PREDICTION, CohortStats, Observation
from controller.core.stats.distance import (
    chi_square_homogeneity,
    common_bins,
    js_divergence,
    l_infinity,
    psi,
)
from controller.core.stats.distribution import StatsConfig, ValueDistribution
from controller.core.stats.errors import IncompatibleStatsError
from controller.core.stats.exact import ExactCounts
from controller.core.stats.histogram import NumericHistogram
from controller.core.stats.profile import FeatureKind, FeatureProfile, InvalidProfileError
from controller.core.stats.quality import FieldQuality
from controller.core.stats.sequential import (
    DEFAULT_ODDS_RATIOS,
    SequentialTest,
    bernoulli_test,
    share_test,
    split_alpha,
)
from controller.core.stats.sketch import LatencySketch, QuantileSketch

__all__ = [
    "DEFAULT_ODDS_RATIOS",
    "PREDICTION",
    "CategoricalCounts",
    "CohortStats",
    "ExactCounts",
    "FeatureKind",
    "FeatureProfile",
    "FieldQuality",
    "IncompatibleStatsError",
    "InvalidProfileError",
    "LatencySketch",
    "NumericHistogram",
    "Observation",
    "QuantileSketch",
    "SequentialTest",
    "StatsConfig",
    "ValueDistribution",
    "bernoulli_test",
    "chi_square_homogeneity",
    "common_bins",
    "js_divergence",
    "l_infinity",
    "psi",
    "share_test",
    "split_alpha",
]
