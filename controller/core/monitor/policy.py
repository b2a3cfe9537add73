"""The monitoring policy: which rules watch a model in production, and how sure an alarm must be.

Plain data, YAML or JSON (controller/policies/monitoring.yaml is the packaged default), validated
when it loads like a rollout policy: an unknown detector lists the known ones, an unknown or
ill-typed parameter names its rule, a duplicate name is refused; every problem is collected into
one `PolicyError`.

```yaml
version: 1
name: default-monitoring
false_alarms: {per_rule_days: 30}   # average run length to a false alarm, per rule
reference: {learn_s: 3600, calibrate_s: 3600, min_requests: 2000}
check_s: 1                          # rules are judged on this grid (seconds since the epoch)
alerts: {runbook_url: "https://runbooks.example/monitors/{rule}?model={model}"}
rules:
  - name: errors
    detector: error_rate
    params: {ratio: 2.0}
    severity: critical
    every_s: 1                      # judge every n seconds (multiples of check_s)
    dry_run: false                  # judged and decided, never alerted
    min_evidence_s: 15              # at least this much evidence (default: alerts')
```

**The stated false alarm rate.** Every rule is a CUSUM of log-likelihood ratios
(controller.core.monitor.cusum). Lorden's bound gives a CUSUM that alarms at `h` an average run
length to a false alarm of at least e^h checks when the observations follow the reference; the
policy sets `h = ln(per_rule_days * 86400 / every_s * keys)` so that each rule (all of its keys:
features, output fields, kinds, a latency rule's tail and body) alarms falsely at most once per
`per_rule_days` on average. What that assumes (independent checks once over-dispersion is scaled
out) is in docs/monitoring.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from controller.core.policy import PolicyError

#: Each detector's parameters and their defaults (the params a rule may set).
DETECTOR_PARAMS: dict[str, dict[str, float | int | bool | None]] = {
    # the failed share of requests against the reference's: alarm on `ratio` times it (at
    # least `min_rate` above it)
    "error_rate": {"ratio": 2.0, "min_rate": 0.002},
    # the share of requests slower than the reference's `quantile` (the tail), against the
    # reference's share, or with `history_s` > 0 against the share of its recent history
    # (exponentially weighted: what is `history_s` old counts half); with `body_quantile` (below
    # `quantile`), a second key (`body`) judges the share slower than the reference's
    # `body_quantile` alike: a slow-down of the typical request, whatever the tail does
    "latency_shift": {"quantile": 0.95, "ratio": 2.0, "history_s": 0.0, "body_quantile": None},
    # the share slower than an absolute threshold against the objective's allowance
    "latency_slo": {"threshold_ms": None, "objective": 0.99, "ratio": 2.0},
    # requests served well (not failed) against the learned rate: alarm when it falls to
    # `drop_to` of what is expected (silence, or near-total failure)
    "outage": {"drop_to": 0.1, "half_life_s": 600.0, "min_expected_per_s": 0.05},
    # every output field's distribution against the reference's (categories, or quantile bins);
    # a drift smaller than `tolerance_kl` (KL, nats per value) is not pursued
    "prediction_drift": {"bins": 10, "max_categories": 20, "tolerance_kl": 0.01},
    # every feature's distribution against the reference's, and against the training profile
    # (`tolerance_js`, judged over `window_s` once `min_samples` are in)
    "training_serving_skew": {
        "bins": 10,
        "max_categories": 20,
        "tolerance_kl": 0.01,
        "tolerance_js": 0.1,
        "window_s": 3600.0,
        "min_samples": 1000,
    },
    # per feature: missing, invalid and out-of-domain values against the reference's shares
    "data_quality": {"ratio": 3.0, "min_rate": 0.01},
    # labelled pairs (the label join): the share of loss events against the labelled
    # reference's (a regression: the share of absolute errors above the reference's
    # `quantile`), alternative `ratio` times it (at least `min_rate` above it)
    "quality_decay": {"ratio": 1.5, "min_rate": 0.01, "quantile": 0.9},
    # the labels' distribution (classes, or quantile bins of a regression's targets) against
    # the labelled reference's
    "label_drift": {"bins": 10, "max_categories": 20, "tolerance_kl": 0.01},
    # label delay: the share of labels later than the reference's `quantile` of delay
    # (alternative `ratio` times it), and labels that stop: the rate of labelled pairs against
    # the learned one (`half_life_s`), alternative `drop_to` of it
    "label_delay": {
        "quantile": 0.95,
        "ratio": 2.0,
        "drop_to": 0.1,
        "half_life_s": 3600.0,
        "min_expected_per_s": 0.01,
    },
}

#: The detectors judged on labelled pairs (their reference: `labels` in the policy).
LABEL_DETECTORS = frozenset({"quality_decay", "label_drift", "label_delay"})

Severity = Literal["info", "warning", "critical"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class FalseAlarms(_Strict):
    per_rule_days: float = Field(30.0, gt=0)


class ReferenceSettings(_Strict):
    #: seconds of traffic of a new version the reference distributions are learned from
    learn_s: float = Field(3600.0, gt=0)
    #: then seconds of traffic the over-dispersion of each rule is measured on (no alarms yet)
    calibrate_s: float = Field(3600.0, gt=0)
    #: and at least this many requests in each (a reference waits for them)
    min_requests: int = Field(2000, ge=1)
    #: the span of one calibration interval: bursts shorter than it are scaled out
    calibration_bin_s: float = Field(60.0, gt=0)


class LabelSettings(_Strict):
    #: seconds of labelled pairs (from the first) the labelled reference is learned from
    learn_s: float = Field(3600.0, gt=0)
    #: then seconds the label rules' dispersion is measured on (no alarms yet)
    calibrate_s: float = Field(3600.0, gt=0)
    #: and at least this many pairs in the reference
    min_pairs: int = Field(1000, ge=1)
    #: the span of one calibration interval of the label rules (labels come in bursts)
    calibration_bin_s: float = Field(300.0, gt=0)
    #: a `quality` decision sums up the labelled pairs this often (the last span's metrics)
    report_s: float = Field(3600.0, gt=0)


class AlertSettings(_Strict):
    runbook_url: str | None = "https://runbooks.example/monitors/{rule}?model={model}"
    #: a firing alert resolves when the data favour the reference over the change this much
    resolve_odds: float = Field(100.0, gt=1)
    #: no alarm on less than this many seconds of evidence: a check adds at most
    #: h * every_s / min_evidence_s (a burst of errors shorter than it cannot alarm alone)
    min_evidence_s: float = Field(15.0, gt=0)


class MonitorRule(_Strict):
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")
    detector: str
    params: dict[str, float | int | bool | None] = Field(default_factory=dict)
    severity: Severity = "warning"
    every_s: float = Field(1.0, gt=0)
    dry_run: bool = False
    #: this rule's minimum evidence (seconds); default: alerts.min_evidence_s
    min_evidence_s: float | None = Field(None, gt=0)

    def param(self, name: str) -> Any:
        return self.params.get(name, DETECTOR_PARAMS[self.detector][name])


class _PolicyModel(_Strict):
    version: Literal[1] = 1
    name: str = Field("monitoring", min_length=1, max_length=128)
    description: str = ""
    false_alarms: FalseAlarms = FalseAlarms()
    reference: ReferenceSettings = ReferenceSettings()
    labels: LabelSettings = LabelSettings()
    check_s: float = Field(1.0, gt=0)
    alerts: AlertSettings = AlertSettings()
    rules: list[MonitorRule] = Field(min_length=1)

    @model_validator(mode="after")
    def _rules(self) -> _PolicyModel:
        problems = []
        seen: set[str] = set()
        for rule in self.rules:
            where = f"rule {rule.name!r}"
            if rule.name in seen:
                problems.append(f"{where}: the name is used twice")
            seen.add(rule.name)
            known = DETECTOR_PARAMS.get(rule.detector)
            if known is None:
                problems.append(
                    f"{where}: unknown detector {rule.detector!r}; known: "
                    f"{', '.join(sorted(DETECTOR_PARAMS))}"
                )
                continue
            for name, value in rule.params.items():
                if name not in known:
                    problems.append(
                        f"{where}: unknown parameter {name!r} of {rule.detector}; known: "
                        f"{', '.join(sorted(known))}"
                    )
                elif value is not None and not isinstance(value, int | float):
                    problems.append(f"{where}: {name} must be a number")
            if rule.every_s < self.check_s or not _multiple(rule.every_s, self.check_s):
                problems.append(f"{where}: every_s must be a multiple of check_s ({self.check_s})")
            if rule.detector == "latency_slo" and rule.param("threshold_ms") is None:
                problems.append(f"{where}: latency_slo needs params.threshold_ms")
            problems += _body_problems(where, rule)
            problems += _range_problems(where, rule)
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _multiple(a: float, b: float) -> bool:
    return abs(a / b - round(a / b)) < 1e-9


def _body_problems(where: str, rule: MonitorRule) -> list[str]:
    """A latency_shift rule's body quantile lies below its (tail) quantile."""
    if rule.detector != "latency_shift":
        return []
    body, tail = rule.param("body_quantile"), rule.param("quantile")
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (body, tail))
    if body is None or not numbers or not (0 < body < 1 and 0 < tail < 1) or body < tail:
        return []  # absent, or out of range on its own (named by _range_problems)
    return [
        f"{where}: body_quantile={body} must be below quantile={tail} (the body key judges the "
        "typical request, the quantile key the tail: e.g. body_quantile: 0.5)"
    ]


def _range_problems(where: str, rule: MonitorRule) -> list[str]:
    checks = {
        "ratio": lambda v: v > 1,
        "quantile": lambda v: 0 < v < 1,
        "body_quantile": lambda v: 0 < v < 1,
        "objective": lambda v: 0 < v < 1,
        "drop_to": lambda v: 0 < v < 1,
        "threshold_ms": lambda v: v > 0,
        "bins": lambda v: 2 <= v <= 100 and v == int(v),
        "max_categories": lambda v: 2 <= v <= 1000 and v == int(v),
        "tolerance_js": lambda v: 0 < v < 1,
        "tolerance_kl": lambda v: v >= 0,
        "min_rate": lambda v: 0 <= v < 1,
        "half_life_s": lambda v: v > 0,
        "history_s": lambda v: v >= 0,
        "window_s": lambda v: v > 0,
        "min_samples": lambda v: v >= 1,
        "min_expected_per_s": lambda v: v >= 0,
    }
    problems = []
    for name, value in rule.params.items():
        check = checks.get(name)
        if check is not None and isinstance(value, int | float) and not check(value):
            problems.append(f"{where}: {name}={value} is out of range")
    return problems


@dataclass(frozen=True)
class MonitoringPolicy:
    """A validated monitoring policy (see the module docstring)."""

    model: _PolicyModel
    raw: Mapping[str, Any] = field(compare=False, repr=False, default_factory=dict)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> MonitoringPolicy:
        try:
            model = _PolicyModel.model_validate(dict(data))
        except ValidationError as exc:
            raise PolicyError("monitoring policy", validation_problems(exc)) from None
        return cls(model, dict(data))

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def rules(self) -> list[MonitorRule]:
        return self.model.rules

    @property
    def check_s(self) -> float:
        return self.model.check_s

    @property
    def reference(self) -> ReferenceSettings:
        return self.model.reference

    def threshold(self, rule: MonitorRule, keys: int) -> float:
        """The CUSUM's alarm level `h` for a rule with `keys` statistics: a false alarm per
        rule at most every `per_rule_days` on average (Lorden: e^h checks per key)."""
        checks = self.model.false_alarms.per_rule_days * 86400.0 / rule.every_s
        return math.log(checks * max(keys, 1))

    @property
    def labels(self) -> LabelSettings:
        return self.model.labels

    @property
    def min_evidence_s(self) -> float:
        return self.model.alerts.min_evidence_s

    def min_evidence(self, rule: MonitorRule) -> float:
        """The least seconds of evidence an alarm of `rule` rests on (the rule's own, or the
        policy's)."""
        return rule.min_evidence_s if rule.min_evidence_s is not None else self.min_evidence_s

    def resolve_threshold(self) -> float:
        return math.log(self.model.alerts.resolve_odds)

    def runbook(self, rule: str, model: str) -> str | None:
        template = self.model.alerts.runbook_url
        if template is None:
            return None
        try:
            return template.format(rule=rule, model=model)
        except (KeyError, IndexError, ValueError):
            return template

    def to_dict(self) -> dict[str, Any]:
        return self.model.model_dump(mode="json")


def validation_problems(exc: ValidationError) -> list[str]:
    """Each problem of a pydantic validation error: where, and what is wrong (the monitoring
    and pipelines policies word them alike)."""
    problems = []
    for error in exc.errors():
        loc = ".".join(str(p) for p in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(f"{loc}: {message}" if loc else message)
    return problems


__all__ = [
    "DETECTOR_PARAMS",
    "LABEL_DETECTORS",
    "LabelSettings",
    "MonitorRule",
    "MonitoringPolicy",
    "Severity",
]
