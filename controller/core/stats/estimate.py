"""Quality before the labels arrive: a cohort's accuracy estimated from its own scores.

Confidence-based performance estimation. A binary classifier's score s, if calibrated, is the
probability that the label is 1: a request scored s is classified correctly with probability s
when s >= threshold, 1 - s otherwise, and a cohort's expected accuracy is the mean of that over
its scores. Scores are rarely calibrated, so the probability is read from a calibration table
instead: the share of positives among the baseline's *labelled* requests in each score bin
(`calibration_table`, from its `ClassifierQuality`'s fine score grid), with a prior worth two
pairs centred on the bin's own score (a bin with few labels keeps to what its scores say).
Then, for a cohort whose scores fall `n_b` times in bin b,

    accuracy ~ sum over b of (n_b / N) a_b,   a_b = q_b if bin b is at or above the threshold,
                                              else 1 - q_b,
    Var ~ sum over b of (n_b / N)^2 Var(q_b) + accuracy (1 - accuracy) / N,

the calibration's uncertainty (`q_b` from `m_b` labelled pairs, Beta posterior) and the
cohort's own sampling. `estimate_accuracy` returns the estimate with `z` standard deviations
either side.

What it assumes: the canary's scores mean what the baseline's mean (the same model family, or
a shift of the inputs the baseline also saw: the estimate follows a covariate shift that moves
scores towards the threshold). A model whose scores are confidently wrong is not seen by its
scores: the labels are what find it (controller.core.stats.labelled.quality_test).

Pure arithmetic on plain values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from controller.core.stats.model_quality import ClassifierQuality
from controller.core.stats.sketch import QuantileSketch

#: Score bins of the calibration table and of the cohorts' score histograms.
DEFAULT_BINS = 20
#: The calibration prior's weight, in labelled pairs per bin (centred on the bin's score).
PRIOR_PAIRS = 2.0


@dataclass(frozen=True)
class AccuracyEstimate:
    """A cohort's estimated accuracy with its uncertainty (see the module docstring)."""

    accuracy: float
    sd: float
    low: float
    high: float
    #: the cohort's scored predictions, and the labelled pairs the calibration rests on
    predictions: float
    calibration_pairs: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": round(self.accuracy, 6),
            "sd": round(self.sd, 6),
            "low": round(self.low, 6),
            "high": round(self.high, 6),
            "predictions": self.predictions,
            "calibration_pairs": self.calibration_pairs,
        }


def calibration_table(
    quality: ClassifierQuality, bins: int = DEFAULT_BINS
) -> list[tuple[int, int]]:
    """(positives, labelled pairs) per score bin of [0, 1], from the quality's fine score grid
    (its AUC bins, folded into `bins` equal-width bins)."""
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    fine = len(quality.auc_positives)
    table = [[0, 0] for _ in range(bins)]
    for i in range(fine):
        positives, negatives = quality.auc_positives[i], quality.auc_negatives[i]
        if positives or negatives:
            b = min(int((i + 0.5) / fine * bins), bins - 1)
            table[b][0] += positives
            table[b][1] += positives + negatives
    return [(p, n) for p, n in table]


def score_histogram(scores: QuantileSketch, bins: int = DEFAULT_BINS) -> list[float]:
    """A cohort's scores (a sketch of its numeric prediction) counted per bin of [0, 1];
    values outside [0, 1] fall in the nearest end bin."""
    counts = [0.0] * bins
    for bucket in scores.buckets():
        b = min(max(int(bucket.value * bins), 0), bins - 1)
        counts[b] += bucket.count
    return counts


def estimate_accuracy(
    score_counts: Sequence[float],
    calibration: Sequence[tuple[int, int]],
    *,
    threshold: float = 0.5,
    z: float = 2.0,
) -> AccuracyEstimate | None:
    """The accuracy a cohort with `score_counts` (per bin) most likely has, by the calibration
    table (see the module docstring). None without a scored prediction."""
    bins = len(score_counts)
    if bins != len(calibration) or bins == 0:
        raise ValueError("the score histogram and the calibration table need the same bins")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    total = math.fsum(score_counts)
    if total <= 0:
        return None
    accuracy = 0.0
    calibration_var = 0.0
    for b, (n, (positives, labelled)) in enumerate(zip(score_counts, calibration, strict=True)):
        if n <= 0:
            continue
        # the posterior mean of a Beta prior centred on the bin's score (a calibrated model's
        # share), worth PRIOR_PAIRS pairs: a bin with few labels keeps to its scores
        middle = (b + 0.5) / bins
        q = (positives + PRIOR_PAIRS * middle) / (labelled + PRIOR_PAIRS)
        var_q = q * (1.0 - q) / (labelled + PRIOR_PAIRS + 1.0)
        above = (b + 0.5) / bins >= threshold
        weight = n / total
        accuracy += weight * (q if above else 1.0 - q)
        calibration_var += weight * weight * var_q
    sd = math.sqrt(calibration_var + accuracy * (1.0 - accuracy) / total)
    return AccuracyEstimate(
        accuracy=accuracy,
        sd=sd,
        low=max(0.0, accuracy - z * sd),
        high=min(1.0, accuracy + z * sd),
        predictions=total,
        calibration_pairs=sum(n for _, n in calibration),
    )


__all__ = [
    "DEFAULT_BINS",
    "AccuracyEstimate",
    "calibration_table",
    "estimate_accuracy",
    "score_histogram",
]
