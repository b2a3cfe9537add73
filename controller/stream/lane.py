"""The prediction lane: the worker's hot path, at the speed of the Kafka client.

Predictions are the bulk of the traffic, so they do not go through a Faust agent one by one
(about 70-95 µs an event there). The lane takes records in groups straight from an aiokafka
consumer (`getmany`), decodes and validates every one, and folds each deployment's predictions
of the group, in bulk, into mergeable statistics: in one call to the compiled lane
(controller/stream/native.py) for every record it vouches for, and on the Python path (the
msgspec fast path of `schemas.fast`, else the full `schemas.decode`) for the others.

At a flush the lane hands the agent one `StatsDelta` per deployment on the internal stats topic,
keyed by deployment id. It flushes when it has caught up with the topic (every partition read to
its high watermark), at least every `flush_interval_s` (1 s) while it is behind, and before
every commit; so when the lane is behind, a delta spans several groups and the agent merges few
large deltas instead of many small ones (each costs the agent about 3 ms, whatever its size).
Offsets are committed only after the deltas and dead letters of every record up to them are
acknowledged by the broker: at-least-once. A redelivered run of records yields deltas with the
same ids (topic, partition, first and last offset, deployment), which the agent recognises.

Every delta gets one CONSUMER span, `process <predictions topic>`, child of the last record's
producer span and linked to the producer spans of its records; the delta carries that span's
context to the agent, so a rollback's trace reaches back to the predictions that caused it. A
record that fails to decode goes to the dead-letter topic with the reason, and the records around
it are processed as usual.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from opentelemetry.trace import Link, Tracer, use_span

from controller.core.stats.distribution import StatsConfig
from controller.engine import dead_letter
from controller.kafka_options import aiokafka_options, group_timing
from controller.observability import (
    extract_from_headers,
    inject_headers,
    messaging_attributes,
    tracer_or_default,
)
from controller.observability.messaging import Operation
from controller.observability.metrics import WorkerMetrics
from controller.observability.propagation import span_context_of
from controller.stream.deltas import DeploymentFold, Folder, Sources, StatsDelta
from controller.stream.native import accumulator, epoch_us
from controller.stream.native import available as native_available
from schemas import Rejection, decode
from schemas.fast import MAX_FUTURE_SKEW, PredictionEvent, Served, predictions_decoder

log = structlog.get_logger(__name__)

MAX_LINKS = 128
#: predictions folded at a time at most: the decoded objects stay in the CPU's caches, and a
#: group of batch records (up to `max_records` times 500 predictions) is never all in memory
FOLD_EVERY = 4096


async def consumer_lags(
    consumer: AIOKafkaConsumer | None, taken: Mapping[TopicPartition, int] | None = None
) -> dict[tuple[str, int], int]:
    """Each assigned partition's lag: its high watermark (as the last fetch reported it) less
    the next offset to take (`taken`, else the consumer's position). Partitions with no fetch
    yet are left out."""
    if consumer is None:
        return {}
    found = {}
    for tp in consumer.assignment():
        highwater = consumer.highwater(tp)
        if highwater is None:
            continue
        position = (taken or {}).get(tp)
        if position is None:
            try:
                position = await asyncio.wait_for(consumer.position(tp), 1.0)
            except Exception:  # no position yet (a rebalance, a broker away): not known
                continue
        found[(tp.topic, tp.partition)] = max(0, highwater - position)
    return found


@dataclass
class LaneCounters:
    records: int = 0
    predictions: int = 0
    rejected: int = 0
    deltas: int = 0
    groups: int = 0
    #: perf_counter() when the first record arrived (for throughput figures)
    first_record_at: float | None = None


class _HandOver(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped here
    """Before the lane gives up partitions (another worker joined, or this one is leaving the
    group), it flushes what it folded and commits: the next owner starts after the last record
    this lane counted, so no prediction is counted twice across the hand-over."""

    def __init__(self, lane: PredictionLane) -> None:
        self.lane = lane

    async def on_partitions_revoked(self, revoked: Any) -> None:
        if revoked and self.lane._producer is not None:
            await self.lane.commit()
            log.info("lane.handed_over", partitions=len(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        return None


class PredictionLane:
    def __init__(
        self,
        settings: Any,
        *,
        topic: str,
        stats_topic: str,
        dead_letter_topic: str,
        group_id: str,
        tracer: Tracer | None = None,
        clock: Callable[[], float] = time.time,
        max_records: int = 5000,
        poll_timeout_ms: int = 100,
        stats_config: StatsConfig | None = None,
        trace_records: bool = True,
        commit_interval_s: float = 1.0,
        flush_interval_s: float = 1.0,
        native: bool | None = None,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.stats_topic = stats_topic
        self.dead_letter_topic = dead_letter_topic
        self.group_id = group_id
        self.tracer = tracer_or_default(tracer)
        self.clock = clock
        self.max_records = max_records
        self.poll_timeout_ms = poll_timeout_ms
        self.stats_config = stats_config or StatsConfig()
        self.trace_records = trace_records
        self.commit_interval_s = commit_interval_s
        self.flush_interval_s = flush_interval_s
        self.counters = LaneCounters()
        #: where the lane's dead letters are counted by reason (the worker's metrics)
        self.metrics: WorkerMetrics | None = None
        self._unacked: list[asyncio.Future[Any]] = []
        #: when the lane last had every prediction on the topic sent on as deltas (None: not
        #: yet): how far the monitors' inputs are known to be complete
        self.reached_at: float | None = None
        #: predictions collected and folded since the last flush, and their records
        use_native = native if native is not None else bool(getattr(settings, "native_lane", True))
        self._folder = Folder(
            self.stats_config,
            accumulator(self.stats_config) if use_native and native_available() else None,
        )
        #: predictions of batch records collected on the Python path since the last fold
        self._batched = 0
        #: per partition, the offset after the last record taken
        self._next_offsets: dict[TopicPartition, int] = {}
        self._collecting_since = 0.0
        self._last_commit = clock()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        opts = aiokafka_options(self.settings)
        self._producer = AIOKafkaProducer(
            client_id=f"{self.group_id}-lane", acks="all", linger_ms=5, **opts
        )
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            group_id=self.group_id,
            client_id=f"{self.group_id}-lane",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
            **group_timing(self.settings),
            **opts,
        )
        await self._consumer.start()
        self._consumer.subscribe([self.topic], listener=_HandOver(self))
        log.info(
            "lane.started",
            topic=self.topic,
            group=self.group_id,
            compiled=self._folder.native is not None,  # the compiled decode-and-fold
        )

    @property
    def consumer(self) -> AIOKafkaConsumer:
        assert self._consumer is not None, "start() the lane first"
        return self._consumer

    async def lags(self) -> dict[tuple[str, int], int]:
        """The records of each assigned partition not yet taken (the lane's consumer lag)."""
        return await consumer_lags(self._consumer, self._next_offsets)

    async def stop(self) -> None:
        if self._consumer is not None and self._producer is not None:
            try:
                await self.commit()
            except Exception:  # the group may be gone already; uncommitted work is redone
                log.warning("lane.final_commit_failed", exc_info=True)
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.step()

    async def step(self) -> int:
        """Take one group of records and collect it; flush and commit when due. Returns the
        records taken.

        Sends are not awaited one group at a time: the broker's acknowledgements arrive while
        the next group is decoded. Every `commit_interval_s` (and when the lane stops) the lane
        flushes, waits for all outstanding acknowledgements and then commits the position:
        every record up to it has its delta or dead letter safely on the broker."""
        assert self._consumer is not None, "start() the lane first"
        batches = await self._consumer.getmany(
            timeout_ms=self.poll_timeout_ms, max_records=self.max_records
        )
        records = [r for rs in batches.values() for r in rs]
        polled_at = self.clock()
        if records:
            await self.collect(records)
        caught_up = self.caught_up(batches, len(records))
        if self._folder and (
            caught_up or self.clock() - self._collecting_since >= self.flush_interval_s
        ):
            await self.flush()
        if caught_up and not self._folder:
            # everything on the topic when this poll began is folded and sent
            self.reached_at = polled_at
        if self._unacked and self.clock() - self._last_commit >= self.commit_interval_s:
            await self.commit()
        return len(records)

    def caught_up(
        self, batches: Mapping[TopicPartition, Sequence[ConsumerRecord[bytes, bytes]]], taken: int
    ) -> bool:
        """Whether the lane has read all there is: a group smaller than `max_records`, and every
        assigned partition it has read from read up to the broker's high watermark (as the last
        fetch reported it), whether or not this group has records of it. A small group alone
        says little: the fetcher often hands over less than is waiting, or only some partitions,
        and a lane that flushed then would send many small deltas exactly when it is busiest."""
        for tp, records in batches.items():
            if records:
                self._next_offsets[tp] = records[-1].offset + 1
        if taken >= self.max_records:
            return False
        consumer = self.consumer
        for tp in consumer.assignment():
            next_offset = self._next_offsets.get(tp)
            highwater = consumer.highwater(tp)
            if next_offset is not None and highwater is not None and next_offset < highwater:
                return False
        return True

    async def commit(self) -> None:
        """Flush, wait for every outstanding acknowledgement, then commit the consumed
        position."""
        assert self._consumer is not None
        if self._folder:
            await self.flush()
        unacked, self._unacked = self._unacked, []
        if unacked:
            await asyncio.gather(*unacked)
        await self._consumer.commit()
        self._last_commit = self.clock()

    async def collect(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        """Decode and validate a group, collect its predictions by deployment and fold them,
        and send the dead letters of the records that are not valid prediction records."""
        assert self._producer is not None
        if self.counters.first_record_at is None:
            self.counters.first_record_at = time.perf_counter()
        if not self._folder:
            self._collecting_since = self.clock()
        now = datetime.fromtimestamp(self.clock(), UTC)
        decode = predictions_decoder(now)
        folder = self._folder
        letters: list[Any] = []
        native = folder.native
        if native is not None:
            # the hot loop, compiled: one call decodes and folds every record it vouches for
            # (and keeps it as a source of its deployment's delta); the others go the Python way
            refused = native.add(records, epoch_us(now + MAX_FUTURE_SKEW))
            rest: Sequence[ConsumerRecord[bytes, bytes]] = [records[i] for i in refused]
        else:
            rest = records
        for record in rest:
            try:
                found = self._collect_one(record, decode, now, letters)
            except Exception as exc:  # one record must not lose the group: it is kept
                log.exception("lane.error", partition=record.partition, offset=record.offset)
                error = Rejection(
                    reason=f"internal error while processing: {type(exc).__name__}: {exc}"
                )
                letters.append(self._dead_letter(record, error, now))
                continue
            if found is not None:
                found.sources.add(record)
        folder.fold()  # while the group's objects are still in the CPU's caches
        self.counters.records += len(records)
        self.counters.groups += 1
        if letters:
            self._unacked.extend(await asyncio.gather(*letters))

    async def flush(self) -> None:
        """Send one delta per deployment with what was folded since the last flush."""
        pending = []
        for fold in self._folder.drain():
            sources = fold.sources
            first, last = sources.first, sources.last
            delta_id = (
                f"{self.topic}:{first.partition}:{first.offset}:{last.offset}:{fold.deployment_id}"
            )
            pending.append(self._send_delta(StatsDelta.of(fold, delta_id), sources))
            self.counters.predictions += fold.count
            self.counters.deltas += 1
        if pending:
            self._unacked.extend(await asyncio.gather(*pending))

    def _collect_one(
        self,
        record: ConsumerRecord[bytes, bytes],
        decode: Callable[[bytes], PredictionEvent | None],
        now: datetime,
        letters: list[Any],
    ) -> DeploymentFold | None:
        """Collect a record on the Python path: the fast decoder, else the full one (a record
        that is not a valid prediction record gets its dead letter queued on `letters`)."""
        value = record.value
        event = decode(value) if value else None
        if event is None:
            # the fast path cannot vouch for it: the full decoder types it or says why not
            return self._collect_decoded(record, now, letters)
        data: Any = event.data  # never None on the fast path
        folder = self._folder
        fold = folder.of(data.deployment_id, data.model)
        if type(data) is Served:
            fold.items.append(data)
        else:
            fold.items += data.predictions
            self._batched += len(data.predictions)
            if self._batched >= FOLD_EVERY:  # a group of batches can hold millions
                folder.fold()
                self._batched = 0
        return fold

    def _collect_decoded(
        self, record: ConsumerRecord[bytes, bytes], now: datetime, letters: list[Any]
    ) -> DeploymentFold | None:
        """Collect a record through the full decoder; a record that is not a valid prediction
        record gets its dead letter queued on `letters` instead."""
        result = decode(record.value, now=now)
        if isinstance(result, Rejection):
            letters.append(self._dead_letter(record, result, now))
            return None
        fold = self._folder.add(result)
        if fold is None:  # a valid event of another type on the predictions topic
            wrong_topic = Rejection(
                reason=f"{result.type} does not belong on the predictions topic",
                event_type=result.type,
                event_id=result.id,
            )
            letters.append(self._dead_letter(record, wrong_topic, now))
        return fold

    async def _send_delta(self, delta: StatsDelta, sources: Sources) -> asyncio.Future[Any]:
        """Send a deployment's delta to its rollout, and the same statistics to the model's
        monitor (every deployment's predictions are watched, rollout or none): one span, two
        records; the future of the second, acknowledged after the first (one partition
        leader's order is not promised across partitions: both are awaited at commit)."""
        assert self._producer is not None
        headers: list[tuple[str, bytes]] = []
        if self.trace_records:
            span = self._process_span(delta.deployment_id, sources)
            with use_span(span, end_on_exit=True):
                span.set_attribute("rollout.predictions", delta.count)
                headers = inject_headers()
        value, twin = delta.encode_both()
        first = await self._producer.send(
            self.stats_topic, key=delta.key().encode(), value=value, headers=headers
        )
        second = await self._producer.send(
            self.stats_topic, key=delta.model.encode(), value=twin, headers=headers
        )
        both: asyncio.Future[Any] = asyncio.ensure_future(asyncio.gather(first, second))
        return both

    def _process_span(self, deployment_id: str, sources: Sources) -> Any:
        # links to the newest MAX_LINKS distinct producer spans (the span limit), newest first,
        # among the newest records with trace context the fold kept (`MAX_TRACED`)
        contexts = []
        seen = set()
        parent_headers = None
        for r in reversed(sources.traced):
            if parent_headers is None:
                parent_headers = r.headers
            sc = span_context_of(extract_from_headers(r.headers))
            if sc.is_valid and sc.span_id not in seen:
                seen.add(sc.span_id)
                contexts.append(sc)
                if len(contexts) >= MAX_LINKS:
                    break
        parent = extract_from_headers(parent_headers) if parent_headers else None
        attributes = messaging_attributes(
            Operation.PROCESS,
            self.topic,
            key=deployment_id,
            partition=sources.last.partition,
            offset=sources.last.offset,
            batch_count=sources.count,
            group=self.group_id,
        )
        return self.tracer.start_span(
            f"process {self.topic}",
            context=parent,
            kind=Operation.PROCESS.span_kind(),
            links=[Link(sc) for sc in contexts],
            attributes=attributes,
        )

    async def _dead_letter(
        self, record: ConsumerRecord[bytes, bytes], rejection: Rejection, now: datetime
    ) -> asyncio.Future[Any]:
        assert self._producer is not None
        self.counters.rejected += 1
        if self.metrics is not None:
            self.metrics.dead_letter(record.topic, rejection)
        log.warning(
            "lane.rejected",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            reason=rejection.reason,
        )
        letter = dead_letter(
            rejection,
            record.value,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            now=now.timestamp(),
        )
        return await self._producer.send(
            self.dead_letter_topic, key=letter.key_bytes(), value=letter.encode()
        )
