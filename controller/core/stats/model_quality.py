"""Model quality from (prediction, label) pairs: mergeable accumulators of bounded size.

Labels arrive late (a click, a chargeback, a human review), so quality is folded per cohort,
version and time bucket as the labels are joined to their predictions, and the buckets are
merged across partitions and windows afterwards. Every accumulator here is a plain value:
mutable `add` (one pair), pure `merged` and in-place `merge_from` (associative and commutative:
merging the accumulators of any split of the pairs, in any order, is `==` to adding them all to
one), `to_dict` / `from_dict` with JSON-able values, and `summary()`, a map of metric name to a
float, or None when no pair supports the metric.

Sums are exact. Each sum of floats is kept as a short list of floats whose exact sum is the sum
(folded into a canonical expansion by `math.fsum` every few dozen terms, as the quantile sketch
does, `controller.core.stats.sketch.canonical_partials`), so the order in which pairs are added
or accumulators merged changes nothing, not even the last bit, and `==` compares exact values.

`ClassifierQuality`, a binary classifier whose prediction is the probability (score) p of the
positive class, with labels y in {0, 1}, over N scored pairs:

    accuracy  = share of pairs with (p >= threshold) == y     (threshold 0.5 by default)
    log loss  = mean of -(y ln q + (1 - y) ln(1 - q)),  q = p clipped to [1e-15, 1 - 1e-15]
    Brier     = mean of (p - y)^2                              in [0, 1]
    ECE       = sum over bins b of n_b / N |mean p in b - share of positives in b|
              = (1 / N) sum over b of |sum of p in b - positives in b|

over `calibration_bins` equal-width bins of [0, 1] (10 by default; bin b holds
[b / k, (b + 1) / k), and p = 1 the last bin). A pair whose prediction is only a class
(`add_class`) counts towards accuracy, not towards the score metrics.

AUC is the Mann-Whitney statistic, the share of (positive, negative) pairs in which the positive
has the higher score, ties counted half. Exact AUC needs every score; here the scores are counted
on a fixed grid of `auc_bins` equal-width bins (1,000 by default): positives and negatives per
bin, 16 KB as two arrays of 64-bit counts, which add and merge exactly. Pairs in different bins
are ordered exactly as their scores are (the bin index is monotone in the score); pairs in the
same bin are counted half, as if tied. A same-bin pair truly counts 0, 1/2 or 1, so

    |binned AUC - exact AUC| <= auc_tie_share / 2,
    auc_tie_share = sum over bins of positives_b negatives_b / (positives negatives),

the share of (positive, negative) pairs that share a bin. `summary()` reports both
(`auc_tie_share`, `auc_max_error`); with scores spread over [0, 1] the share is of the order of
1 / auc_bins. AUC is None until both classes have a scored pair.

`MulticlassQuality`, labels that are class names, and predictions that are a class name (accuracy
only) or a map of class name to probability (summing to 1 within 1e-4; classes absent from the
map have probability 0; the predicted class is the most probable one, ties to the first name in
sorted order):

    log loss  = mean of -ln q_y,  q_y = probability of the label, clipped to [1e-15, 1 - 1e-15]
    Brier     = mean of sum over classes c of (p_c - [c = y])^2   in [0, 2]

(the multi-class Brier score, not halved, as scikit-learn reports it). Per-class counts (labels,
predictions, correct predictions) are kept for at most `max_classes` classes (20 by default):
the first `max_classes` names in sorted order among all names seen, the rest folded into
"__other__". Which names keep their own counts depends only on the set of names seen, never on
the order of the pairs or how they were split (a name among the first k of a union is among the
first k of each part that holds it), so the counts merge exactly.

`RegressionQuality`: with errors e = prediction - label, the exact sums of e, |e| and e^2 give

    MAE = mean |e|,   RMSE = sqrt(mean e^2),   bias = mean e.

An error beyond 2**480 in magnitude is refused, so no sum of up to 2**63 squared errors can
overflow a float.

Sizes, whatever the number of pairs: `RegressionQuality` about 1 KB; `MulticlassQuality` about
1 KB plus 150 bytes per class kept (4 KB at 20 classes); `ClassifierQuality` about 20 KB, 16 KB
of it the AUC grid, and at most 1,000 [bin, positives, negatives] triples as JSON. Counts are
Python integers (they grow with the logarithm of the number of pairs).

`per_request_loss(kind, prediction, label)` scores one pair for the sequential tests, which need a
loss with known bounds (`LossKind.bounds`):

    ZERO_ONE        1 when the predicted class is wrong, else 0                      [0, 1]
    BRIER           (p - y)^2 for a score; half the multi-class Brier for a map       [0, 1]
    LOG_LOSS        -ln(max(q_y, 1e-4)) / ln(1e4): the log loss of the label's
                    probability capped at ln(1e4) = 9.21 nats and scaled to           [0, 1]
    ABSOLUTE_ERROR  |prediction - label|, for a regression                            [0, inf)

The per-request log loss is capped harder than the aggregate one (1e-4 against 1e-15) so that one
confident miss cannot outweigh thousands of pairs in a bounded-mean test; the absolute error is
unbounded and needs a test that does not assume bounds (or a cap chosen by the caller).

Bad input (a binary label other than 0 or 1, a probability outside [0, 1], NaN or infinity, a map
of probabilities that does not sum to 1) raises ValueError and records nothing.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from controller.core.stats.errors import IncompatibleStatsError
from controller.core.stats.sketch import canonical_partials

DEFAULT_THRESHOLD = 0.5
DEFAULT_CALIBRATION_BINS = 10
DEFAULT_AUC_BINS = 1000
DEFAULT_MAX_CLASSES = 20

#: Probabilities are clipped to [LOG_LOSS_EPS, 1 - LOG_LOSS_EPS] in the aggregate log loss.
LOG_LOSS_EPS = 1e-15
#: The per-request log loss counts probabilities below this floor as the floor.
PER_REQUEST_LOG_FLOOR = 1e-4
#: The largest per-request log loss before scaling, ln(1e4) nats.
MAX_PER_REQUEST_LOG_LOSS = math.log(1.0 / PER_REQUEST_LOG_FLOOR)
#: How far from 1 a map of class probabilities may sum.
PROBABILITY_SUM_TOLERANCE = 1e-4
#: The largest regression error accepted: its square, 2**960, summed 2**63 times fits a float.
MAX_REGRESSION_ERROR = 2.0**480
#: Where the classes beyond `max_classes` are counted.
OTHER = "__other__"

BinaryLabel = int | float | bool
ClassName = str | int
ClassProbabilities = Mapping[str, float]
Prediction = float | int | bool | str | ClassProbabilities

#: Pending addends of an exact sum are folded into its canonical expansion past this many.
_COMPACT_AT = 32


# --------------------------------------------------------------------------------------------
# Exact sums
# --------------------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class ExactSum:
    """A sum of floats kept exactly: floats whose exact sum is the sum of every value added.

    `==` compares exact values, so two sums of the same values added in any order are equal.
    At most `_COMPACT_AT` pending terms plus a canonical expansion of a few terms."""

    parts: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        parts = self.parts
        parts.append(value)
        if len(parts) > _COMPACT_AT:
            self.parts = canonical_partials(parts)

    def merge_from(self, other: ExactSum) -> None:
        self.parts = canonical_partials(self.parts + other.parts)

    @property
    def value(self) -> float:
        """The correctly rounded exact sum."""
        return math.fsum(self.parts)

    def copy(self) -> ExactSum:
        return ExactSum(list(self.parts))

    def to_list(self) -> list[float]:
        return canonical_partials(self.parts)

    @classmethod
    def from_list(cls, data: Iterable[Any]) -> ExactSum:
        parts = [float(x) for x in data]
        if not all(math.isfinite(x) for x in parts):
            raise ValueError(f"the terms of an exact sum must be finite, got {parts}")
        return cls(parts)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ExactSum):
            return NotImplemented
        return canonical_partials(self.parts) == canonical_partials(other.parts)

    __hash__ = None  # type: ignore[assignment]  # mutable: not hashable

    def __repr__(self) -> str:
        return f"ExactSum({self.value!r})"


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _probability(value: object, what: str = "a probability") -> float:
    """The value as a float in [0, 1], or ValueError (NaN fails both comparisons)."""
    if isinstance(value, str | bytes):
        raise ValueError(f"{what} must be a number in [0, 1], got the string {value!r}")
    try:
        p = float(value)  # type: ignore[arg-type]  # any number, checked below
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{what} must be a number in [0, 1], got {value!r}")
    return p


def _binary_label(value: object, what: str = "a binary label") -> int:
    """1 or 0 for a label equal to 1 or 0 (True, False, 1.0 included), else ValueError."""
    if not isinstance(value, str | bytes):
        if value == 1:
            return 1
        if value == 0:
            return 0
    raise ValueError(f"{what} must be 0 or 1, got {value!r}")


def _class_name(value: object, what: str = "a class") -> str:
    """A class name: a string, or an integer written as a string."""
    if isinstance(value, str):
        name = value
    elif isinstance(value, int) and not isinstance(value, bool):
        name = str(value)
    else:
        raise ValueError(f"{what} must be a class name (a string), got {value!r}")
    if name == OTHER:
        raise ValueError(f"{what} may not be named {OTHER!r}, the name reserved for folded classes")
    return name


def _class_probabilities(prediction: Mapping[Any, Any]) -> dict[str, float]:
    """A map of class probabilities, checked: names, values in [0, 1], a sum of 1."""
    if not prediction:
        raise ValueError("a map of class probabilities must name at least one class")
    probabilities = {
        _class_name(name): _probability(p, f"the probability of class {name!r}")
        for name, p in prediction.items()
    }
    total = math.fsum(probabilities.values())
    if abs(total - 1.0) > PROBABILITY_SUM_TOLERANCE:
        raise ValueError(
            f"class probabilities must sum to 1 (within {PROBABILITY_SUM_TOLERANCE}), got {total}"
        )
    return probabilities


def _top_class(probabilities: Mapping[str, float]) -> str:
    """The most probable class; among equals, the first name in sorted order."""
    return min(probabilities.items(), key=lambda item: (-item[1], item[0]))[0]


def _log_loss(p: float) -> float:
    """-ln p, with p clipped to [LOG_LOSS_EPS, 1 - LOG_LOSS_EPS]."""
    return -math.log(min(max(p, LOG_LOSS_EPS), 1.0 - LOG_LOSS_EPS))


def _multiclass_brier(probabilities: Mapping[str, float], label: str) -> float:
    """sum over classes of (p_c - [c = label])^2, in [0, 2]."""
    total = math.fsum((p - (name == label)) ** 2 for name, p in probabilities.items())
    return total if label in probabilities else total + 1.0


def _bin_of(p: float, bins: int) -> int:
    """The equal-width bin of [0, 1] holding p: [b / bins, (b + 1) / bins), 1 in the last."""
    return min(int(p * bins), bins - 1)


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


def _ratio(numerator: float, count: int) -> float | None:
    return numerator / count if count else None


# --------------------------------------------------------------------------------------------
# Binary classifiers
# --------------------------------------------------------------------------------------------


@dataclass(slots=True, repr=False)
class ClassifierQuality:
    """Accuracy, log loss, Brier score, calibration error and AUC of a binary classifier.

    `add(score, label)` takes the probability of the positive class; `add_class(predicted,
    label)` a bare predicted class. The settings (`threshold`, `calibration_bins`, `auc_bins`)
    must match to merge. The remaining fields are the state, built by `add` and `from_dict`."""

    threshold: float = DEFAULT_THRESHOLD
    calibration_bins: int = DEFAULT_CALIBRATION_BINS
    auc_bins: int = DEFAULT_AUC_BINS
    #: every pair, scored or not
    count: int = 0
    #: pairs with a score
    scored: int = 0
    #: pairs labelled 1
    positives: int = 0
    #: pairs whose predicted class is the label
    correct: int = 0
    log_loss_sum: ExactSum = field(default_factory=ExactSum)
    brier_sum: ExactSum = field(default_factory=ExactSum)
    #: per calibration bin: scored pairs, positives among them, and the sum of their scores
    bin_counts: list[int] = field(default_factory=list)
    bin_positives: list[int] = field(default_factory=list)
    bin_scores: list[ExactSum] = field(default_factory=list)
    #: per AUC bin: scored positives and scored negatives
    auc_positives: array[int] = field(default_factory=lambda: array("q"))
    auc_negatives: array[int] = field(default_factory=lambda: array("q"))

    def __post_init__(self) -> None:
        threshold = float(self.threshold)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold!r}")
        self.threshold = threshold
        k = _positive_int(self.calibration_bins, "calibration_bins")
        m = _positive_int(self.auc_bins, "auc_bins")
        if not self.bin_counts and not self.bin_positives and not self.bin_scores:
            self.bin_counts = [0] * k
            self.bin_positives = [0] * k
            self.bin_scores = [ExactSum() for _ in range(k)]
        if not self.auc_positives and not self.auc_negatives:
            self.auc_positives = array("q", bytes(8 * m))
            self.auc_negatives = array("q", bytes(8 * m))
        lengths = {len(self.bin_counts), len(self.bin_positives), len(self.bin_scores)}
        if lengths != {k} or {len(self.auc_positives), len(self.auc_negatives)} != {m}:
            raise ValueError(
                f"the state needs {k} calibration bins and {m} AUC bins; rebuild it with from_dict"
            )

    # ---- adding ------------------------------------------------------------------------

    def add(self, score: float, label: BinaryLabel) -> None:
        """Record one pair: `score`, the predicted probability of class 1, and the label."""
        p = _probability(score, "a score")
        y = _binary_label(label)
        self.count += 1
        self.scored += 1
        self.positives += y
        self.correct += (p >= self.threshold) == bool(y)
        self.log_loss_sum.add(_log_loss(p if y else 1.0 - p))
        self.brier_sum.add((p - y) * (p - y))
        b = _bin_of(p, self.calibration_bins)
        self.bin_counts[b] += 1
        self.bin_positives[b] += y
        self.bin_scores[b].add(p)
        a = _bin_of(p, self.auc_bins)
        if y:
            self.auc_positives[a] += 1
        else:
            self.auc_negatives[a] += 1

    def add_scores(self, scores: Sequence[float], labels: Sequence[int]) -> None:
        """`add` for each (score, label) pair, the bulk path: the same state, with each exact
        sum's terms added at once. The caller has checked them: scores floats in [0, 1],
        labels 0 or 1 (ints)."""
        calibration_bins, auc_bins, threshold = self.calibration_bins, self.auc_bins, self.threshold
        log_losses: list[float] = []
        briers: list[float] = []
        bin_terms: list[list[float]] = [[] for _ in range(calibration_bins)]
        bin_counts, bin_positives = self.bin_counts, self.bin_positives
        auc_positives, auc_negatives = self.auc_positives, self.auc_negatives
        correct = 0
        for p, y in zip(scores, labels, strict=True):
            correct += (p >= threshold) == bool(y)
            log_losses.append(_log_loss(p if y else 1.0 - p))
            briers.append((p - y) * (p - y))
            b = min(int(p * calibration_bins), calibration_bins - 1)
            bin_counts[b] += 1
            bin_positives[b] += y
            bin_terms[b].append(p)
            a = min(int(p * auc_bins), auc_bins - 1)
            if y:
                auc_positives[a] += 1
            else:
                auc_negatives[a] += 1
        self.count += len(briers)
        self.scored += len(briers)
        self.positives += sum(labels)
        self.correct += correct
        for total, terms in (
            (self.log_loss_sum, log_losses),
            (self.brier_sum, briers),
            *zip(self.bin_scores, bin_terms, strict=True),
        ):
            if terms:
                total.parts = canonical_partials(total.parts + terms)

    def add_class(self, predicted: BinaryLabel, label: BinaryLabel) -> None:
        """Record one pair whose prediction is only a class (0 or 1): accuracy, no scores."""
        guess = _binary_label(predicted, "a predicted class")
        y = _binary_label(label)
        self.count += 1
        self.positives += y
        self.correct += guess == y

    # ---- reading -----------------------------------------------------------------------

    def auc(self) -> tuple[float, float] | None:
        """(AUC, auc_tie_share) from the grid, or None without a scored pair of each class.

        The binned AUC is within auc_tie_share / 2 of the exact one (module docstring)."""
        positives, negatives = sum(self.auc_positives), sum(self.auc_negatives)
        if not positives or not negatives:
            return None
        twice_wins = 0  # twice the Mann-Whitney U, in integers: exact
        ties = 0
        below = 0
        for pos, neg in zip(self.auc_positives, self.auc_negatives, strict=True):
            twice_wins += pos * (2 * below + neg)
            ties += pos * neg
            below += neg
        pairs = positives * negatives
        return twice_wins / (2 * pairs), ties / pairs

    def expected_calibration_error(self) -> float | None:
        if not self.scored:
            return None
        gaps = [
            abs(scores.value - positives)
            for scores, positives in zip(self.bin_scores, self.bin_positives, strict=True)
        ]
        return math.fsum(gaps) / self.scored

    def summary(self) -> dict[str, float | None]:
        scored = self.scored
        auc = self.auc()
        score_sum = math.fsum(p for scores in self.bin_scores for p in scores.parts)
        return {
            "count": float(self.count),
            "scored": float(scored),
            "positive_rate": _ratio(self.positives, self.count),
            "accuracy": _ratio(self.correct, self.count),
            "log_loss": _ratio(self.log_loss_sum.value, scored),
            "brier": _ratio(self.brier_sum.value, scored),
            "mean_score": _ratio(score_sum, scored),
            "ece": self.expected_calibration_error(),
            "auc": None if auc is None else auc[0],
            "auc_tie_share": None if auc is None else auc[1],
            "auc_max_error": None if auc is None else auc[1] / 2.0,
        }

    # ---- merging and plain values ------------------------------------------------------

    def settings(self) -> tuple[float, int, int]:
        return (self.threshold, self.calibration_bins, self.auc_bins)

    def check_compatible(self, other: ClassifierQuality) -> None:
        if self.settings() != other.settings():
            raise IncompatibleStatsError(
                "cannot merge classifier quality with different (threshold, calibration_bins, "
                f"auc_bins): {self.settings()} vs {other.settings()}; build both the same way"
            )

    def merge_from(self, other: ClassifierQuality) -> None:
        """Add `other`'s pairs to these, in place: `==` to `self.merged(other)`."""
        self.check_compatible(other)
        self.count += other.count
        self.scored += other.scored
        self.positives += other.positives
        self.correct += other.correct
        self.log_loss_sum.merge_from(other.log_loss_sum)
        self.brier_sum.merge_from(other.brier_sum)
        for b in range(self.calibration_bins):
            self.bin_counts[b] += other.bin_counts[b]
            self.bin_positives[b] += other.bin_positives[b]
            self.bin_scores[b].merge_from(other.bin_scores[b])
        for a in range(self.auc_bins):
            self.auc_positives[a] += other.auc_positives[a]
            self.auc_negatives[a] += other.auc_negatives[a]

    def merged(self, other: ClassifierQuality) -> ClassifierQuality:
        """A new accumulator of both sets of pairs; neither input changes."""
        result = self.copy()
        result.merge_from(other)
        return result

    merge = merged

    def copy(self) -> ClassifierQuality:
        return ClassifierQuality.from_dict(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        grid = zip(self.auc_positives, self.auc_negatives, strict=True)
        return {
            "threshold": self.threshold,
            "calibration_bins": self.calibration_bins,
            "auc_bins": self.auc_bins,
            "count": self.count,
            "scored": self.scored,
            "positives": self.positives,
            "correct": self.correct,
            "log_loss_sum": self.log_loss_sum.to_list(),
            "brier_sum": self.brier_sum.to_list(),
            "bin_counts": list(self.bin_counts),
            "bin_positives": list(self.bin_positives),
            "bin_scores": [scores.to_list() for scores in self.bin_scores],
            # the occupied AUC bins only: [bin, positives, negatives]
            "auc_grid": [[a, pos, neg] for a, (pos, neg) in enumerate(grid) if pos or neg],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassifierQuality:
        quality = cls(
            threshold=float(data.get("threshold", DEFAULT_THRESHOLD)),
            calibration_bins=int(data.get("calibration_bins", DEFAULT_CALIBRATION_BINS)),
            auc_bins=int(data.get("auc_bins", DEFAULT_AUC_BINS)),
            count=int(data.get("count", 0)),
            scored=int(data.get("scored", 0)),
            positives=int(data.get("positives", 0)),
            correct=int(data.get("correct", 0)),
            log_loss_sum=ExactSum.from_list(data.get("log_loss_sum", [])),
            brier_sum=ExactSum.from_list(data.get("brier_sum", [])),
            bin_counts=[int(n) for n in data.get("bin_counts", [])],
            bin_positives=[int(n) for n in data.get("bin_positives", [])],
            bin_scores=[ExactSum.from_list(s) for s in data.get("bin_scores", [])],
        )
        for a, pos, neg in data.get("auc_grid", []):
            quality.auc_positives[int(a)] = int(pos)
            quality.auc_negatives[int(a)] = int(neg)
        return quality

    def __repr__(self) -> str:
        return (
            f"ClassifierQuality(count={self.count}, scored={self.scored}, "
            f"threshold={self.threshold}, auc_bins={self.auc_bins})"
        )


# --------------------------------------------------------------------------------------------
# Multi-class classifiers
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class ClassCounts:
    """Of one class: pairs labelled with it, predictions of it, and correct predictions of it."""

    labels: int = 0
    predicted: int = 0
    correct: int = 0

    def merge_from(self, other: ClassCounts) -> None:
        self.labels += other.labels
        self.predicted += other.predicted
        self.correct += other.correct

    def is_empty(self) -> bool:
        return not (self.labels or self.predicted)

    def to_list(self) -> list[int]:
        return [self.labels, self.predicted, self.correct]

    @classmethod
    def from_list(cls, data: Sequence[Any]) -> ClassCounts:
        labels, predicted, correct = (int(x) for x in data)
        return cls(labels, predicted, correct)


@dataclass(slots=True, repr=False)
class MulticlassQuality:
    """Accuracy (and, from class probabilities, log loss and Brier score) of a classifier whose
    labels are class names, with per-class counts for at most `max_classes` classes."""

    max_classes: int = DEFAULT_MAX_CLASSES
    #: every pair
    count: int = 0
    #: pairs whose prediction is a map of class probabilities
    scored: int = 0
    correct: int = 0
    log_loss_sum: ExactSum = field(default_factory=ExactSum)
    brier_sum: ExactSum = field(default_factory=ExactSum)
    #: the first `max_classes` names seen, in sorted order, and the rest folded together
    classes: dict[str, ClassCounts] = field(default_factory=dict)
    other: ClassCounts = field(default_factory=ClassCounts)

    def __post_init__(self) -> None:
        _positive_int(self.max_classes, "max_classes")
        if len(self.classes) > self.max_classes:
            raise ValueError(f"at most {self.max_classes} classes keep their own counts")

    # ---- adding ------------------------------------------------------------------------

    def add(self, prediction: str | int | Mapping[Any, Any], label: ClassName) -> None:
        """Record one pair: a predicted class name, or a map of class name to probability."""
        y = _class_name(label, "a label")
        if isinstance(prediction, Mapping):
            probabilities = _class_probabilities(prediction)
            guess = _top_class(probabilities)
            self.scored += 1
            self.log_loss_sum.add(_log_loss(probabilities.get(y, 0.0)))
            self.brier_sum.add(_multiclass_brier(probabilities, y))
        else:
            guess = _class_name(prediction, "a predicted class")
        hit = guess == y
        self.count += 1
        self.correct += hit
        true_class = self._counts_of(y)
        true_class.labels += 1
        true_class.correct += hit
        self._counts_of(guess).predicted += 1

    def _counts_of(self, name: str) -> ClassCounts:
        """The counts that record `name`: its own while it is among the first `max_classes`
        names seen in sorted order, else the folded ones."""
        counts = self.classes.get(name)
        if counts is not None:
            return counts
        if len(self.classes) >= self.max_classes and name > max(self.classes):
            return self.other
        counts = self.classes[name] = ClassCounts()
        self._fold_excess()
        return counts

    def _fold_excess(self) -> None:
        while len(self.classes) > self.max_classes:
            self.other.merge_from(self.classes.pop(max(self.classes)))

    # ---- reading -----------------------------------------------------------------------

    def per_class(self) -> dict[str, dict[str, float | None]]:
        """Labels, predictions, correct predictions, recall and precision of each class kept,
        in sorted order, then of the folded classes under "__other__" when there are any."""
        rows = sorted(self.classes.items())
        if not self.other.is_empty():
            rows.append((OTHER, self.other))
        return {
            name: {
                "labels": float(c.labels),
                "predicted": float(c.predicted),
                "correct": float(c.correct),
                "recall": _ratio(c.correct, c.labels),
                "precision": _ratio(c.correct, c.predicted),
            }
            for name, c in rows
        }

    def summary(self) -> dict[str, float | None]:
        return {
            "count": float(self.count),
            "scored": float(self.scored),
            "accuracy": _ratio(self.correct, self.count),
            "log_loss": _ratio(self.log_loss_sum.value, self.scored),
            "brier": _ratio(self.brier_sum.value, self.scored),
        }

    # ---- merging and plain values ------------------------------------------------------

    def check_compatible(self, other: MulticlassQuality) -> None:
        if self.max_classes != other.max_classes:
            raise IncompatibleStatsError(
                f"cannot merge multi-class quality capped at {self.max_classes} and "
                f"{other.max_classes} classes; build both with the same max_classes"
            )

    def merge_from(self, other: MulticlassQuality) -> None:
        """Add `other`'s pairs to these, in place: `==` to `self.merged(other)`."""
        self.check_compatible(other)
        self.count += other.count
        self.scored += other.scored
        self.correct += other.correct
        self.log_loss_sum.merge_from(other.log_loss_sum)
        self.brier_sum.merge_from(other.brier_sum)
        for name, counts in other.classes.items():
            self.classes.setdefault(name, ClassCounts()).merge_from(counts)
        self.other.merge_from(other.other)
        self._fold_excess()

    def merged(self, other: MulticlassQuality) -> MulticlassQuality:
        """A new accumulator of both sets of pairs; neither input changes."""
        result = self.copy()
        result.merge_from(other)
        return result

    merge = merged

    def copy(self) -> MulticlassQuality:
        return MulticlassQuality.from_dict(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_classes": self.max_classes,
            "count": self.count,
            "scored": self.scored,
            "correct": self.correct,
            "log_loss_sum": self.log_loss_sum.to_list(),
            "brier_sum": self.brier_sum.to_list(),
            # [labels, predicted, correct] per class
            "classes": {name: c.to_list() for name, c in sorted(self.classes.items())},
            "other": self.other.to_list(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MulticlassQuality:
        return cls(
            max_classes=int(data.get("max_classes", DEFAULT_MAX_CLASSES)),
            count=int(data.get("count", 0)),
            scored=int(data.get("scored", 0)),
            correct=int(data.get("correct", 0)),
            log_loss_sum=ExactSum.from_list(data.get("log_loss_sum", [])),
            brier_sum=ExactSum.from_list(data.get("brier_sum", [])),
            classes={
                str(name): ClassCounts.from_list(c) for name, c in data.get("classes", {}).items()
            },
            other=ClassCounts.from_list(data.get("other", [0, 0, 0])),
        )

    def __repr__(self) -> str:
        return (
            f"MulticlassQuality(count={self.count}, scored={self.scored}, "
            f"classes={sorted(self.classes)})"
        )


# --------------------------------------------------------------------------------------------
# Regression
# --------------------------------------------------------------------------------------------


def _number(value: object, what: str) -> float:
    if isinstance(value, str | bytes | Mapping):
        raise ValueError(f"{what} of a regression must be a number, got {value!r}")
    try:
        return float(value)  # type: ignore[arg-type]  # any number; finiteness checked after
    except (TypeError, ValueError):
        raise ValueError(f"{what} of a regression must be a number, got {value!r}") from None


def _regression_error(prediction: object, label: object) -> float:
    """prediction - label, checked: both finite numbers, the error within the bound."""
    p, y = _number(prediction, "a prediction"), _number(label, "a label")
    if not (math.isfinite(p) and math.isfinite(y)):
        raise ValueError(f"a regression takes finite numbers, got prediction {p} and label {y}")
    error = p - y
    if not abs(error) <= MAX_REGRESSION_ERROR:
        raise ValueError(
            f"a regression error must be at most 2**480 in magnitude, got {p} - {y} = {error}"
        )
    return error


@dataclass(slots=True, repr=False)
class RegressionQuality:
    """Count, MAE, RMSE and bias of a regression, from exact sums of its errors."""

    count: int = 0
    error_sum: ExactSum = field(default_factory=ExactSum)
    abs_error_sum: ExactSum = field(default_factory=ExactSum)
    squared_error_sum: ExactSum = field(default_factory=ExactSum)

    def add(self, prediction: float, label: float) -> None:
        error = _regression_error(prediction, label)
        self.count += 1
        self.error_sum.add(error)
        self.abs_error_sum.add(abs(error))
        self.squared_error_sum.add(error * error)

    def summary(self) -> dict[str, float | None]:
        mse = _ratio(self.squared_error_sum.value, self.count)
        return {
            "count": float(self.count),
            "mae": _ratio(self.abs_error_sum.value, self.count),
            "mse": mse,
            "rmse": None if mse is None else math.sqrt(mse),
            "bias": _ratio(self.error_sum.value, self.count),
        }

    def merge_from(self, other: RegressionQuality) -> None:
        """Add `other`'s pairs to these, in place: `==` to `self.merged(other)`."""
        self.count += other.count
        self.error_sum.merge_from(other.error_sum)
        self.abs_error_sum.merge_from(other.abs_error_sum)
        self.squared_error_sum.merge_from(other.squared_error_sum)

    def merged(self, other: RegressionQuality) -> RegressionQuality:
        """A new accumulator of both sets of pairs; neither input changes."""
        result = self.copy()
        result.merge_from(other)
        return result

    merge = merged

    def copy(self) -> RegressionQuality:
        return RegressionQuality(
            self.count,
            self.error_sum.copy(),
            self.abs_error_sum.copy(),
            self.squared_error_sum.copy(),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "error_sum": self.error_sum.to_list(),
            "abs_error_sum": self.abs_error_sum.to_list(),
            "squared_error_sum": self.squared_error_sum.to_list(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RegressionQuality:
        return cls(
            count=int(data.get("count", 0)),
            error_sum=ExactSum.from_list(data.get("error_sum", [])),
            abs_error_sum=ExactSum.from_list(data.get("abs_error_sum", [])),
            squared_error_sum=ExactSum.from_list(data.get("squared_error_sum", [])),
        )

    def __repr__(self) -> str:
        return f"RegressionQuality(count={self.count})"


# --------------------------------------------------------------------------------------------
# Per-request losses
# --------------------------------------------------------------------------------------------


class LossKind(StrEnum):
    """The loss of one (prediction, label) pair that a sequential test averages."""

    ZERO_ONE = "zero_one"
    BRIER = "brier"
    LOG_LOSS = "log_loss"
    ABSOLUTE_ERROR = "absolute_error"

    @property
    def bounds(self) -> tuple[float, float]:
        """The range every loss of this kind lies in."""
        return (0.0, math.inf) if self is LossKind.ABSOLUTE_ERROR else (0.0, 1.0)

    @property
    def is_bounded(self) -> bool:
        return math.isfinite(self.bounds[1])

    @classmethod
    def parse(cls, kind: LossKind | str) -> LossKind:
        try:
            return cls(kind)
        except ValueError:
            known = ", ".join(k.value for k in cls)
            raise ValueError(f"unknown loss kind {kind!r}; known kinds: {known}") from None


def per_request_loss(
    kind: LossKind | str,
    prediction: Prediction,
    label: BinaryLabel | str,
    *,
    threshold: float = DEFAULT_THRESHOLD,
) -> float:
    """The loss of one pair, within `LossKind(kind).bounds` (module docstring).

    A number predicts a binary classifier's probability of class 1 (a class 0 or 1 is the
    probability 0 or 1) against a label 0 or 1, or, for ABSOLUTE_ERROR, a regression's value;
    a string predicts a class name (ZERO_ONE only); a map gives class probabilities against a
    class name. `threshold` turns a probability into a class for ZERO_ONE."""
    loss = LossKind.parse(kind)
    if loss is LossKind.ABSOLUTE_ERROR:
        return abs(_regression_error(prediction, label))
    if isinstance(prediction, Mapping):
        probabilities = _class_probabilities(prediction)
        y = _class_name(label, "a label")
        if loss is LossKind.ZERO_ONE:
            return float(_top_class(probabilities) != y)
        if loss is LossKind.BRIER:
            return _multiclass_brier(probabilities, y) / 2.0
        return _capped_log_loss(probabilities.get(y, 0.0))
    if isinstance(prediction, str):
        if loss is not LossKind.ZERO_ONE:
            raise ValueError(f"{loss.value} needs probabilities, got the class {prediction!r}")
        return float(_class_name(prediction, "a predicted class") != _class_name(label, "a label"))
    p = _probability(prediction, "a score")
    yb = _binary_label(label)
    if loss is LossKind.ZERO_ONE:
        return float((p >= threshold) != bool(yb))
    if loss is LossKind.BRIER:
        return (p - yb) * (p - yb)
    return _capped_log_loss(p if yb else 1.0 - p)


def _capped_log_loss(p: float) -> float:
    """-ln(max(p, 1e-4)) / ln(1e4): in [0, 1], and 1 at the floor and below."""
    if p <= PER_REQUEST_LOG_FLOOR:
        return 1.0
    return min(-math.log(p) / MAX_PER_REQUEST_LOG_LOSS, 1.0)
