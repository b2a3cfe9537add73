"""The command listener applies each command once, acknowledges it, and survives bad input.

The stand-ins are the Kafka clients only (`spec_set` of KafkaConsumer and KafkaProducer): the
consumer's `poll` hands out the records a test lines up. The real-broker behaviour is in
tests/integration/test_sdk_kafka.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from unittest.mock import create_autospec

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.future import Future
from opentelemetry.trace import SpanKind, StatusCode

import schemas as s
from controller.observability import extract_from_headers, inject_headers, span_context_of
from controller.sdk import CommandListener, ListenerStats, SeenCommands
from tests.factories import T0
from tests.otel import Recorder, make_recorder

TOPIC, ACKS = "rollout.commands", "rollout.deployments"


def make_command(**overrides: Any) -> s.Command:
    fields: dict[str, Any] = {
        "command_id": "cmd-1",
        "deployment_id": "dep-1",
        "action": "set_traffic",
        "canary_percent": 25.0,
        "step": 1,
        "model": "fraud",
        "candidate_version": "v2",
        "baseline_version": "v1",
        "reason": "step 1: canary healthy for 60 s over 400 requests",
        "issued_at": T0,
    }
    fields.update(overrides)
    return s.Command(**fields)


class Broker:
    """What the listener's clients see: records to poll, and what the producer was sent."""

    def __init__(self) -> None:
        self.consumer = create_autospec(KafkaConsumer, instance=True, spec_set=True)
        self.producer = create_autospec(KafkaProducer, instance=True, spec_set=True)
        self.polls: list[list[ConsumerRecord]] = []
        self.acks: list[tuple[str, bytes, s.Envelope[Any], list[tuple[str, bytes]]]] = []
        self.offset = 0
        self.consumer.poll.side_effect = self._poll
        self.producer.send.side_effect = self._send

    def line_up(self, *values: bytes | s.Envelope[Any], headers: Any = None) -> None:
        records = []
        for value in values:
            raw = value.to_json() if isinstance(value, s.Envelope) else value
            key = value.key().encode() if isinstance(value, s.Envelope) else None
            records.append(
                ConsumerRecord(
                    TOPIC, 0, None, self.offset, 0, 0, key, raw, headers or [], None, 0, 0, 0
                )
            )
            self.offset += 1
        self.polls.append(records)

    def _poll(self, timeout_ms: int = 0) -> dict[TopicPartition, list[ConsumerRecord]]:
        if not self.polls:
            return {}
        return {TopicPartition(TOPIC, 0): self.polls.pop(0)}

    def _send(
        self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]
    ) -> Future:
        event = s.decode(value)
        assert isinstance(event, s.Envelope), event
        self.acks.append((topic, key, event, headers))
        return Future().success(None)

    def acked_ids(self) -> list[str]:
        return [event.data.command_id for _, _, event, _ in self.acks]


def command_event(**overrides: Any) -> s.Envelope[Any]:
    return s.make_event(make_command(**overrides), source="rollout-controller", time=T0)


@pytest.fixture
def broker() -> Broker:
    return Broker()


@pytest.fixture
def rec() -> Recorder:
    return make_recorder()


@pytest.fixture
def applied() -> list[s.Command]:
    return []


@pytest.fixture
def make_listener(
    broker: Broker, rec: Recorder, applied: list[s.Command]
) -> Iterator[Callable[..., CommandListener]]:
    made: list[CommandListener] = []

    def make(**kw: Any) -> CommandListener:
        kw.setdefault("apply", applied.append)
        kw.setdefault("applied_by", "router-a")
        kw.setdefault("deployment_ids", ["dep-1"])
        listener = CommandListener(
            consumer=broker.consumer,
            producer=broker.producer,
            topic=TOPIC,
            ack_topic=ACKS,
            tracer=rec.tracer,
            clock=lambda: T0 + timedelta(seconds=1),
            **kw,
        )
        made.append(listener)
        return listener

    yield make
    for listener in made:
        listener.close()


def test_a_command_is_applied_and_acknowledged_on_the_deployments_topic(
    broker: Broker, applied: list[s.Command], make_listener: Callable[..., CommandListener]
) -> None:
    listener = make_listener()
    broker.line_up(command_event())

    assert 1 == listener.poll_once()

    assert [make_command()] == applied
    ((topic, key, event, _),) = broker.acks
    assert (ACKS, b"dep-1") == (topic, key)
    assert (
        s.TrafficApplied(
            deployment_id="dep-1",
            command_id="cmd-1",
            canary_percent=25.0,
            applied_by="router-a",
            applied_at=T0 + timedelta(seconds=1),
        )
        == event.data
    )
    assert "router-a" == event.source
    broker.producer.flush.assert_called_once()
    broker.consumer.commit.assert_called_once()


def test_a_command_is_applied_once_however_often_it_arrives(
    broker: Broker, applied: list[s.Command], make_listener: Callable[..., CommandListener]
) -> None:
    listener = make_listener()
    broker.line_up(command_event(), command_event())
    broker.line_up(command_event())

    assert 1 == listener.poll_once()
    assert 0 == listener.poll_once()

    assert [make_command()] == applied
    # each delivery is acknowledged, with the time it was first applied
    assert ["cmd-1"] * 3 == broker.acked_ids()
    assert {T0 + timedelta(seconds=1)} == {event.data.applied_at for _, _, event, _ in broker.acks}
    assert 2 == listener.stats().duplicates


def test_duplicates_can_go_unacknowledged(
    broker: Broker, make_listener: Callable[..., CommandListener]
) -> None:
    listener = make_listener(ack_duplicates=False)
    broker.line_up(command_event(), command_event())

    listener.poll_once()

    assert ["cmd-1"] == broker.acked_ids()


def test_ids_the_router_already_applied_are_not_applied_again(
    broker: Broker, applied: list[s.Command], make_listener: Callable[..., CommandListener]
) -> None:
    listener = make_listener(seen_ids=["cmd-1"])
    broker.line_up(command_event(), command_event(command_id="cmd-2"))

    assert 1 == listener.poll_once()

    assert ["cmd-2"] == [c.command_id for c in applied]


def test_other_deployments_other_events_and_garbage_are_skipped(
    broker: Broker, applied: list[s.Command], make_listener: Callable[..., CommandListener]
) -> None:
    listener = make_listener()
    alert = s.Alert(
        alert_id="alert-1",
        status="firing",
        severity="critical",
        kind="latency",
        deployment_id="dep-1",
        subject="fraud v2",
        summary="p99 regression",
        dedup_key="dep-1/latency",
        at=T0,
    )
    broker.line_up(
        command_event(deployment_id="dep-2", command_id="cmd-9"),
        s.make_event(alert, source="controller", time=T0),
        b"not json",
        command_event(),
    )

    assert 1 == listener.poll_once()

    assert ["cmd-1"] == [c.command_id for c in applied]
    assert (
        ListenerStats(
            received=4,
            applied=1,
            duplicates=0,
            skipped=2,
            rejected=1,
            apply_errors=0,
            acked=1,
            ack_errors=0,
        )
        == listener.stats()
    )


def test_every_deployment_when_none_are_named(
    broker: Broker, applied: list[s.Command], make_listener: Callable[..., CommandListener]
) -> None:
    listener = make_listener(deployment_ids=None)
    broker.line_up(command_event(), command_event(deployment_id="dep-2", command_id="cmd-2"))

    assert 2 == listener.poll_once()


def test_a_failing_apply_is_not_acknowledged_and_is_retried_on_redelivery(
    broker: Broker, rec: Recorder, make_listener: Callable[..., CommandListener]
) -> None:
    attempts: list[str] = []

    def flaky(command: s.Command) -> None:
        attempts.append(command.command_id)
        if len(attempts) == 1:
            raise ConnectionError("router config store unavailable")

    listener = make_listener(apply=flaky)
    broker.line_up(command_event(), command_event(command_id="cmd-2"))
    broker.line_up(command_event())

    assert 1 == listener.poll_once()
    assert ["cmd-2"] == broker.acked_ids()
    assert 1 == listener.poll_once()

    assert ["cmd-1", "cmd-2", "cmd-1"] == attempts
    assert ["cmd-2", "cmd-1"] == broker.acked_ids()
    assert 1 == listener.stats().apply_errors
    failed = rec.named(f"apply {TOPIC}")[0]
    assert StatusCode.ERROR == failed.status.status_code
    assert "ConnectionError" in str(failed.events[0].attributes)


def test_the_apply_span_continues_the_commands_trace_and_the_ack_continues_it(
    broker: Broker, rec: Recorder, make_listener: Callable[..., CommandListener]
) -> None:
    listener = make_listener()
    with rec.tracer.start_as_current_span("send rollout.commands"):
        headers = inject_headers()
    broker.line_up(command_event(), headers=headers)

    listener.poll_once()

    sent, apply = rec.one("send rollout.commands"), rec.one(f"apply {TOPIC}")
    assert SpanKind.CONSUMER == apply.kind
    assert sent.context.trace_id == apply.context.trace_id
    assert apply.parent is not None and sent.context.span_id == apply.parent.span_id
    attributes = dict(apply.attributes or {})
    assert "rollout-router.router-a" == attributes["messaging.consumer.group.name"]
    assert "cmd-1" == attributes["rollout.command_id"]
    ((_, _, ack, ack_headers),) = broker.acks
    ack_parent = span_context_of(extract_from_headers(ack_headers))
    assert apply.context.span_id == ack_parent.span_id
    assert f"00-{apply.context.trace_id:032x}-{apply.context.span_id:016x}-" in (
        ack.traceparent or ""
    )


def test_without_headers_the_envelope_traceparent_is_the_parent(
    broker: Broker, rec: Recorder, make_listener: Callable[..., CommandListener]
) -> None:
    listener = make_listener()
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    broker.line_up(
        s.make_event(make_command(), source="controller", time=T0, traceparent=traceparent)
    )

    listener.poll_once()

    assert 0x0AF7651916CD43DD8448EB211C80319C == rec.one(f"apply {TOPIC}").context.trace_id


def test_the_background_loop_applies_until_closed(
    broker: Broker, applied: list[s.Command], make_listener: Callable[..., CommandListener]
) -> None:
    done = threading.Event()

    def apply(command: s.Command) -> None:
        applied.append(command)
        done.set()

    listener = make_listener(apply=apply)
    broker.line_up(command_event())

    listener.start()
    assert done.wait(5)
    listener.close()
    listener.close()

    assert 1 == len(applied)
    broker.consumer.close.assert_not_called()  # the caller's clients: the caller closes them


def test_run_stops_with_the_callers_event(
    broker: Broker, make_listener: Callable[..., CommandListener]
) -> None:
    listener = make_listener()
    stop = threading.Event()
    thread = threading.Thread(target=listener.run, args=(stop,), kwargs={"poll_timeout_ms": 10})
    thread.start()

    stop.set()
    thread.join(5)

    assert not thread.is_alive()


def test_the_seen_set_forgets_the_oldest_ids_first() -> None:
    seen = SeenCommands(capacity=2, ids=["a", "b"])
    seen.add("a", T0)  # "a" is now the most recent
    seen.add("c", T0)

    assert ("a" in seen, "b" in seen, "c" in seen) == (True, False, True)
    assert T0 == seen.applied_at("a")
    assert 2 == len(seen)
