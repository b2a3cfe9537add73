"""A model's monitor fed labelled predictions (the label join's pairs): its labelled reference,
quality decay, label drift, label delay, and the periodic quality reports. Real models on
datasets that ship with scikit-learn."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

import schemas as s
from controller.core import monitor
from controller.core.monitor import MonitoringPolicy, MonitorState
from controller.core.policy import PolicyError
from controller.core.stats.labelled import LabelFold
from controller.dev import realdata
from controller.policy_io import default_monitoring_policy

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z

#: the default policy with short label spans (5 min learned, 10 min calibrated in 1 min bins,
#: reports every 10 min)
FAST = MonitoringPolicy.from_mapping(
    {
        **default_monitoring_policy().to_dict(),
        "labels": {
            "learn_s": 300,
            "calibrate_s": 600,
            "min_pairs": 500,
            "calibration_bin_s": 60,
            "report_s": 600,
        },
    }
)


@dataclass
class Labelled:
    """One model's labelled predictions, second by second, from the serving part of a bundled
    dataset: each second `rate` requests draw a row (with replacement); the model's output on it
    and the row's true target make a pair, labelled `delay()` seconds after its prediction."""

    dataset: str
    rate: float = 10.0
    seed: int = 1
    version: str = "v1"
    model: Any = None
    #: the label delay of a pair (seconds), drawn from the traffic's random numbers
    delay: Callable[[random.Random], float] = lambda rng: rng.lognormvariate(math.log(600), 0.5)
    #: rows the traffic draws from (None: all of the serving part)
    rows: Sequence[int] | None = None
    served: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.data = realdata.prepare(self.dataset)
        self.use(self.model or self.data.model)

    def use(self, model: Any) -> None:
        """Serve `model` from now on (the outputs of every serving row, once)."""
        self.outputs = self.data.outputs(model, self.data.x_serve)

    def second(self, t: float) -> LabelFold:
        """The pairs whose labels arrive in the second before `t`."""
        fold = LabelFold()
        rows = self.rows if self.rows is not None else range(len(self.outputs))
        n = sum(1 for _ in range(int(2 * self.rate)) if self.rng.random() < 0.5)
        for _ in range(n):
            i = self.rng.choice(rows)
            self.served += 1
            delay = self.delay(self.rng)
            label: Any = self.data.y_serve[i]
            label = (
                self.data.classes[int(label)] if self.data.task == "multiclass" else label.item()
            )
            output = self.outputs[i]
            fold.add(f"{self.seed}-{self.served}", output, label, t - delay, t - 0.5)
        return fold


@dataclass
class Watch:
    """A monitor configured for `v1` and fed labelled predictions one second at a time."""

    policy: MonitoringPolicy = FAST
    model: str = "clf"
    state: MonitorState = field(init=False)
    now: float = T0
    outputs: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        event = s.MonitorConfigured(model=self.model, version="v1", by="alice")
        result = monitor.configure(None, event, self.now)
        assert result.state is not None
        self.state = result.state
        self.outputs += result.outputs

    def run(self, traffic: Labelled | None, seconds: int) -> list[Any]:
        """`seconds` of labelled predictions (None: none arrive), checked every second."""
        found: list[Any] = []
        for _ in range(seconds):
            self.now += 1.0
            if traffic is not None:
                fold = traffic.second(self.now)
                version = traffic.version
                monitor.observe_labels(
                    self.state, self.model, [("prod", version, fold)], None, self.now
                )
            found += monitor.check(self.state, self.policy, self.now).outputs
        self.outputs += found
        return found

    def watch(self, traffic: Labelled) -> None:
        """Learn and calibrate the labelled reference on `traffic`."""
        self.run(traffic, 300 + 600 + 61)
        lref = self.state.label_reference
        assert lref is not None and lref.stage() == "watching", lref and lref.stage()


def fired(outputs: list[Any], rule: str | None = None) -> list[s.MonitorDecision]:
    return [
        o
        for o in outputs
        if isinstance(o, s.MonitorDecision)
        and o.action == "alert_fired"
        and (rule is None or (o.rule or "").split("/")[0] == rule)
    ]


def decisions(outputs: list[Any], action: str) -> list[s.MonitorDecision]:
    return [o for o in outputs if isinstance(o, s.MonitorDecision) and o.action == action]


# ---- the labelled reference ------------------------------------------------------------------


def test_the_labelled_reference_learns_from_the_first_pairs_then_calibrates() -> None:
    watch = Watch()
    traffic = Labelled("breast_cancer")

    watch.run(None, 120)  # configured, no labels yet: nothing learned, the clock does not run
    assert watch.state.label_reference is None and watch.state.label_report is None

    watch.watch(traffic)

    learned = [
        d for d in decisions(watch.outputs, "reference_learned") if "label_stage" in d.evidence
    ]
    assert ["calibrating", "watching"] == [d.evidence["label_stage"] for d in learned]
    reference = learned[0].evidence["labels"]
    # the model is good on its serving part, and the reference says how good
    assert reference["kind"] == "binary" and reference["pairs"] >= 500
    assert 0.9 < reference["accuracy"] <= 1.0 and reference["auc"] > 0.95
    assert "accuracy 0.9" in learned[0].reason
    # every label key is calibrated and none fired on the model's own traffic
    keys = {
        k
        for k in watch.state.cusums
        if k.split("/")[0] in ("quality", "label_drift", "label_delay")
    }
    assert {"quality", "label_drift", "label_delay/late", "label_delay/stalled"} == keys
    assert all(watch.state.cusums[k].calibrated for k in keys)
    assert [] == fired(watch.outputs)


def test_other_versions_pairs_are_counted_not_judged_and_redeliveries_change_nothing() -> None:
    watch = Watch()
    traffic = Labelled("breast_cancer", version="v0")
    watch.run(traffic, 30)
    assert watch.state.labels == 0 and watch.state.other_labels == traffic.served
    assert watch.state.label_reference is None  # nothing of the watched version to learn from

    fold = Labelled("breast_cancer").second(watch.now)
    for _ in range(2):  # the same delta twice
        monitor.observe_labels(
            watch.state, "clf", [("prod", "v1", fold)], "labels:0:1:9", watch.now
        )
    assert watch.state.labels == fold.stats.pairs


# ---- quality decay ---------------------------------------------------------------------------


def test_a_model_whose_labels_show_it_worse_is_alarmed_on_quality() -> None:
    """Breast cancer: the version keeps serving, but the model behind it is swapped for one
    trained on a tenth of the data with a fifth of its labels wrong (its scores look alike)."""
    watch = Watch()
    traffic = Labelled("breast_cancer")
    watch.watch(traffic)
    assert [] == fired(watch.run(traffic, 1800), "quality")  # 30 more minutes: quiet

    data = realdata.prepare("breast_cancer")
    worse = realdata.degraded_model("breast_cancer")
    assert data.score(worse) < data.score(data.model) - 0.03  # the premise: it is worse
    traffic.use(worse)
    changed_at = watch.now
    after = watch.run(traffic, 1800)

    (alarm,) = fired(after, "quality")
    assert alarm.rule == "quality"
    evidence = alarm.evidence
    assert evidence["observed"] > 1.5 * evidence["reference"] * 0.8
    assert evidence["reference_metrics"]["accuracy"] > 0.9
    assert "quality decayed" in alarm.reason
    alarm_at = alarm.at.timestamp()
    assert changed_at < alarm_at <= changed_at + 1800
    alerts = [o for o in after if isinstance(o, s.Alert) and o.kind == "monitor.quality"]
    assert ["firing"] == [a.status for a in alerts]
    assert s.Severity.CRITICAL == alerts[0].severity


def test_a_regression_is_judged_on_the_share_of_its_errors_above_the_reference_p90() -> None:
    """Diabetes (targets 25..346): a loss event needs the error over a scale, which saturates on
    targets of this size, so a regression's quality is the share of its absolute errors above
    the labelled reference's p90; the same worse-model swap."""
    watch = Watch()
    traffic = Labelled("diabetes")
    watch.watch(traffic)
    lref = watch.state.label_reference
    assert lref is not None
    entry = lref.frozen["rules"]["quality"]
    assert entry["mode"] == "errors" and 0.05 < entry["p0"] < 0.15
    assert [] == fired(watch.run(traffic, 1800), "quality")

    traffic.use(realdata.degraded_model("diabetes"))
    (alarm,) = fired(watch.run(traffic, 1800), "quality")
    assert "of absolute errors above the labelled reference's p90" in alarm.reason
    assert alarm.evidence["reference_metrics"]["mae"] > 30


def test_quality_reports_give_the_metrics_over_time_beside_the_reference() -> None:
    watch = Watch()
    traffic = Labelled("breast_cancer")
    watch.watch(traffic)
    worse = realdata.degraded_model("breast_cancer")
    watch.run(traffic, 600)
    traffic.use(worse)
    watch.run(traffic, 1200)

    reports = decisions(watch.outputs, "quality")
    assert len(reports) >= 4  # every 600 s of event time once pairs came
    first, last = reports[0].evidence, reports[-1].evidence
    for report in (first, last):
        assert {"accuracy", "auc", "log_loss", "brier", "ece", "delay_p50_s"} <= set(
            report["metrics"]
        )
        assert report["span_s"] == pytest.approx(600, abs=1)
    assert last["reference"]["accuracy"] > last["metrics"]["accuracy"]
    assert last["metrics"]["log_loss"] > first["metrics"]["log_loss"]
    assert 400 < last["metrics"]["delay_p50_s"] < 900  # labels ten minutes late, as served
    assert "labelled predictions in the last 600 s" in reports[-1].reason


# ---- label drift -----------------------------------------------------------------------------


def test_a_shift_in_the_labels_mix_is_label_drift() -> None:
    """Wine: the traffic comes to draw only from two of the three cultivars."""
    watch = Watch()
    traffic = Labelled("wine")
    watch.watch(traffic)
    assert [] == fired(watch.run(traffic, 900))

    data = traffic.data
    traffic.rows = [i for i, y in enumerate(data.y_serve.tolist()) if y != 2]
    after = watch.run(traffic, 900)

    (alarm,) = fired(after, "label_drift")
    assert "labels' distribution drifted" in alarm.reason
    assert alarm.evidence["js_bits"] > 0.01


def test_a_regressions_target_drift_is_label_drift_on_quantile_bins() -> None:
    """Diabetes: the traffic comes to draw only the patients above the median progression."""
    watch = Watch()
    traffic = Labelled("diabetes")
    watch.watch(traffic)
    lref = watch.state.label_reference
    assert lref is not None
    bins = lref.frozen["rules"]["label_drift"]["bins"]
    assert bins["kind"] == "numbers" and len(bins["edges"]) >= 8

    median = sorted(traffic.data.y_serve.tolist())[len(traffic.data.y_serve) // 2]
    traffic.rows = [i for i, y in enumerate(traffic.data.y_serve.tolist()) if y > median]
    assert fired(watch.run(traffic, 900), "label_drift")


# ---- label delay -----------------------------------------------------------------------------


def test_labels_that_come_later_are_alarmed_as_late() -> None:
    watch = Watch()
    traffic = Labelled("breast_cancer")
    watch.watch(traffic)
    assert [] == fired(watch.run(traffic, 900))

    traffic.delay = lambda rng: rng.lognormvariate(math.log(3600), 0.5)  # an hour, not ten min
    after = watch.run(traffic, 1800)

    (alarm,) = fired(after, "label_delay")
    assert alarm.rule == "label_delay/late"
    assert "labels late" in alarm.reason
    assert alarm.evidence["observed"] > 0.5


def test_labels_that_stop_coming_are_alarmed_as_stalled() -> None:
    watch = Watch()
    traffic = Labelled("breast_cancer")
    watch.watch(traffic)

    after = watch.run(None, 1800)  # the labelling pipeline stopped

    (alarm,) = fired(after, "label_delay")
    assert alarm.rule == "label_delay/stalled"
    assert "the labels stopped" in alarm.reason
    # since the change point the CUSUM estimates (the rule's minute the stop fell in, maybe)
    assert alarm.evidence["pairs"] < 0.15 * alarm.evidence["expected"]
    # no other label rule claims anything about pairs that did not come
    assert [] == [d for d in fired(after) if d.rule != "label_delay/stalled"]


# ---- versions, policies, state -----------------------------------------------------------------


def test_a_new_version_learns_a_new_labelled_reference_unless_pinned() -> None:
    watch = Watch()
    watch.watch(Labelled("breast_cancer"))

    event = s.MonitorConfigured(model="clf", version="v2", by="rollout-controller")
    monitor.configure(watch.state, event, watch.now)
    watch.run(Labelled("breast_cancer", version="v2", seed=2), 5)
    lref = watch.state.label_reference
    assert lref is not None and lref.version == "v2" and lref.stage() == "learning"
    assert not any(k.startswith("quality") for k in watch.state.cusums)

    pinned = Watch()
    pinned.watch(Labelled("breast_cancer"))
    monitor.configure(
        pinned.state,
        s.MonitorConfigured(model="clf", version="v1", by="alice", reference="pin"),
        pinned.now,
    )
    monitor.configure(
        pinned.state, s.MonitorConfigured(model="clf", version="v2", by="ci"), pinned.now
    )
    pinned.run(Labelled("breast_cancer", version="v2", seed=2), 5)
    lref = pinned.state.label_reference
    assert lref is not None and lref.version == "v1" and lref.stage() == "watching"


def test_the_state_with_labels_round_trips_through_json() -> None:
    watch = Watch()
    watch.run(Labelled("wine"), 400)  # learned, calibrating, a report span open
    doc = orjson.loads(orjson.dumps(watch.state.to_dict()))
    again = MonitorState.from_dict(doc)
    assert again.to_dict() == watch.state.to_dict()
    assert again.label_reference is not None and again.label_reference.stage() == "calibrating"


def test_label_rules_parameters_are_validated() -> None:
    raw = default_monitoring_policy().to_dict()
    raw["rules"] = [
        {"name": "q", "detector": "quality_decay", "params": {"ratio": 0.5, "tolerance": 1}},
        {"name": "d", "detector": "label_delay", "params": {"drop_to": 2}},
    ]
    with pytest.raises(PolicyError) as caught:
        MonitoringPolicy.from_mapping(raw)
    text = str(caught.value)
    assert "rule 'q': unknown parameter 'tolerance' of quality_decay" in text
    assert "rule 'q': ratio=0.5 is out of range" in text
    assert "rule 'd': drop_to=2 is out of range" in text
