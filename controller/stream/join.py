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

`JoinLane` runs a joiner on Kafka: its own consumer group reads the predictions and labels
topics (both keyed by deployment id, with as many partitions), assigned by range so that a
member gets the same partition numbers of both: a deployment's labels and predictions meet in
one worker's store. It sends each delta on the internal stats topic, keyed by deployment id,
and commits the consumed offsets once every delta sent before is acknowledged (at least once).
It runs the joiner through a `JoinPipeline`: a poll's store work (the join proper, mostly
RocksDB's, which runs without the GIL) on a thread of its own while the event loop decodes the
next poll and folds the one before, one poll at a time in order; a poll's deltas are sent when
the next poll is taken (at once when nothing more is waiting), and before any commit. A poll
whose store work or deltas fail is not skipped: the lane reads every partition again from its
last commit (the joins are idempotent) and raises, and the worker steps again.
Every `expire_every_s` it sweeps the store (predictions past the horizon, early labels past
their wait), and logs what the sweep counted.

A worker that gets a partition its store knows nothing of (a new machine, a lost volume)
rebuilds it: it reads the predictions partition again from `horizon_s` before now, with the
labels partition paused, and resumes the labels once the predictions have caught up with the
group's committed offset; meanwhile it commits nothing for that predictions partition (the
committed offset never goes back). The topics must keep predictions for the horizon.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import attrgetter
from pathlib import Path
from typing import Any, Protocol, TypeVar

import structlog
from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    TopicPartition,
)
from aiokafka.coordinator.assignors.range import RangePartitionAssignor

from controller.core.stats.labelled import LabelFold
from controller.kafka_options import aiokafka_options, group_timing
from controller.stream.deltas import LabelsDelta
from controller.stream.lane import consumer_lags
from controller.stream.pending import JoinedPair, Label, PendingPrediction, PendingStore
from schemas import LabelReported, PredictionBatch, PredictionServed, Rejection, decode
from schemas.fast import LabelData, PredictionEvent, Served, label_decoder, predictions_decoder


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


@dataclass(frozen=True, slots=True)
class Decoded:
    """What `Joiner.decode` read of a poll's records."""

    predictions: list[PendingPrediction]
    labels: list[Label]
    #: "topic:partition" -> the next offset to read there
    offsets: dict[str, int]


_COHORT_VERSION = attrgetter("cohort", "version")
#: what a fold takes of a pair
_FOLDED = attrgetter("request_id", "prediction", "label", "prediction_time", "label_time")


class Joiner:
    def __init__(self, store: PendingStore, *, predictions_topic: str, labels_topic: str) -> None:
        self.store = store
        self.predictions_topic = predictions_topic
        self.labels_topic = labels_topic
        self.counters = JoinCounters()

    def add(self, records: Sequence[Record], now: float) -> list[LabelsDelta]:
        """Write the predictions, join the labels; the deltas of the pairs that came out.
        (`decode`, `join`, `fold` in turn; `JoinPipeline` runs them overlapped.)"""
        return self.fold(self.join(self.decode(records, now)))

    def decode(self, records: Sequence[Record], now: float) -> Decoded:
        """The records' predictions and labels, and the next offset of each partition."""
        at = datetime.fromtimestamp(now, UTC)
        predictions: list[PendingPrediction] = []
        labels: list[Label] = []
        offsets: dict[str, int] = {}
        fast = predictions_decoder(at)
        fast_label = label_decoder(at)
        for record in records:
            where = f"{record.topic}:{record.partition}"
            offsets[where] = max(offsets.get(where, 0), record.offset + 1)
            if record.topic == self.predictions_topic:
                predictions += self._predictions(record.value, at, fast)
            elif record.topic == self.labels_topic:
                label = self._label(record, where, at, fast_label)
                if label is not None:
                    labels.append(label)
        return Decoded(predictions, labels, offsets)

    def join(self, decoded: Decoded) -> list[JoinedPair]:
        """Write the predictions and join the labels in the store (with the offsets, in the
        same writes); the pairs that came out. The store's part: what `JoinPipeline` runs on
        its store thread, one batch after the other."""
        predictions, labels, offsets = decoded.predictions, decoded.labels, decoded.offsets
        pairs = self.store.add_predictions(predictions, offsets=offsets) if predictions else []
        if labels:
            pairs += self.store.add_labels(labels, offsets=offsets).pairs
        elif offsets and not predictions:
            for where, offset in offsets.items():
                self.store.set_offset(where, offset)
        self.counters.predictions += len(predictions)
        self.counters.labels += len(labels)
        return pairs

    def _predictions(
        self,
        value: bytes | None,
        at: datetime,
        fast: Callable[[bytes], PredictionEvent | None],
    ) -> list[PendingPrediction]:
        """The served predictions of a record: through the fast decoder (schemas.fast), else
        the full one."""
        event = fast(value) if value else None
        data: Any
        if event is not None:
            data = event.data
            items: Iterable[Any] = (data,) if type(data) is Served else data.predictions
        else:
            result = decode(value or b"", now=at)
            if isinstance(result, Rejection):
                self.counters.skipped += 1
                return []
            data = result.data
            if isinstance(data, PredictionServed):
                items = (data,)
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
            if not isinstance(prediction, float | int | str | dict):
                prediction = dict(prediction.items())  # a pydantic mapping
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

    def _label(
        self,
        record: Record,
        where: str,
        at: datetime,
        fast: Callable[[bytes], LabelData | None],
    ) -> Label | None:
        """The record's label: through the fast decoder (schemas.fast), else the full one."""
        value = record.value
        data: LabelData | LabelReported | None = fast(value) if value else None
        if data is None:
            result = decode(value or b"", now=at)
            if isinstance(result, Rejection) or not isinstance(result.data, LabelReported):
                self.counters.invalid_labels += 1
                return None
            data = result.data
        return Label(
            data.deployment_id,
            data.request_id,
            data.label,
            data.event_time.timestamp(),
            where,  # "topic:partition"
            record.offset,
        )

    def fold(self, pairs: Iterable[JoinedPair]) -> list[LabelsDelta]:
        """One delta per deployment: its pairs folded per (cohort, version)."""
        by_deployment: dict[str, list[JoinedPair]] = {}
        for pair in pairs:
            found = by_deployment.get(pair.deployment_id)
            if found is None:
                found = by_deployment[pair.deployment_id] = []
            found.append(pair)
        deltas = []
        for deployment_id, found in sorted(by_deployment.items()):
            groups: dict[tuple[str, str], list[JoinedPair]] = {}
            for pair, key in zip(found, map(_COHORT_VERSION, found), strict=True):
                group = groups.get(key)
                if group is None:
                    group = groups[key] = []
                group.append(pair)
            folds: dict[tuple[str, str], LabelFold] = {}
            used = 0
            for key, group in groups.items():
                fold = folds[key] = LabelFold()
                added = fold.add_many(map(_FOLDED, group))
                used += added
                self.counters.unusable += len(group) - added
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
        return deltas


T = TypeVar("T")


class JoinPipeline:
    """A joiner's stages overlapped: the store's part of a poll (`Joiner.join`: RocksDB's
    MultiGet and write, which run without the GIL, and the Python around them) on a thread of
    its own, while the caller decodes the next poll and folds the one before. The store's work
    runs one poll at a time in the order started, so the store sees what `Joiner.add` would
    give it, and a poll's pairs fold into the same deltas; they come out one poll later (when
    the next starts, or at `take`). On ten million pending predictions and 2 cores it took the
    worker's path (decode, join, fold) from 71,346 to 140,910 labels a second (docs/labels.md,
    `bench/join.py` at c21eaf5).

    Not thread-safe: one caller. Every other use of the store goes through `call`, which runs
    after the store's work started before it."""

    def __init__(self, joiner: Joiner) -> None:
        self.joiner = joiner
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="join-store")
        self._running: Future[list[JoinedPair]] | None = None

    def start(self, records: Sequence[Record], now: float) -> Future[list[JoinedPair]] | None:
        """Decode `records` and start their store work; the store work started before (its
        pairs, to fold), or None."""
        decoded = self.joiner.decode(records, now)
        previous, self._running = self._running, self._thread.submit(self.joiner.join, decoded)
        return previous

    @property
    def busy(self) -> bool:
        """Whether a poll's store work was started and not taken."""
        return self._running is not None

    def take(self) -> Future[list[JoinedPair]] | None:
        """The store work started last, if any; the pipeline is empty after."""
        running, self._running = self._running, None
        return running

    def call(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """`fn(*args)` on the store thread, after the store work started before."""
        return self._thread.submit(fn, *args)

    def add(self, records: Sequence[Record], now: float) -> list[LabelsDelta]:
        """`start`, then wait for the poll before and fold it: the deltas of that poll."""
        previous = self.start(records, now)
        return [] if previous is None else self.joiner.fold(previous.result())

    def flush(self) -> list[LabelsDelta]:
        """Wait for the store work started last and fold it: its deltas."""
        running = self.take()
        return [] if running is None else self.joiner.fold(running.result())

    def close(self) -> None:
        """Wait for the store work started, and stop the store thread."""
        self._thread.shutdown(wait=True)


log = structlog.get_logger(__name__)


class _Assignment(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped here
    def __init__(self, lane: JoinLane) -> None:
        self.lane = lane

    async def on_partitions_revoked(self, revoked: Any) -> None:
        if revoked and self.lane._producer is not None:
            await self.lane.commit()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.lane.assigned(assigned)


class JoinLane:
    """The label join on Kafka (see the module docstring)."""

    def __init__(
        self,
        settings: Any,
        *,
        predictions_topic: str,
        labels_topic: str,
        stats_topic: str,
        group_id: str,
        store_path: Path,
        horizon_s: float = 7 * 86400.0,
        label_wait_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
        max_records: int = 5000,
        poll_timeout_ms: int = 200,
        commit_interval_s: float = 1.0,
        expire_every_s: float = 60.0,
    ) -> None:
        self.settings = settings
        self.predictions_topic = predictions_topic
        self.labels_topic = labels_topic
        self.stats_topic = stats_topic
        self.group_id = group_id
        self.store_path = store_path
        self.horizon_s = horizon_s
        self.label_wait_s = label_wait_s
        self.clock = clock
        self.max_records = max_records
        self.poll_timeout_ms = poll_timeout_ms
        self.commit_interval_s = commit_interval_s
        self.expire_every_s = expire_every_s
        self.joiner: Joiner | None = None
        self.pipeline: JoinPipeline | None = None
        #: predictions partitions being rebuilt: the committed offset they must reach
        self.rebuilding: dict[TopicPartition, int] = {}
        #: where each rebuild started reading
        self._rebuild_from: dict[TopicPartition, int] = {}
        #: polls that failed (the store or the producer raised) and were read again
        self.rewinds = 0
        self.deltas = 0
        self._unacked: list[asyncio.Future[Any]] = []
        self._last_commit = clock()
        self._last_expiry = clock()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        store = PendingStore(
            self.store_path, horizon_s=self.horizon_s, label_wait_s=self.label_wait_s
        )
        self.joiner = Joiner(
            store, predictions_topic=self.predictions_topic, labels_topic=self.labels_topic
        )
        self.pipeline = JoinPipeline(self.joiner)
        opts = aiokafka_options(self.settings)
        self._producer = AIOKafkaProducer(
            client_id=f"{self.group_id}-join", acks="all", linger_ms=5, **opts
        )
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            group_id=self.group_id,
            client_id=f"{self.group_id}-join",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            partition_assignment_strategy=(RangePartitionAssignor,),
            **group_timing(self.settings),
            **opts,
        )
        await self._consumer.start()
        self._consumer.subscribe(
            [self.predictions_topic, self.labels_topic], listener=_Assignment(self)
        )
        log.info("join.started", group=self.group_id, store=str(self.store_path))

    async def stop(self) -> None:
        if self._consumer is not None and self._producer is not None:
            try:
                await self.commit()
            except Exception:
                log.warning("join.final_commit_failed", exc_info=True)
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        if self.pipeline is not None:
            self.pipeline.close()
            self.pipeline = None
        if self.joiner is not None:
            self.joiner.store.close()

    async def assigned(self, partitions: Iterable[TopicPartition]) -> None:
        """Rebuild the predictions partitions the store knows nothing of (module docstring)."""
        consumer, joiner, pipeline = self._consumer, self.joiner, self.pipeline
        if consumer is None or joiner is None or pipeline is None:
            return
        for tp in partitions:
            if tp.topic != self.predictions_topic:
                continue
            where = f"{tp.topic}:{tp.partition}"  # read after the store's work in flight
            known = await asyncio.wrap_future(pipeline.call(joiner.store.offset, where))
            committed = await consumer.committed(tp)
            if known is not None or committed is None or committed <= 0:
                continue
            since = (self.clock() - self.horizon_s) * 1000
            found = await consumer.offsets_for_times({tp: int(since)})
            start = found.get(tp)
            self._rebuild_from[tp] = start.offset if start is not None else committed
            consumer.seek(tp, self._rebuild_from[tp])
            labels = TopicPartition(self.labels_topic, tp.partition)
            if labels in consumer.assignment():
                consumer.pause(labels)
            self.rebuilding[tp] = committed
            log.info("join.rebuilding", partition=tp.partition, until=committed)

    async def step(self) -> int:
        """One poll: join, send the deltas; commit and sweep when due. The records taken."""
        consumer, joiner, pipeline = self._consumer, self.joiner, self.pipeline
        if consumer is None or joiner is None or pipeline is None or self._producer is None:
            raise RuntimeError("start() the join lane first")
        # with a poll's store work in flight, take only what the consumer holds already:
        # with nothing more, that poll's pairs are sent now, not after a wait for records
        batches = await consumer.getmany(
            timeout_ms=0 if pipeline.busy else self.poll_timeout_ms, max_records=self.max_records
        )
        records = [r for rs in batches.values() for r in rs]
        now = self.clock()
        # this poll's store work starts; the poll before's pairs are folded and sent (and,
        # with nothing polled, the last poll's)
        try:
            previous = pipeline.start(records, now) if records else pipeline.take()
            await self._send(previous)
        except Exception:
            await self._rewind()
            raise
        for tp, target in list(self.rebuilding.items()):
            if await consumer.position(tp) >= target:
                del self.rebuilding[tp]
                self._rebuild_from.pop(tp, None)
                consumer.resume(TopicPartition(self.labels_topic, tp.partition))
                log.info("join.rebuilt", partition=tp.partition)
        if now - self._last_commit >= self.commit_interval_s:
            await self.commit()
        if now - self._last_expiry >= self.expire_every_s:
            self._last_expiry = now
            report = await asyncio.wrap_future(pipeline.call(joiner.store.expire, now))
            total = report.total()
            if total.unlabelled or total.unmatched:
                log.info(
                    "join.expired",
                    unlabelled=total.unlabelled,
                    joined=total.joined,
                    unmatched=total.unmatched,
                )
        return len(records)

    async def lags(self) -> dict[tuple[str, int], int]:
        """The records of each assigned partition (predictions and labels) not yet taken."""
        return await consumer_lags(self._consumer)

    async def _rewind(self) -> None:
        """After a poll whose store work or deltas failed: drop the store work in flight and
        read every partition again from where nothing after it was committed, so no label is
        skipped. The store's joins are idempotent (a label read again joins again to the same
        pair), so reading again gives at least once, as after a restart. A predictions
        partition being rebuilt reads again from the store's offset (or where its rebuild
        started)."""
        consumer, joiner, pipeline = self._consumer, self.joiner, self.pipeline
        if consumer is None or joiner is None or pipeline is None:
            return
        running = pipeline.take()
        if running is not None:
            with contextlib.suppress(Exception):  # the failure is the caller's to report
                await asyncio.wrap_future(running)
        self.rewinds += 1
        for tp in consumer.assignment():
            if tp in self.rebuilding:
                where = f"{tp.topic}:{tp.partition}"
                known = await asyncio.wrap_future(pipeline.call(joiner.store.offset, where))
                consumer.seek(tp, known if known is not None else self._rebuild_from[tp])
                continue
            committed = await consumer.committed(tp)
            if committed is None:
                await consumer.seek_to_beginning(tp)  # nothing committed: as at the start
            else:
                consumer.seek(tp, committed)
        log.warning("join.rewound", partitions=len(consumer.assignment()))

    async def _send(self, work: Future[list[JoinedPair]] | None) -> None:
        """Wait for a poll's store work, fold its pairs and send the deltas."""
        if work is None or self.joiner is None or self._producer is None:
            return
        pairs: list[JoinedPair] = await asyncio.wrap_future(work)
        for delta in self.joiner.fold(pairs):
            # the rollout's, keyed by deployment; its twin for the model's monitor
            values = delta.encode_both()
            keys = (delta.key(), delta.for_monitor().key())
            for key, value in zip(keys, values, strict=True):
                sent = await self._producer.send(self.stats_topic, key=key.encode(), value=value)
                self._unacked.append(sent)
            self.deltas += 1

    async def commit(self) -> None:
        """Send the deltas of the poll in flight, wait for every delta sent so far, then
        commit the consumed positions (not those of predictions partitions being rebuilt)."""
        consumer = self._consumer
        if consumer is None:
            return
        if self.pipeline is not None:
            await self._send(self.pipeline.take())
        unacked, self._unacked = self._unacked, []
        if unacked:
            await asyncio.gather(*unacked)
        offsets = {}
        for tp in consumer.assignment():
            if tp in self.rebuilding:
                continue
            offsets[tp] = await consumer.position(tp)
        if offsets:
            await consumer.commit(offsets)
        self._last_commit = self.clock()


__all__ = ["JoinCounters", "JoinLane", "Joiner", "Record"]
