"""The pipelines policy: how quota pools, training runs and datasets are judged.

Plain data, YAML or JSON (controller/policies/pipelines.yaml is the packaged default), validated
when it loads like the monitoring policy: an unknown or ill-typed field, an out-of-range value,
are refused with every problem named in one `PolicyError`.

**The stated false alarm rates.**
- Quota growth (`quota.growth`): a CUSUM per pool and pipeline, its alarm level
  `h = ln(per_rule_days * 86400 / sample_s * pipelines)`: at most one false alarm per pool
  per `per_rule_days` on average (Lorden), when the pipelines' usage increments follow their
  own history (a Student t with `tail_df` degrees of freedom around its median, MAD scale).
- Training duration and failures: a CUSUM per pipeline, `h = ln(per_rule_runs)`: at most one
  false alarm per `per_rule_runs` runs of a pipeline on average, under the same assumptions
  on its log-durations (duration) or independent runs at the history's failure rate (failures).
- Datasets: each comparison (a feature or the label, of one profile against its reference) is
  a chi-square test at `data_alpha` divided by the number of columns compared (Bonferroni),
  and must also exceed the tolerance: at most `data_alpha` of the profiles of an unchanged
  distribution alarm, if the rows of a profile are independent.
The near-limit, fair-share and exhaustion rules are levels and forecasts on reported gauges,
not tests: they fire when what was reported says so (for `for_s`), and claim no error rate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from controller.core.monitor.policy import validation_problems
from controller.core.policy import PolicyError

Severity = Literal["info", "warning", "critical"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class FalseAlarms(_Strict):
    per_rule_days: float = Field(30.0, gt=0)
    per_rule_runs: float = Field(200.0, gt=1)
    data_alpha: float = Field(1e-4, gt=0, lt=0.5)


class GrowthRule(_Strict):
    """A pipeline whose usage grows against its own history (the runaway, the slow leak)."""

    #: degrees of freedom of the Student t the standardised increments are judged with
    tail_df: float = Field(5.0, ge=1, le=1000)
    #: the shifts (in robust standard deviations of an increment) the alternative mixes
    shifts: list[float] = Field(default_factory=lambda: [0.5, 1, 2, 4, 8, 16, 32, 64])
    #: increments the median and MAD are taken from (the newest), and at least this many
    history: int = Field(240, ge=8, le=4096)
    min_history: int = Field(30, ge=4)
    #: increments join the history this many samples late (a change must not pass for noise)
    lag: int = Field(30, ge=0, le=1024)
    #: the least scale of an increment, as a share of the pool's limit (a constant gauge)
    min_step_share: float = Field(0.001, gt=0, lt=1)
    severity: Severity = "warning"
    throttle: bool = True


class ExhaustionRule(_Strict):
    """The pool's usage rate (Theil-Sen slope over `window_s`) and the time to exhaustion."""

    window_s: float = Field(3600.0, gt=0)
    horizon_s: float = Field(4 * 3600.0, gt=0)
    #: the trend must be significant (Mann-Kendall, one-sided) at this level
    trend_alpha: float = Field(0.001, gt=0, lt=0.5)
    min_points: int = Field(10, ge=4)
    severity: Severity = "warning"


class FairShareRule(_Strict):
    """A pipeline above its fair share (weighted, guarantees first) while another waits."""

    #: above its share by more than this fraction of it
    tolerance: float = Field(0.1, ge=0)
    #: for at least this long
    for_s: float = Field(300.0, ge=0)
    severity: Severity = "warning"
    throttle: bool = True


class QuotaSettings(_Strict):
    #: pools are judged on this grid (seconds since the epoch); one gauge sample per pipeline
    sample_s: float = Field(60.0, gt=0)
    #: a pipeline that reported nothing for this long ages out of its pool
    stale_s: float = Field(900.0, gt=0)
    #: a near-limit alert resolves this far below its level (a share of the limit)
    hysteresis: float = Field(0.02, ge=0, lt=0.5)
    growth: GrowthRule = GrowthRule()
    exhaustion: ExhaustionRule = ExhaustionRule()
    fair_share: FairShareRule = FairShareRule()


class DurationRule(_Strict):
    tail_df: float = Field(5.0, ge=1, le=1000)
    #: the ratios of duration the alternative mixes (a run `r` times as long as usual)
    ratios: list[float] = Field(default_factory=lambda: [1.5, 2.0, 3.0, 5.0, 10.0])
    history: int = Field(50, ge=4, le=1024)
    min_history: int = Field(10, ge=3)
    #: the least scale of log-duration (a pipeline of clockwork regularity: 2 % jitter)
    min_scale: float = Field(0.02, gt=0)
    severity: Severity = "warning"


class FailureRule(_Strict):
    #: this many failures in a row fire at once (critical)
    streak: int = Field(3, ge=1)
    #: the failure rate's alternative: `ratio` times the history's, at least `min_rate` above
    ratio: float = Field(3.0, gt=1)
    min_rate: float = Field(0.1, gt=0, lt=1)
    #: runs of history the failure rate is learned from (exponentially weighted)
    half_life_runs: float = Field(50.0, gt=0)
    min_history: int = Field(10, ge=1)
    #: outcomes join the history this many runs late (a rising rate must not pass for normal)
    lag: int = Field(20, ge=0, le=1024)
    severity: Severity = "warning"


class IdleRule(_Strict):
    """A training pipeline holding quota with no run live."""

    for_s: float = Field(3600.0, gt=0)
    severity: Severity = "info"


class TrainingSettings(_Strict):
    duration: DurationRule = DurationRule()
    failures: FailureRule = FailureRule()
    idle: IdleRule = IdleRule()
    #: live runs kept per pipeline (a run that never ends is dropped after this many newer)
    max_live_runs: int = Field(16, ge=1, le=1024)


class DataSettings(_Strict):
    #: numeric columns: JS divergence (bits) on the reference's bins beyond which a column differs
    tolerance_js: float = Field(0.1, gt=0, lt=1)
    #: categorical columns: the largest difference of one category's share
    tolerance_linf: float = Field(0.2, gt=0, lt=1)
    #: missing and invalid shares: `ratio` times the reference's and at least `min_rate` above
    ratio: float = Field(2.0, gt=1)
    min_rate: float = Field(0.02, gt=0, lt=1)
    #: profiles with fewer rows are not judged
    min_rows: int = Field(30, ge=1)
    severity: Severity = "warning"


class AlertSettings(_Strict):
    runbook_url: str | None = "https://runbooks.example/pipelines/{rule}?key={key}"
    #: a CUSUM alert resolves when the data favour the history this much
    resolve_odds: float = Field(100.0, gt=1)


class _PolicyModel(_Strict):
    version: Literal[1] = 1
    name: str = Field("pipelines", min_length=1, max_length=128)
    description: str = ""
    false_alarms: FalseAlarms = FalseAlarms()
    quota: QuotaSettings = QuotaSettings()
    training: TrainingSettings = TrainingSettings()
    data: DataSettings = DataSettings()
    alerts: AlertSettings = AlertSettings()

    @model_validator(mode="after")
    def _coherent(self) -> _PolicyModel:
        problems = []
        growth, duration = self.quota.growth, self.training.duration
        if not growth.shifts or any(s <= 0 for s in growth.shifts):
            problems.append("quota.growth.shifts: at least one shift, each above 0")
        if growth.min_history > growth.history:
            problems.append("quota.growth.min_history must not exceed quota.growth.history")
        if not duration.ratios or any(r <= 1 for r in duration.ratios):
            problems.append("training.duration.ratios: at least one ratio, each above 1")
        if duration.min_history > duration.history:
            problems.append(
                "training.duration.min_history must not exceed training.duration.history"
            )
        if self.quota.exhaustion.window_s < self.quota.sample_s * self.quota.exhaustion.min_points:
            problems.append(
                "quota.exhaustion.window_s must hold min_points samples of quota.sample_s"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self


@dataclass(frozen=True)
class PipelinesPolicy:
    """A validated pipelines policy (see the module docstring)."""

    model: _PolicyModel
    raw: Mapping[str, Any] = field(compare=False, repr=False, default_factory=dict)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> PipelinesPolicy:
        try:
            model = _PolicyModel.model_validate(dict(data))
        except ValidationError as exc:
            raise PolicyError("pipelines policy", validation_problems(exc)) from None
        return cls(model, dict(data))

    @classmethod
    def default(cls) -> PipelinesPolicy:
        """Every setting at its default (the packaged YAML states the same values)."""
        return cls.from_mapping({"name": "default-pipelines"})

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def quota(self) -> QuotaSettings:
        return self.model.quota

    @property
    def training(self) -> TrainingSettings:
        return self.model.training

    @property
    def data(self) -> DataSettings:
        return self.model.data

    def growth_threshold(self, pipelines: int) -> float:
        """h of a pool's growth CUSUMs: one false alarm per pool per `per_rule_days`."""
        checks = self.model.false_alarms.per_rule_days * 86400.0 / self.quota.sample_s
        return math.log(checks * max(pipelines, 1))

    def run_threshold(self) -> float:
        """h of a pipeline's run CUSUMs: one false alarm per `per_rule_runs` runs."""
        return math.log(self.model.false_alarms.per_rule_runs)

    def resolve_threshold(self) -> float:
        return math.log(self.model.alerts.resolve_odds)

    @property
    def data_alpha(self) -> float:
        return self.model.false_alarms.data_alpha

    def runbook(self, rule: str, key: str) -> str | None:
        template = self.model.alerts.runbook_url
        if template is None:
            return None
        try:
            return template.format(rule=rule, key=key)
        except (KeyError, IndexError, ValueError):
            return template

    def to_dict(self) -> dict[str, Any]:
        return self.model.model_dump(mode="json")


__all__ = ["PipelinesPolicy", "Severity"]
