"""Estimated accuracy: a likely quality drop before the labels confirm it.

Confidence-based estimation (controller.core.stats.estimate): each cohort's accuracy is
estimated from its own scores (its numeric `prediction`, read as the probability of the
positive class), calibrated on the baseline's labelled pairs (the label join's). The rule fails
when the baseline's estimate exceeds the canary's by more than `tolerance` beyond `z` standard
deviations of their difference.

It is an estimate, not a test with a false alarm rate: it assumes the canary's scores mean what
the baseline's mean (the same model family, or inputs shifted towards the threshold), and a
model that is confidently wrong is not seen by its scores. Use it as a dry-run rule
(`dry_run: true`): its verdicts and evidence go into the decisions, so an SRE sees a likely
drop minutes before the `quality` rule's labels confirm it; it spends none of the alpha budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from controller.core.detectors.base import (
    EvaluationContext,
    JudgedFromData,
    Params,
    ParamsBase,
    check_positive,
    parse_params,
)
from controller.core.stats.cohort import PREDICTION, CohortStats
from controller.core.stats.estimate import calibration_table, estimate_accuracy, score_histogram
from controller.core.verdict import EvidenceValue, Verdict

NAME = "estimated_accuracy"


@dataclass(frozen=True)
class EstimatedAccuracyParams(ParamsBase):
    tolerance: float = 0.02
    z: float = 2.0
    threshold: float = 0.5
    min_calibration_pairs: int = 200
    min_samples: int = 200

    def check(self) -> list[str]:
        problems = check_positive(
            z=self.z,
            min_calibration_pairs=self.min_calibration_pairs,
            min_samples=self.min_samples,
        )
        if self.tolerance < 0:
            problems.append(f"tolerance must not be negative, got {self.tolerance}")
        if not 0.0 <= self.threshold <= 1.0:
            problems.append(f"threshold must be in [0, 1], got {self.threshold}")
        return problems


def judge_estimated_accuracy(
    baseline: CohortStats,
    canary: CohortStats,
    params: EstimatedAccuracyParams,
    context: EvaluationContext,
) -> Verdict:
    labelled = context.labelled.get("baseline")
    quality = None if labelled is None else labelled.binary
    pairs = 0 if quality is None else quality.scored
    evidence: dict[str, EvidenceValue] = {"calibration_pairs": pairs}
    if quality is None or pairs < params.min_calibration_pairs:
        return Verdict.no_data(
            NAME,
            f"{pairs} labelled baseline scores to calibrate on, need "
            f"{params.min_calibration_pairs}",
            evidence,
        )
    scores = {}
    for cohort, stats in (("baseline", baseline), ("canary", canary)):
        found = stats.predictions.get(PREDICTION)
        scores[cohort] = found.numbers if found is not None else None
    counts = {c: (s.count if s is not None else 0) for c, s in scores.items()}
    if min(counts.values()) < params.min_samples:
        return Verdict.no_data(
            NAME,
            f"too few scores to estimate from (canary {counts['canary']}, baseline "
            f"{counts['baseline']}, need {params.min_samples} each)",
            evidence,
        )
    table = calibration_table(quality)
    estimates = {}
    for cohort, sketch in scores.items():
        if sketch is None:  # unreachable: counted above
            continue
        estimate = estimate_accuracy(
            score_histogram(sketch, len(table)), table, threshold=params.threshold, z=params.z
        )
        if estimate is None:
            return Verdict.no_data(NAME, f"no {cohort} scores to estimate from", evidence)
        estimates[cohort] = estimate
        evidence[f"{cohort}_estimated_accuracy"] = round(estimate.accuracy, 6)
        evidence[f"{cohort}_estimate_sd"] = round(estimate.sd, 6)
    drop = estimates["baseline"].accuracy - estimates["canary"].accuracy
    sd = math.hypot(estimates["baseline"].sd, estimates["canary"].sd)
    evidence.update(estimated_drop=round(drop, 6), drop_sd=round(sd, 6))
    versus = (
        f"estimated accuracy canary {estimates['canary'].accuracy:.3f} vs baseline "
        f"{estimates['baseline'].accuracy:.3f} (from their scores, calibrated on {pairs} "
        "labelled baseline requests)"
    )
    if drop - params.z * sd > params.tolerance:
        return Verdict.failed(
            NAME,
            f"{versus}: a likely drop of {drop:.3f} (> {params.tolerance:g} beyond "
            f"{params.z:g} sd = {sd:.3f})",
            evidence,
        )
    return Verdict.passed(NAME, f"{versus}: no likely drop beyond {params.tolerance:g}", evidence)


@dataclass(frozen=True)
class EstimatedAccuracy(JudgedFromData):
    """The `estimated_accuracy` detector (see the module docstring)."""

    params: EstimatedAccuracyParams = EstimatedAccuracyParams()
    name: ClassVar[str] = NAME

    @classmethod
    def from_params(cls, params: Params | None = None) -> EstimatedAccuracy:
        return cls(parse_params(EstimatedAccuracyParams, NAME, params))

    def spends_alpha(self) -> bool:
        """No: an estimate, not a test with a false alarm rate."""
        return False

    def evaluate(
        self, baseline: CohortStats, canary: CohortStats, context: EvaluationContext
    ) -> Verdict:
        return judge_estimated_accuracy(baseline, canary, self.params, context)
