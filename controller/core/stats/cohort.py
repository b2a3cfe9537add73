"""Everything the detectors need about one cohort (baseline or canary) of one rollout step.

`CohortStats.observe(...)` runs once per served prediction, so it only updates counters and
sketches; `observe_many(...)` takes many predictions at once, column by column, and gives
exactly (`==`) what observing them one by one gives (the worker folds predictions this way).
Every part is a mergeable plain value: `merged` combines partitions (pure) and `merge_from`
merges in place, `to_dict` / `from_dict` store it in a table, `==` compares it in a test.

Distributions of numbers (latency, numeric predictions, numeric features) are DDSketches
(`QuantileSketch`) with a negative store, not histograms over fixed edges: a policy does not know
the range of a score or a feature in advance. Distances between two cohorts are computed on a
common binning derived from both sketches (pooled quantiles, on the shared bucket grid, see
`controller.core.stats.distance`); distances to a training profile re-bin the sketch onto the
profile's own edges, or, while a field has few distinct numbers, counts them exactly on those
edges (`ExactCounts`). A field that carries strings counts categories; a field that carries both
keeps both, and the majority decides how it is compared.

Predictions are recorded under output names: a number or a class under "prediction"; class
probabilities as the arg-max class under "prediction" plus each class score under
"prediction.<class>" (when there are at most `max_class_scores` classes).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from itertools import compress
from operator import attrgetter, not_
from typing import Any, NamedTuple, Protocol, TypedDict

from controller.core.stats.categorical import CategoricalCounts
from controller.core.stats.distribution import StatsConfig, ValueDistribution, out_of_domain_count
from controller.core.stats.errors import IncompatibleStatsError
from controller.core.stats.profile import FeatureProfile
from controller.core.stats.quality import FieldQuality
from controller.core.stats.sketch import (
    QuantileSketch,
    SketchSummary,
)

FeatureValue = float | int | str | bool | None
PredictionValue = float | int | str | bool | Mapping[str, float]

PREDICTION = "prediction"
UNKNOWN_ERROR = "unknown"


class Observation(NamedTuple):
    """One served prediction, as plain values: the batch path's item."""

    ok: bool
    latency_ms: float
    event_time: float
    error_type: str | None = None
    prediction: PredictionValue | None = None
    features: Mapping[str, FeatureValue] | None = None


class Row(Protocol):
    """What `CohortStats.observe_many` reads of each prediction: an `Observation`, or any
    object with these attributes (the worker's decoded predictions, whose `event_time` is an
    aware datetime)."""

    @property
    def ok(self) -> bool: ...
    @property
    def latency_ms(self) -> float: ...
    @property
    def event_time(self) -> float | datetime: ...
    @property
    def error_type(self) -> str | None: ...
    @property
    def prediction(self) -> PredictionValue | None: ...
    @property
    def features(self) -> Mapping[str, FeatureValue] | None: ...


_OK = attrgetter("ok")
_LATENCY = attrgetter("latency_ms")
_EVENT_TIME = attrgetter("event_time")
_PREDICTION = attrgetter("prediction")
_FEATURES = attrgetter("features")


class _Sorted(NamedTuple):
    """A column of values split for the bulk path."""

    numbers: list[float]  # finite floats
    strings: list[str]
    nones: int
    rest: list[Any]  # everything else (booleans, ints, maps, non-finite floats, ...)


class DistributionSummary(TypedDict):
    """Additions to one `ValueDistribution`: finite numbers (their sketch summary and their
    count per distinct value, None when they have more distinct values than
    `StatsConfig.max_exact_values`) and category counts."""

    numbers: SketchSummary | None
    values: Mapping[float, int] | None
    labels: Mapping[str, int]


class CohortSummary(TypedDict):
    """What `observe_many` would record for some rows, summed up elsewhere (by the prediction
    lane's compiled fold, controller/stream/native.py): `observe_summary` of it is `==` to
    `observe_many` of the rows. Qualities are `(present, missing, invalid)` counts."""

    requests: int
    errors: int
    error_types: Mapping[str, int]
    first_event_time: float
    last_event_time: float
    latency: SketchSummary
    prediction_quality: tuple[int, int, int]
    predictions: Mapping[str, DistributionSummary]
    feature_events: int
    quality: Mapping[str, tuple[int, int, int]]
    features: Mapping[str, DistributionSummary]


def _sort_column(values: list[Any]) -> _Sorted:
    """Split a column in a few passes at C speed; the common columns (all floats, or floats
    and None, or all strings) take one or two."""
    n = len(values)
    numbers = [v for v in values if type(v) is float]
    strings: list[str] = []
    nones = 0
    rest: list[Any] = []
    if len(numbers) < n:
        nones = values.count(None)
        if len(numbers) + nones < n:
            strings = [v for v in values if type(v) is str]
            if len(numbers) + nones + len(strings) < n:
                rest = [
                    v
                    for v in values
                    if type(v) is not float and type(v) is not str and v is not None
                ]
    if numbers and not math.isfinite(sum(numbers)):  # a nan or an infinity among them
        rest += [v for v in numbers if not math.isfinite(v)]
        numbers = [v for v in numbers if math.isfinite(v)]
    return _Sorted(numbers, strings, nones, rest)


def _timestamp(value: datetime) -> float:
    if value.tzinfo is None:  # its timestamp would depend on the machine's time zone
        raise ValueError(f"event_time must be an aware datetime or epoch seconds, got {value}")
    return value.timestamp()


def _as_number(value: object) -> float | None:
    """The value as a finite float, or None when it is not a finite number (bools are not)."""
    if type(value) is float:
        number = value
    elif isinstance(value, int | float) and type(value) is not bool:
        try:
            number = float(value)  # an int, or an int or float subclass
        except OverflowError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _merge_into(mine: dict[str, Any], theirs: Mapping[str, Any], copy: Any) -> None:
    for name, value in theirs.items():
        found = mine.get(name)
        if found is None:
            mine[name] = copy(value)
        else:
            found.merge_from(value)


class CohortStats:
    """Requests, errors, latency, predictions, features and data quality of one cohort.

    Mutable `observe` (the hot path) and pure `merged`. Times are epoch seconds from the caller
    (event time in replay, the same in the live worker); `first_event_time` and
    `last_event_time` are the min and max seen, so they merge in any order.
    """

    __slots__ = (
        "config",
        "errors",
        "errors_by_type",
        "feature_events",
        "features",
        "first_event_time",
        "invalid_latency",
        "last_event_time",
        "latency",
        "prediction_quality",
        "predictions",
        "quality",
        "requests",
    )

    def __init__(self, config: StatsConfig | None = None) -> None:
        self.config = config or StatsConfig()
        self.requests = 0
        self.errors = 0
        self.errors_by_type = CategoricalCounts(self.config.max_error_types)
        self.latency = self.config.latency_sketch()
        self.invalid_latency = 0
        self.predictions: dict[str, ValueDistribution] = {}
        self.prediction_quality = FieldQuality()
        self.features: dict[str, ValueDistribution] = {}
        self.quality: dict[str, FieldQuality] = {}
        self.feature_events = 0
        self.first_event_time: float | None = None
        self.last_event_time: float | None = None

    # ---- the hot path ------------------------------------------------------------------

    def observe(
        self,
        *,
        ok: bool,
        latency_ms: float,
        event_time: float,
        error_type: str | None = None,
        prediction: PredictionValue | None = None,
        features: Mapping[str, FeatureValue] | None = None,
    ) -> None:
        """Record one served prediction (or failed request).

        Latency is recorded for every request, failed ones too (a timeout is slow); a negative
        or non-finite latency is counted in `invalid_latency` instead. A missing prediction
        counts as missing only for a successful request. Features absent from an event that
        carries features count as missing (see `field_quality`).
        """
        if not math.isfinite(event_time):
            raise ValueError(f"event_time must be a finite epoch time, got {event_time}")
        self.requests += 1
        if not ok:
            self.errors += 1
            self.errors_by_type.add(error_type or UNKNOWN_ERROR)
        if latency_ms >= 0.0 and latency_ms != math.inf:
            self.latency.add(latency_ms)
        else:
            self.invalid_latency += 1
        first = self.first_event_time
        if first is None or event_time < first:
            self.first_event_time = event_time
        last = self.last_event_time
        if last is None or event_time > last:
            self.last_event_time = event_time
        if prediction is not None:
            self._observe_prediction(prediction)
        elif ok:
            self.prediction_quality.missing += 1
        if features is not None:
            self.feature_events += 1
            for name, value in features.items():
                self._observe_feature(name, value)

    def observe_all(self, observations: Iterable[Observation]) -> None:
        """Observe each item of a prediction batch (through the bulk path, `observe_many`)."""
        self.observe_many(list(observations))

    def observe_many(self, rows: Sequence[Row]) -> None:
        """The bulk path: record every row, `==` to calling `observe` on each in turn.

        Each field is taken as a column and recorded in a few passes at C speed (sketches and
        counters take whole lists, see `QuantileSketch.add_many`); only unusual values (ints,
        booleans, class scores, non-finite numbers) go one by one. An invalid event time raises
        ValueError before anything is recorded."""
        if not rows:
            return
        times: list[Any] = list(map(_EVENT_TIME, rows))
        if isinstance(times[0], datetime):  # timestamps are monotonic: min and max suffice
            first, last = _timestamp(min(times)), _timestamp(max(times))
        elif math.isfinite(sum(times)) or all(map(math.isfinite, times)):
            first, last = min(times), max(times)
        else:
            raise ValueError("event_time must be a finite epoch time in every row")
        self.requests += len(rows)
        if self.first_event_time is None or first < self.first_event_time:
            self.first_event_time = first
        if self.last_event_time is None or last > self.last_event_time:
            self.last_event_time = last
        oks = list(map(_OK, rows))
        predictions = list(map(_PREDICTION, rows))
        failed_without = 0  # failed requests without a prediction: not counted as missing
        if not all(oks):
            failed = list(compress(rows, map(not_, oks)))
            self.errors += len(failed)
            self.errors_by_type.add_many([r.error_type or UNKNOWN_ERROR for r in failed])
            failed_without = [r.prediction for r in failed].count(None)
        self._observe_latencies(list(map(_LATENCY, rows)))
        self._observe_predictions(predictions, failed_without)
        present = [f for f in map(_FEATURES, rows) if f is not None]
        if present:
            self.feature_events += len(present)
            for name, column in _columns(present):
                self._observe_feature_column(name, column)

    def observe_summary(self, summary: CohortSummary) -> None:
        """Record rows summed up as a `CohortSummary` under this cohort's settings: `==` to
        `observe_many` of the rows themselves."""
        if not summary["requests"]:
            return
        self.requests += summary["requests"]
        self.errors += summary["errors"]
        self.errors_by_type.add_counts(summary["error_types"])
        first, last = summary["first_event_time"], summary["last_event_time"]
        if self.first_event_time is None or first < self.first_event_time:
            self.first_event_time = first
        if self.last_event_time is None or last > self.last_event_time:
            self.last_event_time = last
        self.latency.add_summary(summary["latency"])
        _add_quality(self.prediction_quality, summary["prediction_quality"])
        self._add_distributions(self.predictions, summary["predictions"])
        self.feature_events += summary["feature_events"]
        for name, counts in summary["quality"].items():
            quality = self.quality.get(name)
            if quality is None:
                quality = self.quality[name] = FieldQuality()
            _add_quality(quality, counts)
        self._add_distributions(self.features, summary["features"])

    def _add_distributions(
        self, table: dict[str, ValueDistribution], added: Mapping[str, DistributionSummary]
    ) -> None:
        for name, summary in added.items():
            distribution = self._distribution(table, name)
            if summary["numbers"] is not None:
                distribution.add_number_summary(summary["numbers"], summary["values"])
            distribution.categories.add_counts(summary["labels"])

    def _observe_latencies(self, latencies: list[float]) -> None:
        if not math.isfinite(sum(latencies)) or min(latencies) < 0.0:
            valid = [v for v in latencies if v >= 0.0 and v != math.inf]
            self.invalid_latency += len(latencies) - len(valid)
            latencies = valid
        self.latency.add_many(latencies)

    def _observe_predictions(self, predictions: list[Any], failed_without: int) -> None:
        """`failed_without`: failed requests without a prediction (not counted as missing)."""
        column = _sort_column(predictions)
        self.prediction_quality.missing += column.nones - failed_without
        self._observe_sorted(column, self.prediction_quality, self.predictions, PREDICTION)
        for prediction in column.rest:
            self._observe_prediction(prediction)

    def _observe_feature_column(self, name: str, values: list[Any]) -> None:
        quality = self.quality.get(name)
        if quality is None:
            quality = self.quality[name] = FieldQuality()
        column = _sort_column(values)
        quality.missing += column.nones
        self._observe_sorted(column, quality, self.features, name)
        for value in column.rest:
            self._observe_feature(name, value)

    def _observe_sorted(
        self,
        column: _Sorted,
        quality: FieldQuality,
        table: dict[str, ValueDistribution],
        name: str,
    ) -> None:
        """Record a column's finite numbers and strings (its `rest` goes one by one)."""
        if column.numbers or column.strings:
            quality.present += len(column.numbers) + len(column.strings)
            distribution = self._distribution(table, name)
            if column.numbers:
                distribution.add_numbers(column.numbers)
            if column.strings:
                distribution.categories.add_many(column.strings)

    @classmethod
    def of(
        cls, observations: Iterable[Observation], config: StatsConfig | None = None
    ) -> CohortStats:
        stats = cls(config)
        stats.observe_all(observations)
        return stats

    def _distribution(self, table: dict[str, ValueDistribution], name: str) -> ValueDistribution:
        found = table.get(name)
        if found is None:
            found = table[name] = ValueDistribution.empty(self.config)
        return found

    def _observe_feature(self, name: str, value: FeatureValue) -> None:
        quality = self.quality.get(name)
        if quality is None:
            quality = self.quality[name] = FieldQuality()
        if type(value) is float and math.isfinite(value):  # the common case first
            quality.present += 1
            self._distribution(self.features, name).add_number(value)
        elif value is None:
            quality.missing += 1
        elif type(value) is str:
            quality.present += 1
            self._distribution(self.features, name).categories.add(value)
        elif type(value) is bool:
            quality.present += 1
            self._distribution(self.features, name).categories.add("true" if value else "false")
        else:
            number = _as_number(value)
            if number is None:
                quality.invalid += 1
            else:
                quality.present += 1
                self._distribution(self.features, name).add_number(number)

    def _observe_prediction(self, prediction: PredictionValue) -> None:
        quality = self.prediction_quality
        if type(prediction) is float and math.isfinite(prediction):  # the common case first
            quality.present += 1
            self._distribution(self.predictions, PREDICTION).add_number(prediction)
        elif type(prediction) is str:
            quality.present += 1
            self._distribution(self.predictions, PREDICTION).categories.add(prediction)
        elif type(prediction) is bool:
            quality.present += 1
            self._distribution(self.predictions, PREDICTION).categories.add(
                "true" if prediction else "false"
            )
        elif isinstance(prediction, Mapping):
            read = {str(k): _as_number(v) for k, v in prediction.items()}
            scores = {k: v for k, v in read.items() if v is not None}
            if not scores or len(scores) < len(read):
                quality.invalid += 1
                return
            quality.present += 1
            top = max(scores, key=lambda k: (scores[k], k))
            self._distribution(self.predictions, PREDICTION).categories.add(top)
            if len(scores) <= self.config.max_class_scores:
                for label, score in scores.items():
                    self._distribution(self.predictions, f"{PREDICTION}.{label}").add_number(score)
        else:
            number = _as_number(prediction)
            if number is None:
                quality.invalid += 1
            else:
                quality.present += 1
                self._distribution(self.predictions, PREDICTION).add_number(number)

    # ---- reading -----------------------------------------------------------------------

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def duration(self) -> float:
        """Seconds between the first and the last event (0 with fewer than two)."""
        if self.first_event_time is None or self.last_event_time is None:
            return 0.0
        return self.last_event_time - self.first_event_time

    def field_quality(self, name: str, profile: FeatureProfile | None = None) -> FieldQuality:
        """The quality of feature `name` over every event that carried features.

        A feature absent from such an event counts as missing. With a profile that bounds the
        domain, `out_of_domain` counts categories outside `allowed` exactly, and numbers in
        sketch buckets wholly outside [domain_min, domain_max] (a bucket straddling a bound is
        not counted, so the count errs low by at most one bucket of width 2 alpha).
        """
        stored = self.quality.get(name, FieldQuality())
        absent = max(self.feature_events - stored.total, 0)
        out_of_domain = 0
        distribution = self.features.get(name)
        if profile is not None and distribution is not None:
            out_of_domain = out_of_domain_count(distribution, profile)
        return FieldQuality(stored.present, stored.missing + absent, stored.invalid, out_of_domain)

    # ---- merging and plain values ------------------------------------------------------

    def check_compatible(self, other: CohortStats) -> None:
        if self.config != other.config:
            raise IncompatibleStatsError(
                f"cannot merge cohort stats built with different settings: {self.config} vs "
                f"{other.config}"
            )

    def copy(self) -> CohortStats:
        result = CohortStats(self.config)
        result.merge_from(self)
        return result

    def merged(self, other: CohortStats) -> CohortStats:
        """A new CohortStats of both streams; neither input changes."""
        result = self.copy()
        result.merge_from(other)
        return result

    def merge_from(self, other: CohortStats) -> None:
        """Add `other`'s stream to this one, in place: `==` to `self.merged(other)`, without
        copying this side (the worker merges every delta into a rollout's state this way).
        `other` does not change, and this side shares none of its parts afterwards."""
        self.check_compatible(other)
        self.requests += other.requests
        self.errors += other.errors
        self.errors_by_type.merge_from(other.errors_by_type)
        self.latency.merge_from(other.latency)
        self.invalid_latency += other.invalid_latency
        _merge_into(self.predictions, other.predictions, ValueDistribution.copy)
        self.prediction_quality.merge_from(other.prediction_quality)
        _merge_into(self.features, other.features, ValueDistribution.copy)
        _merge_into(self.quality, other.quality, FieldQuality.copy)
        self.feature_events += other.feature_events
        self.first_event_time = _pick(min, self.first_event_time, other.first_event_time)
        self.last_event_time = _pick(max, self.last_event_time, other.last_event_time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "requests": self.requests,
            "errors": self.errors,
            "errors_by_type": self.errors_by_type.to_dict(),
            "latency": self.latency.to_dict(),
            "invalid_latency": self.invalid_latency,
            "predictions": {k: v.to_dict() for k, v in sorted(self.predictions.items())},
            "prediction_quality": self.prediction_quality.to_dict(),
            "features": {k: v.to_dict() for k, v in sorted(self.features.items())},
            "quality": {k: v.to_dict() for k, v in sorted(self.quality.items())},
            "feature_events": self.feature_events,
            "first_event_time": self.first_event_time,
            "last_event_time": self.last_event_time,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CohortStats:
        stats = cls(StatsConfig.from_dict(data.get("config", {})))
        stats.requests = int(data["requests"])
        stats.errors = int(data["errors"])
        stats.errors_by_type = CategoricalCounts.from_dict(data["errors_by_type"])
        stats.latency = QuantileSketch.from_dict(data["latency"])
        stats.invalid_latency = int(data.get("invalid_latency", 0))
        stats.predictions = {
            str(k): ValueDistribution.from_dict(v) for k, v in data.get("predictions", {}).items()
        }
        stats.prediction_quality = FieldQuality.from_dict(data.get("prediction_quality", {}))
        stats.features = {
            str(k): ValueDistribution.from_dict(v) for k, v in data.get("features", {}).items()
        }
        stats.quality = {
            str(k): FieldQuality.from_dict(v) for k, v in data.get("quality", {}).items()
        }
        stats.feature_events = int(data.get("feature_events", 0))
        first, last = data.get("first_event_time"), data.get("last_event_time")
        stats.first_event_time = None if first is None else float(first)
        stats.last_event_time = None if last is None else float(last)
        return stats

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CohortStats):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    __hash__ = None  # type: ignore[assignment]  # mutable: not hashable

    def __repr__(self) -> str:
        return (
            f"CohortStats(requests={self.requests}, errors={self.errors}, "
            f"latency={self.latency!r}, features={sorted(self.features)})"
        )


def _add_quality(quality: FieldQuality, counts: tuple[int, int, int]) -> None:
    present, missing, invalid = counts
    quality.present += present
    quality.missing += missing
    quality.invalid += invalid


def _columns(rows: list[Mapping[str, FeatureValue]]) -> list[tuple[str, list[Any]]]:
    """The values of each name across the maps, in first-seen order of the names; a map that
    lacks a name contributes nothing to its column."""
    names = rows[0].keys()
    if sum(map(len, rows)) == len(rows) * len(names):
        try:  # every map has as many names as the first: commonly the same names
            return [(name, [row[name] for row in rows]) for name in names]
        except KeyError:
            pass
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return [(name, [row[name] for row in rows if name in row]) for name in seen]


def _pick(choose: Any, a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return float(choose(a, b))
