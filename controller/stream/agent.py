"""The rollout agent's logic, without Faust or a broker: records in, the engine, records out.

`RolloutAgent` takes each record of the agent's input topics (deployments, labels, metrics and
the lane's statistics deltas), decodes it, runs the engine on its rollout's state, publishes the
output records and stores the new state; `tick` judges the rollouts that are due. It works over
two narrow interfaces, so a test builds it with a dict and a list:

- `Table`: the rollouts' stored states by deployment id (bytes to bytes); the worker gives it
  the Faust table backed by a compacted changelog.
- `Publisher`: `send(topic, key, value, headers)`; the worker's sends through Faust topics.

Publishing comes before storing: after a crash in between, the record is processed again and
yields the same deterministic ids (routers ignore a command id they have applied), instead of
losing a command. The worker stores `deferred`: a changed state stays in memory and `flush`
writes each changed rollout once as an offset commit begins, so the changelog gets at most one
record per rollout per commit interval however many records changed it, and always before the
offsets of those records are committed. A change that published outputs (a decision, a
command, an alert) is written at once behind them, as without deferral: a successor that found
the state from before them would decide again, at its own time, under the same ids. Every
record that cannot be processed, whatever the reason, goes to the dead-letter topic with the
reason and its original bytes, and the stream goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from opentelemetry.trace import SpanKind, Tracer

from controller.core.rollout import RolloutState
from controller.engine import Effects, Engine, MonitorEffects, OutputRecord, dead_letter
from controller.observability import (
    inject_headers,
    messaging_attributes,
    remote_parent,
    traceparent_of,
    tracer_or_default,
)
from controller.observability.messaging import Operation
from controller.observability.metrics import WorkerMetrics
from controller.stream.deltas import LabelsDelta, decode_delta
from controller.stream.monitors import MonitorStore
from controller.stream.pipelines import PipelineStores
from schemas import (
    Command,
    FieldError,
    MonitorConfigured,
    MonitorDecision,
    MonitorDeleted,
    PipelineDecision,
    PipelineThrottle,
    Rejection,
    Topic,
    decode,
)

log = structlog.get_logger(__name__)

Headers = list[tuple[str, bytes]]


class Table(Protocol):
    """The rollouts' stored states, by the deployment id's UTF-8."""

    def get(self, key: bytes) -> bytes | None: ...

    def __setitem__(self, key: bytes, value: bytes) -> None: ...

    def __iter__(self) -> Iterator[bytes]: ...


class Publisher(Protocol):
    """Sends one record to a topic (the worker: through its Faust topics)."""

    async def send(
        self, topic: Topic, key: bytes | None, value: bytes, headers: Headers
    ) -> None: ...


class RolloutAgent:
    """The agent's logic (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        table: Table,
        publisher: Publisher,
        *,
        stats_topic: str,
        consumer_group: str = "",
        tracer: Tracer | None = None,
        clock: Callable[[], float] = time.time,
        deferred: bool = False,
        monitors: Table | None = None,
        heard: Callable[[], float | None] = lambda: None,
        pools: Table | None = None,
        pipelines: Table | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.engine = engine
        #: what the agent counts for Prometheus (its own registry when none is given)
        self.metrics = metrics if metrics is not None else WorkerMetrics()
        self.table = table
        #: quota pools (keyed by pool) and each deployment's pipelines (keyed by deployment)
        self.pipelines = PipelineStores(
            engine, pools if pools is not None else {}, pipelines if pipelines is not None else {}
        )
        #: the models' monitors (their own table, keyed by model); a dict when none is given
        self.monitors = MonitorStore(engine, monitors if monitors is not None else {}, clock=clock)
        #: how far the inputs are known to be complete (None: up to now): the lane's reach
        self.heard = heard
        #: reports for deployments with no rollout, by (event type, deployment id)
        self.unrouted: dict[tuple[str, str], int] = {}
        #: predictions merged into monitors, and monitors checked by the timer
        self.watched_predictions = 0
        self.checked = 0
        #: Store states at `flush` (the worker's commits) instead of at every change: each
        #: rollout's state is written at most once per commit interval (write amplification)
        self.deferred = deferred
        #: rollouts changed since the last flush (deferred mode)
        self._dirty: set[str] = set()
        #: rollouts whose outputs are being published (their state waits for the next flush)
        self._publishing: set[str] = set()
        #: states written to the table (each one a changelog record)
        self.writes = 0
        self.publisher = publisher
        self.stats_topic = stats_topic
        self.consumer_group = consumer_group
        self.tracer = tracer_or_default(tracer)
        self.clock = clock
        #: the decoded state of each rollout this agent stored last, with the bytes stored
        self._decoded: dict[str, tuple[bytes, RolloutState]] = {}
        #: predictions merged into rollout states (the statistics deltas' counts)
        self.merged_predictions = 0
        #: labelled pairs merged into rollouts since the start
        self.joined_labels = 0
        #: rollouts judged by the timer since the start (those due)
        self.ticked = 0

    # ---- records ----------------------------------------------------------------------

    async def handle(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Any = None,
    ) -> None:
        """Process one record; anything that goes wrong sends it to the dead-letter topic."""
        try:
            await self._handle(topic, partition, offset, key, value, _headers(headers))
        except Exception as exc:  # a bug must not stop the stream: the record is kept
            log.exception("agent.error", topic=topic, offset=offset)
            rejection = Rejection(
                reason=f"internal error while processing: {type(exc).__name__}: {exc}"
            )
            await self.reject(topic, partition, offset, key, value, rejection)

    async def _handle(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
    ) -> None:
        now = self.clock()
        if topic == self.stats_topic:
            delta = decode_delta(value or b"")
            self.metrics.event_in(topic, _delta_type(delta))
            if isinstance(delta, LabelsDelta) and delta.target == "monitor":
                with self._process_span(topic, partition, offset, delta.model, headers):
                    watched = self.engine.on_monitor_labels(
                        self.monitors.load(delta.model),
                        delta.model,
                        delta.folds,
                        delta.delta_id,
                        now,
                    )
                    if watched.state is not None:
                        self.monitors.keep(watched.state)
                return
            if isinstance(delta, LabelsDelta):
                with self._process_span(topic, partition, offset, delta.deployment_id, headers):
                    state = self.load(delta.deployment_id)
                    if state is None:
                        self._unrouted("labels", delta.deployment_id, delta.pairs)
                        return
                    fresh = not state.seen_data(delta.delta_id)
                    effects = self.engine.on_labels(state, delta.folds, delta.delta_id, now)
                    if fresh:
                        self.joined_labels += delta.pairs
                    await self.commit(delta.deployment_id, effects)
                return
            if delta.target == "monitor":
                with self._process_span(topic, partition, offset, delta.model, headers):
                    watched = self.engine.on_monitor_delta(
                        self.monitors.load(delta.model),
                        delta.model,
                        delta.cohorts,
                        delta.delta_id,
                        now,
                    )
                    if watched.state is not None:
                        self.monitors.keep(watched.state)
                    self.watched_predictions += delta.count
                return
            with self._process_span(topic, partition, offset, delta.deployment_id, headers):
                state = self.load(delta.deployment_id)
                if state is None:
                    return
                effects = self.engine.on_delta(state, delta.cohorts, delta.delta_id, now)
                self.merged_predictions += delta.count
                await self.commit(delta.deployment_id, effects)
            return
        result = decode(value, now=datetime.fromtimestamp(now, UTC))
        if isinstance(result, Rejection):
            self.metrics.event_in(topic, "invalid")
            await self.reject(topic, partition, offset, key, value, result)
            return
        self.metrics.event_in(topic, result.type)
        if not topic.endswith(str(result.topic)):  # topics are named prefix + Topic
            wrong = Rejection(
                reason=f"{result.type} belongs on the {result.topic} topic, not on {topic}",
                errors=(FieldError(loc="type", message=result.type, kind="wrong_topic"),),
                event_type=result.type,
                event_id=result.id,
            )
            await self.reject(topic, partition, offset, key, value, wrong)
            return
        deployment_id = result.key()
        if self.engine.feeds_pool(result):
            with self._process_span(
                topic, partition, offset, deployment_id, headers, result.traceparent
            ):
                await self._pool_event(
                    deployment_id, result, now, (topic, partition, offset, key, value)
                )
            return
        if self.engine.feeds_pipeline(result):
            with self._process_span(
                topic, partition, offset, deployment_id, headers, result.traceparent
            ):
                states = self.pipelines.load_pipelines(deployment_id)
                judged = self.engine.on_pipeline_event(deployment_id, states, result, now)
                await self._publish_records(judged.records)
                self.pipelines.keep_pipelines(deployment_id, states)
                # a rollout of the deployment judges its runs and usage too (its guardrails)
                rollout = self.load(deployment_id)
                if rollout is not None:
                    await self.commit(deployment_id, self.engine.on_event(rollout, result, now))
            return
        if isinstance(result.data, MonitorConfigured | MonitorDeleted):
            with self._process_span(
                topic, partition, offset, deployment_id, headers, result.traceparent
            ):
                found = self.monitors.load(deployment_id)
                done = self.engine.on_monitor_event(found, result, now)
                await self.commit_monitor(done)
                if done.refusal:
                    log.info("monitor.refused", model=deployment_id, reason=done.refusal)
                    refused = _refusal(done.refusal, result)
                    await self.reject(topic, partition, offset, key, value, refused)
            return
        with self._process_span(
            topic, partition, offset, deployment_id, headers, result.traceparent
        ):
            effects = self.engine.on_event(self.load(deployment_id), result, now)
            await self.commit(deployment_id, effects)
            if effects.state is None and not effects.result.refusal:
                self._unrouted(result.type, deployment_id)
            refusal = effects.result.refusal
            if refusal:  # a request that cannot apply is answered, with why
                log.info("rollout.refused", deployment=deployment_id, reason=refusal)
                refused = _refusal(refusal, result)
                await self.reject(topic, partition, offset, key, value, refused)

    async def _pool_event(
        self,
        pool: str,
        event: Any,
        now: float,
        record: tuple[str, int, int, bytes | None, bytes | None],
    ) -> None:
        """A pool's configuration, deletion or usage: judged, published, stored; a refused
        configuration goes to the dead-letter topic with why."""
        state, done = self.engine.on_pool_event(self.pipelines.load_pool(pool), event, now)
        await self._publish_records(done.records)
        if state is not None:
            self.pipelines.keep_pool(state)
        if done.refusal:
            log.info("pool.refused", pool=pool, reason=done.refusal)
            await self.reject(*record, _refusal(done.refusal, event))

    async def _publish_records(self, records: tuple[OutputRecord, ...]) -> None:
        for output in records:
            _log_output(output)
            await self.send(output)

    def _unrouted(self, event_type: str, deployment_id: str, count: int = 1) -> None:
        """A report (a metric, a label, joined labels) for a deployment with no rollout:
        counted, and said in the log the first time and every 1,000th (predictions go to the
        model's monitor)."""
        key = (event_type, deployment_id)
        before = self.unrouted.get(key, 0)
        n = self.unrouted[key] = before + count
        if before == 0 or n // 1000 > before // 1000:
            log.info("input.unrouted", type=event_type, deployment=deployment_id, count=n)

    async def reject(
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
        self.metrics.dead_letter(topic, rejection)
        record = dead_letter(
            rejection,
            value,
            topic=topic,
            partition=partition,
            offset=offset,
            key=key,
            now=self.clock(),
            source=self.engine.source,
        )
        await self.publisher.send(Topic.DEAD_LETTER, record.key_bytes(), record.encode(), [])

    # ---- state ------------------------------------------------------------------------

    def load(self, deployment_id: str) -> RolloutState | None:
        """The rollout's state: decoded from the table, or the decoded copy this agent stored
        last (the table still holds the very bytes object it was stored as)."""
        if deployment_id in self._dirty:  # changed since the last flush: the newest is ours
            return self._decoded[deployment_id][1]
        raw = self.table.get(deployment_id.encode())
        if raw is None:
            return None
        cached = self._decoded.get(deployment_id)
        if cached is not None and cached[0] is raw:
            return cached[1]
        state = self.engine.load(raw)
        self._decoded[deployment_id] = (raw, state)
        return state

    async def commit(self, deployment_id: str, effects: Effects, *, store: bool = True) -> None:
        """Publish what the core decided, then store the new state."""
        # until its outputs are out, a changed state is not flushed (a flush may run at any
        # await): a state stored ahead of its outputs would lose them after a crash
        self._publishing.add(deployment_id)
        try:
            await self.publish(effects)
        finally:
            self._publishing.discard(deployment_id)
        state = effects.state
        if state is None or not store:
            return
        if self.deferred and not effects.records:
            stored = self._decoded.get(deployment_id)
            self._decoded[deployment_id] = (b"" if stored is None else stored[0], state)
            self._dirty.add(deployment_id)
            return
        # what published outputs is written at once, right behind them: a successor that found
        # the state before them would decide again, later, under the same ids
        self._write(deployment_id, state)
        self._dirty.discard(deployment_id)

    async def commit_monitor(self, effects: MonitorEffects) -> None:
        """Publish what a monitor decided, then keep its state (written at once behind
        outputs, as a rollout's)."""
        state = effects.state
        if state is None:
            return
        self.monitors.publishing.add(state.model)
        try:
            await self.publish_monitor(effects)
        finally:
            self.monitors.publishing.discard(state.model)
        self.monitors.keep(state, write=bool(effects.records))

    async def publish_monitor(self, effects: MonitorEffects) -> None:
        for record in effects.records:
            _log_output(record)
            await self.send(record)

    def flush(self, *, force: bool = False) -> int:
        """Write the states changed since the last flush to the table, one record each; how
        many. The worker calls it as each offset commit begins, before the producer is flushed:
        the states reach the changelog before the offsets of the inputs that changed them are
        committed (a crash in between reprocesses those inputs, with the same output ids)."""
        written = 0
        for deployment_id in sorted(self._dirty - self._publishing):
            self._write(deployment_id, self._decoded[deployment_id][1])
            self._dirty.discard(deployment_id)  # a failed write stays for the next flush
            written += 1
        return written + self.monitors.flush(force=force)

    def _write(self, deployment_id: str, state: RolloutState) -> None:
        raw = self.engine.dump(state)
        self.table[deployment_id.encode()] = raw
        self._decoded[deployment_id] = (raw, state)
        self.writes += 1

    # ---- the timer --------------------------------------------------------------------

    async def tick(self, owned: Callable[[str], bool] = lambda _: True) -> int:
        """Judge the rollouts of this agent's partitions (`owned`) that are due; how many."""
        now = self.clock()
        stored = [k.decode() for k in list(self.table)]
        for deployment_id in stored:
            # a state this agent did not store last (recovered, or taken over in a rebalance)
            # may wake at another time than the one remembered: judge it once
            cached = self._decoded.get(deployment_id)
            if deployment_id in self._dirty:
                continue
            if cached is None or cached[0] is not self.table.get(deployment_id.encode()):
                self.engine.wakeups.pop(deployment_id, None)
        keys = stored + sorted(self._dirty.difference(stored))
        judged = 0
        for deployment_id in self.engine.due(keys, now):
            if not owned(deployment_id):
                continue
            try:
                judged += await self._tick_one(deployment_id, now)
            except Exception:  # one broken rollout must not stop the timer for the others
                log.exception("tick.error", deployment=deployment_id)
        self.ticked += judged
        judged += await self._check_monitors(owned, now)
        judged += await self._check_pipelines(owned, now)
        return judged

    async def _check_pipelines(self, owned: Callable[[str], bool], now: float) -> int:
        """Check the quota pools and the pipelines of this agent's partitions that are due."""
        stores, engine = self.pipelines, self.engine
        checked = 0
        for pool in engine.pools_due(stores.pool_keys(), now):
            if not owned(pool):
                continue
            try:
                found = stores.load_pool(pool)
                if found is None:
                    continue
                state, done = engine.on_pool_tick(found, now)
                await self._publish_records(done.records)
                stores.keep_pool(state)
                checked += 1
            except Exception:  # one broken pool must not stop the timer for the others
                log.exception("pool.check_error", pool=pool)
        for key in engine.pipelines_due(stores.pipeline_keys(), now):
            if not owned(key):
                continue
            try:
                states = stores.load_pipelines(key)
                done = engine.on_pipeline_tick(key, states, now)
                await self._publish_records(done.records)
                stores.keep_pipelines(key, states)
                checked += 1
            except Exception:
                log.exception("pipeline.check_error", deployment=key)
        return checked

    async def _check_monitors(self, owned: Callable[[str], bool], now: float) -> int:
        """Check the monitors of this agent's partitions that are due."""
        self.monitors.forget_stale()
        heard = self.heard()
        checked = 0
        for model in self.engine.monitors_due(self.monitors.models(), now):
            if not owned(model):
                continue
            try:
                state = self.monitors.load(model)
                if state is None:
                    continue
                effects = self.engine.on_monitor_tick(state, now, heard)
                if effects.empty():
                    self.monitors.keep(state)
                else:
                    with self.tracer.start_as_current_span(
                        "check monitor",
                        kind=SpanKind.INTERNAL,
                        attributes={"monitor.model": model},
                    ):
                        await self.commit_monitor(effects)
                checked += 1
            except Exception:  # one broken monitor must not stop the timer for the others
                log.exception("monitor.check_error", model=model)
        self.checked += checked
        return checked

    async def _tick_one(self, deployment_id: str, now: float) -> int:
        state = self.load(deployment_id)
        if state is None:
            return 0
        if not state.is_live():
            self.engine.wakeups[deployment_id] = None
            return 0
        effects = self.engine.on_tick(state, now)
        if effects.empty():
            return 1  # a tick that decides nothing only re-derives state: not stored
        with self.tracer.start_as_current_span(
            "tick rollout",
            kind=SpanKind.INTERNAL,
            attributes={"rollout.deployment_id": deployment_id},
        ):
            await self.commit(deployment_id, effects)
        return 1

    # ---- publishing -------------------------------------------------------------------

    async def publish(self, effects: Effects) -> None:
        """Send the records in order; each decision and what led to it share one span."""
        for group in effects.groups():
            decision = group[-1].event.data if group[-1].topic is Topic.DECISIONS else None
            with self.tracer.start_as_current_span(
                "decide rollout",
                attributes={
                    "rollout.deployment_id": group[-1].key or "",
                    "rollout.from_phase": decision.from_phase if decision else "",
                    "rollout.to_phase": decision.to_phase if decision else "",
                    "rollout.reason": decision.reason if decision else "",
                },
            ) as span:
                if decision is not None:
                    span.set_attribute("rollout.decision_id", decision.decision_id)
                for record in group:
                    _log_output(record)
                    await self.send(record)

    async def send(self, record: OutputRecord) -> None:
        with self.tracer.start_as_current_span(
            f"send {self._topic_name(record.topic)}",
            kind=SpanKind.PRODUCER,
            attributes=messaging_attributes(
                Operation.SEND, self._topic_name(record.topic), key=record.key
            ),
        ):
            value = record.encode(traceparent=traceparent_of())
            await self.publisher.send(record.topic, record.key_bytes(), value, inject_headers())
        _count_output(self.metrics, record)

    def _topic_name(self, topic: Topic) -> str:
        name = getattr(self.publisher, "topic_name", None)
        return name(topic) if callable(name) else topic.value

    def _process_span(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: str,
        headers: Headers,
        traceparent: str | None = None,
    ) -> AbstractContextManager[Any]:
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
                group=self.consumer_group or None,
            ),
        )


def _refusal(why: str, event: Any) -> Rejection:
    """The dead letter's rejection of a request that cannot apply: `refused: <why>`."""
    return Rejection(
        reason=f"refused: {why}",
        errors=(FieldError(loc="$", message=why, kind="refused"),),
        event_type=event.type,
        event_id=event.id,
    )


def _delta_type(delta: Any) -> str:
    """A statistics delta's type label: predictions or labels, for a rollout or a monitor."""
    kind = "labels" if isinstance(delta, LabelsDelta) else "predictions"
    return f"{kind}_delta" if delta.target != "monitor" else f"monitor_{kind}_delta"


def _count_output(metrics: WorkerMetrics, record: OutputRecord) -> None:
    """Count a published command, decision or alert by its kind."""
    data = record.event.data
    if record.topic is Topic.COMMANDS:
        action = getattr(data, "action", "")
        label = str(getattr(action, "value", action))
        metrics.command(label if isinstance(data, Command) else f"pipeline_{label}")
    elif record.topic is Topic.DECISIONS:
        if isinstance(data, MonitorDecision):
            metrics.decision("monitor", data.action)
        elif isinstance(data, PipelineDecision):
            metrics.decision("pipeline", data.action)
        else:
            metrics.decision("rollout", data.to_phase)
    elif record.topic is Topic.ALERTS:
        metrics.alert(data.kind, str(data.severity), data.status)


def _log_output(record: OutputRecord) -> None:
    data = record.event.data
    if isinstance(data, PipelineDecision):
        log.info(
            "pipeline.decision",
            pool=data.pool,
            pipeline=data.pipeline,
            action=data.action,
            rule=data.rule,
            reason=data.reason,
        )
        return
    if isinstance(data, PipelineThrottle):
        log.info(
            "pipeline.throttle",
            pipeline=data.pipeline,
            pool=data.pool,
            action=data.action,
            limit=data.limit,
            command_id=data.command_id,
            reason=data.reason,
        )
        return
    if isinstance(data, MonitorConfigured):
        log.info("monitor.configuration", model=data.model, version=data.version, by=data.by)
        return
    if isinstance(data, MonitorDecision):
        log.info(
            "monitor.decision",
            model=data.model,
            version=data.version,
            action=data.action,
            rule=data.rule,
            reason=data.reason,
        )
        return
    if record.topic is Topic.DECISIONS:
        log.info(
            "rollout.decision",
            deployment=data.deployment_id,
            from_phase=data.from_phase,
            to_phase=data.to_phase,
            step=data.step,
            reason=data.reason,
        )
    elif record.topic is Topic.COMMANDS:
        log.info(
            "rollout.command",
            deployment=data.deployment_id,
            action=data.action.value,
            command_id=data.command_id,
            canary_percent=data.canary_percent,
            reason=data.reason,
        )
    elif record.topic is Topic.ALERTS:
        log.info(
            "rollout.alert",
            deployment=data.deployment_id,
            status=data.status,
            kind=data.kind,
            dedup_key=data.dedup_key,
            summary=data.summary,
        )


def _headers(headers: Any) -> Headers:
    if not headers:
        return []
    if isinstance(headers, dict):
        return list(headers.items())
    return list(headers)


class ListPublisher:
    """A publisher that keeps what it is sent, in order (tests, dry runs)."""

    def __init__(self, names: Callable[[Topic], str] | None = None) -> None:
        self.sent: list[tuple[Topic, bytes | None, bytes, Headers]] = []
        self._names = names

    def topic_name(self, topic: Topic) -> str:
        return self._names(topic) if self._names else topic.value

    async def send(self, topic: Topic, key: bytes | None, value: bytes, headers: Headers) -> None:
        self.sent.append((topic, key, value, headers))

    def values(self, topic: Topic) -> Iterator[bytes]:
        return (v for t, _, v, _ in self.sent if t is topic)


__all__ = ["ListPublisher", "Publisher", "RolloutAgent", "Table"]
