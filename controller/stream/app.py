"""The Faust worker: the rollout agent, its table, the tick timer and the prediction lane.

- The **prediction lane** (controller.stream.lane) takes predictions in groups from the Kafka
  client and hands the agent one statistics delta per deployment and group.
- The **rollout agent** reads the deployments, labels, metrics and internal stats topics (all
  keyed by deployment id and co-partitioned), runs the pure core on each event and publishes
  what it returns: commands, alerts, decisions, dead letters.
- The **rollouts table** holds each rollout's state (the core's plain-data form); it is backed by
  a compacted changelog topic, so a worker that restarts or takes over a partition carries on
  where the last one stopped. Command ids are deterministic: an event processed twice (after a
  crash, before its offset was committed) yields the same command id, never a new one.
- The **tick timer** re-judges every rollout of this worker's partitions every
  `tick_interval_s`, so outages, bake times and deadlines act even when no event arrives.

Faust's exactly-once mode and windowed tables are not used (open bugs); windows are the core's
own mergeable statistics and idempotency comes from deterministic ids.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import time
from collections.abc import Callable
from typing import Any

import faust
import orjson
import structlog
from kafka.partitioner.default import murmur2
from opentelemetry.trace import SpanKind, Tracer

from controller.kafka_options import faust_broker
from controller.kafka_options import faust_credentials as broker_credentials
from controller.observability import (
    inject_headers,
    messaging_attributes,
    remote_parent,
    traceparent_of,
    tracer_or_default,
)
from controller.observability.messaging import Operation
from controller.settings import Settings
from controller.stream.deltas import StatsDelta
from controller.stream.engine import Engine, Outputs
from controller.stream.lane import PredictionLane
from controller.topics import stats_topic_name, topic_name
from schemas import Alert, Envelope, Payload, Rejection, Topic, decode, make_event

log = structlog.get_logger(__name__)

SOURCE = "rollout-controller"


def partition_of(key: str, partitions: int) -> int:
    """The partition the default (murmur2) partitioner picks for a key, as Kafka clients do."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


class RolloutWorker:
    """Builds the Faust app around an `Engine` (the core plus a policy)."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        tracer: Tracer | None = None,
        clock: Callable[[], float] = time.time,
        lane: bool = True,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.tracer = tracer_or_default(tracer)
        self.clock = clock
        self.partitions = settings.topic_partitions
        self.names = {t: topic_name(settings, t) for t in Topic}
        self.stats_topic = stats_topic_name(settings)
        self.app = faust.App(
            settings.consumer_group,
            broker=faust_broker(settings),
            broker_credentials=broker_credentials(settings),
            store="memory://",
            topic_partitions=settings.topic_partitions,
            topic_replication_factor=settings.replication_factor,
            table_standby_replicas=0,
            web_enabled=False,
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            key_serializer="raw",
            value_serializer="raw",
            stream_wait_empty=False,
            broker_commit_every=100,
            broker_commit_interval=0.5,
        )
        # Keys and values are bytes, stored raw: the changelog key is the deployment id's UTF-8,
        # so the partitioner puts a rollout's state on the partition number of its source
        # records, and recovery hands back the very bytes that were written. (Faust derives a
        # table's serializers from key_type / value_type alone: with `str` keys or a Schema
        # argument they become json, which quotes the key, moves the state to another
        # partition, and recovers the value as a decoded dict.)
        self.table = self.app.Table(
            "rollouts",
            default=None,
            partitions=settings.topic_partitions,
            use_partitioner=True,
            key_type=bytes,
            value_type=bytes,
        )
        raw = {
            "key_type": bytes,
            "value_type": bytes,
            "key_serializer": "raw",
            "value_serializer": "raw",
        }
        self.inputs = self.app.topic(
            self.names[Topic.DEPLOYMENTS],
            self.names[Topic.LABELS],
            self.names[Topic.METRICS],
            self.stats_topic,
            **raw,
        )
        self.out = {
            t: self.app.topic(self.names[t], **raw)
            for t in (Topic.COMMANDS, Topic.ALERTS, Topic.DECISIONS, Topic.DEAD_LETTER)
        }
        self.app.agent(self.inputs, name="rollouts")(self._agent)
        self.app.timer(settings.tick_interval_s)(self._tick)
        #: one rollout is judged at a time: the agent and the timer never interleave on a state
        self._lock = asyncio.Lock()
        self._decoded: dict[str, tuple[bytes, Any]] = {}
        #: predictions the agent has merged into rollout states (statistics deltas' counts)
        self.merged_predictions = 0
        self.lane: PredictionLane | None = None
        if lane:
            self.lane = PredictionLane(
                settings,
                topic=self.names[Topic.PREDICTIONS],
                stats_topic=self.stats_topic,
                dead_letter_topic=self.names[Topic.DEAD_LETTER],
                group_id=f"{settings.consumer_group}.predictions",
                tracer=self.tracer,
                clock=clock,
            )
            self.app.task(self._run_lane)

    # ---- the prediction lane ----------------------------------------------------------

    async def _run_lane(self) -> None:
        """The lane, from the end of the app's startup (Faust starts app tasks once its tables
        are recovered) until the app stops.

        Everything the startup built (modules, the Faust app, the policy, the recovered states)
        lives as long as the worker, so it is frozen out of the garbage collector's reach
        (`gc.freeze`): a full collection then walks only what was made since, not the whole
        heap. The lane keeps each group of records alive while it folds it, so the collector
        runs often; frozen, single records go about 1.3 times as fast (docs/performance.md)."""
        assert self.lane is not None
        gc.freeze()
        await self.lane.start()
        try:
            while not self.app.should_stop:
                try:
                    await self.lane.step()
                except asyncio.CancelledError:
                    raise
                except Exception:  # a broker hiccup must not end the lane; it retries
                    log.exception("lane.error")
                    await asyncio.sleep(1.0)
        finally:
            await self.lane.stop()
            gc.unfreeze()

    # ---- the rollout agent ------------------------------------------------------------

    async def _agent(self, stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            try:
                async with self._lock:
                    await self.handle(
                        message.topic,
                        message.partition,
                        message.offset,
                        message.key,
                        message.value,
                        message.headers,
                    )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not stop the stream: the record is kept
                log.exception("agent.error", topic=message.topic, offset=message.offset)
                await self._dead_letter(
                    message.topic,
                    message.partition,
                    message.offset,
                    message.key,
                    message.value,
                    Rejection(
                        reason=f"internal error while processing: {type(exc).__name__}: {exc}"
                    ),
                )

    async def handle(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Any,
    ) -> None:
        now = self.clock()
        header_list = _headers(headers)
        if topic == self.stats_topic:
            delta = StatsDelta.from_json(value or b"")
            with self._process_span(topic, partition, offset, delta.deployment_id, header_list):
                state = self._load(delta.deployment_id)
                if state is None:
                    return
                new_state, outputs = self.engine.on_delta(state, delta, now)
                self.merged_predictions += delta.count
                await self._commit(delta.deployment_id, new_state, outputs, now)
            return
        result = decode(value, now=_dt(now))
        if isinstance(result, Rejection):
            await self._dead_letter(topic, partition, offset, key, value, result)
            return
        deployment_id = result.key()
        with self._process_span(
            topic, partition, offset, deployment_id, header_list, result.traceparent
        ):
            state = self._load(deployment_id)
            new_state, outputs = self.engine.on_event(state, result, now)
            await self._commit(deployment_id, new_state, outputs, now)

    def _load(self, deployment_id: str) -> Any:
        """The rollout's state: decoded from the table, or the decoded copy this worker wrote
        last (the table still holds the very bytes object it was stored as)."""
        raw = self.table.get(deployment_id.encode())
        if raw is None:
            return None
        cached = self._decoded.get(deployment_id)
        if cached is not None and cached[0] is raw:
            return cached[1]
        state = self.engine.load(orjson.loads(raw))
        self._decoded[deployment_id] = (raw, state)
        return state

    async def _commit(
        self, deployment_id: str, state: Any, outputs: Outputs, now: float, *, store: bool = True
    ) -> None:
        """Publish what the core decided, then store the new state.

        Publishing first means a crash in between republishes the same deterministic ids on
        restart (harmless for routers) instead of losing a command."""
        await self._publish(outputs, now)
        if state is not None and store:
            raw = orjson.dumps(self.engine.dump(state))
            self.table[deployment_id.encode()] = raw
            self._decoded[deployment_id] = (raw, state)

    # ---- the tick timer ---------------------------------------------------------------

    async def _tick(self) -> None:
        if self.app.rebalancing or getattr(self.app, "in_recovery", False):
            return
        async with self._lock:
            await self._tick_all()

    async def _tick_all(self) -> None:
        actives = {
            tp.partition
            for tp in self.app.assignor.assigned_actives()
            if tp.topic == self.names[Topic.DEPLOYMENTS]
        }
        now = self.clock()
        for key in list(self.table.keys()):
            deployment_id = key.decode()
            if partition_of(deployment_id, self.partitions) not in actives:
                continue
            try:
                await self._tick_one(deployment_id, now)
            except asyncio.CancelledError:
                raise
            except Exception:  # one broken rollout must not stop the timer for the others
                log.exception("tick.error", deployment=deployment_id)

    async def _tick_one(self, deployment_id: str, now: float) -> None:
        state = self._load(deployment_id)
        if state is None or not self.engine.is_live(state):
            return
        new_state, outputs = self.engine.on_tick(state, now)
        if outputs.empty():
            return  # a tick that decides nothing only re-derives state: not stored
        with self.tracer.start_as_current_span(
            "tick rollout",
            kind=SpanKind.INTERNAL,
            attributes={"rollout.deployment_id": deployment_id},
        ):
            await self._commit(deployment_id, new_state, outputs, now)

    # ---- publishing -------------------------------------------------------------------

    def _process_span(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: str,
        headers: list[tuple[str, bytes]],
        traceparent: str | None = None,
    ) -> Any:
        parent = remote_parent(headers, traceparent, None)
        return self.tracer.start_as_current_span(
            f"process {topic}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=messaging_attributes(
                Operation.PROCESS,
                topic,
                key=key,
                partition=partition,
                offset=offset,
                group=self.settings.consumer_group,
            ),
        )

    async def _publish(self, outputs: Outputs, now: float) -> None:
        for decision, commands, alerts in outputs.groups:
            with self.tracer.start_as_current_span(
                "decide rollout",
                attributes={
                    "rollout.deployment_id": decision.deployment_id if decision else "",
                    "rollout.from_phase": decision.from_phase if decision else "",
                    "rollout.to_phase": decision.to_phase if decision else "",
                    "rollout.reason": decision.reason if decision else "",
                },
            ) as span:
                if decision is not None:
                    span.set_attribute("rollout.decision_id", decision.decision_id)
                    log.info(
                        "rollout.decision",
                        deployment=decision.deployment_id,
                        from_phase=decision.from_phase,
                        to_phase=decision.to_phase,
                        step=decision.step,
                        reason=decision.reason,
                    )
                for command in commands:
                    log.info(
                        "rollout.command",
                        deployment=command.deployment_id,
                        action=command.action.value,
                        command_id=command.command_id,
                        canary_percent=command.canary_percent,
                        reason=command.reason,
                    )
                    await self._send(Topic.COMMANDS, command, command.command_id, now)
                for alert in alerts:
                    log.info(
                        "rollout.alert",
                        deployment=alert.deployment_id,
                        status=alert.status,
                        kind=alert.kind,
                        dedup_key=alert.dedup_key,
                        summary=alert.summary,
                    )
                    await self._send(Topic.ALERTS, alert, alert_id(alert), now)
                if decision is not None:
                    await self._send(Topic.DECISIONS, decision, decision.decision_id, now)

    async def _send(self, topic: Topic, payload: Payload, event_id: str | None, now: float) -> None:
        name = self.names[topic]
        with self.tracer.start_as_current_span(
            f"send {name}",
            kind=SpanKind.PRODUCER,
            attributes=messaging_attributes(Operation.SEND, name, key=payload.record_key()),
        ):
            event = make_event(
                payload,
                source=SOURCE,
                time=_dt(now),
                id=event_id,
                traceparent=traceparent_of(),
            )
            await self.out[topic].send(
                key=event.key().encode(), value=event.to_json(), headers=inject_headers()
            )

    async def _dead_letter(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        rejection: Rejection,
    ) -> None:
        log.warning(
            "agent.rejected",
            topic=topic,
            partition=partition,
            offset=offset,
            reason=rejection.reason,
        )
        letter = rejection.to_dead_letter(
            value or b"",
            rejected_at=_dt(self.clock()),
            source_topic=topic,
            partition=partition,
            offset=offset,
            key=key,
        )
        event: Envelope[Any] = make_event(
            letter, source=SOURCE, time=_dt(self.clock()), id=f"dlq:{topic}:{partition}:{offset}"
        )
        await self.out[Topic.DEAD_LETTER].send(key=key, value=event.to_json())


def alert_id(alert: Alert) -> str:
    """A deterministic CloudEvents id for an alert: its dedup key, status and time."""
    material = "\x1f".join((alert.dedup_key, alert.status, alert.at.isoformat()))
    return "alert-" + hashlib.sha256(material.encode()).hexdigest()[:16]


def _headers(headers: Any) -> list[tuple[str, bytes]]:
    if not headers:
        return []
    if isinstance(headers, dict):
        return [(k, v) for k, v in headers.items()]
    return list(headers)


def _dt(now: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(now, UTC)
