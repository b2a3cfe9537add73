"""The Faust worker: the rollout agent, its table, the tick timer and the prediction lane.

- The **prediction lane** (controller.stream.lane) takes predictions in groups from the Kafka
  client and hands the agent one statistics delta per deployment and group.
- The **rollout agent** reads the deployments, labels, metrics and internal stats topics (all
  keyed by deployment id and co-partitioned), runs the pure core on each event and publishes
  what it returns: commands, alerts, decisions, dead letters.
- The **rollouts table** holds each rollout's state (the core's plain-data form), written once
  per changed rollout as each offset commit begins (`FlushBeforeCommit`); it is backed by
  a compacted changelog topic, so a worker that restarts or takes over a partition carries on
  where the last one stopped. Command ids are deterministic: an event processed twice (after a
  crash, before its offset was committed) yields the same command id, never a new one.
- The **tick timer** re-judges the rollouts of this worker's partitions that are due at every
  multiple of `tick_interval_s` since the epoch (replay's grid), so outages, bake times and
  deadlines act even when no event arrives.

Faust's exactly-once mode and windowed tables are not used (open bugs); windows are the core's
own mergeable statistics and idempotency comes from deterministic ids.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faust
import structlog
from kafka.partitioner.default import murmur2
from opentelemetry.trace import Tracer

from controller.engine import Engine, next_tick
from controller.kafka_options import faust_broker
from controller.kafka_options import faust_credentials as broker_credentials
from controller.observability import tracer_or_default
from controller.observability.metrics import WorkerMetrics
from controller.settings import Settings
from controller.stream.agent import Headers, RolloutAgent
from controller.stream.health import WorkerHealth
from controller.stream.join import JoinLane
from controller.stream.lane import PredictionLane
from controller.topics import stats_topic_name, topic_name
from schemas import Topic

log = structlog.get_logger(__name__)


class FlushBeforeCommit(faust.Sensor):
    """Stores the rollouts changed since the last commit as each offset commit begins (Faust
    flushes its producer, the changelog included, before it commits the offsets): at most one
    changelog record per rollout per commit interval, never behind a committed offset."""

    def __init__(self, agent: RolloutAgent) -> None:
        super().__init__()
        self.agent = agent

    def on_commit_initiated(self, consumer: Any) -> Any:
        try:
            self.agent.flush()
        except Exception:  # a failed write must not stop the commit loop; the next retries
            log.exception("table.flush_failed")
        return None


def partition_of(key: str, partitions: int) -> int:
    """The partition the default (murmur2) partitioner picks for a key, as Kafka clients do."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


class FaustPublisher:
    """The agent's publisher: the worker's output topics, through Faust's producer."""

    def __init__(self, topics: dict[Topic, Any], names: dict[Topic, str]) -> None:
        self.topics = topics
        self.names = names

    def topic_name(self, topic: Topic) -> str:
        return self.names[topic]

    async def send(self, topic: Topic, key: bytes | None, value: bytes, headers: Headers) -> None:
        await self.topics[topic].send(key=key, value=value, headers=headers)


class RolloutWorker:
    """Builds the Faust app around a `RolloutAgent` and an `Engine` (the core plus a policy)."""

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
        #: the worker's Prometheus metrics (a registry of its own, the process' figures too)
        self.metrics = WorkerMetrics(process=True)
        self.metrics.topic_labels = {name: str(t) for t, name in self.names.items()}
        self.metrics.topic_labels[self.stats_topic] = "stats"
        #: the agent and the timer have started (the tables are recovered): /readyz
        self.running = False
        self.app = faust.App(
            settings.consumer_group,
            broker=faust_broker(settings),
            broker_credentials=broker_credentials(settings),
            store="memory://",
            datadir=str(settings.data_dir / "{conf.name}-data")
            if settings.data_dir is not None
            else "{conf.name}-data",
            topic_partitions=settings.topic_partitions,
            topic_replication_factor=settings.replication_factor,
            table_standby_replicas=0,
            web_enabled=False,
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            key_serializer="raw",
            value_serializer="raw",
            stream_wait_empty=False,
            # commits every half second, not every 100 records as well: each commit writes
            # every rollout changed since the last (FlushBeforeCommit), so a commit by count
            # would write a busy worker's rollouts more often than once per interval
            broker_commit_every=100_000,
            broker_commit_interval=0.5,
            broker_session_timeout=settings.session_timeout_s,
            broker_heartbeat_interval=settings.heartbeat_interval_s,
            broker_rebalance_timeout=settings.rebalance_timeout_s,
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
        #: the models' monitors, keyed by model (co-partitioned with the stats topic's monitor
        #: deltas and the deployments topic's monitor events, which are keyed by model too)
        self.monitor_table = self.app.Table(
            "monitors",
            default=None,
            partitions=settings.topic_partitions,
            use_partitioner=True,
            key_type=bytes,
            value_type=bytes,
        )
        #: quota pools, keyed by pool (their inputs are keyed by pool), and each deployment's
        #: pipelines, keyed by deployment id (controller/stream/pipelines.py)
        self.pool_table = self.app.Table(
            "pools",
            default=None,
            partitions=settings.topic_partitions,
            use_partitioner=True,
            key_type=bytes,
            value_type=bytes,
        )
        self.pipeline_table = self.app.Table(
            "pipelines",
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
        # the deployments topic is an output too: every rollout configures its model's monitor
        outputs = (
            Topic.COMMANDS,
            Topic.ALERTS,
            Topic.DECISIONS,
            Topic.DEAD_LETTER,
            Topic.DEPLOYMENTS,
        )
        self.out = {t: self.app.topic(self.names[t], **raw) for t in outputs}
        self.agent = RolloutAgent(
            engine,
            self.table,
            FaustPublisher(self.out, self.names),
            stats_topic=self.stats_topic,
            consumer_group=settings.consumer_group,
            tracer=self.tracer,
            clock=clock,
            deferred=True,
            monitors=self.monitor_table,
            heard=self._heard,
            pools=self.pool_table,
            pipelines=self.pipeline_table,
            metrics=self.metrics,
        )
        self.app.sensors.add(FlushBeforeCommit(self.agent))
        self.app.on_partitions_revoked.connect(self._flush_monitors)
        self.app.on_before_shutdown.connect(self._flush_monitors)
        self.app.agent(self.inputs, name="rollouts")(self._agent)
        self.tick_interval_s = settings.tick_interval_s
        self.app.task(self._ticker)
        #: one rollout is judged at a time: the agent and the timer never interleave on a state
        self._lock = asyncio.Lock()
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
            self.lane.metrics = self.metrics
            self.app.task(self._run_lane)
        self.join: JoinLane | None = None
        if lane and settings.label_join:
            folder = settings.data_dir if settings.data_dir is not None else Path(".")
            self.join = JoinLane(
                settings,
                predictions_topic=self.names[Topic.PREDICTIONS],
                labels_topic=self.names[Topic.LABELS],
                stats_topic=self.stats_topic,
                group_id=f"{settings.consumer_group}.labels",
                store_path=folder / f"{settings.consumer_group}-join",
                horizon_s=settings.label_horizon_s,
                clock=clock,
            )
            self.app.task(self._run_join)
        #: /metrics, /healthz and /readyz: started and stopped with the app, before recovery
        self.health = WorkerHealth(
            self,
            self.metrics,
            host=settings.metrics_host,
            port=settings.metrics_port,
            stall_s=settings.health_stall_s,
        )
        self.app.add_dependency(self.health)

    def agent_lags(self) -> dict[tuple[str, int], int]:
        """The agent's consumer lag per input partition: the high watermark Faust's consumer
        last fetched less the offset after the last record it read (partitions not read from
        yet are left out)."""
        consumer = self.app.consumer
        found: dict[tuple[str, int], int] = {}
        read = getattr(consumer, "_read_offset", {})
        try:
            assigned = consumer.assignment()
        except Exception:  # the consumer has not started yet
            return found
        for tp in assigned:
            try:
                highwater = consumer.highwater(tp)
            except Exception:  # not fetched yet
                continue
            last = read.get(tp)
            if highwater is None or last is None:
                continue
            found[(tp.topic, tp.partition)] = max(0, highwater - (last + 1))
        return found

    def _heard(self) -> float | None:
        """How far the monitors' inputs are known to be complete: when the lane last had
        every prediction on the topic sent on (None without a lane: up to now)."""
        if self.lane is None:
            return None
        return self.lane.reached_at if self.lane.reached_at is not None else 0.0

    async def _flush_monitors(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        """Before partitions go to another worker, and before shutdown, every changed monitor
        is written."""
        try:
            self.agent.monitors.flush(force=True)
        except Exception:
            log.exception("monitors.flush_failed")

    @property
    def merged_predictions(self) -> int:
        """Predictions the agent has merged into rollout states (statistics deltas' counts)."""
        return self.agent.merged_predictions

    # ---- the prediction lane ----------------------------------------------------------

    async def _run_lane(self) -> None:
        """The lane, from the end of the app's startup (Faust starts app tasks once its tables
        are recovered) until the app stops.

        Everything the startup built (modules, the Faust app, the policy, the recovered states)
        lives as long as the worker, so it is frozen out of the garbage collector's reach
        (`gc.freeze`): a full collection then walks only what was made since, not the whole
        heap. The lane keeps each group of records alive while it folds it, so the collector
        runs often; frozen, single records go about 1.3 times as fast (docs/performance.md)."""
        if self.lane is None:
            return
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

    async def _run_join(self) -> None:
        """The label join (controller.stream.join), from the end of the app's startup until
        it stops; a failed step is logged and retried."""
        if self.join is None:
            return
        await self.join.start()
        try:
            while not self.app.should_stop:
                try:
                    await self.join.step()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("join.error")
                    await asyncio.sleep(1.0)
        finally:
            await self.join.stop()

    # ---- the rollout agent ------------------------------------------------------------

    async def _agent(self, stream: Any) -> None:
        self.running = True
        evaluation = self.metrics.evaluation.labels("event")
        async for event in stream.events():
            message = event.message
            async with self._lock:
                started = time.perf_counter()
                await self.agent.handle(
                    message.topic,
                    message.partition,
                    message.offset,
                    message.key,
                    message.value,
                    message.headers,
                )
                evaluation.observe(time.perf_counter() - started)

    # ---- the tick timer ---------------------------------------------------------------

    async def _ticker(self) -> None:
        """The tick timer: fires at every multiple of `tick_interval_s` since the epoch (the
        grid replay ticks on, `controller.engine.next_tick`), not at the worker's own phase."""
        self.running = True
        metrics = self.metrics
        evaluation = metrics.evaluation.labels("tick")
        while not self.app.should_stop:
            due = next_tick(self.clock(), self.tick_interval_s)
            await self.app.sleep(max(0.0, due - self.clock()))
            if self.app.should_stop:
                return
            started = time.perf_counter()
            metrics.tick_lag.observe(max(0.0, self.clock() - due))
            metrics.last_tick.set(self.clock())
            try:
                await self._tick()
                evaluation.observe(time.perf_counter() - started)
            except Exception:  # the timer outlives a failed tick; the next one retries
                log.exception("tick.failed")

    async def _tick(self) -> None:
        if self.app.rebalancing or getattr(self.app, "in_recovery", False):
            return
        actives = {
            tp.partition
            for tp in self.app.assignor.assigned_actives()
            if tp.topic == self.names[Topic.DEPLOYMENTS]
        }
        async with self._lock:
            await self.agent.tick(lambda key: partition_of(key, self.partitions) in actives)
