"""Statistics deltas: what the prediction lane hands the rollout agent.

The lane folds many predictions of one deployment into mergeable `CohortStats`, one per
(cohort, version), and sends the fold as one record on the internal stats topic, keyed by
deployment id. The agent merges it into the rollout's state. This is the internal wire contract
between the two halves of the worker; it is versioned like the public ones.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import compress
from operator import attrgetter
from typing import Any, ClassVar

import orjson

from controller.core.stats.cohort import CohortStats
from controller.core.stats.distribution import StatsConfig
from controller.core.stats.labelled import LabelFold
from schemas import Envelope, PredictionBatch, PredictionServed

DELTA_VERSION = 1


_COHORT_VERSION = attrgetter("cohort", "version")
_POSITION = attrgetter("partition", "offset")


#: records with trace context a fold keeps, newest first, for its delta's span links
MAX_TRACED = 1024


class Sources:
    """Where a fold's predictions came from: enough to name its delta (first and last record)
    and to trace it (the newest records that carry trace context), without keeping every record:
    a lane a second behind would keep a hundred thousand records alive, and each garbage
    collection would walk them all."""

    __slots__ = ("count", "first", "last", "traced")

    def __init__(self) -> None:
        self.first: Any = None
        self.last: Any = None
        #: records taken
        self.count = 0
        #: the newest records with headers (trace context), in order
        self.traced: deque[Any] = deque(maxlen=MAX_TRACED)

    def add(self, record: Any) -> None:
        if self.first is None:
            self.first = record
        self.last = record
        self.count += 1
        if record.headers:
            self.traced.append(record)

    def merge(self, first: Any, last: Any, count: int, traced: Iterable[Any]) -> None:
        """Take in the sources of another path (the compiled lane's) for the same fold: the
        records of both, in the order they were read."""
        if not count:
            return
        if self.first is None or _POSITION(first) < _POSITION(self.first):
            self.first = first
        if self.last is None or _POSITION(last) > _POSITION(self.last):
            self.last = last
        self.count += count
        self.traced = deque(sorted([*self.traced, *traced], key=_POSITION), maxlen=MAX_TRACED)

    def __len__(self) -> int:
        return self.count


class DeploymentFold:
    """The predictions of one deployment since the last drain, one CohortStats per
    (cohort, version).

    Predictions are collected as they arrive (a list extend per record) and folded in bulk
    (`CohortStats.observe_many`, `==` to observing them one by one) by `fold()`: the lane folds
    after every group, while the group's objects are still in the CPU's caches."""

    __slots__ = ("cohorts", "count", "deployment_id", "items", "model", "sources")

    def __init__(self, deployment_id: str, model: str) -> None:
        self.deployment_id = deployment_id
        self.model = model
        #: predictions collected and not folded yet
        self.items: list[Any] = []
        self.cohorts: dict[tuple[str, str], CohortStats] = {}
        #: predictions folded into `cohorts`
        self.count = 0
        #: where the predictions came from (the lane's Kafka records), if tracked
        self.sources = Sources()

    def fold(self, config: StatsConfig) -> None:
        """Fold the collected predictions into the statistics of their (cohort, version)."""
        items, self.items = self.items, []
        if not items:
            return
        self.count += len(items)
        # the cohort is a str (fast path) or a StrEnum (pydantic): equal and hash-equal
        keys = list(map(_COHORT_VERSION, items))
        distinct = set(keys)
        if len(distinct) == 1:
            groups = [(keys[0], items)]
        else:
            groups = [(k, list(compress(items, map(k.__eq__, keys)))) for k in distinct]
        for (cohort, version), rows in groups:
            self.stats(str(cohort), str(version), config).observe_many(rows)

    def stats(self, cohort: str, version: str, config: StatsConfig) -> CohortStats:
        """The statistics of a (cohort, version), new when it has none yet."""
        found = self.cohorts.get((cohort, version))
        if found is None:
            found = self.cohorts[(cohort, version)] = CohortStats(config)
        return found


class Folder:
    """Collects and folds predictions by deployment until `drain()`.

    With a compiled accumulator (`native`, see controller/stream/native.py) the lane folds most
    records there; `drain()` records its summaries into the same folds, so a deployment's delta
    holds what both paths folded."""

    def __init__(self, config: StatsConfig | None = None, native: Any | None = None) -> None:
        self.config = config or StatsConfig()
        self.folds: dict[str, DeploymentFold] = {}
        self.native = native

    def add(self, event: Envelope[Any]) -> DeploymentFold | None:
        """Collect a decoded event's predictions; None when it carries none."""
        data = event.data
        if isinstance(data, PredictionBatch):
            return self.add_items(data.deployment_id, data.model, data.predictions)
        if isinstance(data, PredictionServed):
            return self.add_items(data.deployment_id, data.model, (data,))
        return None

    def add_items(self, deployment_id: str, model: str, items: Iterable[Any]) -> DeploymentFold:
        """Collect predictions: `schemas.Prediction` models or the fast path's `Item` structs
        (the same field names; see `controller.core.stats.cohort.Row`)."""
        fold = self.of(deployment_id, model)
        fold.items += items
        return fold

    def of(self, deployment_id: str, model: str) -> DeploymentFold:
        """The fold of a deployment (new when it has none since the last drain)."""
        fold = self.folds.get(deployment_id)
        if fold is None:
            fold = self.folds[deployment_id] = DeploymentFold(deployment_id, model)
        return fold

    def fold(self) -> None:
        """Fold what was collected since the last call."""
        for fold in self.folds.values():
            fold.fold(self.config)

    def drain(self) -> list[DeploymentFold]:
        """Every deployment's folded statistics since the last drain."""
        self.fold()
        if self.native is not None and len(self.native):
            for deployment_id, model, count, groups, sources in self.native.drain():
                fold = self.of(deployment_id, model)
                fold.count += count
                for cohort, version, summary in groups:
                    fold.stats(cohort, version, self.config).observe_summary(summary)
                fold.sources.merge(*sources)
        folds = list(self.folds.values())
        self.folds = {}
        return folds

    def __bool__(self) -> bool:
        return bool(self.folds) or (self.native is not None and len(self.native) > 0)


@dataclass(frozen=True)
class StatsDelta:
    delta_id: str
    deployment_id: str
    model: str
    count: int
    cohorts: tuple[tuple[str, str, CohortStats], ...]
    #: who takes it: "rollout" (keyed by deployment id) or "monitor" (keyed by model: the
    #: model's monitor, on the partition of the model)
    target: str = "rollout"

    def key(self) -> str:
        return self.model if self.target == "monitor" else self.deployment_id

    def to_json(self) -> bytes:
        return orjson.dumps(self._doc())

    def encode_both(self) -> tuple[bytes, bytes]:
        """This delta's record value and its monitor twin's (`for_monitor`), the statistics
        turned into plain values once for both."""
        doc = self._doc()
        twin = self.for_monitor()
        return orjson.dumps(doc), orjson.dumps(
            {**doc, "delta_id": twin.delta_id, "target": twin.target}
        )

    def _doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "v": DELTA_VERSION,
            "delta_id": self.delta_id,
            "deployment_id": self.deployment_id,
            "model": self.model,
            "count": self.count,
            "cohorts": [
                {"cohort": c, "version": v, "stats": s.to_dict()} for c, v, s in self.cohorts
            ],
        }
        if self.target != "rollout":
            doc["target"] = self.target
        return doc

    def for_monitor(self) -> StatsDelta:
        """The same statistics for the model's monitor (its own id: redeliveries of either are
        recognised apart)."""
        return dataclasses.replace(self, delta_id=self.delta_id + ":monitor", target="monitor")

    @classmethod
    def from_json(cls, raw: bytes) -> StatsDelta:
        return cls.from_doc(orjson.loads(raw))

    @classmethod
    def from_doc(cls, doc: Any) -> StatsDelta:
        if not isinstance(doc, dict) or doc.get("v") != DELTA_VERSION:
            raise ValueError(f"not a stats delta of version {DELTA_VERSION}")
        return cls(
            delta_id=str(doc["delta_id"]),
            deployment_id=str(doc["deployment_id"]),
            model=str(doc["model"]),
            count=int(doc["count"]),
            target=str(doc.get("target", "rollout")),
            cohorts=tuple(
                (str(c["cohort"]), str(c["version"]), CohortStats.from_dict(c["stats"]))
                for c in doc["cohorts"]
            ),
        )

    @classmethod
    def of(cls, fold: DeploymentFold, delta_id: str) -> StatsDelta:
        """The delta of a drained fold."""
        cohorts = fold.cohorts
        return cls(
            delta_id=delta_id,
            deployment_id=fold.deployment_id,
            model=fold.model,
            count=fold.count,
            cohorts=tuple((c, v, s) for (c, v), s in sorted(cohorts.items())),
        )


@dataclass(frozen=True)
class LabelsDelta:
    """What the label join hands a rollout: the (prediction, label) pairs it joined for one
    deployment, one `LabelFold` per (cohort, version), on the internal stats topic keyed by
    deployment id (`"kind": "labels"` tells it from a `StatsDelta`). Its id names the label
    records it came from, so a redelivery is recognised."""

    delta_id: str
    deployment_id: str
    model: str
    pairs: int
    folds: tuple[tuple[str, str, LabelFold], ...]
    #: who takes it: "rollout" (keyed by deployment id) or "monitor" (keyed by model), as
    #: `StatsDelta.target`
    target: str = "rollout"

    KIND: ClassVar[str] = "labels"

    def key(self) -> str:
        return self.model if self.target == "monitor" else self.deployment_id

    def for_monitor(self) -> LabelsDelta:
        """The same pairs for the model's monitor (its own id: redeliveries of either are
        recognised apart)."""
        return dataclasses.replace(self, delta_id=self.delta_id + ":monitor", target="monitor")

    def encode_both(self) -> tuple[bytes, bytes]:
        """This delta's record value and its monitor twin's (`for_monitor`), the folds turned
        into plain values once for both."""
        doc = self._doc()
        twin = self.for_monitor()
        return orjson.dumps(doc), orjson.dumps(
            {**doc, "delta_id": twin.delta_id, "target": twin.target}
        )

    def to_json(self) -> bytes:
        return orjson.dumps(self._doc())

    def _doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "v": DELTA_VERSION,
            "kind": self.KIND,
            "delta_id": self.delta_id,
            "deployment_id": self.deployment_id,
            "model": self.model,
            "pairs": self.pairs,
            "folds": [{"cohort": c, "version": v, "fold": f.to_dict()} for c, v, f in self.folds],
        }
        if self.target != "rollout":
            doc["target"] = self.target
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> LabelsDelta:
        if doc.get("v") != DELTA_VERSION or doc.get("kind") != cls.KIND:
            raise ValueError(f"not a labels delta of version {DELTA_VERSION}")
        return cls(
            delta_id=str(doc["delta_id"]),
            deployment_id=str(doc["deployment_id"]),
            model=str(doc["model"]),
            pairs=int(doc["pairs"]),
            target=str(doc.get("target", "rollout")),
            folds=tuple(
                (str(f["cohort"]), str(f["version"]), LabelFold.from_dict(f["fold"]))
                for f in doc["folds"]
            ),
        )


def decode_delta(raw: bytes) -> StatsDelta | LabelsDelta:
    """A record of the internal stats topic: a statistics delta or a labels delta."""
    doc = orjson.loads(raw)
    if isinstance(doc, dict) and doc.get("kind") == LabelsDelta.KIND:
        return LabelsDelta.from_doc(doc)
    return StatsDelta.from_doc(doc)
