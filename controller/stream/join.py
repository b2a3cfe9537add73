"""The label join's core in the worker: records in, labels deltas out.

`Joiner.add(records, now)` takes records of the predictions and labels topics (the records of
one poll, both topics, in any interleaving), decodes them, writes the served predictions that
carry a prediction into the pending store (controller.stream.pending) and joins the labels to
them, and folds the pairs that come out into one `LabelsDelta` per deployment
(controller.stream.deltas): a `LabelFold` per (cohort, version), which a rollout merges
(controller.core.rollout.merge_labels). The records' next offsets go into the store in the same
write as their data.

- A prediction record that is not valid, or a failed request (no prediction), joins nothing:
  the prediction lane dead-letters and counts those; here they are counted (`skipped`).
- A label record that is not valid is counted (`invalid_labels`): the rollout agent reads the
  labels topic too, and dead-letters it with the reason.
- A delta's id names the label records its pairs came from (partition, first and last offset,
  deployment): a label read again after a restart joins again (the store's join marks are
  idempotent), and when the records are grouped as before, the same delta id comes out and the
  rollout drops it. Grouped otherwise, a restart can count the pairs of one commit interval
  twice (at least once, as the prediction lane).

Not thread-safe; time is an argument.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from controller.core.stats.labelled import LabelFold
from controller.stream.deltas import LabelsDelta
from controller.stream.pending import JoinedPair, Label, PendingPrediction, PendingStore
from schemas import LabelReported, PredictionBatch, PredictionServed, Rejection, decode


class Record(Protocol):
    """What the joiner reads of a Kafka record (aiokafka's ConsumerRecord has it)."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def value(self) -> bytes | None: ...


@dataclass
class JoinCounters:
    predictions: int = 0
    labels: int = 0
    pairs: int = 0
    #: prediction records not valid, and failed requests (no prediction to judge)
    skipped: int = 0
    invalid_labels: int = 0
    #: pairs whose fold refused them (a prediction and label no quality metric takes)
    unusable: int = 0
    by_deployment: dict[str, int] = field(default_factory=dict)


class Joiner:
    def __init__(self, store: PendingStore, *, predictions_topic: str, labels_topic: str) -> None:
        self.store = store
        self.predictions_topic = predictions_topic
        self.labels_topic = labels_topic
        self.counters = JoinCounters()

    def add(self, records: Sequence[Record], now: float) -> list[LabelsDelta]:
        """Write the predictions, join the labels; the deltas of the pairs that came out."""
        at = datetime.fromtimestamp(now, UTC)
        predictions: list[PendingPrediction] = []
        labels: list[Label] = []
        offsets: dict[str, int] = {}
        for record in records:
            where = f"{record.topic}:{record.partition}"
            offsets[where] = max(offsets.get(where, 0), record.offset + 1)
            if record.topic == self.predictions_topic:
                predictions += self._predictions(record.value, at)
            elif record.topic == self.labels_topic:
                label = self._label(record, at)
                if label is not None:
                    labels.append(label)
        pairs = self.store.add_predictions(predictions, offsets=offsets) if predictions else []
        if labels:
            pairs += self.store.add_labels(labels, offsets=offsets).pairs
        elif offsets and not predictions:
            for where, offset in offsets.items():
                self.store.set_offset(where, offset)
        self.counters.predictions += len(predictions)
        self.counters.labels += len(labels)
        return self.fold(pairs)

    def _predictions(self, value: bytes | None, at: datetime) -> list[PendingPrediction]:
        result = decode(value or b"", now=at)
        if isinstance(result, Rejection):
            self.counters.skipped += 1
            return []
        data = result.data
        if isinstance(data, PredictionServed):
            items: Iterable[Any] = (data,)
        elif isinstance(data, PredictionBatch):
            items = data.predictions
        else:
            self.counters.skipped += 1
            return []
        found = []
        for item in items:
            if not item.ok or item.prediction is None:
                self.counters.skipped += 1
                continue
            prediction = item.prediction
            if hasattr(prediction, "items") and not isinstance(prediction, dict):
                prediction = dict(prediction.items())
            found.append(
                PendingPrediction(
                    deployment_id=data.deployment_id,
                    request_id=item.request_id,
                    model=data.model,
                    version=item.version,
                    cohort=str(item.cohort),
                    event_time=item.event_time.timestamp(),
                    prediction=prediction,
                )
            )
        return found

    def _label(self, record: Record, at: datetime) -> Label | None:
        result = decode(record.value or b"", now=at)
        if isinstance(result, Rejection) or not isinstance(result.data, LabelReported):
            self.counters.invalid_labels += 1
            return None
        data = result.data
        return Label(
            deployment_id=data.deployment_id,
            request_id=data.request_id,
            label=data.label,
            event_time=data.event_time.timestamp(),
            topic_partition=f"{record.topic}:{record.partition}",
            offset=record.offset,
        )

    def fold(self, pairs: Iterable[JoinedPair]) -> list[LabelsDelta]:
        """One delta per deployment: its pairs folded per (cohort, version)."""
        by_deployment: dict[str, list[JoinedPair]] = {}
        for pair in pairs:
            by_deployment.setdefault(pair.deployment_id, []).append(pair)
        deltas = []
        for deployment_id, found in sorted(by_deployment.items()):
            folds: dict[tuple[str, str], LabelFold] = {}
            used = 0
            for pair in found:
                fold = folds.setdefault((pair.cohort, pair.version), LabelFold())
                try:
                    added = fold.add(
                        pair.request_id,
                        pair.prediction,
                        pair.label,
                        pair.prediction_time,
                        pair.label_time,
                    )
                except ValueError:
                    added = False
                if added:
                    used += 1
                else:
                    self.counters.unusable += 1
            offsets = sorted(p.label_offset for p in found)
            delta_id = (
                f"labels:{found[0].label_partition}:{offsets[0]}:{offsets[-1]}:{deployment_id}"
            )
            deltas.append(
                LabelsDelta(
                    delta_id=delta_id,
                    deployment_id=deployment_id,
                    model=found[0].model,
                    pairs=used,
                    folds=tuple((c, v, f) for (c, v), f in sorted(folds.items())),
                )
            )
            self.counters.pairs += used
            self.counters.by_deployment[deployment_id] = (
                self.counters.by_deployment.get(deployment_id, 0) + used
            )
        return deltas


__all__ = ["JoinCounters", "Joiner", "Record"]
