"""Model quality from labels: is the canary's loss worse than its baseline's?

Labels arrive late, and are joined to the predictions they belong to by request id (the label
join); each pair gives a bounded loss (controller.core.stats.labelled: the Brier term of a
score, 0/1 for a bare class, a regression's absolute error over `loss_scale`). The test is the
share test (controller.core.stats.sequential) on *loss events*, each pair's loss drawn as a
Bernoulli event from a keyed hash of its request id: H0, the canary's mean loss is at most
(1 + tolerance) times the baseline's. It is stratified by the spans of prediction time at one
traffic share, since a label judges the share its prediction was routed at, not the one in
place when it arrived. Anytime-valid: it may fail at any label, in whatever order the labels of
the spans arrive; it passes once both cohorts have `min_pairs` labelled pairs (a sequential
test never accepts: "no evidence of a worse model so far").

**Late labels.** Until both cohorts have `min_pairs`, the rule says NO_DATA, which holds the
step: a canary is not promoted on silence. With `label_deadline_s` set, once the step has run
that long without enough labels the policy's `labels_late` decides: `hold` (keep the step, the
default), `pass` (let the step pass on the other rules) or `rollback`. A canary whose labels
stop while the baseline's keep coming (`label_gap_s` and more since the canary's last label,
while the baseline's last came after it) is held too: its old labels do not promote it.

What the guarantee assumes: the router assigns requests at random, and whether and when a
request gets its label does not depend on its cohort (a canary whose labels come later is
judged on fewer pairs, which costs time, not validity, unless the late ones are the bad ones).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from controller.core.detectors.base import (
    EvaluationContext,
    Params,
    ParamsBase,
    check_alpha,
    check_positive,
    earliest,
    number,
    parse_params,
)
from controller.core.stats.cohort import CohortStats
from controller.core.stats.sequential import (
    DEFAULT_ODDS_RATIOS,
    Interval,
    stratified_share_test,
)
from controller.core.verdict import EvidenceValue, Verdict

NAME = "quality"
LATE = ("hold", "pass", "rollback")


@dataclass(frozen=True)
class QualityParams(ParamsBase):
    alpha: float = 0.01
    tolerance: float = 0.1
    min_pairs: int = 200
    labels_late: str = "hold"
    label_deadline_s: float | None = None
    label_gap_s: float = 300.0
    odds_ratios: tuple[float, ...] = DEFAULT_ODDS_RATIOS

    def check(self) -> list[str]:
        problems = check_alpha(self.alpha)
        if self.tolerance < 0:
            problems.append(f"tolerance must not be negative, got {self.tolerance}")
        problems += check_positive(
            min_pairs=self.min_pairs,
            label_deadline_s=self.label_deadline_s,
            label_gap_s=self.label_gap_s,
        )
        if self.labels_late not in LATE:
            problems.append(
                f"labels_late must be one of {', '.join(LATE)}, got {self.labels_late!r}"
            )
        if not self.odds_ratios or any(r <= 1.0 for r in self.odds_ratios):
            problems.append(f"odds_ratios must all be > 1, got {list(self.odds_ratios)}")
        return problems


def judge_quality(params: QualityParams, context: EvaluationContext) -> Verdict:
    canary = context.labelled.get("canary")
    baseline = context.labelled.get("baseline")
    strata = list(context.label_strata)
    n_c = sum(c.canary_trials for c in strata)
    n_b = sum(c.baseline_trials for c in strata)
    loss_c = None if canary is None else canary.mean_loss
    loss_b = None if baseline is None else baseline.mean_loss
    evidence: dict[str, EvidenceValue] = {
        "canary_pairs": n_c,
        "baseline_pairs": n_b,
        "canary_loss_events": sum(c.canary_events for c in strata),
        "baseline_loss_events": sum(c.baseline_events for c in strata),
        "canary_mean_loss": loss_c,
        "baseline_mean_loss": loss_b,
        "min_pairs": params.min_pairs,
        "alpha": params.alpha,
        "tolerance": params.tolerance,
    }
    for cohort, stats in (("canary", canary), ("baseline", baseline)):
        summary = {} if stats is None else stats.summary()
        for metric in ("accuracy", "log_loss", "brier", "auc", "mae", "rmse"):
            value = summary.get(metric)
            if isinstance(value, float):
                evidence[f"{cohort}_{metric}"] = value
    test = stratified_share_test(
        [Interval(i, None, c) for i, c in enumerate(strata)],
        params.tolerance,
        params.alpha,
        params.odds_ratios,
        restarts=False,
    )
    evidence.update(e_value=test.e_value, threshold=test.threshold)
    versus = (
        f"canary mean loss {_loss(loss_c)} over {n_c} labelled requests vs baseline "
        f"{_loss(loss_b)} over {n_b}"
    )
    limit = f"{1 + params.tolerance:g}x the baseline's"
    if test.rejects:
        return Verdict.failed(
            NAME,
            f"{versus}: e-value {number(test.e_value)} >= {number(test.threshold)}, evidence "
            f"that the canary's loss is more than {limit}",
            evidence,
        )
    stopped = _labels_stopped(params, context)
    if n_c >= params.min_pairs and n_b >= params.min_pairs and stopped is None:
        return Verdict.passed(
            NAME,
            f"{versus}: no evidence of more than {limit} (e-value {number(test.e_value)} < "
            f"{number(test.threshold)})",
            evidence,
        )
    waiting = stopped or (
        f"waiting for labels: canary {n_c}, baseline {n_b} of {params.min_pairs} each"
    )
    deadline = _deadline(params, context)
    if deadline is not None and context.now >= deadline:
        evidence["labels_late"] = params.labels_late
        late = f"{waiting}; the label deadline ({params.label_deadline_s:g} s) has passed"
        if params.labels_late == "pass":
            return Verdict.passed(
                NAME, f"{late}: passed by the policy (labels_late: pass)", evidence
            )
        if params.labels_late == "rollback":
            return Verdict.failed(NAME, f"{late}: the policy rolls back (labels_late)", evidence)
        return Verdict.no_data(NAME, f"{late}: holding the step (labels_late: hold)", evidence)
    return Verdict.no_data(NAME, f"{versus}: {waiting}", evidence)


def _loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _labels_stopped(params: QualityParams, context: EvaluationContext) -> str | None:
    """Why the canary's labels look stopped (None when they do not)."""
    canary, baseline = context.label_seen.get("canary"), context.label_seen.get("baseline")
    if canary is None or baseline is None:
        return None
    if baseline > canary and context.now - canary >= params.label_gap_s:
        return (
            f"the canary's labels stopped {context.now - canary:.0f} s ago while the "
            "baseline's keep coming"
        )
    return None


def _deadline(params: QualityParams, context: EvaluationContext) -> float | None:
    if params.label_deadline_s is None or context.step_started_at is None:
        return None
    return context.step_started_at + params.label_deadline_s


@dataclass(frozen=True)
class Quality:
    """The `quality` detector (see the module docstring)."""

    params: QualityParams = QualityParams()
    name: ClassVar[str] = NAME
    #: the label deadline and a canary's stopped labels are judged by the clock
    judged_from_clock: ClassVar[bool] = True

    @classmethod
    def from_params(cls, params: Params | None = None) -> Quality:
        return cls(parse_params(QualityParams, NAME, params))

    def spends_alpha(self) -> bool:
        """Yes: an anytime-valid test at `alpha`."""
        return True

    def evaluate(
        self, baseline: CohortStats, canary: CohortStats, context: EvaluationContext
    ) -> Verdict:
        return judge_quality(self.params, context)

    def wake_at(
        self, baseline: CohortStats, canary: CohortStats, context: EvaluationContext
    ) -> float | None:
        """The first time after now at which the outcome turns with no new labels: when the
        canary's labels come to count as stopped, or the label deadline; None when neither
        changes it."""
        params = self.params
        candidates = []
        deadline = _deadline(params, context)
        if deadline is not None and deadline > context.now:
            candidates.append(deadline)
        seen = context.label_seen
        last_c, last_b = seen.get("canary"), seen.get("baseline")
        if last_c is not None and last_b is not None and last_b > last_c:
            gap = earliest(lambda t: t - last_c >= params.label_gap_s, last_c + params.label_gap_s)
            if gap is not None and gap > context.now:
                candidates.append(gap)
        current = judge_quality(params, context).outcome
        for t in sorted(candidates):
            if judge_quality(params, replace(context, now=t)).outcome != current:
                return t
        return None
