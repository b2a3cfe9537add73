"""Apply the controller's commands in a serving router, once each, and acknowledge them.

`CommandListener` consumes the commands topic, keeps the commands of its deployments, calls the
router's `apply(command)` and publishes a `TrafficApplied` acknowledgement on the deployments
topic, keyed by the deployment id like the command.

Once each: command ids are deterministic (a re-delivered or re-issued command has the same id),
and the listener remembers the ids it applied in a bounded LRU set held in memory. A restarted
router starts with an empty set unless it passes `seen_ids` from its own state (the ids of the
commands its current routing table came from); without them it may apply a recent command
again, which is harmless for idempotent actions such as "set traffic to 25 %". A duplicate is
acknowledged again by default (with the original time), so a controller that re-sends a command
whose acknowledgement was lost still hears back.

A failing `apply` is logged and counted, not acknowledged and not remembered: the command is
retried when it is delivered again, and the listener goes on with the next one.

Offsets are committed after each poll, once the acknowledgements of that poll are flushed
(at-least-once). kafka-python consumers are not thread-safe: use either `start()` or your own
loop around `poll_once()`, not both.

Signed commands: given the controller's public keys (`trusted_keys`, or the settings'
`ROLLOUT_CONTROLLER_KEYS_FILE`), the listener applies only commands signed with one of them,
within its validity; an unsigned or forged command, or one signed with a key it does not trust,
is refused: counted (`stats().refused`), logged (`listener.refused`) and answered with
`command.refused` on the deployments topic (the worker raises a critical alert). To rotate the
controller's key, trust the old and the new key, switch the worker to the new one, then drop the
old one (docs/security.md).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import structlog
from opentelemetry.trace import Status, StatusCode, Tracer

from controller.observability import (
    inject_headers,
    process_span,
    traceparent_of,
    tracer_or_default,
    tracestate_of,
)
from controller.sdk.reporter import Clock, utc_now
from controller.security.signing import KeyRing
from controller.settings import Settings, load_settings
from controller.topics import topic_name
from schemas import (
    Command,
    CommandRefused,
    Envelope,
    Rejection,
    Topic,
    TrafficApplied,
    decode,
    make_event,
)

log = structlog.get_logger(__name__)

#: How long a poll's acknowledgements may take to reach the broker before the commit.
ACK_FLUSH_TIMEOUT_S = 10.0
#: The pause of `run()` after a poll failed (the broker is away, say).
POLL_BACKOFF_S = 1.0


class SeenCommands:
    """The ids of applied commands, with when each was applied; the oldest go first when full."""

    def __init__(self, capacity: int = 10_000, ids: Iterable[str] = ()) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._ids: OrderedDict[str, datetime | None] = OrderedDict()
        for command_id in ids:
            self.add(command_id, None)

    def __contains__(self, command_id: object) -> bool:
        return command_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def applied_at(self, command_id: str) -> datetime | None:
        return self._ids.get(command_id)

    def add(self, command_id: str, applied_at: datetime | None) -> None:
        self._ids[command_id] = applied_at
        self._ids.move_to_end(command_id)
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)


@dataclass(frozen=True)
class ListenerStats:
    received: int
    """Records polled from the commands topic."""
    applied: int
    duplicates: int
    """Commands already applied (not applied again)."""
    skipped: int
    """Commands of other deployments, and events that are not commands."""
    rejected: int
    """Records that did not decode (logged with the reason)."""

    apply_errors: int
    acked: int
    """Acknowledgements the broker accepted."""
    ack_errors: int
    refused: int = 0
    """Commands refused for their signature (unsigned, an untrusted key, forged): logged,
    answered with command.refused, never applied."""


class CommandListener:
    """Applies commands for `deployment_ids` (None: every deployment) through `apply`.

    `applied_by` names this router instance in the acknowledgements. Every instance that holds
    routing state needs every command, so the default consumer group is per instance:
    `rollout-router.<applied_by>`. `topic` and `ack_topic` override the names the settings give;
    `consumer` (already subscribed or assigned) and `producer` are kafka-python clients to use
    instead of creating them (their owner closes them).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        apply: Callable[[Command], None],
        applied_by: str,
        deployment_ids: Iterable[str] | None = None,
        group_id: str | None = None,
        topic: str | None = None,
        ack_topic: str | None = None,
        consumer: Any = None,
        producer: Any = None,
        tracer: Tracer | None = None,
        seen_ids: Iterable[str] = (),
        max_seen: int = 10_000,
        ack_duplicates: bool = True,
        auto_offset_reset: str = "earliest",
        source: str | None = None,
        consumer_options: Mapping[str, Any] | None = None,
        producer_options: Mapping[str, Any] | None = None,
        clock: Clock = utc_now,
        trusted_keys: KeyRing | None = None,
    ) -> None:
        needs_settings = consumer is None or producer is None or topic is None or not ack_topic
        if settings is None and needs_settings:
            settings = load_settings()
        self._settings = settings
        if trusted_keys is None and settings is not None and settings.controller_keys_file:
            trusted_keys = KeyRing.load(Path(settings.controller_keys_file), "keys")
        #: the controller's public keys: when given, only commands signed with one apply
        self.trusted_keys = trusted_keys
        self.applied_by = applied_by
        self.source = source or applied_by
        self.group_id = group_id or f"rollout-router.{applied_by}"
        self.topic = topic or topic_name(_given(settings), Topic.COMMANDS)
        self.ack_topic = ack_topic or topic_name(_given(settings), Topic.DEPLOYMENTS)
        self.deployment_ids = None if deployment_ids is None else frozenset(deployment_ids)
        self.ack_duplicates = ack_duplicates
        self.seen = SeenCommands(max_seen, seen_ids)
        self._apply = apply
        self._consumer = consumer
        self._owns_consumer = consumer is None
        self._producer = producer
        self._owns_producer = producer is None
        self._consumer_options = {
            "group_id": self.group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": auto_offset_reset,
            "client_id": f"command-listener.{applied_by}",
            # a group that joined before the topic's metadata reached this client is assigned
            # nothing until the next refresh: 30 s, not the client's default of 5 minutes
            "metadata_max_age_ms": 30_000,
            **(consumer_options or {}),
        }
        self._producer_options = {
            "acks": "all",
            "client_id": f"command-listener.{applied_by}",
            **(producer_options or {}),
        }
        self._tracer = tracer_or_default(tracer)
        self._clock = clock
        self._lock = threading.Lock()  # the ack counters are written by the producer's thread
        self._counts = dict.fromkeys(ListenerStats.__dataclass_fields__, 0)
        self._unflushed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- one poll ---------------------------------------------------------------------------

    def poll_once(self, timeout_ms: int = 1000) -> int:
        """Poll once, handle every record, flush the acks, commit; return how many commands
        were applied."""
        consumer = self._consumer_client()
        polled = consumer.poll(timeout_ms=timeout_ms)
        if polled:
            self._producer_client()  # before applying: an applied command must be acknowledged
        applied = 0
        for records in polled.values():
            for record in records:
                applied += self._handle(record)
        if polled:
            self._flush_acks()
            try:
                consumer.commit()
            except Exception as exc:  # a rebalance, say: the records come again, seen ids skip
                log.warning("listener.commit_failed", error=repr(exc))
        return applied

    def _handle(self, record: Any) -> bool:
        self._count("received")
        event = decode(record.value, now=self._clock())
        if isinstance(event, Rejection):
            self._count("rejected")
            log.warning(
                "listener.rejected",
                reason=event.reason,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
            )
            return False
        command = event.data
        if not isinstance(command, Command) or (
            self.deployment_ids is not None and command.deployment_id not in self.deployment_ids
        ):
            self._count("skipped")
            return False
        with process_span(
            self.topic,
            tracer=self._tracer,
            headers=record.headers,
            traceparent=event.traceparent,
            tracestate=event.tracestate,
            key=record.key,
            partition=record.partition,
            offset=record.offset,
            group=self.group_id,
            operation_name="apply",
        ) as span:
            span.set_attributes(
                {
                    "rollout.deployment_id": command.deployment_id,
                    "rollout.command_id": command.command_id,
                    "rollout.command.action": command.action.value,
                    "rollout.canary_percent": command.canary_percent,
                }
            )
            fields = {
                "deployment": command.deployment_id,
                "command_id": command.command_id,
                "action": command.action.value,
                "canary_percent": command.canary_percent,
            }
            if self.trusted_keys is not None:
                _key, problem = self.trusted_keys.check(command, self._clock())
                if problem:
                    self._refuse(command, problem, span, fields)
                    return False
            if command.command_id in self.seen:
                self._count("duplicates")
                span.set_attribute("rollout.duplicate", True)
                log.info("listener.duplicate", **fields)
                if self.ack_duplicates:
                    self._ack(command, self.seen.applied_at(command.command_id) or self._clock())
                return False
            try:
                self._apply(command)
            except Exception as exc:  # the router's callback: log, count, go on with the next
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                self._count("apply_errors")
                log.exception("listener.apply_failed", **fields)
                return False
            applied_at = self._clock()
            self.seen.add(command.command_id, applied_at)
            self._count("applied")
            log.info("listener.applied", reason=command.reason, **fields)
            self._ack(command, applied_at)
            return True

    def _refuse(self, command: Command, problem: str, span: Any, fields: dict[str, Any]) -> None:
        """Count, log and answer a command whose signature is not acceptable."""
        self._count("refused")
        span.set_status(Status(StatusCode.ERROR, "command refused"))
        span.set_attribute("rollout.refused", problem)
        log.warning("listener.refused", problem=problem, **fields)
        refused = CommandRefused(
            deployment_id=command.deployment_id,
            command_id=command.command_id,
            refused_by=self.applied_by,
            reason=f"signature: {problem}",
            refused_at=self._clock(),
        )
        event = make_event(
            refused,
            source=self.source,
            time=self._clock(),
            traceparent=traceparent_of(),
            tracestate=tracestate_of(),
        )
        self._send(event)

    def _ack(self, command: Command, applied_at: datetime) -> None:
        """Publish TrafficApplied; its traceparent and headers carry the current (apply) span."""
        ack = TrafficApplied(
            deployment_id=command.deployment_id,
            command_id=command.command_id,
            canary_percent=command.canary_percent,
            applied_by=self.applied_by,
            applied_at=applied_at,
        )
        event = make_event(
            ack,
            source=self.source,
            time=self._clock(),
            traceparent=traceparent_of(),
            tracestate=tracestate_of(),
        )
        self._send(event)

    def _send(self, event: Envelope[Any]) -> None:
        """Publish an answer (an acknowledgement or a refusal) with the current span."""
        try:
            future = self._producer_client().send(
                self.ack_topic,
                value=event.to_json(),
                key=event.key().encode(),
                headers=inject_headers(),
            )
        except Exception as exc:
            self._on_ack_error(exc)
            return
        self._unflushed = True
        future.add_callback(lambda _metadata: self._count("acked"))
        future.add_errback(self._on_ack_error)

    def _on_ack_error(self, exc: BaseException) -> None:
        self._count("ack_errors")
        log.error("listener.ack_failed", topic=self.ack_topic, error=repr(exc))

    def _flush_acks(self) -> None:
        if not self._unflushed or self._producer is None:
            return
        try:
            self._producer.flush(timeout=ACK_FLUSH_TIMEOUT_S)
            self._unflushed = False
        except Exception as exc:
            log.warning("listener.ack_flush_failed", error=repr(exc))

    # -- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None, *, poll_timeout_ms: int = 500) -> None:
        """Poll until `stop` (default: the listener's own, set by `close()`) is set."""
        stop = stop or self._stop
        while not stop.is_set() and not self._stop.is_set():
            try:
                self.poll_once(poll_timeout_ms)
            except Exception:  # the broker is away, say: keep the router alive and retry
                log.exception("listener.poll_failed", topic=self.topic)
                stop.wait(POLL_BACKOFF_S)

    def start(self) -> Self:
        """Run the loop on a daemon thread until `close()`."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self.run, name=f"command-listener.{self.applied_by}", daemon=True
            )
            self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Stop the loop, flush the acknowledgements, close the clients we created. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._flush_acks()
        if self._owns_consumer and self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except Exception as exc:
                log.warning("listener.consumer_close_failed", error=repr(exc))
        if self._owns_producer and self._producer is not None:
            try:
                self._producer.close(timeout=timeout)
            except Exception as exc:
                log.warning("listener.producer_close_failed", error=repr(exc))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def stats(self) -> ListenerStats:
        with self._lock:
            return ListenerStats(**self._counts)

    # -- clients ----------------------------------------------------------------------------

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _consumer_client(self) -> Any:
        if self._consumer is None:
            from kafka import KafkaConsumer

            options = {**_given(self._settings).kafka_client_options(), **self._consumer_options}
            self._consumer = KafkaConsumer(self.topic, **options)
        return self._consumer

    def _producer_client(self) -> Any:
        if self._producer is None:
            from kafka import KafkaProducer

            options = {**_given(self._settings).kafka_client_options(), **self._producer_options}
            self._producer = KafkaProducer(**options)
        return self._producer


def _given(settings: Settings | None) -> Settings:
    assert settings is not None, "settings are loaded whenever a client or a topic needs them"
    return settings
