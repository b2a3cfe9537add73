"""Labelled predictions of one cohort: what the joined (prediction, label) pairs say.

The label join (controller.stream.pending) pairs a prediction with its label hours or days
after it was served. `LabelledStats` folds those pairs per cohort and version, mergeable and of
bounded size, like `CohortStats` folds predictions:

- **Quality** by the kind of model the pairs show (`controller.core.stats.model_quality`):
  a binary classifier (a score in [0, 1], or a 0/1 class, against 0/1 labels), a multi-class
  one (a class name, or a map of class to probability, against class names), a regression (a
  number against a number). The first pair sets the kind; a pair of another kind is counted
  in `mismatched`, not folded.
- **Loss events**, what a share test can count (controller.core.stats.sequential): each pair's
  bounded loss `l` in [0, 1] (`LossKind`; a regression's absolute error divided by `loss_scale`
  and capped at 1) becomes an event with probability `l`, drawn from a keyed hash of the
  request id (`loss_event`). The draw depends on the request id alone, so a replay draws the
  same events, and it is independent of the cohort and of any router's own hash of the id (the
  key is this module's), so the counts of each cohort are Bernoulli draws at its mean loss: a
  canary whose mean loss is at most (1 + tolerance) times the baseline's has a share of the
  events the share test's null allows. The mean loss itself is kept exactly (`loss`).
- **Label delay** (seconds from the prediction to its label), a quantile sketch, and the
  **labels' distribution** (numbers in a sketch, classes counted), for label drift.
- A regression's **absolute errors**, a quantile sketch (`errors`): a monitor judges the share
  of errors above its reference's quantile, whatever the targets' scale (a loss event needs
  the error over `loss_scale`, which saturates at 1 when the scale is not the targets').

Pure arithmetic on plain values; `to_dict` / `from_dict` are JSON-able.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from controller.core.stats.distribution import StatsConfig
from controller.core.stats.model_quality import (
    ClassifierQuality,
    ExactSum,
    LossKind,
    MulticlassQuality,
    RegressionQuality,
    per_request_loss,
)
from controller.core.stats.sequential import (
    DEFAULT_ODDS_RATIOS,
    Counts,
    Interval,
    SequentialTest,
    stratified_share_test,
)
from controller.core.stats.sketch import QuantileSketch, canonical_partials

Kind = Literal["binary", "multiclass", "regression"]
KINDS: tuple[Kind, ...] = ("binary", "multiclass", "regression")

#: The key of the loss events' hash: no router hashes request ids with it.
_EVENT_KEY = b"rollout-controller/loss-event/v1"
_EVENT_HASH = hashlib.blake2b(key=_EVENT_KEY, digest_size=8)
#: Distinct label classes counted for label drift; the rest are folded into "__other__".
MAX_LABEL_CLASSES = 20
OTHER = "__other__"


def loss_event(request_id: str, loss: float) -> bool:
    """Whether a pair of bounded `loss` (0..1) counts as a loss event: a uniform draw from the
    keyed hash of its request id falls below the loss."""
    if not 0.0 <= loss <= 1.0 or math.isnan(loss):
        raise ValueError(f"a loss event needs a loss in [0, 1], got {loss!r}")
    hasher = _EVENT_HASH.copy()  # a copy of the keyed state: no key block to compress again
    hasher.update(request_id.encode())
    return int.from_bytes(hasher.digest(), "big") / 2.0**64 < loss


def kind_of(prediction: Any, label: Any) -> Kind:
    """The kind of model a pair shows (see the module docstring)."""
    if isinstance(prediction, Mapping | str) or isinstance(label, str):
        return "multiclass"
    if isinstance(prediction, bool) or isinstance(label, bool):
        return "binary"
    if isinstance(prediction, int | float) and isinstance(label, int | float):
        if label in (0, 1) and 0.0 <= float(prediction) <= 1.0:
            return "binary"
        return "regression"
    raise ValueError(
        f"a prediction {type(prediction).__name__} with a label {type(label).__name__} is not "
        "a pair any quality metric takes"
    )


def default_loss(kind: Kind) -> LossKind:
    """The bounded per-request loss of a kind: Brier for classifiers, the scaled absolute
    error for a regression."""
    return LossKind.ABSOLUTE_ERROR if kind == "regression" else LossKind.BRIER


@dataclass(eq=False)
class LabelledStats:
    """The joined pairs of one cohort and version (see the module docstring)."""

    config: StatsConfig = field(default_factory=StatsConfig)
    #: a regression's absolute error that counts as a full loss (the loss is |e| / scale, <= 1)
    loss_scale: float = 1.0
    kind: Kind | None = None
    pairs: int = 0
    loss_events: int = 0
    loss: ExactSum = field(default_factory=ExactSum)
    mismatched: int = 0
    binary: ClassifierQuality | None = None
    multiclass: MulticlassQuality | None = None
    regression: RegressionQuality | None = None
    delay: QuantileSketch = field(init=False)
    label_values: QuantileSketch = field(init=False)
    errors: QuantileSketch = field(init=False)
    label_classes: dict[str, int] = field(default_factory=dict)
    #: the last summary and the counts it was computed at (not part of the value)
    _summary: tuple[tuple[int, int], dict[str, float | str | None]] | None = field(
        default=None, repr=False
    )

    def __post_init__(self) -> None:
        if not (self.loss_scale > 0 and math.isfinite(self.loss_scale)):
            raise ValueError(f"loss_scale must be a positive number, got {self.loss_scale!r}")
        self.delay = self.config.latency_sketch()
        self.label_values = self.config.value_sketch()
        self.errors = self.config.value_sketch()

    # ---- folding ------------------------------------------------------------------------

    def add(self, request_id: str, prediction: Any, label: Any, delay_s: float) -> bool:
        """Fold one pair; False (and counted in `mismatched`) when its kind is not the
        cohort's. A pair no metric takes raises ValueError and changes nothing."""
        kind = kind_of(prediction, label)
        if self.kind is not None and kind != self.kind:
            self.mismatched += 1
            return False
        loss = self.bounded_loss(prediction, label, kind)  # validates the pair
        quality = self._quality(kind)
        if isinstance(quality, ClassifierQuality):
            if isinstance(prediction, bool) or (
                isinstance(prediction, int) and prediction in (0, 1)
            ):
                quality.add_class(int(prediction), int(label))
            else:
                quality.add(float(prediction), int(label))
        else:
            quality.add(prediction, label)
        if kind == "regression":
            self.errors.add(abs(float(prediction) - float(label)))
        self.kind = kind
        self.pairs += 1
        self.loss.add(loss)
        if loss_event(request_id, loss):
            self.loss_events += 1
        if delay_s >= 0 and math.isfinite(delay_s):
            self.delay.add(delay_s)
        self._count_label(label)
        return True

    def bounded_loss(self, prediction: Any, label: Any, kind: Kind | None = None) -> float:
        """The pair's loss in [0, 1] (what a loss event is drawn from)."""
        kind = kind or self.kind or kind_of(prediction, label)
        loss_kind = default_loss(kind)
        if kind == "binary" and (
            isinstance(prediction, bool) or (isinstance(prediction, int) and prediction in (0, 1))
        ):
            loss_kind = LossKind.ZERO_ONE
        if kind == "multiclass" and not isinstance(prediction, Mapping):
            loss_kind = LossKind.ZERO_ONE
        value = per_request_loss(loss_kind, prediction, label)
        if loss_kind is LossKind.ABSOLUTE_ERROR:
            value = min(value / self.loss_scale, 1.0)
        return min(max(value, 0.0), 1.0)

    def _quality(
        self, kind: Kind | None = None
    ) -> ClassifierQuality | MulticlassQuality | RegressionQuality:
        kind = kind or self.kind
        if kind == "binary":
            if self.binary is None:
                self.binary = ClassifierQuality()
            return self.binary
        if kind == "multiclass":
            if self.multiclass is None:
                self.multiclass = MulticlassQuality()
            return self.multiclass
        if self.regression is None:
            self.regression = RegressionQuality()
        return self.regression

    def _count_label(self, label: Any) -> None:
        if isinstance(label, str):
            name = label
            if name not in self.label_classes and len(self.label_classes) >= MAX_LABEL_CLASSES:
                name = OTHER
            self.label_classes[name] = self.label_classes.get(name, 0) + 1
        else:
            self.label_values.add(float(label))

    # ---- reading ------------------------------------------------------------------------

    @property
    def mean_loss(self) -> float | None:
        return self.loss.value / self.pairs if self.pairs else None

    def summary(self) -> dict[str, float | str | None]:
        """The quality metrics of the kind, the mean loss, and the label delay's median and
        p95 (None where there is no pair). Computed once per count of pairs: a rule judged at
        every event asks for it far more often than pairs come."""
        counted = (self.pairs, self.mismatched)
        if self._summary is not None and self._summary[0] == counted:
            return dict(self._summary[1])
        out = self._compute_summary()
        self._summary = (counted, out)
        return dict(out)

    def _compute_summary(self) -> dict[str, float | str | None]:
        out: dict[str, float | str | None] = {"kind": self.kind, "pairs": float(self.pairs)}
        if self.kind is not None:
            out.update(self._quality().summary())
        out["mean_loss"] = self.mean_loss
        out["delay_p50_s"] = self.delay.quantile(0.5) if self.delay.count else None
        out["delay_p95_s"] = self.delay.quantile(0.95) if self.delay.count else None
        return out

    # ---- merging and the wire -----------------------------------------------------------

    def merge_from(self, other: LabelledStats) -> None:
        """Fold another cohort's pairs into this one (same settings; kinds must agree, or one
        side has none)."""
        if other.config != self.config or other.loss_scale != self.loss_scale:
            raise ValueError("labelled stats merge only under the same settings")
        if other.kind is not None and self.kind is not None and other.kind != self.kind:
            self.mismatched += other.pairs + other.mismatched
            return
        if self.kind is None:
            self.kind = other.kind
        self.pairs += other.pairs
        self.loss_events += other.loss_events
        self.loss.merge_from(other.loss)
        self.mismatched += other.mismatched
        for name in ("binary", "multiclass", "regression"):
            theirs = getattr(other, name)
            if theirs is None:
                continue
            mine = getattr(self, name)
            if mine is None:
                setattr(self, name, theirs.copy())
            else:
                mine.merge_from(theirs)
        self.delay.merge_from(other.delay)
        self.label_values.merge_from(other.label_values)
        self.errors.merge_from(other.errors)
        for name, count in other.label_classes.items():
            if name not in self.label_classes and len(self.label_classes) >= MAX_LABEL_CLASSES:
                name = OTHER
            self.label_classes[name] = self.label_classes.get(name, 0) + count

    def to_dict(self) -> dict[str, Any]:
        return {
            "loss_scale": self.loss_scale,
            "kind": self.kind,
            "pairs": self.pairs,
            "loss_events": self.loss_events,
            "loss": self.loss.to_list(),
            "mismatched": self.mismatched,
            "binary": None if self.binary is None else self.binary.to_dict(),
            "multiclass": None if self.multiclass is None else self.multiclass.to_dict(),
            "regression": None if self.regression is None else self.regression.to_dict(),
            "delay": self.delay.to_dict(),
            "label_values": self.label_values.to_dict(),
            "errors": self.errors.to_dict(),
            "label_classes": dict(sorted(self.label_classes.items())),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], config: StatsConfig | None = None) -> LabelledStats:
        stats = cls(config or StatsConfig(), loss_scale=float(data["loss_scale"]))
        kind = data.get("kind")
        if kind is not None and kind not in KINDS:
            raise ValueError(f"unknown kind of labelled stats {kind!r}")
        stats.kind = kind
        stats.pairs = int(data["pairs"])
        stats.loss_events = int(data["loss_events"])
        stats.loss = ExactSum.from_list(data["loss"])
        stats.mismatched = int(data.get("mismatched", 0))
        if data.get("binary") is not None:
            stats.binary = ClassifierQuality.from_dict(data["binary"])
        if data.get("multiclass") is not None:
            stats.multiclass = MulticlassQuality.from_dict(data["multiclass"])
        if data.get("regression") is not None:
            stats.regression = RegressionQuality.from_dict(data["regression"])
        stats.delay = QuantileSketch.from_dict(data["delay"])
        stats.label_values = QuantileSketch.from_dict(data["label_values"])
        if data.get("errors") is not None:
            stats.errors = QuantileSketch.from_dict(data["errors"])
        stats.label_classes = {str(k): int(v) for k, v in data.get("label_classes", {}).items()}
        return stats

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelledStats) and self.to_dict() == other.to_dict()


#: The span of prediction time a fold counts its pairs in (see `LabelFold`).
BUCKET_S = 60


class _Gathered:
    """What `LabelFold.add_many` gathers of a run of binary scores before adding it at once:
    the pairs (for `ClassifierQuality.add_scores`), their losses (the exact sum's terms) and
    the sketches' values."""

    __slots__ = ("delays", "labels", "losses", "scores")

    def __init__(self) -> None:
        self.scores: list[float] = []
        self.labels: list[int] = []
        self.losses: list[float] = []
        self.delays: list[float] = []

    def clear(self) -> None:
        self.scores, self.labels, self.losses, self.delays = [], [], [], []

    def flush(self, stats: LabelledStats) -> None:
        """Add what was gathered to `stats`, and start again."""
        if not self.scores:
            return
        quality = stats.binary
        if quality is None:
            quality = stats.binary = ClassifierQuality()
        quality.add_scores(self.scores, self.labels)
        stats.loss.parts = canonical_partials(stats.loss.parts + self.losses)
        stats.delay.add_many(self.delays)
        stats.label_values.add_many([float(y) for y in self.labels])
        self.clear()


@dataclass(eq=False)
class LabelFold:
    """What the label join hands a rollout or a monitor for one cohort and version: the pairs
    folded (`stats`), and the pairs and loss events per `BUCKET_S` of *prediction* time
    (`buckets`: bucket start -> [pairs, loss events]). A rollout judges a pair against the
    traffic share its prediction was routed at, which it knows by time; a bucket is the
    smallest span it tells apart, so a bucket that a share change falls in is left out."""

    stats: LabelledStats = field(default_factory=LabelledStats)
    buckets: dict[int, list[int]] = field(default_factory=dict)

    def add(
        self,
        request_id: str,
        prediction: Any,
        label: Any,
        predicted_at: float,
        labelled_at: float,
    ) -> bool:
        """Fold one pair (see `LabelledStats.add`)."""
        before = self.stats.loss_events
        if not self.stats.add(request_id, prediction, label, labelled_at - predicted_at):
            return False
        bucket = int(math.floor(predicted_at / BUCKET_S) * BUCKET_S)
        counts = self.buckets.setdefault(bucket, [0, 0])
        counts[0] += 1
        counts[1] += self.stats.loss_events - before
        return True

    def add_many(self, pairs: Iterable[tuple[str, Any, Any, float, float]]) -> int:
        """Fold pairs of (request_id, prediction, label, predicted_at, labelled_at); the
        number folded. The state after is the one `add` gives pair by pair (`==`, the same
        `to_dict`); a pair `add` refuses (another kind) or raises on (no metric takes it) is
        not folded and not counted here, the caller counts it.

        A binary classifier's score (a float in [0, 1]) against a 0.0 or 1.0 label, the pair
        the label join sees most, is gathered and added in bulk (`ClassifierQuality.add_scores`,
        `QuantileSketch.add_many`, the exact sums' terms at once), at about a third of `add`'s
        cost. Any other pair goes through `add`."""
        stats = self.stats
        buckets = self.buckets
        folded = 0
        gathered = _Gathered()
        for request_id, prediction, label, predicted_at, labelled_at in pairs:
            if not (
                type(prediction) is float
                and 0.0 <= prediction <= 1.0
                and type(label) is float
                and (label == 1.0 or label == 0.0)
                and stats.kind != "multiclass"
                and stats.kind != "regression"
            ):
                gathered.flush(stats)  # `add` folds after what came before
                try:
                    added = self.add(request_id, prediction, label, predicted_at, labelled_at)
                except ValueError:
                    added = False
                folded += added
                continue
            y = 1 if label == 1.0 else 0
            loss = (prediction - y) * (prediction - y)  # Brier: a binary score's bounded loss
            gathered.scores.append(prediction)
            gathered.labels.append(y)
            gathered.losses.append(loss)
            stats.kind = "binary"
            stats.pairs += 1
            event = loss_event(request_id, loss)
            stats.loss_events += event
            delay_s = labelled_at - predicted_at
            if delay_s >= 0 and math.isfinite(delay_s):
                gathered.delays.append(delay_s)
            bucket = int(math.floor(predicted_at / BUCKET_S) * BUCKET_S)
            counts = buckets.get(bucket)
            if counts is None:
                counts = buckets[bucket] = [0, 0]
            counts[0] += 1
            counts[1] += event
            folded += 1
        gathered.flush(stats)
        return folded

    def merge_from(self, other: LabelFold) -> None:
        self.stats.merge_from(other.stats)
        for bucket, (pairs, events) in other.buckets.items():
            counts = self.buckets.setdefault(bucket, [0, 0])
            counts[0] += pairs
            counts[1] += events

    def to_dict(self) -> dict[str, Any]:
        return {
            "stats": self.stats.to_dict(),
            "buckets": {str(k): v for k, v in sorted(self.buckets.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], config: StatsConfig | None = None) -> LabelFold:
        return cls(
            LabelledStats.from_dict(data["stats"], config),
            {int(k): [int(v[0]), int(v[1])] for k, v in data.get("buckets", {}).items()},
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelFold) and self.to_dict() == other.to_dict()


def loss_counts(baseline: LabelledStats, canary: LabelledStats) -> Counts:
    """Loss events and labelled pairs of both cohorts: what the share test counts."""
    return Counts(canary.loss_events, canary.pairs, baseline.loss_events, baseline.pairs)


def quality_test(
    strata: Sequence[tuple[LabelledStats, LabelledStats]],
    tolerance: float,
    alpha: float,
    odds_ratios: Sequence[float] = DEFAULT_ODDS_RATIOS,
) -> SequentialTest:
    """Is the canary's mean loss more than (1 + tolerance) times the baseline's? The share
    test (controller.core.stats.sequential) on loss events, stratified by `strata`: the
    (baseline, canary) pairs of each span of prediction time routed at one share (a step),
    each judged against its own share of the labelled pairs. Valid at every label, in whatever
    order the labels of the strata arrive, when the router assigns requests at random and
    whether a request gets its label (and when) does not depend on its cohort."""
    intervals = [
        Interval(index, None, loss_counts(baseline, canary))
        for index, (baseline, canary) in enumerate(strata)
    ]
    return stratified_share_test(intervals, tolerance, alpha, odds_ratios, restarts=False)


__all__ = [
    "BUCKET_S",
    "KINDS",
    "Kind",
    "LabelFold",
    "LabelledStats",
    "default_loss",
    "kind_of",
    "loss_counts",
    "loss_event",
    "quality_test",
]
